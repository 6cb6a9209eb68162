"""The Harmon family end to end: `run --ckpt` on ShapeWorld benchmarks and `train` with its RecA recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from reca_eval import registry  # noqa: E402
from reca_eval.cli import app  # noqa: E402
from reca_eval.models.harmon.adapter import load_vae  # noqa: E402
from reca_eval.models.harmon.tiny import build_tiny_harmon  # noqa: E402
from tests.toy_model import make_image_folder  # noqa: E402

runner = CliRunner(env={"COLUMNS": "200"})
RECIPE = Path(__file__).parents[1] / "trainers" / "recipes" / "harmon_reca.yaml"


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny-harmon"
    build_tiny_harmon(seed=0, num_iterations=3).save_pretrained(path)
    return path


def items_file(tmp_path: Path, name: str, n: int) -> Path:
    bench = registry.get(name)
    items = bench.load_items(bench.default_items())[:n]
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(it) + "\n" for it in items))
    return path


@pytest.mark.parametrize("name", ["shapes-geneval", "shapes-edit"])
def test_run_with_a_harmon_ckpt_generates_and_scores(tiny_ckpt, tmp_path, name):
    args = ["run", name, "--ckpt", str(tiny_ckpt), "--items", str(items_file(tmp_path, name, 2))]
    result = runner.invoke(app, [*args, "--results", str(tmp_path / "r"), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    per_prompt = registry.get(name).images_per_prompt
    assert record["images_scored"] == 2 * per_prompt and record["images_skipped"] == 0
    assert record["model"] == str(tiny_ckpt)


def test_harmon_sampling_settings_are_the_authors_and_top_k_is_refused(tiny_ckpt, tmp_path):
    items = str(items_file(tmp_path, "shapes-geneval", 1))
    base = [
        "run",
        "shapes-geneval",
        "--ckpt",
        str(tiny_ckpt),
        "--items",
        items,
        "--results",
        str(tmp_path / "r"),
    ]
    result = runner.invoke(app, [*base, "--temperature", "0.5", "--json"])
    assert result.exit_code == 0, result.output
    sampling = json.loads(result.stdout)["generation"]["sampling"]
    assert sampling == {"guidance_scale": 3.0, "temperature": 0.5}
    refused = runner.invoke(app, [*base, "-s", "top_k=5"])
    assert refused.exit_code == 2 and "top_k" in refused.output and "Traceback" not in refused.output


def harmon_recipe(tmp_path: Path, images: int, steps: int) -> dict:
    """The harmon_reca recipe on a folder of ``images`` 32-px images, ``steps`` steps of batch 2, a
    checkpoint every 2 steps."""
    folder = make_image_folder(tmp_path / "imgs", images, size=32)
    raw = yaml.safe_load(RECIPE.read_text())
    for source in raw["data"]["sources"]:
        source["path"] = str(folder)
    raw["data"].update(num_workers=0, cache_dir=str(tmp_path / "cache"))
    raw["train"].update(
        output_dir=str(tmp_path / "out"), steps=steps, batch_size=2, lr=1e-3, warmup_steps=0, logger="none",
        progress=False, mixed_precision="no", checkpoint_every=2,
    )  # fmt: skip
    return raw


def test_train_the_harmon_reca_recipe(tmp_path):
    raw = harmon_recipe(tmp_path, images=6, steps=8)
    assert raw["model"]["freeze"] == ["vae"]
    assert [(s["objective"], s["ratio"]) for s in raw["data"]["sources"]] == [("recon", 2), ("i2t", 2)]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    result = runner.invoke(app, ["train", str(recipe), "--results", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    final = tmp_path / "out" / "final"
    assert json.loads((final / "config.json").read_text())["model_type"] == "reca_harmon"
    # Both objectives ran (at seed 0 the first recon micro-batch is the fifth): the VAE latents were cached.
    assert list((tmp_path / "cache").rglob("*.pt"))
    scored = runner.invoke(
        app,
        ["run", "shapes-geneval", "--ckpt", str(final), "--items", str(items_file(tmp_path, "shapes-geneval", 1)),
         "--results", str(tmp_path / "r"), "--json"],
    )  # fmt: skip
    assert scored.exit_code == 0, scored.output


def test_shapeworld_pretraining_runs_and_exports(tmp_path):
    from reca_eval.models.harmon.shapeworld import shared_autoencoder_path
    from reca_eval.models.loading import load_unified_model
    from trainers.pretrain_shapeworld_harmon import main

    recipe = Path(__file__).parents[1] / "trainers" / "recipes" / "shapeworld_harmon_base.yaml"
    overrides = [
        "round_trip_scenes=4", "mar.steps=4", "mar.batch_size=4", "mar.eval_every=4", "mar.eval_scenes=4",
        "mar.generate_scenes=2", "mar.i2t_every=2",
        f"output_dir={tmp_path / 'out'}", f"export_dir={tmp_path / 'model'}",
    ]  # fmt: skip
    assert main([str(recipe), *overrides]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {"held_out/exact_scenes", "held_out/pixel_close"} <= set(summary["vae"])
    assert {"loss/t2i", "loss/i2t", "held_out/gap", "generated/exact_objects"} <= set(summary["mar"])
    model = load_unified_model(tmp_path / "model")
    # The frozen autoencoder is the flow base's, at its own latent scale, and untouched by the training.
    shared = load_vae(shared_autoencoder_path(), torch.float32)
    assert type(model.vae) is type(shared) and model.config.vae_scale == shared.config.scaling_factor
    for name, tensor in shared.state_dict().items():
        assert torch.equal(model.vae.state_dict()[name], tensor), name
    # the exported folder carries its measurements and a README that quotes them
    shipped = json.loads((tmp_path / "model" / "pretrain_summary.json").read_text())
    assert shipped["mar"] == summary["mar"] and shipped["command"].endswith(
        f"export_dir={tmp_path / 'model'}"
    )
    rows = (tmp_path / "model" / "pretrain_metrics.jsonl").read_text().splitlines()
    assert json.loads(rows[-1])["stage"] == "mar-final"
    readme = (tmp_path / "model" / "README.md").read_text()
    assert f"{100 * summary['vae']['held_out/exact_scenes']:.1f}% of 4 held-out scenes" in readme
    assert main([str(recipe), "mar.no_such_key=1"]) == 2


def test_a_vae_folder_of_another_class_is_refused_naming_its_config(tiny_ckpt, tmp_path):
    import shutil

    folder = tmp_path / "vae"
    shutil.copytree(tiny_ckpt / "vae", folder)
    assert type(load_vae(folder, torch.float32)).__name__ == "AutoencoderKL"
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "_class_name": "AutoencoderTiny"}))
    with pytest.raises(ValueError, match=r"vae/config.json: _class_name 'AutoencoderTiny' is not one of"):
        load_vae(folder, torch.float32)
    (folder / "config.json").write_text("{")
    with pytest.raises(ValueError, match=r"vae/config.json: not a readable diffusers config"):
        load_vae(folder, torch.float32)


# ------------------------------------------------------------------------ the third ShapeWorld family
def test_main_command_runs_the_harmon_family_end_to_end_on_two_items(tiny_ckpt, tmp_path):
    import re

    from rich.console import Console

    from reca_eval.experiments.arms import Budget
    from reca_eval.experiments.main_command import run_main_command

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        console = Console(record=True, width=200)
        result, paths = run_main_command(
            console,
            bases={"harmon": tiny_ckpt},
            families=("harmon",),
            results=tmp_path / "demo",
            budget=Budget(sft_steps=2, reca_steps=2, batch_size=2, warmup_steps=0),
            items_per_benchmark=2,
            generation_batch_size=8,
            threads=1,
            workers=1,
        )
    finally:
        torch.set_num_threads(threads)
    out = console.export_text()
    labels = ["base", "SFT", "SFT+RecA", "SFT-matched", "SFT-half"]
    assert [run.label for run in result.arm_runs] == [f"harmon/{arm}" for arm in labels]
    assert all(set(run.scores) == {"shapes-geneval", "shapes-dpg"} for run in result.arm_runs)
    # its floors and ceilings go through its own autoencoder, and the compare is printed
    assert any(b.family == "harmon" for b in result.bounds), result.bounds
    assert "harmon/SFT+RecA (B) vs harmon/SFT (A)" in out and paths.html.exists()
    assert re.search(r"wall time \d+ s", out)


def test_shipped_harmon_base_loads_generates_and_records_its_pretraining():
    from reca_eval.models import family_class
    from reca_eval.models.harmon.shapeworld import shared_autoencoder_path
    from reca_eval.models.loading import load_unified_model
    from reca_eval.models.protocol import Condition, SamplingConfig

    path = family_class("harmon").shipped_base_path()
    assert (path / "config.json").exists(), f"the Harmon base is not shipped at {path}"
    model = load_unified_model(path)
    assert model.family == "harmon"
    (image,) = model.generate([Condition.text("a red circle")], SamplingConfig(guidance_scale=3.0, seed=0))
    assert image.size == (32, 32)
    # its autoencoder is the flow base's, byte for byte
    shared = load_vae(shared_autoencoder_path(), torch.float32)
    for name, tensor in shared.state_dict().items():
        assert torch.equal(model.vae.state_dict()[name], tensor), name
    summary = json.loads((path / "pretrain_summary.json").read_text())
    assert 0.0 <= summary["mar"]["generated/exact_objects"] <= 1.0


def test_a_harmon_run_resumes_from_its_checkpoint_and_its_tied_embedding_is_saved_once(tmp_path, capsys):
    from reca_eval.training.checkpoint import latest_checkpoint
    from reca_eval.training.loop import train
    from reca_eval.training.recipe import recipe_from_dict

    raw = harmon_recipe(tmp_path, images=4, steps=2)
    first = train(recipe_from_dict(raw))
    saved = latest_checkpoint(tmp_path / "out" / "checkpoints")
    assert saved is not None and saved.name.endswith("2")
    # accelerate's notice about the tied lm_head (stored once) is not printed
    assert "Removed shared tensor" not in capsys.readouterr().err
    raw["train"]["steps"] = 4
    result = train(recipe_from_dict(raw), resume=True)
    assert result.resumed_from == str(saved) and result.steps == 4
    assert result.losses[:2] == first.losses and len(result.losses) == 4
    assert (result.final_dir / "config.json").exists()
