"""The notebook API (issue 13): score, compare, check and load_runs return pandas frames."""

from __future__ import annotations

import pandas as pd

import reca_eval.api as reca
from reca_eval.evaluation.references import write_reference_folder
from tests.test_check_gate import drop_prompts
from tests.test_leaderboard import write
from tests.test_stats import make_rows


def test_score_then_load_runs_with_identity_columns(tmp_path):
    images = tmp_path / "refs"
    write_reference_folder("shapes-geneval", images)
    scores = reca.score("shapes-geneval", images=images, label="refs", results=tmp_path / "results")
    assert set(scores["category"]) >= {"overall", "counting"} and (scores["score"] == 1.0).all()
    assert (scores["label"] == "refs").all() and scores.attrs["run_dir"].exists()
    per_image = reca.load_runs(tmp_path / "results", per_image=True)
    assert list(per_image.columns[:3]) == ["run_id", "label", "benchmark"]
    assert (
        len(per_image) == len(scores.attrs["per_image"])
        and (per_image["benchmark"] == "shapes-geneval").all()
    )
    assert reca.load_runs(tmp_path / "results", label="nobody").empty


def test_compare_and_check_frames(tmp_path):
    rows = make_rows(n_prompts=30, seed=7)
    base = write(tmp_path, "base", rows, label="SFT")
    write(tmp_path, "run", drop_prompts(rows, "counting", 2), label="SFT+RecA")
    frame = reca.compare("SFT", "SFT+RecA", results=tmp_path, n_boot=100)
    counting = frame.set_index("category").loc["counting"]
    assert counting["delta"] == -0.2 and counting["low"] <= -0.2 and counting["benchmark"] == "geneval"
    gate = reca.check(base, "SFT+RecA", results=tmp_path, n_boot=100)
    assert not gate.attrs["passed"] and gate.set_index("category").loc["counting", "verdict"] == "FAIL: drop"
    lenient = reca.check(base, results=tmp_path, n_boot=100, significant=True)
    assert lenient.attrs["passed"] and isinstance(lenient, pd.DataFrame)
