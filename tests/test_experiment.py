"""The experiment runner on a tiny Janus base: records for every arm x benchmark, the leaderboard, the
SFT vs SFT+RecA comparison, stage sharing; and the per-split and over-seeds aggregation on planted rows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from reca_eval import registry
from reca_eval.benchmarks.geneval import rules as geneval
from reca_eval.core.records import read_run
from reca_eval.evaluation.references import SHAPES_BENCHMARKS
from reca_eval.experiments.arms import MAIN_ARMS, SFT, SFT_RECA, Budget
from reca_eval.experiments.runner import (
    ExperimentPlan,
    FamilyPlan,
    item_splits,
    run_experiment,
    seed_summary,
    split_scores,
    subset_items,
)
from reca_eval.results.leaderboard import leaderboard_tables, load_runs, write_leaderboard


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    from reca_eval.training.builders import tiny_janus

    path = tmp_path_factory.mktemp("base") / "tiny-janus"
    tiny_janus(seed=0).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def main_experiment(tiny_base, tmp_path_factory):
    results = tmp_path_factory.mktemp("experiment")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # far faster than 2 on a CPU shared with other test processes
    plan = ExperimentPlan(
        [FamilyPlan(tiny_base, MAIN_ARMS)],
        results=results,
        budget=Budget(sft_steps=3, reca_steps=3, batch_size=2, warmup_steps=0),
        items_per_benchmark=2,
        generation_batch_size=16,
        n_boot=20,
        probe_scenes=24,
    )
    try:
        return run_experiment(plan)
    finally:
        torch.set_num_threads(threads)


def test_every_arm_is_scored_on_every_benchmark_with_its_label(main_experiment):
    result = main_experiment
    assert [run.arm for run in result.arm_runs] == list(MAIN_ARMS)
    records = load_runs(result.plan.results)
    editors = [r.label for r in result.reference_runs]
    # the floor of shapes-edit, beside the arms: three drawn editors and the copier through the base's VQ
    assert editors == ["identity editor", "blank editor", "drop-one editor", "copier through janus VQ"]
    assert len(records) == len(MAIN_ARMS) * len(SHAPES_BENCHMARKS) + len(editors)
    seen = {(rec.label, rec.benchmark) for rec, _ in records}
    assert seen == {(arm, bench) for arm in MAIN_ARMS for bench in SHAPES_BENCHMARKS} | {
        (e, "shapes-edit") for e in editors
    }
    for run in result.reference_runs:
        edit = run.scores["shapes-edit"]
        assert edit["overall"] == 0.0 and edit["SC"] == 0.0 and edit["imgedit_micro"] == 1.0
        assert edit["pairs/same_image"] == 1.0 and edit["pairs/unpaired"] == 0.0  # the subset kept a pair
    for rec, path in records:
        assert rec.options["items_per_benchmark"] == 2  # the subset is said in every record
        assert rec.images_scored == 2 * registry.get(rec.benchmark).images_per_prompt
        assert (path / "images").is_dir()
    # the base is scored from the base folder itself; trained arms from their own final/ folders
    by_arm = {run.arm: run for run in result.arm_runs}
    assert by_arm["base"].checkpoint == result.plan.families[0].base
    assert len({run.checkpoint for run in result.arm_runs}) == len(MAIN_ARMS)


def test_every_checkpoint_gets_the_alignment_probe_and_the_report_a_table(main_experiment):
    from reca_eval.experiments.report import alignment_table

    for run in main_experiment.arm_runs:
        assert set(run.alignment) == {"within", "cross", "chance", "transfer"}
        assert all(0.0 <= run.alignment[k] <= 1.0 for k in ("within", "cross", "chance"))
    summary = json.loads((main_experiment.plan.results / "experiment.json").read_text())
    assert [r["alignment"] for r in summary["arm_runs"]] == [r.alignment for r in main_experiment.arm_runs]
    table = alignment_table(main_experiment)
    assert list(table.index) == [r.arm for r in main_experiment.arm_runs]
    assert (
        table.loc["base", "within-modality accuracy"]
        == f"{main_experiment.arm_runs[0].alignment['within']:.3f}"
    )


def test_stages_are_shared_and_losses_recorded(main_experiment):
    by_arm = {run.arm: run for run in main_experiment.arm_runs}
    sft_stage = by_arm[SFT].stages[0]
    assert not sft_stage.reused and len(sft_stage.losses) == 3
    # SFT+RecA and SFT-matched start from the very SFT checkpoint instead of training it again
    for arm in (SFT_RECA, "SFT-matched"):
        first, second = by_arm[arm].stages
        assert first.reused and first.checkpoint == sft_stage.checkpoint
        assert len(second.losses) == 3 and all(math.isfinite(v) for v in second.losses)
    assert by_arm[SFT_RECA].account.steps == by_arm["SFT-matched"].account.steps == 6
    assert by_arm["SFT-half"].account.steps == 2  # the T2I draws of a 6-step 2:1:1 mix at seed 0
    summary = json.loads((main_experiment.plan.results / "experiment.json").read_text())
    assert [r["arm"] for r in summary["arm_runs"]] == list(MAIN_ARMS)


def test_leaderboard_and_compare_of_sft_vs_sft_reca(main_experiment):
    results = main_experiment.plan.results
    csv_path, _ = write_leaderboard(results)
    board = pd.read_csv(csv_path)
    assert set(board["benchmark"]) == set(SHAPES_BENCHMARKS)
    tables = leaderboard_tables([rec for rec, _ in load_runs(results)])
    # shapes-edit tables also hold the four instruction-blind reference editors
    assert all(len(t.frame) == len(MAIN_ARMS) + 4 * (t.benchmark == "shapes-edit") for t in tables)
    comparisons = main_experiment.comparisons
    assert [c.record_a.benchmark for _, c in comparisons] == list(SHAPES_BENCHMARKS)
    by_arm = {run.arm: run for run in main_experiment.arm_runs}
    for _, comp in comparisons:
        bench = comp.record_a.benchmark
        # A is the SFT arm's run and B the SFT+RecA arm's run of this benchmark, read from their folders.
        assert (comp.path_a, comp.path_b) == (by_arm[SFT].runs[bench], by_arm[SFT_RECA].runs[bench])
        (record_a, rows_a), (record_b, rows_b) = read_run(comp.path_a), read_run(comp.path_b)
        assert (record_a.label, record_b.label) == (SFT, SFT_RECA)
        # Every category's A and B are the scores the two records hold, and what the benchmark's own
        # aggregate gives on the per-image rows beside them; every row pairs.
        aggregate = registry.get(bench).aggregate
        for key, d in comp.deltas.items():
            assert (d.a, d.b) == pytest.approx((record_a.scores[key], record_b.scores[key]), nan_ok=True), key
        assert comp.deltas["overall"].a == pytest.approx(aggregate(rows_a, None)["overall"])
        assert comp.deltas["overall"].b == pytest.approx(aggregate(rows_b, None)["overall"])
        assert comp.n_pairs == len(rows_a) == len(rows_b) and comp.unmatched == (0, 0)
        expected = _overall(main_experiment, SFT_RECA, bench) - _overall(main_experiment, SFT, bench)
        assert comp.deltas["overall"].delta == pytest.approx(expected)


def _overall(result, arm: str, bench: str) -> float:
    return next(r for r in result.arm_runs if r.arm == arm).scores[bench]["overall"]


def test_split_scores_join_rows_with_their_items(main_experiment):
    for run in main_experiment.arm_runs:
        for bench, values in run.split_scores.items():
            splits = item_splits(bench, main_experiment.items_paths[bench])
            assert set(values) == set(splits.values())


def test_per_split_aggregation_on_planted_rows():
    splits = {"00000": "typical", "00001": "typical", "00002": "rare", "00003": "unrendered"}
    rows = pd.DataFrame(
        [
            # typical: single_object 1.0 (both samples), colors 0.0 -> GenEval's mean over tasks = 0.5
            {"item_id": "00000", "sample": 0, "category": "single_object", "score": 1.0},
            {"item_id": "00000", "sample": 1, "category": "single_object", "score": 1.0},
            {"item_id": "00001", "sample": 0, "category": "colors", "score": 0.0},
            # rare: one task, 1 of 4 correct
            *[
                {"item_id": "00002", "sample": k, "category": "colors", "score": float(k == 0)}
                for k in range(4)
            ],
            # unrendered: all wrong
            {"item_id": "00003", "sample": 0, "category": "color_attr", "score": 0.0},
        ]
    )
    scores = split_scores(rows, splits, geneval.aggregate)
    assert list(scores) == ["typical", "rare", "unrendered"]  # in the splits' held-out order
    assert scores == {"typical": pytest.approx(0.5), "rare": pytest.approx(0.25), "unrendered": 0.0}
    with pytest.raises(ValueError, match="not in the item file"):
        split_scores(rows.assign(item_id="00009"), splits, geneval.aggregate)


def test_mean_and_std_over_seeds_on_planted_scores():
    frame = pd.DataFrame(
        [
            {"arm": "SFT", "seed": s, "benchmark": "b", "kind": "split", "key": "rare", "value": v}
            for s, v in enumerate([0.2, 0.4, 0.6])
        ]
        + [{"arm": "base", "seed": 0, "benchmark": "b", "kind": "split", "key": "rare", "value": 0.1}]
    )
    summary = seed_summary(frame).set_index("arm")
    assert summary.loc["SFT", "mean"] == pytest.approx(0.4)
    assert summary.loc["SFT", "std"] == pytest.approx(0.2)  # sample std (ddof=1)
    assert summary.loc["SFT", "n"] == 3
    assert summary.loc["base", "n"] == 1 and math.isnan(summary.loc["base", "std"])


def test_item_splits_cover_every_benchmark_item_and_subsets_keep_categories(tmp_path):
    for name in SHAPES_BENCHMARKS:
        bench = registry.get(name)
        full = item_splits(name, bench.default_items())
        assert len(full) == len(bench.load_items(bench.default_items()))
        assert {"rare", "uncaptioned", "unrendered"} <= set(full.values())
        path = subset_items(name, 12, tmp_path)
        items = bench.load_items(path)
        assert len(items) == 12
        if name == "shapes-geneval":  # evenly spaced over a file sorted by task: several tasks kept
            assert len({item["tag"] for item in items}) >= 5


def test_missing_base_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        run_experiment(ExperimentPlan([FamilyPlan(tmp_path / "nowhere")], results=tmp_path / "r"))


def test_train_command_trains_a_recipe_then_scores_and_shows_the_leaderboard(tmp_path):
    from typer.testing import CliRunner

    from reca_eval.cli import app
    from tests.toy_model import make_image_folder

    images = make_image_folder(tmp_path / "captioned", 4, size=32)
    overrides = [
        f"data.sources.0.path={images}",
        "data.cache_dir=",
        "data.num_workers=0",
        f"train.output_dir={tmp_path / 'run'}",
        "train.steps=2",
        "train.batch_size=2",
        "train.warmup_steps=0",
        "train.logger=none",
        "train.progress=false",
    ]
    args = ["train", "trainers/recipes/sft.yaml", *overrides, "--score", "shapes-edit"]
    args += ["--label", "tiny-sft", "--results", str(tmp_path / "results")]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = CliRunner().invoke(app, args)
    finally:
        torch.set_num_threads(threads)
    assert out.exit_code == 0, out.output
    assert "trained 2 steps" in out.output and "tiny-sft" in out.output
    (record, _), *_ = load_runs(tmp_path / "results")
    assert record.label == "tiny-sft" and record.benchmark == "shapes-edit"
    assert record.model == str(tmp_path / "run" / "final")
    bad = CliRunner().invoke(app, ["train", "trainers/recipes/sft.yaml", "train.stepz=2"])
    assert bad.exit_code == 2 and "train.stepz" in bad.output


def test_a_changed_base_never_reuses_stages_trained_from_the_old_one(tmp_path):
    from reca_eval.experiments.runner import checkpoint_fingerprint
    from reca_eval.training.builders import tiny_janus

    tiny_janus(seed=0).save_pretrained(tmp_path / "a")
    before = checkpoint_fingerprint(tmp_path / "a")
    assert checkpoint_fingerprint(tmp_path / "a") == before
    tiny_janus(seed=1).save_pretrained(tmp_path / "a")  # new weights, same folder
    assert checkpoint_fingerprint(tmp_path / "a") != before
