"""Benchmarks and scoring: `list`, `validate`, `run`, `render-references`, `fetch`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from reca_eval import registry
from reca_eval.cli.common import (
    EXIT_SKIPS,
    ResultsOpt,
    checked_options,
    fail,
    get_console,
    parse_options,
    print_record,
)
from reca_eval.core.spec import declared_options
from reca_eval.evaluation import score as evaluate


def list_benchmarks(
    name: str = typer.Argument(None, help="Show one benchmark in full: its spec, tolerance and sources."),
) -> None:
    """Show the registered benchmarks: items, generation protocol, scorer and the extra it needs."""
    if name is not None:
        show_benchmark(name)
        return
    table = Table(title="reca-eval benchmarks")
    for col in ("name", "version", "task", "items", "images/prompt", "res", "scorer", "check tol.", "needs"):
        table.add_column(col, no_wrap=col in ("name", "needs"))
    for bench in registry.all_benchmarks():
        try:
            n_items = str(len(bench.load_items(bench.default_items())))
        except FileNotFoundError:
            n_items = f"[dim]not fetched: reca-eval fetch {bench.name}[/]"
        except ValueError as exc:
            n_items = f"[red]invalid[/] ({escape(str(exc)[:60])})"
        table.add_row(
            escape(bench.name),
            escape(bench.version),
            escape(bench.task),
            n_items,
            str(bench.images_per_prompt),
            str(bench.resolution),
            escape(bench.scorer_name),
            "—"
            if bench.spec is None or bench.spec.check_tolerance is None
            else f"{bench.spec.check_tolerance:g}",
            escape(f"reca-eval[{bench.extra}]") if bench.extra else "core",
        )
    get_console().print(table)


def show_benchmark(name: str) -> None:
    """One benchmark's declared facts, as its benchmark.yaml says, and where its files come from."""
    try:
        bench = registry.get(name)
    except KeyError as exc:
        fail(str(exc).strip("'\""))
    spec = bench.spec
    table = Table(title=escape(f"{bench.name} v{bench.version}"), show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    tolerance = None if spec is None else spec.check_tolerance
    rows = [
        ("description", bench.description),
        ("task / layout", f"{bench.task} / {bench.layout}"),
        ("images per prompt", str(bench.images_per_prompt)),
        ("resolution", str(bench.resolution)),
        ("categories", ", ".join(bench.categories)),
        ("scorer", bench.scorer_name),
        ("needs", f"reca-eval[{bench.extra}]" if bench.extra else "core"),
        ("check tolerance", "none declared (any drop fails)" if tolerance is None else f"{tolerance:g}"),
    ]
    if spec is not None:
        rows.append(("spec", str(spec.folder / "benchmark.yaml")))
        for key, value in spec.settings.items():
            rows.append((f"setting {key}", str(value)))
        for option in declared_options(spec).values():
            rows.append((f"-o {option.name}", f"{option.describe()}. {option.help}"))
        for source in spec.sources:
            pinned = f"sha256 {source['sha256'][:12]}…" if source.get("sha256") else "NOT PINNED (no sha256)"
            rows.append((f"source {source.get('file', '?')}", f"{source.get('url', 'no url')} ({pinned})"))
    for key, value in rows:
        table.add_row(escape(key), escape(value))
    get_console().print(table)


def validate(
    name: str = typer.Argument(..., help="Benchmark name (see `reca-eval list`)."),
    items: Path = typer.Option(None, help="Item file to validate (default: the benchmark's own)."),
    option: list[str] = typer.Option(
        [], "--option", "-o", help="Scorer option KEY=VALUE to check too, repeatable (as `run` takes them)."
    ),
) -> None:
    """Check a benchmark's item file against its schema (errors name the file and line), and any
    `-o` options against the ones it declares."""
    try:
        bench = registry.get(name)
    except KeyError as exc:
        fail(str(exc).strip("'\""))
    checked_options(bench, parse_options(option))
    try:
        path = items or bench.default_items()
        loaded = bench.load_items(path)
    except (KeyError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    get_console().print(
        f"[green]ok[/] {escape(f'{path}: {len(loaded)} items valid for {name} v{bench.version}')}"
    )


def run(
    name: str = typer.Argument(..., help="Benchmark name (see `reca-eval list`)."),
    images: Path = typer.Option(
        None, "--images", help="Score images produced by any tool (official layout)."
    ),
    ckpt: Path = typer.Option(None, "--ckpt", help="Generate with this checkpoint, then score."),
    items: Path = typer.Option(
        None, "--items", help="Item file (default: the benchmark's own / fetched copy)."
    ),
    label: str = typer.Option("", help="Row name in the leaderboard (default: the folder name)."),
    mode: str = typer.Option(None, help="Protocol mode where one exists (dpg: official | fixed)."),
    results: Path = ResultsOpt,
    as_json: bool = typer.Option(
        False, "--json", help="Print the record as JSON on stdout (tables on stderr)."
    ),
    allow_skips: bool = typer.Option(False, help="Exit 0 even when images were skipped."),
    run_dir: Path = typer.Option(
        None,
        "--run-dir",
        help="With --ckpt: generate into this run folder, keeping the images already there.",
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="With --ckpt: continue the newest unfinished run (no record yet) of this benchmark and label.",
    ),
    option: list[str] = typer.Option(
        [],
        "--option",
        "-o",
        help="Scorer option KEY=VALUE, repeatable (e.g. -o judge=openai -o judge_model=gpt-4.1-2025-04-14, "
        "-o device=cuda, -o images_per_prompt=1).",
    ),
) -> None:
    """Score a benchmark: one result record, per-image results beside it, one leaderboard row."""
    from reca_eval.results.leaderboard import render_leaderboard, write_leaderboard

    if (images is None) == (ckpt is None):
        fail("give exactly one of --images DIR or --ckpt PATH")
    if (run_dir is not None or resume) and ckpt is None:
        fail("--run-dir and --resume continue a generation: give them with --ckpt")
    if run_dir is not None and resume:
        fail("give one of --run-dir PATH or --resume")
    if resume:
        run_dir = evaluate.unfinished_run_dir(results, name, label or ckpt.name)
        if run_dir is None:
            get_console(stderr=True).print(
                escape(f"--resume: no unfinished run of {name} labelled {label or ckpt.name!r}; starting one")
            )
        else:
            get_console(stderr=True).print(escape(f"resuming {run_dir}"))
    try:
        bench = registry.get(name)
    except KeyError as exc:
        fail(str(exc).strip("'\""))
    options: dict[str, object] = parse_options(option)
    if mode:
        options["mode"] = mode
    options = checked_options(bench, options)  # before anything is generated or written
    try:
        if images is not None:
            outcome = evaluate.score_images(
                name, images, items_path=items, label=label, options=options, results_dir=results
            )
        else:
            from reca_eval.evaluation.generate import generate_for_benchmark

            outcome = evaluate.generate_and_score(
                name,
                ckpt,
                generate=generate_for_benchmark,
                items_path=items,
                label=label,
                options=options,
                results_dir=results,
                run_dir=run_dir,
            )
    except (KeyError, FileNotFoundError, ValueError) as exc:
        fail(str(exc).strip("'\""))
    if outcome is None:  # a non-main process under `accelerate launch`: its shard is written
        return
    write_leaderboard(results)
    console = get_console(stderr=as_json)
    record = outcome.record
    print_record(console, record)
    if as_json:
        sys.stdout.write(json.dumps(record.to_json(), indent=2) + "\n")
    render_leaderboard([(record, outcome.run_dir)], console)
    if record.images_skipped and not allow_skips:
        console.print(
            f"[yellow]{record.images_skipped} image(s) skipped[/]: see skips in {escape(str(outcome.run_dir))}/record.json"
        )
        raise typer.Exit(EXIT_SKIPS)


def render_references(
    name: str = typer.Argument(..., help="A ShapeWorld benchmark (shapes-geneval, shapes-dpg, shapes-edit)."),
    out: Path = typer.Argument(..., help="Folder to write the reference renders into (official layout)."),
    items: Path = typer.Option(None, help="Item file (default: the benchmark's own)."),
) -> None:
    """Write the exact reference renders of a ShapeWorld benchmark (they score 1.0 by construction)."""
    from reca_eval.evaluation.references import write_reference_folder

    try:
        n = write_reference_folder(name, out, items_path=items)
    except (KeyError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    get_console().print(escape(f"wrote {n} reference image(s) for {name} to {out}"))


def fetch(
    name: str = typer.Argument(
        ..., help="Benchmark whose official files to download (geneval, dpg, imgedit, gedit, ...)."
    ),
    data: Path = typer.Option(
        None, "--data", help="Data folder (default: $RECA_EVAL_DATA or ~/.cache/reca-eval/data)."
    ),
    base_url: str = typer.Option(
        None, "--base-url", help="Mirror serving the files at <base-url>/<relative path>."
    ),
    retries: int = typer.Option(4, help="Retries per file (with exponential backoff)."),
) -> None:
    """Download a benchmark's official files (pinned revisions, sha256-checked, resumable)."""
    from reca_eval import fetch as fetching

    console = get_console()
    try:
        files = fetching.fetch_benchmark(
            name, root=data, base_url=base_url, retries=retries, log=lambda m: console.print(escape(m))
        )
    except (KeyError, fetching.FetchError) as exc:
        fail(str(exc).strip("'\""))
    console.print(f"[green]ok[/] {escape(name)}: {len(files)} source(s) in place")
