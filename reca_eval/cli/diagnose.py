"""`reca-eval diagnose ...`: is this checkpoint ready for RecA?"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from reca_eval.cli.common import ResultsOpt, fail, get_console

app = typer.Typer(help="Diagnostics of a checkpoint (is this model ready for RecA?).", no_args_is_help=True)


@app.command("alignment")
def diagnose_alignment_command(
    ckpt: Path = typer.Option(
        ..., "--ckpt", help="Checkpoint folder (any adapter with condition_hidden_states)."
    ),
    scenes: int = typer.Option(
        400, "--scenes", help="Held-out ShapeWorld scenes: half fit the probes, half test."
    ),
    layer: int = typer.Option(-1, "--layer", help="Trunk layer to probe (-1 = final, 0 = input embeddings)."),
    as_json: bool = typer.Option(
        False, "--json", help="Print the report as JSON on stdout (table on stderr)."
    ),
) -> None:
    """Linear probes on the trunk under text and image prompts: within vs cross-modality accuracy."""
    from reca_eval.diagnostics.alignment import diagnose_alignment
    from reca_eval.models.loading import load_unified_model

    try:
        model = load_unified_model(ckpt)
        report = diagnose_alignment(model, scenes=scenes, layer=layer)
    except (FileNotFoundError, NotADirectoryError, ValueError, TypeError) as exc:
        fail(str(exc))
    console = get_console(stderr=as_json)
    table = Table(title=escape(f"cross-modal alignment of {ckpt} (layer {layer}, {scenes} scenes)"))
    for column in report.TABLE_COLUMNS:
        table.add_column(column, justify="left" if column == "attribute" else "right")
    *rows, mean = report.table_rows()
    for row in rows:
        table.add_row(*(escape(str(c)) for c in row))
    table.add_row(*(escape(str(c)) for c in mean), style="bold")
    console.print(table)
    for note in report.notes:
        console.print(f"  {escape(note)}", style="yellow")
    console.print(("[green]" if report.ready else "[yellow]") + escape(report.verdict()))
    if as_json:
        print(json.dumps(report.to_json(), indent=1))


@app.command("ceiling")
def diagnose_ceiling_command(
    ckpt: Path = typer.Option(..., "--ckpt", help="Checkpoint folder (any adapter)."),
    benchmarks: list[str] = typer.Option(
        ["shapes-geneval", "shapes-dpg", "shapes-edit"],
        "--benchmark",
        "-b",
        help="ShapeWorld benchmark(s) whose exact references go through the tokenizer (repeatable).",
    ),
    label: str = typer.Option("", "--label", help="Row name (default: '<folder> tokenizer ceiling')."),
    results: Path = ResultsOpt,
    as_json: bool = typer.Option(False, "--json", help="Print {benchmark: scores} as JSON on stdout."),
) -> None:
    """Score the exact references after one pass through the model's own generation tokenizer (VQ codes
    or VAE latents): the most any model built on that tokenizer can score."""
    from reca_eval.diagnostics.tokenizer_ceiling import checkpoint_ceilings

    console = get_console(stderr=as_json)
    try:
        outcomes = checkpoint_ceilings(ckpt, benchmarks, label=label, results_dir=results)
    except (FileNotFoundError, NotADirectoryError, ValueError, TypeError, KeyError) as exc:
        fail(str(exc))
    table = Table(title=escape(f"tokenizer ceiling of {ckpt} (exact references = 1.0 / 100 / 10)"))
    table.add_column("benchmark")
    table.add_column("overall", justify="right")
    table.add_column("record")
    for name, outcome in outcomes.items():
        table.add_row(escape(name), f"{outcome.record.scores['overall']:.3f}", escape(str(outcome.run_dir)))
    console.print(table)
    if as_json:
        print(json.dumps({name: o.record.scores for name, o in outcomes.items()}, indent=1))


@app.command("copier")
def diagnose_copier_command(
    ckpt: Path = typer.Option(..., "--ckpt", help="Checkpoint folder (any adapter)."),
    items: Path | None = typer.Option(None, "--items", help="Another shapes-edit item file."),
    label: str = typer.Option("", "--label", help="Row name (default: 'copier through <folder>')."),
    results: Path = ResultsOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the copier's scores as JSON on stdout."),
) -> None:
    """Score the copier on shapes-edit: every item's source image through the model's own generation
    tokenizer, whatever the instruction says. An editor that only reconstructs its input scores this;
    the headline puts it at 0 (twins get one image), the per-output single/* figures show what copying earns."""
    from reca_eval.diagnostics.copier import checkpoint_copier

    console = get_console(stderr=as_json)
    try:
        outcome = checkpoint_copier(ckpt, label=label, results_dir=results, items_path=items)
    except (FileNotFoundError, NotADirectoryError, ValueError, TypeError, KeyError) as exc:
        fail(str(exc))
    scores = outcome.record.scores
    table = Table(title=escape(f"{outcome.record.label} on shapes-edit (exact references = 10 / 5)"))
    for column in ("overall (headline)", "single/overall", "imgedit_macro", "pairs/same_image", "record"):
        table.add_column(column, justify="left" if column == "record" else "right")
    table.add_row(
        *(f"{scores.get(k, float('nan')):.3f}" for k in ("overall", "single/overall", "imgedit_macro")),
        f"{scores.get('pairs/same_image', float('nan')):.2f}",
        escape(str(outcome.run_dir)),
    )
    console.print(table)
    if as_json:
        print(json.dumps(scores, indent=1))


@app.command("floor")
def diagnose_floor_command(
    ckpt: Path | None = typer.Option(
        None,
        "--ckpt",
        help="Checkpoint folder (any adapter): also the floor through its own tokenizer, and its ceiling.",
    ),
    benchmarks: list[str] = typer.Option(
        ["shapes-geneval", "shapes-dpg"],
        "--benchmark",
        "-b",
        help="ShapeWorld benchmark(s) to score a prompt-blind generator on (repeatable).",
    ),
    seeds: str = typer.Option("0,1,2,3,4", "--seeds", help="Prompt-blind seeds, comma-separated."),
    items: Path | None = typer.Option(None, "--items", help="Another item file (one benchmark only)."),
    questions: bool = typer.Option(
        False, "--questions", help="Split a DPG-style floor by question type: where chance comes from."
    ),
    results: Path = ResultsOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the floors (and ceilings) as JSON on stdout."),
) -> None:
    """Score a prompt-blind generator (each image a training-distribution scene picked by a seed, the
    prompt ignored) over seeds: the least a score means. With --ckpt, the same scenes through the
    model's own tokenizer, and the tokenizer ceiling: read a score as (score − floor) / (ceiling − floor)."""
    from reca_eval.diagnostics.floors import checkpoint_bounds, question_chance

    console = get_console(stderr=as_json)
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
        bounds = checkpoint_bounds(
            benchmarks, results_dir=results, ckpt=ckpt, seeds=seed_list, items_path=items
        )
    except (FileNotFoundError, NotADirectoryError, ValueError, TypeError, KeyError) as exc:
        fail(str(exc))
    table = Table(title=escape(f"prompt-blind floor, seeds {seed_list}"))
    for column in ("benchmark", "row", "overall", "95% interval (one run)", "per seed"):
        table.add_column(column, justify="left" if column in ("benchmark", "row", "per seed") else "right")
    for name, found in bounds.items():
        for kind in [found.floor, *([found.tokenizer_floor] if found.tokenizer_floor else [])]:
            low, high = kind.interval()
            per_seed = ", ".join(f"{v:.3f}" for v in kind.values())
            table.add_row(
                escape(name), escape(kind.label), f"{kind.mean():.3f}", f"[{low:.3f}, {high:.3f}]", per_seed
            )
        if found.ceiling is not None:
            table.add_row(
                escape(name), escape(found.ceiling.record.label), f"{found.ceiling_score():.3f}", "", ""
            )
    console.print(table)
    if ckpt is not None:
        console.print(escape(f"tokenizer floor and ceiling: {ckpt}"))
    if questions:
        for name, found in bounds.items():
            for kind in [found.floor, *([found.tokenizer_floor] if found.tokenizer_floor else [])]:
                try:
                    frame = question_chance([o.rows for o in kind.outcomes])
                except ValueError:
                    console.print(
                        f"{escape(name)}: no per-question rows (--questions reads DPG-style benchmarks)"
                    )
                    break
                qt = Table(
                    title=escape(
                        f"{name}, {kind.label}: overall {frame.attrs['overall']:.2f} by question type"
                    ),
                    caption="share of questions; raw and gated accuracy; points of the overall; "
                    "the overall without it",
                )
                qt.add_column("question type", no_wrap=True)
                for column in ("share", "raw", "gated", "points", "overall without"):
                    qt.add_column(column, justify="right")
                for index, row in frame.iterrows():
                    qt.add_row(
                        escape(str(index)),
                        *(
                            f"{v:.3f}" if "share" in c or "accuracy" in c else f"{v:.2f}"
                            for c, v in row.items()
                        ),
                    )
                console.print(qt)
    if as_json:
        print(json.dumps({name: b.summary() for name, b in bounds.items()}, indent=1, default=str))
