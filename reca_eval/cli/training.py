"""Training: `train` (a recipe), `experiment` (every arm over seeds), `demo` (the main command)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from reca_eval import registry
from reca_eval.cli.common import ResultsOpt, fail, get_console, print_record
from reca_eval.evaluation import score as evaluate

BaseOpt = typer.Option(
    [],
    "--base",
    metavar="FAMILY=PATH",
    help="Base checkpoint of a model family, repeatable: --base janus=ckpt/a --base flow=ckpt/b. A family "
    "not named starts from its shipped ShapeWorld base; a bare PATH is the janus base.",
)
FamiliesOpt = typer.Option(
    None,
    "--families",
    help="Model families, comma-separated: janus (the Janus-architecture base), flow (VLM + queries + DiT), "
    "harmon (LLM between a MAR encoder and decoder) (default: every family that ships a ShapeWorld base).",
)


def _probe_scenes(value: int) -> int:
    # What diagnose_alignment needs (half the scenes train the probes, half test them), checked before
    # anything trains.
    if value != 0 and value < 24:
        raise typer.BadParameter(f"0 (no probe) or at least 24 scenes, got {value}")
    return value


ProbeScenesOpt = typer.Option(
    400,
    "--probe-scenes",
    callback=_probe_scenes,
    help="Held-out scenes for the alignment probe (diagnose alignment) of every Janus and Harmon checkpoint; 0 = none.",
)
WorkersOpt = typer.Option(
    0,
    "--workers",
    min=0,
    help="Processes that generate, score, probe and compute floors while the next arm trains "
    "(0 = one per CPU, at most 4; 1 = all in this process). Scores depend on --threads, not on this.",
)
ThreadsOpt = typer.Option(
    0,
    "--threads",
    min=0,
    help="Torch threads of each process (0 = the CPUs shared out among the workers: 1 each on 2 cores).",
)


def _families(value: str | None) -> tuple[str, ...]:
    from reca_eval.models import check_families, shapeworld_families

    if value is None:
        return shapeworld_families()
    try:
        return check_families(f.strip() for f in value.split(",") if f.strip())
    except ValueError as exc:
        fail(f"--families: {exc}")


def _bases(values: list[str], families: tuple[str, ...]) -> dict[str, Path]:
    from reca_eval.models.bases import parse_base_specs, resolve_bases

    try:
        return resolve_bases(families, parse_base_specs(values))
    except (ValueError, FileNotFoundError) as exc:
        fail(f"--base: {exc}")


def _budget(**fields):
    from reca_eval.experiments.arms import Budget

    try:
        return Budget(**fields)
    except ValueError as exc:
        fail(str(exc))


def demo(
    results: Path = typer.Option(Path("results/demo"), "--results", help="Where the demo's records go."),
    base: list[str] = BaseOpt,
    families: str = FamiliesOpt,
    sft_steps: int = typer.Option(40, help="SFT steps (S)."),
    reca_steps: int = typer.Option(20, help="RecA steps after SFT (R); SFT-matched trains S+R SFT steps."),
    batch_size: int = typer.Option(16, help="Batch size of every arm."),
    lr: float = typer.Option(2e-4, help="Learning rate of every arm (constant after a short warmup)."),
    items_per_benchmark: int = typer.Option(
        0,
        help="Score an evenly spaced subset of N items per benchmark (0 = all; records say which), "
        "e.g. 30 on a busy CPU.",
    ),
    generation_batch_size: int = typer.Option(256, help="Images sampled per forward batch."),
    seed: int = typer.Option(0, help="Training seed."),
    threads: int = ThreadsOpt,
    workers: int = WorkersOpt,
    probe_scenes: int = ProbeScenesOpt,
    references: bool = typer.Option(
        False, "--references", help="Only the cheap pipeline check: score reference renders, no model."
    ),
) -> None:
    """The main command: base -> SFT, SFT+RecA, SFT-matched, SFT-half (Janus; harmon/... likewise, on
    shapes-geneval and shapes-dpg) and flow/SFT, flow/SFT+RecA, flow/SFT-matched (flow, on shapes-edit);
    scored, leaderboard, compare, report."""
    if references:
        from reca_eval.experiments.reference_check import run_reference_demo

        run_reference_demo(results, get_console())
        return
    try:
        from reca_eval.experiments.main_command import main_families, run_main_command

        try:
            family_names = main_families(None if families is None else _families(families))
        except ValueError as exc:
            fail(f"--{exc}")
        bases = _bases(base, family_names)
    except ImportError as exc:
        fail(
            f"the main command trains models and needs the models extra ({exc.name} is missing): "
            "pip install torch==2.13.0 -e '.[models]'; `reca-eval demo --references` runs with the core install"
        )
    run_main_command(
        get_console(),
        bases=bases,
        families=family_names,
        results=results,
        budget=_budget(sft_steps=sft_steps, reca_steps=reca_steps, batch_size=batch_size, lr=lr),
        items_per_benchmark=items_per_benchmark,
        generation_batch_size=generation_batch_size,
        seed=seed,
        threads=threads,
        workers=workers,
        probe_scenes=probe_scenes,
    )


def experiment(
    results: Path = typer.Option(
        Path("results/experiment"), "--results", help="Records, checkpoints, report."
    ),
    base: list[str] = BaseOpt,
    families: str = FamiliesOpt,
    seeds: str = typer.Option("0,1,2", help="Training seeds, comma-separated (every one is reported)."),
    arms: str = typer.Option(
        "all", help="Arms, comma-separated, or 'all' (see reca_eval/experiments/arms.py)."
    ),
    sft_steps: int = typer.Option(40, help="SFT steps (S)."),
    reca_steps: int = typer.Option(20, help="RecA steps after SFT (R); RecA-only arms train S+R."),
    batch_size: int = typer.Option(16, help="Batch size of every arm."),
    lr: float = typer.Option(2e-4, help="Learning rate of every arm."),
    bottleneck_size: int = typer.Option(
        0,
        "--bottleneck-size",
        help="RecA's information bottleneck: the condition image is downscaled to this many pixels "
        "before the understanding encoder (0 = the model's own resolution).",
    ),
    caption_mode: str = typer.Option(
        "dense",
        "--caption-mode",
        help="Captions of every arm's text->image and image->text data: dense, sparse or verbose "
        "(the caption-sparsity ablation; see reca_eval/shapeworld/captions.py).",
    ),
    instructions: int = typer.Option(
        0,
        "--instructions",
        help="Reconstruction instructions RecA samples from: the first N of "
        "reca_eval/models/instructions.py (0 = all 108; 1 = one fixed phrase): the instruction-diversity "
        "ablation.",
    ),
    items_per_benchmark: int = typer.Option(
        0, help="Evenly spaced subset of N items per benchmark (0 = all)."
    ),
    benchmarks: str = typer.Option(
        "",
        "--benchmarks",
        help="ShapeWorld benchmarks every family is scored on, comma-separated (default: all three).",
    ),
    generation_batch_size: int = typer.Option(256, help="Images sampled per forward batch."),
    threads: int = ThreadsOpt,
    workers: int = WorkersOpt,
    probe_scenes: int = ProbeScenesOpt,
) -> None:
    """Every arm over several training seeds: mean ± std per category and per atypical split, and a report.
    With several families, each trains the arms it has (RecA-VQ is Janus-only) and is labelled (flow/...,
    harmon/...)."""
    from reca_eval.experiments.arms import ALL_ARMS
    from reca_eval.experiments.report import terminal_tables, write_report
    from reca_eval.experiments.runner import ExperimentPlan, plan_families, run_experiment, use_threads
    from reca_eval.experiments.workers import worker_layout

    try:
        seed_list = tuple(int(s) for s in seeds.split(",") if s.strip())
    except ValueError:
        fail(f"--seeds: expected comma-separated integers, got {seeds!r}")
    if not seed_list:
        fail("--seeds: none given")
    arm_list = ALL_ARMS if arms == "all" else tuple(a.strip() for a in arms.split(",") if a.strip())
    family_names = _families(families)
    bases = _bases(base, family_names)
    err = get_console(stderr=True)
    try:
        plans = plan_families(
            family_names,
            bases,
            arm_list,
            on_left_out=lambda family, names: err.print(
                escape(f"{family}: no such arm(s) {names} for this family; left out")
            ),
            benchmarks=[b.strip() for b in benchmarks.split(",") if b.strip()] if benchmarks else None,
        )
    except ValueError as exc:
        fail(f"--{'benchmarks' if 'benchmark' in str(exc) else 'arms'}: {exc}")
    budget = _budget(
        sft_steps=sft_steps,
        reca_steps=reca_steps,
        batch_size=batch_size,
        lr=lr,
        bottleneck_size=bottleneck_size,
        caption_mode=caption_mode,
        instructions=instructions,
    )
    layout = worker_layout(workers, threads)  # both options are refused below 0 by typer
    use_threads(layout.threads)
    plan = ExperimentPlan(
        plans,
        results=results,
        seeds=seed_list,
        budget=budget,
        items_per_benchmark=items_per_benchmark,
        generation_batch_size=generation_batch_size,
        probe_scenes=probe_scenes,
        workers=layout.workers,
    )
    console = get_console()

    def progress(run) -> None:
        overall = ", ".join(f"{b} {v['overall']:.3f}" for b, v in run.scores.items())
        console.print(escape(f"{run.label}: {overall}"))

    result = run_experiment(plan, on_arm=progress)
    # The terminal gets the overall score and the splits; every category is in the report.
    for title, frame in terminal_tables(result):
        table = Table(title=escape(str(title)), title_justify="left")
        table.add_column("arm")
        for column in frame.columns:
            table.add_column(escape(str(column)), justify="right")
        for arm, row in frame.iterrows():
            table.add_row(escape(str(arm)), *[escape(str(v)) for v in row.tolist()])
        console.print(table)
    paths = write_report(result)
    console.print(escape(f"report: {paths.markdown} and {paths.html}"))


def train(
    recipe: Path = typer.Argument(..., help="Recipe YAML (e.g. trainers/recipes/sft.yaml)."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. train.steps=200 train.lr=1e-4."),
    score: list[str] = typer.Option(
        None, "--score", help="Benchmark to generate and score with the trained model (repeatable)."
    ),
    label: str = typer.Option("", help="Leaderboard row name (default: the recipe's name)."),
    resume: bool = typer.Option(False, help="Continue from the newest checkpoint in the output folder."),
    results: Path = ResultsOpt,
) -> None:
    """Train a recipe, then score the exported model on the named benchmarks and show the leaderboard."""
    from reca_eval.evaluation.generate import generate_for_benchmark
    from reca_eval.results.leaderboard import load_runs, render_leaderboard, write_leaderboard
    from reca_eval.training.loop import TrainingDiverged
    from reca_eval.training.loop import train as run_training
    from reca_eval.training.recipe import RecipeError, load_recipe

    for name in score or []:
        try:
            registry.get(name)
        except KeyError:
            fail(f"--score: unknown benchmark {name!r} (see `reca-eval list`)")
    try:
        loaded = load_recipe(recipe, list(overrides or []))
        result = run_training(loaded, resume=resume)
    except (RecipeError, TrainingDiverged, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    console = get_console()
    final_loss = f"{result.losses[-1]:.4f}" if result.losses else "n/a"
    console.print(
        escape(f"trained {result.steps} steps; model in {result.final_dir}; final loss {final_loss}")
    )
    shown = []
    for name in score or []:
        outcome = evaluate.generate_and_score(
            name,
            result.final_dir,
            generate=generate_for_benchmark,
            label=label or loaded.name,
            results_dir=results,
        )
        if outcome is None:  # not the main process
            continue
        print_record(console, outcome.record)
        shown.append(outcome.run_dir)
    if shown:
        write_leaderboard(results)
        render_leaderboard([(rec, path) for rec, path in load_runs(results) if path in shown], console)
