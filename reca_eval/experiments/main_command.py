"""`reca-eval demo`: the README's main command, SFT vs SFT+RecA on ShapeWorld, on a CPU, in minutes.

Every family with a shipped ShapeWorld base and main-command arms takes part
(:func:`reca_eval.models.shapeworld_families`); what each trains and is scored on, and the guidance it
samples with, are facts of its adapter class (:class:`reca_eval.models.protocol.FamilyFacts`).

From the shipped Janus ShapeWorld base (``reca_eval/assets/shapeworld-base``) it trains SFT, SFT+RecA
and the matched-compute controls SFT-matched and SFT-half (:mod:`reca_eval.experiments.arms`), scores
the base and every arm on shapes-geneval, shapes-dpg and shapes-edit through the same path as
``reca-eval run --ckpt``, prints the leaderboard and the paired ``compare`` of SFT vs SFT+RecA, and
writes a report (markdown + a self-contained HTML page) beside the records.

The second family, flow matching (VLM + queries + DiT, ``reca_eval/assets/shapeworld-flow-base``),
trains ``flow/SFT``, ``flow/SFT+RecA`` (RecA = reconstruction only: its VLM is frozen) and
``flow/SFT-matched`` with the same budget and is scored on shapes-edit, where editing fidelity is
the claim; ``compare flow/SFT flow/SFT+RecA`` is printed beside the Janus one.

The third family, masked autoregressive (Harmon: a Qwen2 LLM between a MAR encoder and decoder over the
flow base's frozen autoencoder, ``reca_eval/assets/shapeworld-harmon-base``), trains the Janus arms
(``harmon/SFT`` ... ``harmon/SFT-half``; its RecA is reconstruction and image->text, as the authors mix
them) and is scored on shapes-geneval and shapes-dpg: its question is RecA's text->image gain.

``reca-eval demo --references`` instead runs the model-free pipeline check
(:mod:`reca_eval.experiments.reference_check`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from reca_eval import registry
from reca_eval.experiments.arms import Budget
from reca_eval.experiments.report import ReportPaths, write_report
from reca_eval.experiments.runner import (
    ArmRun,
    ExperimentPlan,
    ExperimentResult,
    plan_families,
    run_experiment,
    use_threads,
)
from reca_eval.experiments.workers import worker_layout
from reca_eval.models import shapeworld_families
from reca_eval.models.bases import resolve_bases
from reca_eval.results.leaderboard import load_runs, render_compare, render_leaderboard, write_leaderboard

# Items scored per benchmark by the main command: 0 = the full sets (270 + 150 + 180 items, 1,860
# images per Janus checkpoint, five of them; 1,680 per Harmon checkpoint, five; the flow family on
# shapes-edit): about 330-380 s on an idle 2-core machine with its two workers, probes, reference editors,
# floors and ceilings included (docs/performance.md).
MAIN_ITEMS_PER_BENCHMARK = 0


# Seeds of the prompt-blind floors on shapes-geneval and shapes-dpg (as drawn and through each scoring
# family's base tokenizer: the Janus VQ, the Harmon autoencoder) beside the tokenizer ceilings; () = no
# floor and ceiling rows. On every item, per tokenizer: 7 more scored runs and about 3,700 distinct
# images through it, beside the 6 runs as drawn (scored once, for the first family): about 110-130 s of
# one thread's work in all, beside training.
MAIN_FLOOR_SEEDS = (0, 1, 2)

# Printed in the main command's tables and compares beside the benchmark's categories (the report,
# `reca-eval leaderboard` and `reca-eval compare` show every figure): shapes-edit's components and
# per-output figures.
MAIN_COMPARE_FIGURES = ("SC", "PQ", "single/overall", "single/success", "preservation", "pairs/followed")


def main_families(families: Sequence[str] | None = None) -> tuple[str, ...]:
    """The families the main command runs, in table order: ``families`` (None = every family that ships
    a ShapeWorld base and names main-command arms); ValueError for any other."""
    known = shapeworld_families()
    if families is None:
        return known
    unknown = sorted(set(families) - set(known))
    if unknown or not families:
        raise ValueError(f"families: expected some of {', '.join(known)}, got {list(families)}")
    return tuple(f for f in known if f in families)


def render_bounds(result: ExperimentResult, console: Console) -> None:
    """Per benchmark with a floor: the floor and ceiling rows, then every arm's overall score beside its
    normalised score (score − floor) / (ceiling − floor) and whether it sits inside the floor's interval."""
    for bounds in result.bounds:
        low, high = bounds.floor_interval()
        table = Table(
            title=escape(
                f"{bounds.benchmark}: read between the floor {bounds.floor_mean():.3f} [{low:.3f}, {high:.3f}] "
                f"(prompt-blind, seeds {list(bounds.floor.seeds)}) and the ceiling {bounds.ceiling_score():.3f}"
            )
        )
        for column in ("row", "overall", "95% interval", "normalised", "inside the floor's interval"):
            table.add_column(column, justify="left" if column == "row" else "right")
        for kind in [bounds.floor, *([bounds.tokenizer_floor] if bounds.tokenizer_floor else [])]:
            k_low, k_high = kind.interval()
            table.add_row(
                escape(kind.label), f"{kind.mean():.3f}", f"[{k_low:.3f}, {k_high:.3f}]", "", "", style="dim"
            )
        if bounds.ceiling is not None:
            table.add_row(
                escape(bounds.ceiling.record.label),
                f"{bounds.ceiling_score():.3f}",
                "",
                "1.000",
                "",
                style="dim",
            )
        for run in result.arm_runs:
            if (
                bounds.benchmark not in run.scores
                or result.bounds_for(bounds.benchmark, run.family) is not bounds
            ):
                continue
            score = run.scores[bounds.benchmark]["overall"]
            table.add_row(
                escape(run.label),
                f"{score:.3f}",
                "",
                f"{bounds.normalise(score):.3f}",
                "yes" if bounds.within_floor(score) else "",
            )
        console.print(table)


def phase_times(seconds: Mapping[str, float], workers: int = 1) -> str:
    """The wall time and where the work went: "wall time 118 s (training 40 s, generation + scoring 52 s,
    ...)"; with several workers the phases overlap, so their seconds (each job's own) add up to more."""
    names = {
        "train": "training",
        "evaluate": "generation + scoring",
        "probes": "alignment probes",
        "references": "reference editors",
        "floors": "floors and ceilings",
    }
    parts = [f"{label} {seconds[key]:.0f} s" for key, label in names.items() if key in seconds]
    if workers > 1:
        return f"wall time {seconds['total']:.0f} s on {workers} workers (work: {', '.join(parts)})"
    return f"wall time {seconds['total']:.0f} s ({', '.join(parts)})"


def run_main_command(
    console: Console,
    *,
    bases: Mapping[str, Path] | None = None,
    families: Sequence[str] | None = None,
    results: Path = Path("results/demo"),
    budget: Budget | None = None,
    items_per_benchmark: int = MAIN_ITEMS_PER_BENCHMARK,
    generation_batch_size: int = 256,
    seed: int = 0,
    threads: int = 0,
    workers: int = 0,
    probe_scenes: int = 400,
    floor_seeds: tuple[int, ...] = MAIN_FLOOR_SEEDS,
) -> tuple[ExperimentResult, ReportPaths]:
    """Train the main arms of each family from its base, score, print the leaderboard and the compares,
    write the report. ``families``: some of :func:`reca_eval.models.shapeworld_families` (None = all of
    them), run in table order; ``bases``: {family: checkpoint} (a family not named starts from its
    shipped base). ``workers`` and ``threads``: :func:`reca_eval.experiments.workers.worker_layout`."""
    layout = worker_layout(workers, threads)
    use_threads(layout.threads)
    ordered = main_families(families)
    plan = ExperimentPlan(
        plan_families(ordered, resolve_bases(ordered, bases)),
        results=Path(results),
        seeds=(seed,),
        budget=budget or Budget(),
        items_per_benchmark=items_per_benchmark,
        generation_batch_size=generation_batch_size,
        probe_scenes=probe_scenes,
        floor_seeds=tuple(floor_seeds),
        workers=layout.workers,
    )
    subset = f"{items_per_benchmark} items per benchmark (subset)" if items_per_benchmark else "every item"
    for family in plan.family_plans():
        console.print(
            f"{family.family}: base {family.base}; arms {', '.join(family.arms)}; "
            f"scored on {', '.join(family.benchmarks)}"
        )
    console.print(f"{subset}; results in {results}/")

    def progress(run: ArmRun) -> None:
        trained = sum(s.seconds for s in run.stages)
        overall = ", ".join(f"{b} {v['overall']:.3f}" for b, v in run.scores.items())
        probe = f"; alignment retention {run.alignment['transfer']:.2f}" if run.alignment else ""
        console.print(
            f"[bold]{run.label}[/]: {run.account.steps} steps ({trained:.0f} s), scored in {run.eval_seconds:.0f} s: {overall}{probe}"
        )

    result = run_experiment(plan, on_arm=progress)
    write_leaderboard(plan.results)
    labels = {run.label for run in result.table_runs()}
    shown = {run.runs[b] for run in result.table_runs() for b in run.runs}
    render_leaderboard(
        [(rec, path) for rec, path in load_runs(plan.results) if path in shown and rec.label in labels],
        console,
        shown=lambda benchmark: [*registry.spec(benchmark).categories, *MAIN_COMPARE_FIGURES],
    )
    render_bounds(result, console)
    notes = {id(comp): note for _, comp, note in result.chance_notes()}
    for _, comparison in result.comparisons:
        # The benchmark's categories and headline figures; a secondary figure only where it moved.
        render_compare(
            comparison,
            console,
            shown=[*registry.spec(comparison.record_a.benchmark).categories, *MAIN_COMPARE_FIGURES],
        )
        if id(comparison) in notes:
            console.print(f"[yellow]{escape(notes[id(comparison)])}[/]")
    paths = write_report(result)
    console.print(phase_times(result.seconds, plan.workers))
    console.print(f"report: {paths.markdown} and {paths.html}; records: {plan.results}/runs/")
    return result, paths
