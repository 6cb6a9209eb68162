"""Issue 13, defects 2 and 3: run references resolve per benchmark; `check`'s rule is explicit.

Synthetic GenEval-style runs are written into a results folder and driven through the command line,
so the benchmarks' own aggregates and declared tolerances are the ones in use.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from reca_eval.cli import app
from reca_eval.core.spec import SpecError, read_spec
from reca_eval.results.leaderboard import declared_tolerance, resolve_pairs, resolve_run
from tests.test_leaderboard import write
from tests.test_stats import make_rows

# The exit codes as documented (README, reca_eval/cli/common.py), not the code's constants.
EXIT_REGRESSION, EXIT_BAD_INPUT = 1, 2

runner = CliRunner(env={"COLUMNS": "200"})


def invoke(*args: str):
    return runner.invoke(app, [*args, "--n-boot", "200"])


def drop_prompts(rows: pd.DataFrame, category: str, n: int) -> pd.DataFrame:
    """Make the first ``n`` fully passing prompts of ``category`` fail on every sample."""
    per_prompt = rows[rows["category"] == category].groupby("item_id")["score"].min()
    broken = per_prompt.index[per_prompt == 1][:n]
    assert len(broken) == n
    out = rows.copy()
    out.loc[out["item_id"].isin(broken), "score"] = 0.0
    return out


@pytest.fixture
def two_labels(tmp_path: Path) -> dict[str, Path]:
    """SFT and SFT+RecA on geneval and shapes-geneval; SFT+RecA alone on geneval-long."""
    rows = make_rows(n_prompts=60, seed=3)
    better = rows.assign(score=1.0)
    runs = {"results": tmp_path}
    for i, bench in enumerate(("geneval", "shapes-geneval")):
        runs[f"sft/{bench}"] = write(
            tmp_path, f"sft-{bench}", rows, label="SFT", benchmark=bench, created=f"2026-01-0{1 + i}T00:00:00"
        )
        # The shapes-geneval run of SFT+RecA is the newest run carrying the label.
        runs[f"reca/{bench}"] = write(
            tmp_path,
            f"reca-{bench}",
            better,
            label="SFT+RecA",
            benchmark=bench,
            created=f"2026-01-0{3 + i}T00:00:00",
        )
    runs["reca/geneval-long"] = write(
        tmp_path,
        "reca-long",
        better,
        label="SFT+RecA",
        benchmark="geneval-long",
        created="2026-01-01T00:00:00",
    )
    return runs


def test_compare_covers_every_benchmark_the_labels_share(two_labels):
    results = str(two_labels["results"])
    out = invoke("compare", "SFT", "SFT+RecA", "--results", results)
    assert out.exit_code == 0, out.output
    assert "geneval: SFT+RecA (B) vs SFT (A)" in out.output
    assert "shapes-geneval: SFT+RecA (B) vs SFT (A)" in out.output
    assert "geneval-long" not in out.output  # SFT has no run there
    only = invoke("compare", "SFT", "SFT+RecA", "--results", results, "--benchmark", "geneval")
    assert only.exit_code == 0 and "shapes-geneval" not in only.output
    # A folder fixes the benchmark; the label on the other side follows it.
    folder = invoke("compare", str(two_labels["sft/shapes-geneval"]), "SFT+RecA", "--results", results)
    assert folder.exit_code == 0 and "shapes-geneval: SFT+RecA" in folder.output
    assert "geneval: SFT+RecA (B)" not in folder.output.replace("shapes-geneval", "")
    none = invoke("compare", "SFT", "SFT+RecA", "--results", results, "--benchmark", "dpg")
    assert none.exit_code == EXIT_BAD_INPUT and "names no run of dpg" in none.output


def test_a_label_resolves_per_benchmark_and_an_ambiguous_one_lists_candidates(two_labels):
    results = two_labels["results"]
    assert resolve_run("SFT+RecA", results, benchmark="geneval") == two_labels["reca/geneval"]
    with pytest.raises(LookupError, match="names runs of 3 benchmarks") as err:
        resolve_run("SFT+RecA", results)
    assert "reca-geneval" in str(err.value) and "reca-long" in str(err.value)
    # Two checkpoints given one label on the same benchmark: the latest, with a warning naming the other.
    rows = make_rows(n_prompts=30, seed=5)
    write(results, "dup-1", rows, label="dup", model="/ckpt/one")
    write(results, "dup-2", rows, label="dup", model="/ckpt/two", created="2026-02-01T00:00:00")
    with pytest.warns(UserWarning, match="carried by 2 checkpoints on geneval") as caught:
        pairs = resolve_pairs("SFT", "dup", results)
    assert pairs == [("geneval", two_labels["sft/geneval"], results / "runs" / "dup-2")]
    assert "dup-1" in str(caught[0].message)
    out = invoke("compare", "SFT", "dup", "--results", str(results))
    assert out.exit_code == 0 and "warning: label 'dup' is carried by 2" in out.output
    assert "dup-1" in out.output
    # Re-runs of one checkpoint under one label are not ambiguous: the latest counts, silently.
    write(results, "again-1", rows, label="again", model="/ckpt/two")
    write(results, "again-2", rows, label="again", model="/ckpt/two", created="2026-02-01T00:00:00")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_run("again", results) == results / "runs" / "again-2"
    # A reference that names nothing is an error.
    with pytest.raises(LookupError, match="no run named"):
        resolve_run("nobody", results)


def test_check_run_label_resolves_on_the_baselines_benchmark(two_labels):
    """Before: `check --baseline <geneval run> --run SFT+RecA` took the newest SFT+RecA run
    (shapes-geneval) and exited 2."""
    gate = invoke(
        "check",
        "--baseline",
        str(two_labels["sft/geneval"]),
        "--run",
        "SFT+RecA",
        "--results",
        str(two_labels["results"]),
    )
    assert gate.exit_code == 0, gate.output
    assert "check geneval: SFT+RecA against baseline SFT" in gate.output
    # Several baselines gate several benchmarks in one call.
    both = invoke(
        "check",
        "--baseline",
        str(two_labels["sft/geneval"]),
        "--baseline",
        str(two_labels["sft/shapes-geneval"]),
        "--run",
        "SFT+RecA",
        "--results",
        str(two_labels["results"]),
    )
    assert both.exit_code == 0, both.output
    assert "check shapes-geneval" in both.output


@pytest.fixture
def small_drop(tmp_path: Path) -> dict[str, Path]:
    """A 0.2 drop of one category on 10 prompts: clear, but its paired interval includes 0."""
    rows = make_rows(n_prompts=30, seed=7)
    return {
        "results": tmp_path,
        "base": write(tmp_path, "base", rows, label="SFT"),
        "run": write(tmp_path, "run", drop_prompts(rows, "counting", 2), label="SFT+RecA"),
    }


def gate(small_drop, *extra: str):
    return invoke(
        "check",
        "--baseline",
        str(small_drop["base"]),
        "--run",
        "SFT+RecA",
        "--results",
        str(small_drop["results"]),
        *extra,
    )


def test_check_fails_a_clear_drop_whose_interval_includes_zero(small_drop):
    """Before: PASS, because the paired interval of a −0.2 drop included 0."""
    out = gate(small_drop)
    assert out.exit_code == EXIT_REGRESSION, out.output
    # The output states the rule and, per category, the delta, the interval and the verdict.
    assert (
        "rule: a category fails when its score fell by more than 0.01 (check_tolerance of geneval)"
        in out.output
    )
    line = next(line for line in out.output.splitlines() if line.strip("│ ").startswith("counting"))
    assert "-0.200" in line and "[" in line and "FAIL: drop" in line
    assert "REGRESSION geneval/counting" in out.output
    # --significant also asks the interval to exclude the tolerance: this drop is not resolved.
    sig = gate(small_drop, "--significant")
    assert sig.exit_code == 0, sig.output
    assert "pass: drop not significant" in sig.output and "interval of the drop excludes" in sig.output
    # A tolerance in the benchmark's units, or relative to the baseline's score.
    assert gate(small_drop, "--tolerance", "0.25").exit_code == 0
    assert gate(small_drop, "--tolerance", "0.15").exit_code == EXIT_REGRESSION
    relative = gate(small_drop, "--tolerance", "0.05", "--relative")
    assert relative.exit_code == EXIT_REGRESSION and "5% of the baseline's score" in relative.output
    assert gate(small_drop, "--tolerance", "0.99", "--relative").exit_code == 0


def test_check_refuses_bad_tolerances(small_drop):
    out = gate(small_drop, "--relative")
    assert out.exit_code == EXIT_BAD_INPUT and "--relative needs --tolerance" in out.output
    out = gate(small_drop, "--tolerance", "-0.1")
    assert out.exit_code == EXIT_BAD_INPUT and "--tolerance must be >= 0" in out.output


def test_tolerances_are_declared_per_benchmark_in_its_units(tmp_path):
    assert declared_tolerance("geneval") == 0.01  # fractions
    assert declared_tolerance("dpg") == 1.0  # 0-100
    assert declared_tolerance("shapes-edit") == 0.1  # 0-10
    assert declared_tolerance("no-such-benchmark") is None
    folder = tmp_path / "mine"
    folder.mkdir()
    spec = (Path(__file__).parents[1] / "benchmarks" / "shapes-geneval" / "benchmark.yaml").read_text()
    spec = spec.replace("name: shapes-geneval", "name: mine")
    (folder / "benchmark.yaml").write_text(spec.replace("check_tolerance: 0.01", "check_tolerance: -1"))
    with pytest.raises(SpecError, match="check_tolerance"):
        read_spec(folder / "benchmark.yaml")
    (folder / "benchmark.yaml").write_text(spec.replace("check_tolerance: 0.01\n", ""))
    assert read_spec(folder / "benchmark.yaml").check_tolerance is None


def test_check_posts_its_verdicts_to_the_job_summary(small_drop, tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    out = gate(small_drop)
    assert out.exit_code == EXIT_REGRESSION, out.output
    text = summary.read_text()
    assert text.startswith("### check geneval: FAIL (2 regressed)")
    assert "Rule: a category fails when its score fell by more than 0.01" in text
    assert "| counting | 0.400 | 0.200 | -0.200 |" in text and "**FAIL: drop**" in text
