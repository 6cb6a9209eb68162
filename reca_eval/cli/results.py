"""Results: `leaderboard`, `compare`, `check`."""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from pathlib import Path

import typer
from rich.markup import escape

from reca_eval.cli.common import EXIT_REGRESSION, ResultsOpt, fail, get_console, printed_warnings

FORMATS = ("table", "markdown", "html", "csv", "json")


def leaderboard(
    results: Path = ResultsOpt,
    ci: bool = typer.Option(
        False, "--ci", help="Add cluster-bootstrap 95% half-widths (by prompt); always on in html."
    ),
    fmt: str = typer.Option(
        "table",
        "--format",
        "-f",
        help="table (terminal), markdown, html (one self-contained page), csv, json.",
    ),
    output: Path = typer.Option(None, "--output", "-O", help="Write to this file instead of stdout."),
) -> None:
    """Print the leaderboard: rows are checkpoints, columns benchmark categories.

    With --format markdown and $GITHUB_STEP_SUMMARY set, the tables are appended to the job summary too.
    """
    from reca_eval.core.records import atomic_write_text
    from reca_eval.results.leaderboard import (
        format_tables,
        leaderboard_csv,
        leaderboard_is_stale,
        leaderboard_payload,
        leaderboard_tables,
        load_runs,
        render_leaderboard,
        scan_runs,
        write_leaderboard,
    )
    from reca_eval.results.pages import leaderboard_html, leaderboard_markdown

    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    with printed_warnings():
        runs = load_runs(results)
    if not runs:
        fail(f"no result records under {results}/runs")
    if leaderboard_is_stale(results):  # derived files older than a record: a run killed before rebuilding
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # load_runs has named the skipped records
                write_leaderboard(results)
        except OSError as exc:
            get_console(stderr=True).print(
                f"[yellow]warning:[/] {escape(f'leaderboard files in {results} are stale and could not be rebuilt: {exc}')}"
            )
    if fmt == "table":
        if output is not None:
            fail("--output takes a file format: --format markdown | html | csv | json")
        render_leaderboard(runs, get_console(), with_ci=ci)
        return
    if fmt == "csv":
        text = leaderboard_csv(leaderboard_tables(runs))
    elif fmt == "json":
        text = (
            json.dumps(leaderboard_payload(leaderboard_tables(runs), scan_runs(results).skipped), indent=2)
            + "\n"
        )
    elif fmt == "markdown":
        text = leaderboard_markdown(format_tables(runs, with_ci=ci))
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            with open(summary, "a", encoding="utf-8") as fh:
                fh.write(text + "\n")
    else:
        text = leaderboard_html(format_tables(runs, with_ci=True))
    if output is not None:
        atomic_write_text(output, text)
        get_console(stderr=True).print(escape(f"wrote {output}"))
    else:
        sys.stdout.write(text)


BenchmarkOpt = typer.Option(
    None, "--benchmark", "-b", help="Only this benchmark (labels otherwise resolve on every benchmark)."
)


def compare(
    run_a: str = typer.Argument(..., help="Baseline run (folder, record.json, run id or label), e.g. SFT."),
    run_b: str = typer.Argument(..., help="Candidate run, e.g. SFT+RecA."),
    results: Path = ResultsOpt,
    benchmark: str = BenchmarkOpt,
    n_boot: int = typer.Option(2000, min=1, max=1_000_000, help="Bootstrap replicates."),
    seed: int = typer.Option(0, min=0, help="Bootstrap seed."),
) -> None:
    """Paired comparison on the same prompts and seeds: per-category deltas with 95% intervals.

    Two labels are compared on every benchmark they share, one table each.
    """
    from reca_eval.results.leaderboard import compare_runs, render_compare, resolve_pairs

    try:
        with printed_warnings():
            pairs = resolve_pairs(run_a, run_b, results, benchmark)
    except (LookupError, FileNotFoundError, ValueError) as exc:
        fail(str(exc).strip("'\""))
    console = get_console()
    errors = []
    for name, path_a, path_b in pairs:
        try:
            result = compare_runs(path_a, path_b, n_boot=n_boot, seed=seed)
        except (LookupError, FileNotFoundError, ValueError) as exc:
            errors.append(f"{name}: {str(exc).strip(chr(39) + chr(34))}")
            continue
        render_compare(result, console)
    if errors:
        fail("\n".join(errors))


def check(
    baseline: list[Path] = typer.Option(
        ...,
        "--baseline",
        help="Baseline run (folder, record.json, run id, or a label with runs of one benchmark); "
        "repeat to gate several benchmarks.",
    ),
    run_ref: str = typer.Option(
        None,
        "--run",
        help="Run to check: folder, run id, or label (resolved on each baseline's benchmark). "
        "Default: the latest run of the baseline's benchmark.",
    ),
    tolerance: float = typer.Option(
        None,
        help="Allowed drop of a category, in the benchmark's units (default: its check_tolerance; "
        "see `reca-eval list`).",
    ),
    relative: bool = typer.Option(
        False, "--relative", help="Read --tolerance as a fraction of the baseline's score (0.02 = 2%)."
    ),
    significant: bool = typer.Option(
        False,
        "--significant",
        help="Fail only when the paired 95% interval of the drop also excludes the tolerance.",
    ),
    results: Path = ResultsOpt,
    n_boot: int = typer.Option(2000, min=1, max=1_000_000, help="Bootstrap replicates."),
    seed: int = typer.Option(0, min=0, help="Bootstrap seed."),
) -> None:
    """CI regression gate: exit 1 when a category's score fell by more than the tolerance.

    By default the point estimate decides; --significant also requires the paired interval to lie
    below the tolerance. Exit codes: 0 pass, 1 regression, 2 bad input.
    """
    from reca_eval.core.records import read_run
    from reca_eval.results.leaderboard import check_regression, latest_run, render_check, resolve_run

    if tolerance is not None and not (math.isfinite(tolerance) and tolerance >= 0):
        # NaN compares false with everything and infinity passes every drop: either would switch the gate off.
        fail(f"--tolerance must be >= 0 and finite, got {tolerance}")
    if relative and tolerance is None:
        fail("--relative needs --tolerance (a fraction of the baseline's score, e.g. --tolerance 0.02)")
    checks = []
    try:
        for ref in baseline:
            # A folder or record.json as given (a committed baseline); else a run id or label in --results.
            path = ref if Path(ref).exists() else resolve_run(str(ref), results)
            base_record, _ = read_run(path)
            if run_ref:
                with printed_warnings():
                    run_path = resolve_run(run_ref, results, benchmark=base_record.benchmark)
            else:
                run_path = latest_run(results, base_record.benchmark, excluding=base_record.run_id)
            checks.append(
                check_regression(
                    run_path,
                    path,
                    tolerance=tolerance,
                    n_boot=n_boot,
                    seed=seed,
                    relative=relative,
                    significant=significant,
                )
            )
    except (LookupError, FileNotFoundError, ValueError) as exc:
        fail(str(exc).strip("'\""))
    console = get_console()
    for result in checks:
        render_check(result, console)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:  # a GitHub Actions step: the verdicts go on the job's summary page too
        from reca_eval.results.pages import check_markdown

        with open(summary, "a", encoding="utf-8") as fh:
            fh.write("".join(check_markdown(result) + "\n" for result in checks))
    if not all(result.passed for result in checks):
        raise typer.Exit(EXIT_REGRESSION)
