"""The project's own score gate: committed baselines of the shipped base, the gate passing on them
with real generation (so `nox -s tests`, what CI runs, runs the gate), and failing on a planted drop
(the scoring step replaced by copies of the baseline run, with and without a drop)."""

from __future__ import annotations

import io

from rich.console import Console
from typer.testing import CliRunner

from reca_eval import registry
from reca_eval.cli import app
from reca_eval.core.records import read_run, sha256_file, write_run
from reca_eval.experiments import score_gate

# The exit codes as documented (README, reca_eval/cli/common.py), not the code's constants.
EXIT_REGRESSION = 1

BASELINE = score_gate.BASELINES_DIR / "shapes-geneval"


def test_baselines_match_the_current_benchmarks():
    for gate in score_gate.GATES:
        folder = score_gate.BASELINES_DIR / gate.benchmark
        record, rows = read_run(folder)
        bench = registry.get(gate.benchmark)
        # A new spec version or item file needs a new baseline: `python -m reca_eval.experiments.score_gate --record`.
        assert record.spec_version == bench.version
        assert record.items_sha256 == sha256_file(folder / score_gate.ITEMS_FILE)
        lines = score_gate.subset_lines(bench.default_items(), gate.n_items)
        assert (folder / score_gate.ITEMS_FILE).read_text().splitlines() == lines
        assert record.scores["overall"] > 0.05 and len(rows) == gate.n_items * bench.images_per_prompt
        assert not record.model.startswith("/")


def planted(tmp_path, drop: bool):
    record, rows = read_run(BASELINE)
    if drop:
        rows.loc[rows["category"] == "single_object", "score"] = 0.0
    record.run_id = "planted" if drop else "same"
    run_dir = tmp_path / "runs" / record.run_id
    write_run(run_dir, record, rows)
    return run_dir


def test_the_gate_fails_on_a_planted_drop(tmp_path, monkeypatch):
    runner = CliRunner(env={"COLUMNS": "200"})
    same, dropped = planted(tmp_path, drop=False), planted(tmp_path, drop=True)
    ok = runner.invoke(app, ["check", "--baseline", str(BASELINE), "--run", str(same), "--n-boot", "200"])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, ["check", "--baseline", str(BASELINE), "--run", str(dropped), "--n-boot", "200"])
    assert bad.exit_code == EXIT_REGRESSION, bad.output
    assert "REGRESSION shapes-geneval/single_object" in bad.output
    # The gate's own entry point, with its generation step replaced by the planted run.
    console = Console(file=io.StringIO(), width=200)
    monkeypatch.setattr(score_gate, "_score", lambda gate, items, results: dropped)
    assert score_gate.check(console=console) == 1
    monkeypatch.setattr(score_gate, "_score", lambda gate, items, results: same)
    assert score_gate.check(console=console) == 0


def test_the_project_gate_passes_on_the_committed_baseline():
    """The gate itself, as `nox -s scoregate` runs it: the shipped base regenerates the committed
    subset and `check` compares it with the baseline. A change that lowers what the base scores (its
    generation, the exact scorer, the rules) fails the suite here."""
    out = io.StringIO()
    code = score_gate.check(console=Console(file=out, width=200))
    assert code == 0, out.getvalue()
    assert "PASS shapes-geneval" in out.getvalue()
