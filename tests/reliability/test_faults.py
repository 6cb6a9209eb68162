"""Faults: a run killed with SIGKILL at each point of writing its results, and runs into one results folder
at the same time. Whatever happens, the results folder stays usable: every visible run folder holds a
complete record, the leaderboard command succeeds and lists every recorded run, and the next run works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reca_eval.core.records import read_run
from tests.reliability.corpus import REPO, item_path

KILL_POINTS = (
    "image:2",  # mid-scoring (the second of two images)
    "replace:per_image.jsonl",  # writing the per-image file (inside the staging folder)
    "replace:record.json",  # writing the record (inside the staging folder)
    "replace:-shapes-edit-",  # renaming the staged run folder into place
    "replace:leaderboard.csv",  # rebuilding the leaderboard, first file
    "replace:leaderboard.json",  # rebuilding the leaderboard, second file
)


def reca(args: list[str], point: str = "none", cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "tests.reliability.killer", point, *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env=env,
        timeout=300,
    )


def run_args(base: Path, results: Path, label: str) -> list[str]:
    return [
        "run", "shapes-edit", "--images", str(base / "images" / "shapes-edit"),
        "--items", str(item_path(base, "shapes-edit")), "--results", str(results), "--label", label,
        "-o", "progress=false",
    ]  # fmt: skip


def check_usable(results: Path) -> list[str]:
    """Every visible run folder complete and readable; `leaderboard -f json` lists every one of them."""
    runs = (
        sorted(p for p in (results / "runs").iterdir() if not p.name.startswith("."))
        if (results / "runs").exists()
        else []
    )
    for run in runs:
        assert (run / "record.json").is_file(), f"{run} has no record"
        assert not list(run.glob(".per_image.jsonl.*")), f"{run} holds a temp file"
        read_run(run)
    out = reca(["leaderboard", "--results", str(results), "-f", "json"])
    if not runs:
        assert out.returncode == 2 and "no result records" in out.stderr, out.stderr
        return []
    assert out.returncode == 0, out.stderr
    listed = {row["run_id"] for t in json.loads(out.stdout)["tables"] for row in t["rows"]}
    saved = json.loads((results / "leaderboard.json").read_text())  # rebuilt when stale
    assert {row["run_id"] for t in saved["tables"] for row in t["rows"]} == listed
    return sorted(listed)


@pytest.mark.parametrize("point", KILL_POINTS)
def test_kill_9_leaves_a_usable_results_folder(point, corpus_base, tmp_path):
    results = tmp_path / "results"
    first = reca(run_args(corpus_base, results, "first"))
    assert first.returncode == 0, first.stderr
    killed = reca(run_args(corpus_base, results, "killed"), point)
    assert killed.returncode == -9, (point, killed.returncode, killed.stderr[-2000:])
    listed = check_usable(results)
    assert len(listed) in (1, 2)  # the killed run is there complete, or not at all
    after = reca(run_args(corpus_base, results, "after"))
    assert after.returncode == 0, after.stderr
    assert len(check_usable(results)) == len(listed) + 1


def test_concurrent_runs_all_recorded(corpus_base, tmp_path):
    results = tmp_path / "results"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.reliability.killer",
                "none",
                *run_args(corpus_base, results, f"c{i}"),
            ],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert len(check_usable(results)) == 4
