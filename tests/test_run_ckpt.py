"""`reca-eval run --ckpt` for real checkpoints: a local folder or a Hugging Face model id read from
huggingface_hub's cache (a fake cache built here, offline), an evenly spaced --limit, --seed,
--images-per-prompt, the family's sampling defaults and their overrides, all in the record."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")

from reca_eval import registry  # noqa: E402
from reca_eval.cli import app  # noqa: E402
from reca_eval.cli.common import EXIT_BAD_INPUT  # noqa: E402
from reca_eval.core.records import sha256_file  # noqa: E402
from reca_eval.evaluation.generate import resolve_generation  # noqa: E402
from reca_eval.evaluation.score import evenly_spaced_items  # noqa: E402
from reca_eval.models.flow.adapter import FlowAdapter  # noqa: E402
from reca_eval.models.janus.adapter import JanusAdapter  # noqa: E402

REVISION = "0123456789abcdef0123456789abcdef01234567"
HUB_ID = "reca-test/tiny-janus"


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """HF_HOME holding HUB_ID as huggingface_hub lays a downloaded model out: refs/main names the
    commit, snapshots/<commit>/ holds the files (the shipped ShapeWorld base, a tiny Janus)."""
    home = tmp_path_factory.mktemp("hf-home")
    repo = home / "hub" / ("models--" + HUB_ID.replace("/", "--"))
    shutil.copytree(JanusAdapter.shipped_base_path(), repo / "snapshots" / REVISION)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return home


def invoke(args, hub_cache, tmp_path):
    env = {"HF_HOME": str(hub_cache), "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return CliRunner(env=env).invoke(app, [*args, "--results", str(tmp_path / "results")])


def test_a_hub_id_runs_from_the_cache_and_the_record_says_what_ran(hub_cache, tmp_path):
    result = invoke(
        ["run", "shapes-geneval", "--ckpt", HUB_ID, "--limit", "3", "--images-per-prompt", "2", "--seed", "7",
         "--batch-size", "4", "--json"],
        hub_cache, tmp_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    gen = record["generation"]
    assert record["model"] == HUB_ID and record["label"] == "tiny-janus"
    assert (gen["checkpoint"], gen["revision"], gen["family"]) == (HUB_ID, REVISION, "janus")
    # Janus-Pro's published sampling: CFG 5, temperature 1, no top-k / top-p.
    assert gen["sampling"] == {"guidance_scale": 5.0, "temperature": 1.0, "top_k": None, "top_p": None}
    assert (gen["seed"], gen["images_per_prompt"], gen["limit"], gen["batch_size"]) == (7, 2, 3, 4)
    assert (gen["device"], gen["dtype"]) in (("cpu", "float32"), ("cuda", "bfloat16"))
    assert record["images_scored"] == 6 and len(record["seeds"]) == 6
    assert record["options"]["limit"] == 3 and record["options"]["images_per_prompt"] == 2
    # A subset is its own item set: never compared with full-file runs.
    assert record["items_sha256"] != sha256_file(registry.get("shapes-geneval").default_items())


def test_a_hub_id_not_in_the_cache_says_what_to_download(hub_cache, tmp_path):
    result = invoke(["run", "shapes-geneval", "--ckpt", "reca-test/missing"], hub_cache, tmp_path)
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert "hf download reca-test/missing" in " ".join(result.output.split())
    assert not (tmp_path / "results" / "runs").exists()


def test_sampling_overrides_are_recorded_and_bad_ones_refused(hub_cache, tmp_path):
    result = invoke(
        ["run", "shapes-geneval", "--ckpt", HUB_ID, "--limit", "1", "--cfg", "2", "--temperature", "0.5",
         "-s", "top_k=8", "--json"],
        hub_cache, tmp_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    sampling = json.loads(result.stdout)["generation"]["sampling"]
    assert sampling == {"guidance_scale": 2.0, "temperature": 0.5, "top_k": 8, "top_p": None}
    for bad, says in (
        (["-s", "steps=30"], "has no sampling setting 'steps'"),
        (["-s", "top_k=abc"], "top_k"),
        (["--temperature", "-1"], "temperature"),
        (["--cfg", "nan"], "guidance_scale"),
        (["--dtype", "int8"], "--dtype"),
        (["--device", "gpu"], "--device takes auto, cpu, cuda or cuda:N"),
        (["--device", "cuda:7"], "--device cuda:7"),
    ):
        refused = invoke(["run", "shapes-geneval", "--ckpt", HUB_ID, *bad], hub_cache, tmp_path / "bad")
        assert refused.exit_code == EXIT_BAD_INPUT, (bad, refused.output)
        assert says in refused.output, (bad, refused.output)
        assert not (tmp_path / "bad" / "results" / "runs").exists()


def test_generation_flags_need_a_checkpoint(tmp_path):
    for flag in (["--seed", "1"], ["--cfg", "3"], ["--images-per-prompt", "12"], ["--device", "cpu"]):
        result = CliRunner().invoke(app, ["run", "shapes-geneval", "--images", str(tmp_path), *flag])
        assert result.exit_code == EXIT_BAD_INPUT and "--ckpt" in result.output, result.output


def test_each_family_samples_with_its_own_defaults():
    janus = resolve_generation(JanusAdapter.shipped_base_path(), device="cpu")
    flow = resolve_generation(FlowAdapter.shipped_base_path(), device="cpu")
    assert janus["sampling"]["guidance_scale"] == 5.0 and janus["sampling"]["temperature"] == 1.0
    assert flow["sampling"] == {"guidance_scale": 3.0}
    with pytest.raises(ValueError, match="flow family has no sampling setting 'temperature'"):
        resolve_generation(FlowAdapter.shipped_base_path(), device="cpu", sampling={"temperature": 1.0})


def test_limit_keeps_evenly_spaced_items_and_whole_pairs():
    items = [{"item_id": str(i), "category": "ab"[i // 6]} for i in range(12)]
    assert [i["item_id"] for i in evenly_spaced_items(items, 4)] == ["0", "3", "6", "9"]
    assert evenly_spaced_items(items, 50) == items
    pairs = [{"item_id": f"{p}{t}", "pair_id": p} for p in "abcdef" for t in "xy"]
    kept = evenly_spaced_items(pairs, 4)
    assert [i["item_id"] for i in kept] == ["ax", "ay", "dx", "dy"]


def test_every_benchmark_run_ckpt_folder_knows_what_made_its_images(hub_cache, tmp_path):
    """`run --ckpt` on each ShapeWorld benchmark (DPG's items carry question frames) writes the run
    folder's generation.json; the same settings hash the same, another subset differently."""
    from reca_eval.evaluation.score import generation_identity

    for name in ("shapes-geneval", "shapes-dpg", "shapes-edit"):
        result = invoke(["run", name, "--ckpt", HUB_ID, "--limit", "2", "--json"], hub_cache, tmp_path / name)
        assert result.exit_code == 0, (name, result.output)
        made = json.loads(
            (
                tmp_path / name / "results" / "runs" / json.loads(result.stdout)["run_id"] / "generation.json"
            ).read_text()
        )
        assert made["checkpoint"] == HUB_ID and made["limit"] == 2 and made["revision"] == REVISION
        bench = registry.get(name)
        items = bench.load_items(bench.default_items())
        same = generation_identity(bench, items[:2], HUB_ID, 2, {})
        assert same == generation_identity(bench, items[:2], HUB_ID, 2, {})
        assert same["items_sha256"] != generation_identity(bench, items[2:4], HUB_ID, 2, {})["items_sha256"]


def test_images_per_prompt_is_one_number_within_the_declared_range(hub_cache, tmp_path):
    run = ["run", "shapes-geneval", "--ckpt", HUB_ID, "--limit", "1"]
    disagree = invoke(
        [*run, "--images-per-prompt", "2", "-o", "images_per_prompt=3"], hub_cache, tmp_path / "a"
    )
    assert disagree.exit_code == 2 and "disagree" in disagree.output
    too_many = invoke([*run, "--images-per-prompt", "65"], hub_cache, tmp_path / "b")
    assert too_many.exit_code == 2 and "images-per-prompt" in too_many.output
    assert (
        not (tmp_path / "a" / "results" / "runs").exists()
        and not (tmp_path / "b" / "results" / "runs").exists()
    )
    # -o alone sets what is generated as well as what is scored: no sample is missing or unexpected
    alone = invoke([*run, "-o", "images_per_prompt=1", "--json"], hub_cache, tmp_path / "c")
    assert alone.exit_code == 0, alone.output
    record = json.loads(alone.stdout)
    assert record["images_scored"] == 1 and record["images_skipped"] == 0
    assert record["generation"]["images_per_prompt"] == 1
