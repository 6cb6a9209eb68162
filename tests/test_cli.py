"""End to end through the command line: run, --json, leaderboard, compare, check, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from reca_eval.benchmarks.geneval.rules import TAGS
from reca_eval.cli import app
from reca_eval.evaluation.references import write_reference_folder
from reca_eval.experiments.reference_check import write_perturbed_folder

# The exit codes as documented (README, reca_eval/cli/common.py), not the code's constants.
EXIT_REGRESSION, EXIT_BAD_INPUT, EXIT_SKIPS = 1, 2, 3

runner = CliRunner(env={"COLUMNS": "220"})


@pytest.fixture(scope="module")
def reference_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("refs")
    dirs = {}
    for name in ("shapes-geneval", "shapes-dpg", "shapes-edit"):
        dirs[name] = root / name
        write_reference_folder(name, dirs[name])
    dirs["shapes-geneval-perturbed"] = root / "perturbed"
    write_perturbed_folder("shapes-geneval", dirs["shapes-geneval-perturbed"], fraction=0.5, seed=1)
    return dirs


def run_json(args: list[str]) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_list_shows_every_benchmark_and_its_needs_within_80_columns():
    result = CliRunner(env={"COLUMNS": "80"}).invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.startswith("│ ")}
    for name in ("shapes-geneval", "shapes-dpg", "shapes-edit", "geneval", "dpg"):
        assert name in rows
    assert rows["geneval"].rstrip(" │").endswith("geneval") and rows["shapes-geneval"].rstrip(" │").endswith(
        "core"
    )
    assert all(len(line) <= 80 for line in result.output.splitlines()) and "…" not in result.output


def test_reference_renders_score_one_per_task(reference_dirs, tmp_path):
    record = run_json(
        [
            "run",
            "shapes-geneval",
            "--images",
            str(reference_dirs["shapes-geneval"]),
            "--results",
            str(tmp_path),
        ]
    )
    assert set(TAGS) <= set(record["scores"])
    assert all(record["scores"][tag] == 1.0 for tag in TAGS)
    assert record["scores"]["overall"] == 1.0
    assert record["images_skipped"] == 0 and record["images_scored"] > 0
    assert record["items_sha256"] and record["images_sha256"]
    per_image = Path(tmp_path, "runs", record["run_id"], "per_image.jsonl")
    assert sum(1 for _ in per_image.open()) == record["images_scored"]


@pytest.mark.parametrize("name,perfect", [("shapes-dpg", 100.0), ("shapes-edit", 10.0)])
def test_reference_renders_are_perfect_on_dpg_and_edit(reference_dirs, tmp_path, name, perfect):
    record = run_json(["run", name, "--images", str(reference_dirs[name]), "--results", str(tmp_path)])
    assert record["scores"]["overall"] == pytest.approx(perfect)
    assert record["images_skipped"] == 0


def test_compare_and_check_detect_the_perturbed_run(reference_dirs, tmp_path):
    ref = run_json(
        [
            "run",
            "shapes-geneval",
            "--images",
            str(reference_dirs["shapes-geneval"]),
            "--label",
            "ref",
            "--results",
            str(tmp_path),
        ]
    )
    pert = run_json(
        [
            "run",
            "shapes-geneval",
            "--images",
            str(reference_dirs["shapes-geneval-perturbed"]),
            "--label",
            "pert",
            "--results",
            str(tmp_path),
        ]
    )
    assert pert["scores"]["colors"] < 1.0
    board = runner.invoke(app, ["leaderboard", "--results", str(tmp_path)])
    assert board.exit_code == 0 and "ref" in board.output and "pert" in board.output
    cmp = runner.invoke(app, ["compare", "ref", "pert", "--results", str(tmp_path), "--n-boot", "200"])
    assert cmp.exit_code == 0, cmp.output
    assert "colors" in cmp.output
    baseline = tmp_path / "runs" / ref["run_id"]
    gate = runner.invoke(
        app,
        [
            "check",
            "--baseline",
            str(baseline),
            "--run",
            "pert",
            "--results",
            str(tmp_path),
            "--n-boot",
            "200",
        ],
    )
    assert gate.exit_code == EXIT_REGRESSION, gate.output
    assert "colors" in gate.output
    lenient = runner.invoke(
        app,
        [
            "check",
            "--baseline",
            str(baseline),
            "--run",
            "pert",
            "--tolerance",
            "0.9",
            "--results",
            str(tmp_path),
            "--n-boot",
            "200",
        ],
    )
    assert lenient.exit_code == 0, lenient.output


def test_skips_are_counted_and_fail_the_exit_code(reference_dirs, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(reference_dirs["shapes-geneval"], images)
    samples = sorted(images.glob("*/samples/*.png"))
    samples[0].write_bytes(samples[0].read_bytes()[:40])  # truncated PNG
    samples[1].unlink()  # missing sample
    Image.new("RGB", (32, 32)).save(samples[2])  # wrong size
    result = runner.invoke(
        app, ["run", "shapes-geneval", "--images", str(images), "--results", str(tmp_path / "r"), "--json"]
    )
    assert result.exit_code == EXIT_SKIPS
    record = json.loads(result.stdout)
    assert record["images_skipped"] == 3
    reasons = " ".join(s["reason"] for s in record["skips"])
    assert "wrong size" in reasons and "missing" in reasons and "unreadable" in reasons
    allowed = runner.invoke(
        app,
        ["run", "shapes-geneval", "--images", str(images), "--results", str(tmp_path / "r"), "--allow-skips"],
    )
    assert allowed.exit_code == 0


def test_bad_input_gives_clear_errors(reference_dirs, tmp_path):
    unknown = runner.invoke(app, ["run", "no-such-bench", "--images", str(tmp_path)])
    assert unknown.exit_code == EXIT_BAD_INPUT and "unknown benchmark" in unknown.output
    missing = runner.invoke(app, ["run", "shapes-geneval", "--images", str(tmp_path / "nope")])
    assert missing.exit_code == EXIT_BAD_INPUT and "does not exist" in missing.output
    both = runner.invoke(app, ["run", "shapes-geneval"])
    assert both.exit_code == EXIT_BAD_INPUT
    bad_items = tmp_path / "items.jsonl"
    bad_items.write_text(
        '{"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "x"}\n{oops\n'
    )
    result = runner.invoke(app, ["validate", "shapes-geneval", "--items", str(bad_items)])
    assert result.exit_code == EXIT_BAD_INPUT
    assert f"{bad_items}:2" in result.output.replace("\n", "")
    # A folder laid out for another prompt set is an error naming the file, not a silent zero.
    wrong = runner.invoke(
        app,
        [
            "run",
            "shapes-geneval",
            "--images",
            str(reference_dirs["shapes-geneval"]),
            "--items",
            str(bad_items),
        ],
    )
    assert wrong.exit_code == EXIT_BAD_INPUT


def test_official_benchmark_without_data_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("RECA_EVAL_DATA", str(tmp_path / "empty"))
    result = runner.invoke(app, ["validate", "geneval"])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "evaluation_metadata.jsonl" in result.output.replace("\n", "")


def test_official_geneval_items_validate_from_shared(tmp_path):
    shared = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "geneval"
    if not shared.exists():
        pytest.skip(f"official GenEval metadata not found at {shared}")
    result = runner.invoke(app, ["validate", "geneval", "--items", str(shared / "evaluation_metadata.jsonl")])
    assert result.exit_code == 0, result.output
    assert "553 items" in result.output


def test_malformed_option_pairs_are_refused():
    from reca_eval.cli.common import parse_options

    assert parse_options(["images_per_prompt=2", "judge=openai", "x=a=b"]) == {
        "images_per_prompt": "2",
        "judge": "openai",
        "x": "a=b",
    }
    result = runner.invoke(app, ["run", "shapes-geneval", "--images", ".", "-o", "no-equals-sign"])
    assert result.exit_code == EXIT_BAD_INPUT and "KEY=VALUE" in result.output
    twice = runner.invoke(
        app, ["run", "shapes-geneval", "--images", ".", "-o", "resolution=64", "-o", "resolution=32"]
    )
    assert twice.exit_code == EXIT_BAD_INPUT and "twice" in twice.output


# Defect 5: `-o` options are declared per benchmark (benchmark.yaml) and checked before anything runs.
@pytest.mark.parametrize("value", ["-5", "0", "100000", "null", "[64]", "abc", "nan", "1e999", "64.5", ""])
def test_a_bad_option_value_exits_2_naming_the_option(reference_dirs, tmp_path, value):
    result = runner.invoke(
        app,
        ["run", "shapes-geneval", "--images", str(reference_dirs["shapes-geneval"]), "--results", str(tmp_path),
         "-o", f"resolution={value}"],
    )  # fmt: skip
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert "option resolution takes int in [8, 4096]" in result.output and repr(value) in result.output
    assert not (tmp_path / "runs").exists()  # refused before anything was written
    checked = runner.invoke(app, ["validate", "shapes-geneval", "-o", f"resolution={value}"])
    assert checked.exit_code == EXIT_BAD_INPUT and "option resolution" in checked.output


@pytest.mark.parametrize(
    "name, args",
    [
        ("shapes-geneval", ["-o", "devcie=cuda"]),
        ("geneval", ["-o", "devcie=cuda"]),
        ("dpg", ["-o", "vqa_modle=gpt-4.1-2025-04-14"]),
        ("gedit-en", ["-o", "judge_modle=x"]),
        ("shapes-geneval", ["--mode", "fixed"]),  # --mode is the option `mode`, which shapes-geneval lacks
    ],
)
def test_an_unknown_option_exits_2_listing_the_valid_ones(tmp_path, name, args):
    result = runner.invoke(app, ["run", name, "--images", str(tmp_path), "--results", str(tmp_path), *args])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert "has no option" in result.output and "progress" in result.output
    assert not (tmp_path / "runs").exists()


def test_option_values_get_their_declared_types(reference_dirs, tmp_path):
    record = run_json(
        ["run", "shapes-geneval", "--images", str(reference_dirs["shapes-geneval"]), "--results", str(tmp_path),
         "-o", "resolution=64", "-o", "progress=false"]
    )  # fmt: skip
    assert record["options"]["resolution"] == 64 and record["options"]["progress"] is False
    assert record["scores"]["overall"] == 1.0
    from reca_eval import registry
    from reca_eval.core.spec import OptionError, check_options

    geneval = registry.spec("geneval")
    assert check_options(geneval, {"device": "cuda:1", "images_per_prompt": "12"}) == {
        "device": "cuda:1",
        "images_per_prompt": 12,
    }
    for bad in ({"device": "gpu"}, {"detector_arch": "swin-l"}, {"images_per_prompt": 2.5}, {"device": None}):
        with pytest.raises(OptionError):
            check_options(geneval, bad)


def test_every_option_an_implementation_reads_is_declared():
    """The keys each scorer reads (``options.get("KEY"`` / ``options["KEY"]``) are declared by every
    benchmark built on it, so no key a scorer honours is refused and none is left undocumented."""
    import re

    from reca_eval import registry
    from reca_eval.core.spec import declared_options

    root = Path(__file__).resolve().parents[1] / "reca_eval"
    read = re.compile(r"""options(?:\.get\(|\[)["']([a-z_]+)["']""")
    scorers = {
        "reca_eval.benchmarks.geneval.benchmark:build": ["benchmarks/geneval/benchmark.py"],
        "reca_eval.benchmarks.dpg.benchmark:build": ["benchmarks/dpg/benchmark.py", "scorers/vqa.py"],
        "reca_eval.benchmarks.edit.benchmark:build_imgedit": ["benchmarks/edit/benchmark.py"],
        "reca_eval.benchmarks.edit.benchmark:build_gedit": ["benchmarks/edit/benchmark.py"],
    }
    shapes = {"build_geneval": {"resolution", "images_per_prompt", "progress"},
              "build_dpg": {"resolution", "images_per_prompt", "progress", "mode"},
              "build_edit": {"resolution", "images_per_prompt", "progress"}}  # fmt: skip
    seen = set()
    for name in registry.specs():
        spec = registry.spec(name)
        declared = set(declared_options(spec))
        if spec.implementation in scorers:
            keys = {k for f in scorers[spec.implementation] for k in read.findall((root / f).read_text())}
        else:
            keys = shapes[spec.implementation.rsplit(":", 1)[1]]
            assert set().union(*shapes.values()) >= set(
                read.findall((root / "benchmarks/shapes/benchmark.py").read_text())
            )
        assert keys <= declared, f"{name}: reads undeclared option(s) {sorted(keys - declared)}"
        seen.add(spec.implementation)
    assert seen >= set(scorers)


def test_list_name_shows_the_declared_options():
    result = runner.invoke(app, ["list", "geneval"])
    assert result.exit_code == 0, result.output
    for text in ("-o device", "auto | cpu | cuda", "-o detector_arch", "swin-s | tiny", "-o progress"):
        assert text in result.output


def test_record_keeps_callable_options_by_name():
    from reca_eval.evaluation.score import record_options

    def my_vqa(image, questions):
        return ["yes"] * len(questions)

    assert record_options({"vqa": my_vqa, "mode": "fixed", "n": 2}) == {
        "vqa": "my_vqa",
        "mode": "fixed",
        "n": 2,
    }


@pytest.mark.parametrize(
    "option, value", [("--bottleneck-size", "-1"), ("--caption-mode", "terse"), ("--instructions", "-3")]
)
def test_experiment_refuses_a_bad_budget_before_training(tmp_path, option, value):
    pytest.importorskip("torch")
    result = CliRunner().invoke(
        app, ["experiment", "--families", "janus", option, value, "--results", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert option in result.output
    assert not (tmp_path / "train").exists()


def test_a_folder_laid_out_for_another_benchmark_is_refused_before_writing(reference_dirs, tmp_path):
    """Issue 13, defect 4: such a folder used to write a NaN record and a "—" row, and exit 3."""
    results = tmp_path / "results"
    wrong_benchmark = runner.invoke(
        app,
        ["run", "shapes-dpg", "--images", str(reference_dirs["shapes-geneval"]), "--results", str(results)],
    )
    assert wrong_benchmark.exit_code == EXIT_BAD_INPUT, wrong_benchmark.output
    assert "not laid out as dpg" in wrong_benchmark.output.replace("\n", "")
    one_item = runner.invoke(
        app,
        [
            "run",
            "shapes-geneval",
            "--images",
            str(reference_dirs["shapes-geneval"] / "00000"),
            "--results",
            str(results),
        ],
    )
    assert one_item.exit_code == EXIT_BAD_INPUT, one_item.output
    assert "not laid out as geneval" in one_item.output.replace("\n", "")
    assert not results.exists()


def test_run_ckpt_resumes_a_killed_run_in_its_own_folder(reference_dirs, tmp_path, monkeypatch):
    """A killed `run --ckpt` continues in its own folder with --resume, keeping the finished images, and
    only with the settings that made them."""
    import reca_eval.evaluation.generate as generate

    items = tmp_path / "items.jsonl"
    lines = (
        (Path(__file__).parents[1] / "benchmarks" / "shapes-geneval" / "items.jsonl").read_text().splitlines()
    )
    items.write_text("\n".join(lines[:4]) + "\n")
    refs = tmp_path / "refs"
    write_reference_folder("shapes-geneval", refs, items_path=items)
    calls = []

    def fake_generate(bench, items_, ckpt, out_dir, kill_after=None, **settings):
        bench.prepare_layout(items_, out_dir)
        kept = written = 0
        for png in sorted(refs.rglob("*.png")):
            target = out_dir / png.relative_to(refs)
            if target.exists():
                kept += 1
                continue
            if kill_after is not None and written == kill_after:
                calls.append((out_dir, kept, written))
                raise KeyboardInterrupt
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(png, target)
            written += 1
        calls.append((out_dir, kept, written))
        return [0]

    base = Path(__file__).parents[1] / "reca_eval" / "assets" / "shapeworld-base"  # a real config.json
    args = ["run", "shapes-geneval", "--ckpt", str(base), "--items", str(items), "--label", "mine"]
    args += ["--results", str(tmp_path / "results")]
    monkeypatch.setattr(generate, "generate_for_benchmark", lambda *a, **k: fake_generate(*a, kill_after=5))
    killed = runner.invoke(app, args)
    assert killed.exit_code != 0 and len(calls) == 1
    monkeypatch.setattr(generate, "generate_for_benchmark", fake_generate)
    # Images kept from the killed run were made with seed 0 on all four items: another seed or
    # subset would score them as answers to other prompts, so the folder is refused before generating.
    for other in (["--seed", "7"], ["--limit", "2"], ["--cfg", "2"]):
        refused = runner.invoke(app, [*args, "--resume", *other])
        assert refused.exit_code == 2 and "other settings" in refused.output, refused.output
        assert len(calls) == 1
    resumed = runner.invoke(app, [*args, "--resume", "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert calls[1][0] == calls[0][0]  # the same run folder
    assert calls[1][1] == 5 and calls[1][2] == 16 - 5  # the five finished images were kept
    record = json.loads(resumed.stdout)
    assert record["scores"]["overall"] == 1.0 and calls[0][0].parent.name == record["run_id"]
    # With nothing left unfinished, --resume starts a new run; --run-dir names one.
    again = runner.invoke(app, [*args, "--resume", "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["run_id"] != record["run_id"]
    named = runner.invoke(app, [*args, "--run-dir", str(tmp_path / "my-run"), "--json"])
    assert named.exit_code == 0 and json.loads(named.stdout)["run_id"] == "my-run"
    bad = runner.invoke(app, ["run", "shapes-geneval", "--images", str(refs), "--resume"])
    assert bad.exit_code == EXIT_BAD_INPUT


def test_list_name_shows_one_benchmark_with_its_tolerance_and_sources():
    result = runner.invoke(app, ["list", "geneval"])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "check tolerance" in text and "0.01" in text and "Mask2Former + CLIP" in text
    assert "source geneval/evaluation_metadata.jsonl" in text and "sha256 5c48e0813e81" in text
    shipped = runner.invoke(app, ["list", "shapes-dpg"])
    assert shipped.exit_code == 0 and "check tolerance" in shipped.output
    unknown = runner.invoke(app, ["list", "no-such-bench"])
    assert unknown.exit_code == EXIT_BAD_INPUT and "unknown benchmark" in unknown.output
