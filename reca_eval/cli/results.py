"""Results: `leaderboard`, `compare`, `check`."""

from __future__ import annotations

from pathlib import Path

import typer

from reca_eval.cli.common import EXIT_REGRESSION, ResultsOpt, fail, get_console


def leaderboard(
    results: Path = ResultsOpt,
    ci: bool = typer.Option(False, "--ci", help="Add cluster-bootstrap 95% half-widths (by prompt)."),
) -> None:
    """Print the leaderboard: rows are checkpoints, columns benchmark categories."""
    from reca_eval.results.leaderboard import load_runs, render_leaderboard

    runs = load_runs(results)
    if not runs:
        fail(f"no result records under {results}/runs")
    render_leaderboard(runs, get_console(), with_ci=ci)


def compare(
    run_a: str = typer.Argument(..., help="Baseline run (folder, record.json, run id or label), e.g. SFT."),
    run_b: str = typer.Argument(..., help="Candidate run, e.g. SFT+RecA."),
    results: Path = ResultsOpt,
    n_boot: int = typer.Option(2000, help="Bootstrap replicates."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
) -> None:
    """Paired comparison on the same prompts and seeds: per-category deltas with 95% intervals."""
    from reca_eval.results.leaderboard import compare_runs, render_compare, resolve_run

    try:
        a, b = resolve_run(run_a, results), resolve_run(run_b, results)
        result = compare_runs(a, b, n_boot=n_boot, seed=seed)
    except (LookupError, FileNotFoundError, ValueError) as exc:
        fail(str(exc).strip("'\""))
    render_compare(result, get_console())


def check(
    baseline: Path = typer.Option(..., "--baseline", help="Baseline run (folder or record.json)."),
    run_ref: str = typer.Option(
        None, "--run", help="Run to check (default: latest run of the same benchmark)."
    ),
    tolerance: float = typer.Option(0.0, help="Allowed drop before a category counts as regressed."),
    results: Path = ResultsOpt,
    n_boot: int = typer.Option(2000, help="Bootstrap replicates."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
) -> None:
    """CI regression gate: exit 1 when the paired interval says a score fell by more than TOLERANCE."""
    from reca_eval.core.records import read_run
    from reca_eval.results.leaderboard import check_regression, latest_run, render_check, resolve_run

    try:
        base_record, _ = read_run(baseline)
        if run_ref:
            run_path = resolve_run(run_ref, results)
        else:
            run_path = latest_run(results, base_record.benchmark, excluding=base_record.run_id)
        result = check_regression(run_path, baseline, tolerance=tolerance, n_boot=n_boot, seed=seed)
    except (LookupError, FileNotFoundError, ValueError) as exc:
        fail(str(exc).strip("'\""))
    render_check(result, get_console())
    if not result.passed:
        raise typer.Exit(EXIT_REGRESSION)
