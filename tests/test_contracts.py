"""Contracts a user relies on, asserted against what is documented rather than against the code's own
constants: the exit codes, runs that measured different things being refused, and run records that a
failure mid-write never leaves half written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from reca_eval.cli import app
from reca_eval.core.records import RunRecord, read_run, write_run
from reca_eval.results.leaderboard import check_regression, compare_runs
from tests.test_check_gate import drop_prompts
from tests.test_leaderboard import write
from tests.test_stats import make_rows

runner = CliRunner(env={"COLUMNS": "200"})
README = Path(__file__).resolve().parents[1] / "README.md"

# The exit codes as the README and `reca-eval --help` document them.
DOCUMENTED = {0: "success", 1: "regression", 2: "bad input", 3: "images skipped"}


def test_the_readme_documents_the_exit_codes_the_tests_assert():
    line = next(line for line in README.read_text().splitlines() if line.startswith("Exit codes:"))
    for code, meaning in DOCUMENTED.items():
        assert f"{code} {meaning}" in line, line


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, Path]:
    rows = make_rows(n_prompts=60, seed=3)
    return {
        "results": tmp_path,
        "base": write(tmp_path, "base", rows, label="base"),
        "same": write(tmp_path, "same", rows, label="same"),
        "drop": write(tmp_path, "drop", drop_prompts(rows, "counting", 4), label="drop"),
        "v2": write(tmp_path, "v2", rows, label="v2", spec_version="2.0"),
        "items": write(tmp_path, "items", rows, label="items", items_sha256="f" * 64),
        "other": write(tmp_path, "other", rows, label="other", benchmark="shapes-geneval"),
    }


def check(runs: dict[str, Path], run: str, *extra: str):
    return runner.invoke(
        app,
        ["check", "--baseline", str(runs["base"]), "--run", str(runs[run]), "--n-boot", "100", *extra],
    )


def test_check_exits_1_on_a_regression_and_0_without_one(runs):
    dropped = check(runs, "drop")
    assert dropped.exit_code == 1, dropped.output
    assert "REGRESSION geneval/counting" in dropped.output
    same = check(runs, "same")
    assert same.exit_code == 0, same.output
    assert "PASS" in same.output


@pytest.mark.parametrize(
    ("run", "named"),
    [("v2", "spec_version: '1.0' vs '2.0'"), ("items", "items_sha256"), ("other", "benchmark: 'geneval'")],
)
def test_runs_that_measured_different_things_are_refused(runs, run, named):
    with pytest.raises(ValueError, match="did not measure the same thing") as refused:
        compare_runs(runs["base"], runs[run], n_boot=10)
    assert named in str(refused.value)
    with pytest.raises(ValueError, match="did not measure the same thing"):
        check_regression(runs[run], runs["base"], n_boot=10)
    out = runner.invoke(app, ["compare", str(runs["base"]), str(runs[run]), "--n-boot", "10"])
    assert out.exit_code == 2, out.output
    assert out.output.startswith("error:") and "Traceback" not in out.output


def test_bad_input_exits_2_with_a_message(runs, tmp_path):
    missing = runner.invoke(app, ["compare", str(runs["base"]), str(tmp_path / "nowhere"), "--n-boot", "10"])
    assert missing.exit_code == 2 and "error:" in missing.output
    unknown = runner.invoke(app, ["validate", "no-such-benchmark"])
    assert unknown.exit_code == 2 and "unknown benchmark" in unknown.output


# ---------------------------------------------------------------------------------------------- records


def record(overall: float, run_id: str = "r") -> RunRecord:
    return RunRecord(
        benchmark="geneval",
        spec_version="1.0",
        items_sha256="0" * 64,
        model="/ckpt",
        scores={"overall": overall},
        images_scored=2,
        images_skipped=0,
        run_id=run_id,
    )


def rows(score: float) -> pd.DataFrame:
    return pd.DataFrame(
        [{"item_id": "0", "sample": s, "category": "counting", "score": score} for s in range(2)]
    )


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden temp files and folders included) with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class DiskFull(OSError):
    pass


def calls_in_a_write(monkeypatch, name: str, run_dir: Path) -> int:
    """How many times a rewrite of ``run_dir`` calls ``os.<name>``: every one of them is a place to fail."""
    real = getattr(os, name)
    calls = []

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, counting)
    write_run(run_dir, record(0.5), rows(0.5))
    monkeypatch.undo()
    return len(calls)


def fail_at(monkeypatch, name: str, at: int) -> dict[str, int]:
    """``os.<name>`` raising DiskFull on its call number ``at`` (0-based); earlier calls are real."""
    real = getattr(os, name)
    seen = {"n": 0}

    def fake(*args, **kwargs):
        seen["n"] += 1
        if seen["n"] > at:
            raise DiskFull(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, fake)
    return seen


def scores_in(path: Path) -> set[float]:
    return {json.loads(line)["score"] for line in path.read_text().splitlines()}


@pytest.mark.parametrize("name", ["replace", "fsync"])
def test_a_failure_mid_rewrite_leaves_the_old_record_intact_and_no_partial_file(tmp_path, monkeypatch, name):
    """os.replace or fsync failing at each of its calls during a rewrite of an existing run."""
    n_calls = calls_in_a_write(monkeypatch, name, tmp_path / "probe")
    assert n_calls >= 1, f"a run write that never calls os.{name} is not atomic and durable"
    for at in range(n_calls):
        root = tmp_path / f"fail-{at}"
        run_dir = root / "runs" / "r"
        write_run(run_dir, record(0.25), rows(0.25))
        before = tree(root)
        fail_at(monkeypatch, name, at)
        with pytest.raises(DiskFull):
            write_run(run_dir, record(0.75), rows(0.75))
        monkeypatch.undo()
        after = tree(root)
        assert set(after) == set(before), f"call {at}: files {set(after) ^ set(before)}"
        assert after["runs/r/record.json"] == before["runs/r/record.json"], f"call {at}"
        assert read_run(run_dir)[0].scores == {"overall": 0.25}
        # the rows beside it are complete: the old ones, or (record not yet replaced) the new ones
        assert scores_in(run_dir / "per_image.jsonl") in ({0.25}, {0.75}), f"call {at}"


@pytest.mark.parametrize("name", ["replace", "fsync"])
def test_a_failure_on_a_new_run_leaves_no_record_and_no_partial_file(tmp_path, monkeypatch, name):
    n_calls = calls_in_a_write(monkeypatch, name, tmp_path / "probe")
    for at in range(n_calls):
        root = tmp_path / f"fail-{at}"
        fail_at(monkeypatch, name, at)
        with pytest.raises(DiskFull):
            write_run(root / "runs" / "r", record(0.5), rows(0.5))
        monkeypatch.undo()
        files = tree(root) if root.exists() else {}
        assert "runs/r/record.json" not in files, f"call {at}"
        assert set(files) <= {"runs/r/per_image.jsonl"}, f"call {at}: {set(files)}"


def fail_the_per_image_file(monkeypatch) -> None:
    """The disk fails on the per-image file only: its fsync or its rename (whichever the writer reaches)."""
    real_fsync, real_replace = os.fsync, os.replace

    def names_rows(*paths) -> bool:
        return any("per_image" in os.fspath(p) for p in paths)

    def fsync(fd):
        if names_rows(os.readlink(f"/proc/self/fd/{fd}")):
            raise DiskFull(28, "No space left on device")
        return real_fsync(fd)

    def replace(src, dst, **kwargs):
        if names_rows(src, dst):
            raise DiskFull(28, "No space left on device")
        return real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names an fd's file through /proc")
def test_the_record_is_written_after_the_per_image_rows(tmp_path, monkeypatch):
    """A run whose per-image rows fail to be written has no record: a record means a complete run."""
    fail_the_per_image_file(monkeypatch)
    with pytest.raises(DiskFull):
        write_run(tmp_path / "runs" / "r", record(0.5), rows(0.5))
    assert not list(tmp_path.rglob("record.json"))
    # ... and an existing run keeps its old record and rows.
    monkeypatch.undo()
    run_dir = tmp_path / "runs" / "old"
    write_run(run_dir, record(0.25), rows(0.25))
    before = tree(run_dir)
    fail_the_per_image_file(monkeypatch)
    with pytest.raises(DiskFull):
        write_run(run_dir, record(0.75), rows(0.75))
    monkeypatch.undo()
    assert tree(run_dir) == before


def test_a_record_names_its_benchmark_version_and_scores_after_a_round_trip(tmp_path):
    run_dir = tmp_path / "runs" / "r"
    path = write_run(run_dir, record(0.5, run_id="abc"), rows(0.5))
    data = json.loads(path.read_text())
    assert (data["benchmark"], data["spec_version"], data["run_id"]) == ("geneval", "1.0", "abc")
    back, back_rows = read_run(run_dir)
    assert back == record(0.5, run_id="abc")
    pd.testing.assert_frame_equal(back_rows, rows(0.5), check_dtype=False)
