"""Floors beside ceilings: a prompt-blind folder scores at the floor, exact references at the full score,
and the tokenizer floor and ceiling go through the model's own tokenizer."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("transformers")

from reca_eval.diagnostics.floors import (  # noqa: E402
    FULL_SCORES,
    Bounds,
    SeededRuns,
    benchmark_bounds,
    prediction_interval,
)
from reca_eval.evaluation import score as evaluate  # noqa: E402
from reca_eval.evaluation.references import write_prompt_blind_folder, write_reference_folder  # noqa: E402
from reca_eval.experiments.runner import subset_items  # noqa: E402
from tests.test_tokenizer_ceiling import DarkeningTokenizer, IdentityTokenizer  # noqa: E402


@pytest.mark.parametrize("name", ["shapes-geneval", "shapes-dpg"])
def test_a_prompt_blind_folder_scores_at_the_floor_and_references_at_the_full_score(tmp_path, name):
    items = subset_items(name, 12, tmp_path)
    bounds = benchmark_bounds(name, results_dir=tmp_path / "bounds", seeds=(0, 1, 2), items_path=items)
    assert bounds.tokenizer_floor is None and bounds.ceiling is None
    assert bounds.ceiling_score() == FULL_SCORES[name]
    assert len(bounds.floor.outcomes) == 3 and len({o.run_dir for o in bounds.floor.outcomes}) == 3
    # a prompt-blind folder written and scored as `reca-eval run --images` would: the floor's own figure
    write_prompt_blind_folder(name, tmp_path / "blind", seed=1, items_path=items)
    blind = evaluate.score_images(
        name,
        tmp_path / "blind",
        items_path=items,
        options={"resolution": 32, "progress": False},
        results_dir=tmp_path / "runs",
    )
    assert blind.record.scores == bounds.floor.outcomes[1].record.scores
    assert bounds.floor.values()[1] == blind.record.scores["overall"]
    low, high = bounds.floor_interval()
    assert low <= bounds.floor_mean() <= high and bounds.within_floor(blind.record.scores["overall"])
    assert bounds.floor_mean() < 0.5 * FULL_SCORES[name]  # chance is far below a perfect generator
    assert bounds.normalise(bounds.floor_mean()) == pytest.approx(0.0)
    # exact references score the full score, normalised 1.0
    write_reference_folder(name, tmp_path / "refs", items_path=items)
    exact = evaluate.score_images(
        name, tmp_path / "refs", items_path=items, options={"progress": False}, results_dir=tmp_path / "runs"
    )
    assert exact.record.scores["overall"] == pytest.approx(FULL_SCORES[name])
    assert bounds.normalise(exact.record.scores["overall"]) == pytest.approx(1.0)
    assert not bounds.within_floor(exact.record.scores["overall"])


def test_prompt_blind_images_are_seeded_and_ignore_the_prompt(tmp_path):
    items = subset_items("shapes-dpg", 3, tmp_path)
    for folder, seed in (("a", 0), ("b", 0), ("c", 1)):
        write_prompt_blind_folder("shapes-dpg", tmp_path / folder, seed=seed, items_path=items)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) == 12
    same = [(tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files]
    other = [(tmp_path / "a" / f).read_bytes() == (tmp_path / "c" / f).read_bytes() for f in files]
    assert all(same) and not all(other)
    assert len({(tmp_path / "a" / f).read_bytes() for f in files}) > 1  # independent scenes per image


def test_the_tokenizer_floor_and_ceiling_go_through_the_model(tmp_path):
    items = subset_items("shapes-dpg", 6, tmp_path)
    lossless = benchmark_bounds(
        "shapes-dpg", results_dir=tmp_path, seeds=(0, 1), items_path=items, model=IdentityTokenizer()
    )
    # a lossless tokenizer changes nothing
    assert lossless.tokenizer_floor.values() == lossless.floor.values()
    assert lossless.ceiling_score() == pytest.approx(100.0)
    assert lossless.arm_floor is lossless.tokenizer_floor
    dark = benchmark_bounds(
        "shapes-dpg", results_dir=tmp_path, seeds=(0,), items_path=items, model=DarkeningTokenizer()
    )
    assert dark.ceiling_score() < 50.0
    # every black image answers alike whatever the scene: no spread
    assert dark.floor_interval() == (dark.floor_mean(), dark.floor_mean())
    summary = lossless.summary()
    assert summary["seeds"] == [0, 1] and "tokenizer_floor" in summary and "ceiling" in summary


def test_prediction_interval_and_normalisation():
    assert prediction_interval([1.0]) == (1.0, 1.0)
    low, high = prediction_interval([1.0, 2.0, 3.0])
    assert low < 2.0 < high and high - 2.0 == pytest.approx(2.0 - low)
    # t(2) 97.5% = 4.303; sd 1; sqrt(1 + 1/3)
    assert high - 2.0 == pytest.approx(4.3027 * math.sqrt(4 / 3), rel=1e-3)
    assert all(math.isnan(v) for v in prediction_interval([]))
    empty = Bounds("shapes-geneval", 1.0, SeededRuns("x", (0,), []))
    assert math.isnan(empty.normalise(0.5))


def test_one_run_interval_is_the_spread_of_one_run_of_a_prompt_blind_generator():
    import numpy as np
    import pandas as pd

    from reca_eval.benchmarks.geneval import rules as geneval
    from reca_eval.diagnostics.floors import one_run_interval

    # 200 items x 4 images per run, each image right with probability 0.3 whatever the item: one run's
    # score has sd sqrt(0.3 * 0.7 / 800) = 0.0162, so its 95% interval is about 0.3 ± 0.032
    rng = np.random.default_rng(0)
    seeds = [
        pd.DataFrame(
            {
                "item_id": [f"{i:05d}" for i in range(200) for _ in range(4)],
                "sample": [k for _ in range(200) for k in range(4)],
                "category": "single_object",
                "score": (rng.random(800) < 0.3).astype(float),
            }
        )
        for _ in range(3)
    ]
    low, high = one_run_interval(seeds, geneval.aggregate, 4, n_boot=300)["overall"]
    assert 0.02 < (high - low) / 2 < 0.045 and low < 0.3 < high
    assert one_run_interval([], geneval.aggregate, 4) == {}


def test_question_chance_splits_the_dpg_floor_by_question_type(tmp_path):
    from reca_eval.diagnostics.floors import question_chance

    items = subset_items("shapes-dpg", 10, tmp_path)
    bounds = benchmark_bounds("shapes-dpg", results_dir=tmp_path, seeds=(0, 1), items_path=items)
    table = question_chance([o.rows for o in bounds.floor.outcomes])
    assert table.attrs["overall"] == pytest.approx(bounds.floor_mean())  # the record's own overall
    assert table["points of the overall"].sum() == pytest.approx(bounds.floor_mean())
    assert table["share of questions"].sum() == pytest.approx(1.0)
    assert "entity/whole" in table.index and (table["gated accuracy"] <= table["raw accuracy"] + 1e-12).all()
    with pytest.raises(ValueError, match="per-question rows"):
        question_chance([bounds.floor.outcomes[0].rows.drop(columns=["raw"])])


def test_identical_images_go_through_the_tokenizer_once(tmp_path):
    class Counting(IdentityTokenizer):
        seen = 0

        def generation_targets(self, pixels):
            Counting.seen += len(pixels)
            return pixels

    items = subset_items("shapes-dpg", 3, tmp_path)
    model, memo = Counting(), {}
    dpg = benchmark_bounds(
        "shapes-dpg", results_dir=tmp_path, seeds=(0,), items_path=items, model=model, memo=memo
    )
    # 12 distinct prompt-blind scenes + 3 references (drawn 4 times each, identical)
    assert Counting.seen == 12 + 3 and dpg.ceiling_score() == pytest.approx(100.0)
    geneval = subset_items("shapes-geneval", 6, tmp_path)
    benchmark_bounds(
        "shapes-geneval",
        results_dir=tmp_path,
        seeds=(0,),
        items_path=geneval,
        model=model,
        memo=memo,
        ceiling=False,
    )
    assert Counting.seen == 15 + 24 - 12  # image j of seed 0 is the same scene on both benchmarks


def test_cli_floor_scores_prompt_blind_seeds_and_splits_dpg_by_question(tmp_path):
    import json

    from typer.testing import CliRunner

    from reca_eval.cli import app

    items = subset_items("shapes-dpg", 4, tmp_path)
    args = ["diagnose", "floor", "-b", "shapes-dpg", "--items", str(items), "--seeds", "0,1"]
    result = CliRunner().invoke(app, [*args, "--questions", "--json", "--results", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["shapes-dpg"]["seeds"] == [0, 1] and len(summary["shapes-dpg"]["floor"]["per_seed"]) == 2
    assert "entity/whole" in result.output
    bad = CliRunner().invoke(app, ["diagnose", "floor", "--ckpt", str(tmp_path / "nope")])
    assert bad.exit_code == 2 and "nope" in bad.output
    two = CliRunner().invoke(app, ["diagnose", "floor", "--items", str(items)])
    assert two.exit_code == 2


def test_a_second_tokenizer_reads_the_floor_already_drawn(tmp_path):
    """A second model's bounds on the same items and seeds reuse the floor as drawn (its runs and
    images), and score only their own tokenizer's rows; other seeds are refused."""
    items = subset_items("shapes-dpg", 4, tmp_path)
    first = benchmark_bounds(
        "shapes-dpg", results_dir=tmp_path / "a", seeds=(0, 1), items_path=items, model=IdentityTokenizer()
    )
    second = benchmark_bounds(
        "shapes-dpg",
        results_dir=tmp_path / "b",
        seeds=(0, 1),
        items_path=items,
        model=DarkeningTokenizer(),
        drawn=first.floor,
    )
    assert second.floor is first.floor
    assert len(list((tmp_path / "b").rglob("record.json"))) == 2 + 1  # 2 tokenizer floors + the ceiling
    assert second.tokenizer_floor.values() != first.tokenizer_floor.values()
    fresh = benchmark_bounds(
        "shapes-dpg", results_dir=tmp_path / "c", seeds=(0, 1), items_path=items, model=DarkeningTokenizer()
    )
    assert second.tokenizer_floor.values() == fresh.tokenizer_floor.values()
    with pytest.raises(ValueError, match="seeds"):
        benchmark_bounds(
            "shapes-dpg", results_dir=tmp_path / "d", seeds=(0,), items_path=items, drawn=first.floor
        )
