"""`reca-eval convert harmon` on files laid out as the official release lays them.

The release (``huggingface-cli download wusize/harmon --local-dir checkpoints``) is
``checkpoints/harmon_<size>.pth`` (a bare state dict with the official ``llm.*`` / ``mar.*`` / ``proj_in.*`` /
``proj_out.*`` names), ``checkpoints/kl16.ckpt`` (LDM's KL autoencoder names under ``"model"``) and a
Qwen2.5-Instruct folder. Here the same files are written at a tiny size registered beside the real ones
(the real ones are checked by key and shape on the meta device in test_harmon_convert.py), converted
through the command line, and loaded the way `run --ckpt` and `train` load them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")

from safetensors.torch import load_file  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from reca_eval.cli import app  # noqa: E402
from reca_eval.core.records import current_umask  # noqa: E402
from reca_eval.models.flow.tiny import build_tiny_qwen_tokenizer  # noqa: E402
from reca_eval.models.harmon import convert  # noqa: E402
from reca_eval.models.harmon.tiny import PROMPT_WORDS, tiny_kl_vae, tiny_qwen2  # noqa: E402
from reca_eval.models.janus.tiny import DEFAULT_WORDS  # noqa: E402
from reca_eval.models.loading import load_unified_model  # noqa: E402
from reca_eval.models.protocol import Condition, SamplingConfig  # noqa: E402
from tests.test_harmon_convert import official_harmon_shapes, official_vae_shapes, tiny_config  # noqa: E402
from tests.toy_model import make_image_folder  # noqa: E402

runner = CliRunner(env={"COLUMNS": "200"})
RECIPE = Path(__file__).parents[1] / "trainers" / "recipes" / "harmon_reca.yaml"
VAE_KEYS = ("down_block_types", "up_block_types", "block_out_channels", "layers_per_block", "latent_channels",
            "norm_num_groups", "scaling_factor")  # fmt: skip


def tiny_tokenizer():
    return build_tiny_qwen_tokenizer(tuple(dict.fromkeys((*DEFAULT_WORDS, *PROMPT_WORDS))))


def tiny_variant() -> convert.Variant:
    """A size with the official key structure at small width: Qwen2 32 wide, MAR 32 wide, a 3-level KL VAE."""
    tokenizer = tiny_tokenizer()
    llm = tiny_qwen2(len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id).config
    vae = {k: tiny_kl_vae(4, (16, 16, 32), 8).config[k] for k in VAE_KEYS}
    return convert.Variant("tiny", llm, tiny_config(), vae, vae_levels=3, vae_name="KL-4")


@pytest.fixture(autouse=True)
def tiny_size(monkeypatch):
    monkeypatch.setitem(convert.VARIANTS, "tiny", tiny_variant)


def official_tiny_state(seed: int = 0) -> tuple[dict, dict]:
    """(harmon state dict, KL VAE state dict) with the official names, random values."""
    generator = torch.Generator().manual_seed(seed)
    v = tiny_variant()
    with torch.device("meta"):
        llm = tiny_qwen2(v.llm.vocab_size, v.llm.pad_token_id, v.llm.eos_token_id)
    harmon = {
        k: 0.02 * torch.randn(s, generator=generator)
        for k, s in official_harmon_shapes(llm, v.harmon).items()
    }
    # Qwen2.5 ties its output head to the embeddings: torch.save keeps the two names on one storage.
    harmon["llm.lm_head.weight"] = harmon["llm.model.embed_tokens.weight"]
    vae = {
        k: 0.02 * torch.randn(s, generator=generator)
        for k, s in official_vae_shapes(16, (1, 1, 2), 4, 1, 2).items()
    }
    return harmon, vae


def write_release(root: Path, harmon: dict, vae: dict, wrap: str | None = None) -> dict[str, Path]:
    """The release's layout: checkpoints/harmon_tiny.pth, checkpoints/kl16.ckpt, Qwen2.5-tiny-Instruct/."""
    (root / "checkpoints").mkdir(parents=True)
    paths = {
        "weights": root / "checkpoints" / "harmon_tiny.pth",
        "vae": root / "checkpoints" / "kl16.ckpt",
        "llm": root / "Qwen2.5-tiny-Instruct",
    }
    torch.save(harmon if wrap is None else {wrap: harmon, "meta": {"iter": 5}}, paths["weights"])
    # MAR saves its training arguments beside the weights; weights_only=True may rebuild a Namespace.
    torch.save({"model": vae, "args": argparse.Namespace(vae_embed_dim=16), "epoch": 40}, paths["vae"])
    tiny_tokenizer().save_pretrained(paths["llm"])
    tiny_variant().llm.save_pretrained(paths["llm"])
    return paths


def args(paths: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["convert", "harmon", "--weights", str(paths["weights"]), "--vae", str(paths["vae"]),
            "--llm", str(paths["llm"]), "--out", str(out), "--no-progress", *extra]  # fmt: skip


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    harmon, vae = official_tiny_state()
    return harmon, vae, write_release(root, harmon, vae)


@pytest.fixture(scope="module")
def converted(release, tmp_path_factory):
    harmon, vae, paths = release
    out = tmp_path_factory.mktemp("converted") / "harmon-tiny"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(convert.VARIANTS, "tiny", tiny_variant)
        result = runner.invoke(app, args(paths, out, "--size", "tiny"))
    assert result.exit_code == 0, result.output
    return out, result


def reference_model(harmon: dict, vae: dict):
    v = tiny_variant()
    parts = convert.convert_official_state_dict(harmon, vae, vae_levels=3)
    return convert.build_from_parts(parts, tiny_tokenizer(), v.llm, v.harmon, v.vae)


def test_converted_release_samples_as_the_reference_model(release, converted):
    harmon, vae, _ = release
    out, result = converted
    assert f"Score it: reca-eval run geneval --ckpt {out}" in " ".join(result.stdout.split())
    model = load_unified_model(out)  # what `run --ckpt` opens
    reference = reference_model(harmon, vae)
    conditions = [Condition.text("red circle"), Condition.text("blue square")]
    sampling = SamplingConfig(guidance_scale=3.0, seed=11)
    tokens = model.sample_tokens(conditions, sampling)
    torch.testing.assert_close(tokens, reference.sample_tokens(conditions, sampling), rtol=0, atol=0)
    assert tokens.abs().sum() > 0
    # Values sit where the official names say, in the release's dtype (float32 here).
    torch.testing.assert_close(
        model.mar.encoder_blocks[0].attn.qkv.weight, harmon["mar.encoder_blocks.0.attn.qkv.weight"]
    )
    torch.testing.assert_close(
        model.vae.decoder.up_blocks[2].resnets[0].conv1.weight, vae["decoder.up.0.block.0.conv1.weight"]
    )
    assert model.llm.dtype == torch.float32


def test_conversion_json_records_the_sources(release, converted):
    _, _, paths = release
    out, _ = converted
    record = json.loads((out / convert.PROVENANCE_FILE).read_text())
    assert record["size"] == "tiny" and record["size_inferred"] is False and record["dtype"] == "float32"
    by_file = {s["file"]: s for s in record["sources"]}
    for role in ("weights", "vae"):
        source = by_file[paths[role].name]
        assert source["role"] == role
        assert source["sha256"] == sha256(paths[role]) and source["bytes"] == paths[role].stat().st_size
        assert source["path"] == str(paths[role].resolve())
    assert (
        by_file["harmon_tiny.pth"]["state_dict_key"] is None
        and by_file["kl16.ckpt"]["state_dict_key"] == "model"
    )
    assert by_file["tokenizer.json"]["sha256"] == sha256(paths["llm"] / "tokenizer.json")
    assert record["dropped_keys"] == ["mar.class_emb.weight"] and record["llm"] == str(paths["llm"])
    assert record["llm_weights"] == "weights"
    # Every file follows the umask (safetensors alone would write the weights 0600).
    mode = 0o666 & ~current_umask()
    assert {p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_file()} == {mode}


def test_run_and_train_load_the_converted_folder(converted, tmp_path):
    from reca_eval import registry

    out, _ = converted
    bench = registry.get("shapes-geneval")
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps(it) + "\n" for it in bench.load_items(bench.default_items())[:1]))
    run = [
        "run",
        "shapes-geneval",
        "--ckpt",
        str(out),
        "--items",
        str(items),
        "--results",
        str(tmp_path / "r"),
        "--json",
    ]
    scored = runner.invoke(app, run)
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["images_scored"] == bench.images_per_prompt

    images = make_image_folder(tmp_path / "imgs", 4, size=32)
    raw = yaml.safe_load(RECIPE.read_text())
    raw["model"].update(builder="reca_eval.training.builders:from_checkpoint", kwargs={"path": str(out)})
    for source in raw["data"]["sources"]:
        source["path"] = str(images)
    raw["data"].update(num_workers=0, cache_dir=str(tmp_path / "cache"))
    raw["train"].update(
        output_dir=str(tmp_path / "train"), steps=2, batch_size=2, warmup_steps=0, logger="none", progress=False,
        mixed_precision="no", checkpoint_every=100,
    )  # fmt: skip
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    trained = runner.invoke(app, ["train", str(recipe), "--results", str(tmp_path / "r")])
    assert trained.exit_code == 0, trained.output
    assert (tmp_path / "train" / "final" / "harmon.safetensors").is_file()


def test_size_is_inferred_and_a_state_dict_under_a_key_is_found(tmp_path):
    harmon, vae = official_tiny_state(seed=1)
    paths = write_release(tmp_path / "release", harmon, vae, wrap="state_dict")
    out = tmp_path / "out"
    result = runner.invoke(app, args(paths, out, "--dtype", "bfloat16"))
    assert result.exit_code == 0, result.output
    record = json.loads((out / convert.PROVENANCE_FILE).read_text())
    assert record["size"] == "tiny" and record["size_inferred"] is True and record["dtype"] == "bfloat16"
    assert record["sources"][0]["state_dict_key"] == "state_dict"
    saved = load_file(str(out / "harmon.safetensors"))
    assert {t.dtype for t in saved.values()} == {torch.bfloat16}
    assert torch.equal(saved["mar.z_proj.weight"], harmon["mar.z_proj.weight"].to(torch.bfloat16))
    assert "(inferred)" in result.stdout


def test_the_vae_may_ride_in_the_weights_file(tmp_path):
    harmon, vae = official_tiny_state(seed=2)
    paths = write_release(tmp_path / "release", {**harmon, **{f"vae.{k}": t for k, t in vae.items()}}, vae)
    out = tmp_path / "out"
    plain = [a for a in args(paths, out) if a not in ("--vae", str(paths["vae"]))]
    result = runner.invoke(app, plain)
    assert result.exit_code == 0, result.output
    model = load_unified_model(out)
    torch.testing.assert_close(model.vae.encoder.conv_in.weight, vae["encoder.conv_in.weight"])


def test_weights_without_the_llm_take_it_from_the_llm_folder(tmp_path):
    """The official scripts load Qwen2.5 from its folder, then the .pth over it (strict=False): a file
    without llm.* keys keeps the folder's LLM."""
    harmon, vae = official_tiny_state(seed=3)
    paths = write_release(
        tmp_path / "release", {k: t for k, t in harmon.items() if not k.startswith("llm.")}, vae
    )
    out = tmp_path / "out"
    refused_without = runner.invoke(app, args(paths, out))
    assert refused_without.exit_code == 2, refused_without.output
    assert "holds no llm.* keys, so the LLM's weights come from here, and none could be loaded" in " ".join(
        refused_without.output.split()
    )
    v = tiny_variant()
    torch.manual_seed(5)
    qwen = tiny_qwen2(v.llm.vocab_size, v.llm.pad_token_id, v.llm.eos_token_id)
    qwen.save_pretrained(paths["llm"])
    result = runner.invoke(app, args(paths, out))
    assert result.exit_code == 0, result.output
    model = load_unified_model(out)
    torch.testing.assert_close(
        model.llm.model.layers[1].mlp.up_proj.weight, qwen.model.layers[1].mlp.up_proj.weight
    )
    torch.testing.assert_close(model.mar.z_proj.weight, harmon["mar.z_proj.weight"])
    record = json.loads((out / convert.PROVENANCE_FILE).read_text())
    assert record["llm_weights"] == "--llm" and record["size"] == "tiny"
    weights = paths["llm"] / "model.safetensors"
    assert {"file": "model.safetensors", "sha256": sha256(weights)}.items() <= next(
        s for s in record["sources"] if s["file"] == "model.safetensors"
    ).items()


# ---------------------------------------------------------------------------------------- refusals
def refused(tmp_path: Path, argv: list[str], *fragments: str) -> str:
    """The command exits 2 with every fragment in its message, and leaves tmp_path as it found it."""
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = runner.invoke(app, argv)
    message = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    return message


@pytest.fixture
def files(release, tmp_path):
    """The module's release files, and a scratch folder whose content a refusal must leave unchanged."""
    return release[2]


def test_missing_and_unreadable_files_are_refused(files, tmp_path):
    out = tmp_path / "out"
    missing = tmp_path / "harmon_1.5b.pth"
    refused(tmp_path, args({**files, "weights": missing}, out), f"--weights {missing}: no such file")
    refused(tmp_path, args({**files, "weights": tmp_path}, out), "a folder, not a PyTorch file")
    text = tmp_path / "notes.pth"
    text.write_text("harmon weights\n")
    refused(tmp_path, args({**files, "weights": text}, out), f"--weights {text}: not a PyTorch file")
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(files["vae"].read_bytes()[:4096])
    refused(tmp_path, args({**files, "vae": cut}, out), f"--vae {cut}: not a readable PyTorch file")


def test_a_file_holding_python_objects_is_not_unpickled(files, tmp_path):
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"llm.model.norm.weight": torch.zeros(2), "args": Path("x")}, unsafe)
    message = refused(tmp_path, args({**files, "weights": unsafe}, tmp_path / "out"), "holds Python objects")
    assert "weights_only=True" in message
    odd = tmp_path / "odd.pth"
    torch.save({"llm.model.norm.weight": torch.zeros(2), "step": 5}, odd)
    refused(
        tmp_path, args({**files, "weights": odd}, tmp_path / "out"), "key 'step' holds a int, not a tensor"
    )
    torch.save([torch.zeros(2)], tmp_path / "list.pth")  # a torch file, but not a state dict
    refused(
        tmp_path,
        args({**files, "weights": tmp_path / "list.pth"}, tmp_path / "out"),
        "holds a list, not a state dict",
    )


def test_weights_of_another_size_name_the_keys_and_the_size_they_fit(files, tmp_path):
    message = refused(
        tmp_path,
        args(files, tmp_path / "out", "--size", "0.5b"),
        f"--weights {files['weights']}: not Harmon-0.5b weights",
        "llm.model.embed_tokens.weight has shape [",
        ", expected [151936, 896]",
        "it fits Harmon-tiny: pass --size tiny",
    )
    assert message.count(" has shape ") == convert.SHOWN
    refused(
        tmp_path,
        args(files, tmp_path / "out", "--size", "2b"),
        "--size '2b' is not a Harmon size; known: 0.5b, 1.5b, tiny",
    )


def test_weights_fitting_no_size_are_refused_when_inferring(files, tmp_path):
    harmon, _ = official_tiny_state()
    del harmon["mar.encoder_norm.weight"]
    harmon["mar.ema.shadow"] = torch.zeros(1)
    broken = tmp_path / "broken.pth"
    torch.save(harmon, broken)
    refused(
        tmp_path,
        args({**files, "weights": broken}, tmp_path / "out"),
        "fits no Harmon size (0.5b, 1.5b, tiny); against the closest, tiny: 2 key(s) differ",
        "mar.ema.shadow is not one of its keys",
        "mar.encoder_norm.weight is missing",
    )


def test_a_vae_that_is_not_the_sizes_kl_vae_is_refused(files, tmp_path):
    other = tmp_path / "kl8.ckpt"  # 8 latent channels instead of 4
    torch.save(
        {"model": {k: torch.zeros(s) for k, s in official_vae_shapes(16, (1, 1, 2), 8, 1, 2).items()}}, other
    )
    refused(
        tmp_path,
        args({**files, "vae": other}, tmp_path / "out"),
        f"--vae {other}: not a KL-4 VAE (4 latent channels, 4x down-sampling)",
        "encoder.conv_out.weight has shape [16, 32, 3, 3], expected [8, 32, 3, 3]",
    )
    refused(
        tmp_path,
        args({**files, "vae": files["weights"]}, tmp_path / "out"),
        "no VAE weights (no encoder.* or decoder.* key)",
    )
    no_vae = [a for a in args(files, tmp_path / "out") if a not in ("--vae", str(files["vae"]))]
    refused(tmp_path, no_vae, "holds no vae.* keys, so --vae is needed")


def test_an_llm_folder_of_another_size_is_refused(files, tmp_path):
    other = tmp_path / "Qwen2.5-1.5B-Instruct"
    tiny_tokenizer().save_pretrained(other)
    config = tiny_variant().llm
    config.hidden_size = 64
    config.save_pretrained(other)
    refused(
        tmp_path,
        args({**files, "llm": other}, tmp_path / "out"),
        f"--llm {other}: config.json has hidden_size 64",
    )
    refused(tmp_path, args({**files, "llm": tmp_path / "nowhere"}, tmp_path / "out"), "no such folder")


def test_a_tokenizer_without_qwens_special_tokens_is_refused(files, tmp_path):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    plain = tmp_path / "plain-tokenizer"
    vocab = {"<unk>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "red": 3}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>").save_pretrained(plain)
    refused(
        tmp_path,
        args({**files, "llm": plain}, tmp_path / "out"),
        f"--llm {plain}: the tokenizer lacks '<|image_pad|>'",
    )


def test_an_llm_hub_id_that_cannot_be_fetched_says_how_to_fetch_it(files, tmp_path, monkeypatch):
    from transformers import AutoConfig

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(AutoConfig, "from_pretrained", offline)
    refused(
        tmp_path,
        args({**files, "llm": "Qwen/Qwen2.5-0.5B-Instruct"}, tmp_path / "out", "--size", "tiny"),
        "--llm Qwen/Qwen2.5-0.5B-Instruct: its config.json cannot be read (We couldn't connect",
        "fetch it first (hf download Qwen/Qwen2.5-0.5B-Instruct --local-dir DIR) and pass DIR",
    )


def test_out_is_written_whole_and_replaced_only_with_overwrite(files, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("x")
    refused(tmp_path, args(files, out), f"--out {out}: exists and is not empty; pass --overwrite")
    result = runner.invoke(app, args(files, out, "--overwrite"))
    assert result.exit_code == 0, result.output
    assert not (out / "stale.txt").exists() and (out / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder left beside it
    # An --out holding an input is refused even with --overwrite: replacing it would delete the input.
    refused(
        tmp_path, args(files, files["weights"].parent.parent, "--overwrite"), "--overwrite would delete it"
    )
    assert files["weights"].is_file()


def test_a_failed_write_leaves_no_out_and_no_staging(files, tmp_path, monkeypatch):
    from reca_eval.models.harmon.adapter import HarmonAdapter

    def crash(self, path):
        (Path(path) / "llm").mkdir()
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(HarmonAdapter, "save_pretrained", crash)
    result = runner.invoke(app, args(files, tmp_path / "out"))
    assert result.exit_code == 4 and "No space left on device" in result.output, result.output
    assert list(tmp_path.iterdir()) == []
