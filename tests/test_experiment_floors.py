"""The floors and ceilings of the experiment's tables: the prompt-blind floor (as drawn and through the
base's tokenizer, over seeds) and the tokenizer ceiling sit beside the arms on shapes-geneval and
shapes-dpg, every arm gets a normalised score, and comparisons say when both arms sit at chance."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("transformers")

from reca_eval.diagnostics.floors import FLOOR_LABEL  # noqa: E402
from reca_eval.experiments.report import NORMALISED, bounds_tables, leaderboard_table, write_report  # noqa: E402
from reca_eval.experiments.runner import BOUNDS_DIR, FLOOR_BENCHMARKS  # noqa: E402
from reca_eval.results.leaderboard import load_runs  # noqa: E402
from tests import test_experiment as experiment_tests  # noqa: E402

# The experiment of tests/test_experiment.py (a tiny Janus base, every main arm), run once for this module.
tiny_base = experiment_tests.tiny_base
main_experiment = experiment_tests.main_experiment


def test_floor_and_ceiling_rows_beside_the_arms(main_experiment):
    result = main_experiment
    assert [b.benchmark for b in result.bounds] == list(FLOOR_BENCHMARKS)
    labels = [r.label for r in result.bound_runs]
    assert labels == [
        FLOOR_LABEL,
        "prompt-blind through janus VQ (floor)",
        "exact references through janus VQ (ceiling)",
    ]
    for bounds in result.bounds:
        assert bounds.floor.seeds == result.plan.floor_seeds == (0, 1, 2)
        assert len(bounds.tokenizer_floor.outcomes) == 3 and bounds.ceiling is not None
        for row in result.bound_runs:
            assert set(row.scores) == set(FLOOR_BENCHMARKS)
        floor_row = result.bound_runs[1]
        assert floor_row.scores[bounds.benchmark]["overall"] == pytest.approx(bounds.floor_mean())
        # the records are apart from the leaderboard's, each seed its own run
        runs = [o.run_dir for o in bounds.floor.outcomes + bounds.tokenizer_floor.outcomes]
        assert all(p.parent.parent == result.plan.results / BOUNDS_DIR for p in runs)
    assert all(rec.label not in labels for rec, _ in load_runs(result.plan.results))


def test_every_table_reads_the_arms_between_floor_and_ceiling(main_experiment, tmp_path):
    result = main_experiment
    for bench in FLOOR_BENCHMARKS:
        table = leaderboard_table(result, bench)
        assert list(table.columns[:2]) == ["overall", NORMALISED]
        assert table.index[-1].endswith("(ceiling)")
        bounds = result.bounds_for(bench, "janus")
        # The tiny random VQ may turn every image into noise that is no scene (floor = ceiling = 0):
        # then nothing can be normalised and every row says so.
        span = bounds.ceiling_score() - bounds.floor_mean()
        for run in result.arm_runs:
            want = (run.scores[bench]["overall"] - bounds.floor_mean()) / span if span > 0 else math.nan
            got = table.loc[run.label, NORMALISED]
            assert (math.isnan(want) and math.isnan(got)) or got == pytest.approx(want)
        floor_row = table.loc["prompt-blind through janus VQ (floor)", NORMALISED]
        assert floor_row == pytest.approx(0.0) if span > 0 else math.isnan(floor_row)
    assert "shapes-edit" not in {b.benchmark for b in result.bounds}
    assert NORMALISED not in leaderboard_table(result, "shapes-edit").columns
    assert len(bounds_tables(result)) == 2 * len(FLOOR_BENCHMARKS)
    md = write_report(result, tmp_path).markdown.read_text()
    assert "## Read between floor and ceiling" in md and "| prompt-blind (floor) |" in md
    summary = json.loads((result.plan.results / "experiment.json").read_text())
    assert [b["benchmark"] for b in summary["bounds"]] == list(FLOOR_BENCHMARKS)
    assert summary["floor_seeds"] == [0, 1, 2]


def test_comparisons_say_when_both_arms_sit_at_chance(main_experiment):
    result = main_experiment
    notes = result.chance_notes()
    blind = max(r.scores["shapes-edit"]["overall"] for r in result.reference_runs)
    for _, comp, note in notes:
        d = comp.deltas["overall"]
        if comp.record_a.benchmark == "shapes-edit":  # read against the instruction-blind editors
            assert max(d.a, d.b) <= blind and "instruction-blind" in note
            continue
        bounds = result.bounds_for(comp.record_a.benchmark, "janus")
        assert bounds.within_floor(d.a) and bounds.within_floor(d.b) and "chance" in note
    noted = {id(c) for _, c, _ in notes}
    for _, comp in result.comparisons:
        if comp.record_a.benchmark == "shapes-edit":
            d = comp.deltas["overall"]
            assert (id(comp) in noted) == (max(d.a, d.b) <= blind)
            continue
        bounds = result.bounds_for(comp.record_a.benchmark, "janus")
        if bounds is not None and id(comp) not in noted:
            d = comp.deltas["overall"]
            assert not (bounds.within_floor(d.a) and bounds.within_floor(d.b))
