"""The SFT vs RecA experiment: train arms from one base, score them, tabulate, compare.

    plan = ExperimentPlan([FamilyPlan(Path("reca_eval/assets/shapeworld-base"), ALL_ARMS)], seeds=(0, 1, 2))
    result = run_experiment(plan)

For each training seed, each arm (:mod:`reca_eval.experiments.arms`) is trained stage by stage from the base
(identical stages once), then generates and scores every benchmark through the same path as
``reca-eval run --ckpt`` (:func:`reca_eval.evaluation.score.generate_and_score`), one result record per
arm x seed x benchmark, labelled with the arm name (and ``seed N`` when there are several seeds).
Generation seeds are the benchmark's own, identical for every arm, so runs pair prompt by prompt.

Beyond the records: scores per atypical split (the per-image rows joined with the items' ``split``
key), mean ± std over training seeds per category and per split, and the paired comparison of the
plan's two arms (SFT vs SFT+RecA) on each benchmark and seed.

Several model families in one experiment: ``plan.families`` lists them, each a :class:`FamilyPlan`
with its own base, arms, benchmarks and guidance (the family is read from the base's config.json when
not named); arms are labelled with their family (``flow/SFT+RecA``,
:func:`reca_eval.experiments.arms.qualified_name`) and compared within it. :func:`plan_families`
builds the family plans of a command line (families, bases, arms) from the families' own defaults.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from reca_eval import registry
from reca_eval.core.records import atomic_write_text, sha256_of_files
from reca_eval.diagnostics.floors import Bounds, benchmark_bounds, tokenizer_name
from reca_eval.evaluation import score as evaluate
from reca_eval.evaluation.references import SHAPES_BENCHMARKS, reference_scenes_path
from reca_eval.experiments.arms import (
    ALL_ARMS,
    BASE,
    MAIN_ARMS,
    SFT,
    SFT_RECA,
    Arm,
    Budget,
    Stage,
    StepAccount,
    build_arm,
    family_arms,
    qualified_name,
    stage_key,
    step_account,
)
from reca_eval.experiments.workers import job_pool, timed
from reca_eval.models import DEFAULT_FAMILY, check_family, family_class
from reca_eval.results.leaderboard import CompareResult, compare_runs

TRAIN_DIR = "train"
REFERENCE_FAMILY = "reference"  # rows that are not trained arms (the instruction-blind editors, the bounds)
# Text-to-image benchmarks whose tables carry the prompt-blind floor and the tokenizer ceiling
# (reca_eval.diagnostics.floors); their records land in <results>/bounds/runs, apart from the leaderboard.
FLOOR_BENCHMARKS = ("shapes-geneval", "shapes-dpg")
BOUNDS_DIR = "bounds"
ITEMS_DIR = "items"
SUMMARY_FILE = "experiment.json"
SPLIT_ORDER = ("typical", "common", "rare", "uncaptioned", "unrendered", "none")
SPLIT_NAMES = {
    "typical": "typical",
    "common": "common",
    "rare": "rare",
    "uncaptioned": "rendered, never captioned",
    "unrendered": "never rendered",
    "none": "no colour named",
}


@dataclass(frozen=True)
class FamilyPlan:
    """One model family's part of an experiment: its base, its arms and what they are scored on."""

    base: Path
    arms: tuple[str, ...] = MAIN_ARMS
    benchmarks: tuple[str, ...] = SHAPES_BENCHMARKS
    family: str = ""  # "" = read from the base's config.json
    guidance_scale: float | None = None  # None = the plan's

    def resolved(self) -> FamilyPlan:
        """With the family read from the base, and every arm checked against the family's arms."""
        from reca_eval.models.loading import detect_family

        family = self.family or detect_family(Path(self.base))
        check_family(family)
        unknown = [a for a in self.arms if a not in family_arms(family)]
        if unknown:
            raise KeyError(
                f"arm(s) {unknown} do not exist for family {family!r} (known: {', '.join(family_arms(family))})"
            )
        return dataclasses.replace(self, family=family)


@dataclass(frozen=True)
class ExperimentPlan:
    families: tuple[FamilyPlan, ...]  # in order: the first one's guidance heads the report
    results: Path = Path("results/experiment")
    seeds: tuple[int, ...] = (0,)
    budget: Budget = field(default_factory=Budget)
    items_per_benchmark: int = 0  # 0 = every item; otherwise an evenly spaced subset, said in the records
    generation_batch_size: int = 256
    guidance_scale: float = 5.0  # of every family whose FamilyPlan sets none
    temperature: float = 1.0
    compare: tuple[str, str] = (SFT, SFT_RECA)  # (A, B): B - A is reported, within each family
    n_boot: int = 1000
    # Held-out scenes for `reca-eval diagnose alignment` on every checkpoint that supports it (models
    # with condition_hidden_states: the Janus family); 0 = no probe.
    probe_scenes: int = 0
    # Seeds of the prompt-blind floor of every FLOOR_BENCHMARKS benchmark scored (through each scoring
    # family's base tokenizer too, with that tokenizer's ceiling); () = no floor and ceiling rows.
    floor_seeds: tuple[int, ...] = (0, 1, 2)
    # Processes that score, probe and compute floors while the next arm trains
    # (reca_eval.experiments.workers); 1 = everything in the calling process.
    workers: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "families", tuple(self.families))
        if not self.families:
            raise ValueError("no model family to run")

    def label(self, arm: str, seed: int, family: str = DEFAULT_FAMILY) -> str:
        name = qualified_name(arm, family)
        if arm == BASE or len(self.seeds) == 1:
            return name
        return f"{name} seed {seed}"

    def family_plans(self) -> list[FamilyPlan]:
        """Every family plan, with its family read from its base where not named, and its arms checked."""
        return [f.resolved() for f in self.families]

    def guidance(self, family: FamilyPlan) -> float:
        """The guidance a family samples with: its own, else the plan's."""
        return self.guidance_scale if family.guidance_scale is None else family.guidance_scale

    def all_benchmarks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(b for f in self.families for b in f.benchmarks))

    def qualified_arms(self) -> list[str]:
        """Every arm's table name, families in order (``SFT``, ..., ``flow/SFT``, ...)."""
        return [qualified_name(a, f.family) for f in self.family_plans() for a in f.arms]


@dataclass
class TrainedStage:
    key: str
    name: str
    checkpoint: Path
    losses: list[float]
    steps: int
    seconds: float
    reused: bool  # trained earlier (by another arm or an earlier run of the same plan)


@dataclass
class ArmRun:
    arm: str  # the qualified name: "SFT+RecA" (Janus), "flow/SFT+RecA"
    seed: int
    label: str
    checkpoint: Path
    stages: list[TrainedStage]
    account: StepAccount
    runs: dict[str, Path] = field(default_factory=dict)  # benchmark -> run folder
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # benchmark -> category -> score
    split_scores: dict[str, dict[str, float]] = field(default_factory=dict)  # benchmark -> split -> score
    eval_seconds: float = 0.0
    family: str = DEFAULT_FAMILY
    alignment: dict[str, float] = field(default_factory=dict)  # probe summary; empty = not probed


@dataclass
class ExperimentResult:
    plan: ExperimentPlan
    arm_runs: list[ArmRun]
    items_paths: dict[str, Path]  # benchmark -> the item file scored
    comparisons: list[tuple[int, CompareResult]] = field(default_factory=list)  # (seed, result)
    seconds: dict[str, float] = field(default_factory=dict)
    # Untrained rows shown beside the arms: the instruction-blind editors on shapes-edit (the floor).
    reference_runs: list[ArmRun] = field(default_factory=list)
    # The floors and ceilings of the text-to-image benchmarks (one per benchmark and scoring family), and
    # their table rows (scores: the mean over the floor's seeds).
    bounds: list[Bounds] = field(default_factory=list)
    bound_runs: list[ArmRun] = field(default_factory=list)

    def table_runs(self) -> list[ArmRun]:
        """The rows of every score table: the arms, the reference editors, then the floors and ceilings."""
        return [*self.arm_runs, *self.reference_runs, *self.bound_runs]

    def bounds_for(self, benchmark: str, family: str = "") -> Bounds | None:
        """The bounds an arm of ``family`` is read against on ``benchmark`` (its own base's tokenizer;
        the first family's for reference rows); None where the benchmark has none."""
        found = [b for b in self.bounds if b.benchmark == benchmark]
        return next((b for b in found if b.family == family), found[0] if found else None)

    def normalised(self, run: ArmRun, benchmark: str, key: str = "overall") -> float:
        """(score - floor) / (ceiling - floor) of a row on a benchmark; NaN where no bounds are known."""
        bounds = self.bounds_for(benchmark, run.family)
        score = run.scores.get(benchmark, {}).get(key, math.nan)
        return math.nan if bounds is None else bounds.normalise(score, key)

    def chance_notes(self) -> list[tuple[int, CompareResult, str]]:
        """(seed, comparison, note) for every paired comparison whose two arms both sit inside the
        floor's 95% interval on the overall score (their difference is read at chance), or, on
        shapes-edit, both score no more than the best instruction-blind reference editor."""
        notes = []
        blind = [r.scores["shapes-edit"]["overall"] for r in self.reference_runs if "shapes-edit" in r.scores]
        for seed, comp in self.comparisons:
            bounds = self.bounds_for(comp.record_a.benchmark, str(comp.record_a.options.get("family", "")))
            delta = comp.deltas.get("overall")
            if comp.record_a.benchmark == "shapes-edit" and blind and delta is not None:
                if max(delta.a, delta.b) <= max(blind):
                    notes.append(
                        (
                            seed,
                            comp,
                            f"both arms ({delta.a:.3f}, {delta.b:.3f}) score no more than the best "
                            f"instruction-blind reference editor ({max(blind):.3f}) on shapes-edit: "
                            "neither follows instructions",
                        )
                    )
                continue
            if bounds is None or delta is None:
                continue
            if bounds.within_floor(delta.a) and bounds.within_floor(delta.b):
                low, high = bounds.floor_interval()
                notes.append(
                    (
                        seed,
                        comp,
                        f"both arms ({delta.a:.3f}, {delta.b:.3f}) sit inside the prompt-blind floor's 95% "
                        f"interval [{low:.3f}, {high:.3f}] on {comp.record_a.benchmark}: "
                        "neither can be told from chance",
                    )
                )
        return notes

    def scores_frame(self) -> pd.DataFrame:
        """Long table: family, arm, seed, label, benchmark, kind ("category" | "split"), key, value."""
        rows = []
        for run in self.table_runs():
            for kind, table in (("category", run.scores), ("split", run.split_scores)):
                for bench, values in table.items():
                    for key, value in values.items():
                        rows.append(
                            {
                                "family": run.family,
                                "arm": run.arm,
                                "seed": run.seed,
                                "label": run.label,
                                "benchmark": bench,
                                "kind": kind,
                                "key": key,
                                "value": value,
                            }
                        )
        columns = ["family", "arm", "seed", "label", "benchmark", "kind", "key", "value"]
        return pd.DataFrame(rows, columns=columns)


def plan_families(
    families: Sequence[str],
    bases: Mapping[str, Path],
    arms: Sequence[str] | None = None,
    on_left_out: Callable[[str, list[str]], None] | None = None,
    benchmarks: Sequence[str] | None = None,
) -> list[FamilyPlan]:
    """One :class:`FamilyPlan` per family from the families' own facts (their adapter classes):
    ``arms`` (None = the family's main-command arms) less those the family lacks (told to
    ``on_left_out(family, names)``), on its main-command benchmarks with ``arms=None`` and on every
    ShapeWorld benchmark otherwise (``benchmarks``, when given, for every family), sampled with its
    default guidance. ValueError when no arm of ``arms`` exists for a family, or for an unknown benchmark."""
    unknown = [a for a in arms or () if a not in ALL_ARMS]
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown} (known: {', '.join(ALL_ARMS)})")
    unknown = [b for b in benchmarks or () if b not in SHAPES_BENCHMARKS]
    if unknown or (benchmarks is not None and not benchmarks):
        raise ValueError(f"unknown benchmark(s) {unknown} (known: {', '.join(SHAPES_BENCHMARKS)})")
    plans, chosen = [], benchmarks
    for family in families:
        cls = family_class(family)
        if arms is None:
            kept, benchmarks = tuple(cls.main_arms), tuple(cls.main_benchmarks)
            if not kept:
                raise ValueError(f"family {family!r} has no main-command arms (main_arms of {cls.__name__})")
        else:
            known = family_arms(family)
            kept, benchmarks = tuple(a for a in arms if a in known), SHAPES_BENCHMARKS
            if not kept:
                raise ValueError(f"no arm of {list(arms)} exists for family {family!r}")
            left_out = [a for a in arms if a not in kept]
            if left_out and on_left_out is not None:
                on_left_out(family, left_out)
        plans.append(
            FamilyPlan(
                Path(bases[family]),
                kept,
                tuple(chosen) if chosen is not None else benchmarks,
                family=family,
                guidance_scale=cls.default_guidance_scale,
            )
        )
    return plans


def use_threads(threads: int = 0) -> None:
    """Torch threads for training and sampling: ``threads``, or min(2, CPU count) when 0 (2 on the
    2-core machine the README times; on a CPU shared with other work 1 thread is much faster, since
    OpenMP threads wait on each other)."""
    import os

    import torch

    torch.set_num_threads(threads or min(2, os.cpu_count() or 1))


# ------------------------------------------------------------------------------------------- items


def subset_items(name: str, count: int, out_dir: Path) -> Path:
    """An item file with ``count`` evenly spaced items of benchmark ``name`` (files are ordered by
    category, so every category keeps its share). Written beside the results; its hash differs from the
    full file's, so the leaderboard never mixes the two."""
    bench = registry.get(name)
    source = bench.default_items()
    lines = [line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    if bench.layout == "dpg":  # a question CSV: keep whole items (all their question rows)
        frame = pd.read_csv(source, dtype=str, keep_default_na=False)
        ids = list(dict.fromkeys(frame["item_id"]))
        keep = set(evaluate.evenly_spaced(ids, count))
        out = Path(out_dir) / f"{name}-{len(keep)}.csv"
        text = frame[frame["item_id"].isin(keep)].to_csv(index=False)
    else:
        # Counterfactual twins (a shared "pair_id") stay together: whole pairs are spaced evenly, by
        # the rule `run --limit` uses.
        groups = evaluate.twin_groups([json.loads(line) for line in lines])
        per_group = max(len(g) for g in groups)
        kept = evaluate.evenly_spaced(groups, max(1, count // per_group))
        chosen = [lines[n] for group in kept for n in group]
        out = Path(out_dir) / f"{name}-{len(chosen)}.jsonl"
        text = "\n".join(chosen) + "\n"
    atomic_write_text(out, text)
    bench.load_items(out)  # the subset must load exactly as the full file does
    return out


# ------------------------------------------------------------------------------------------- splits


def item_splits(name: str, items_path: Path) -> dict[str, str]:
    """item_id (as the per-image rows write it) -> atypical split, for a ShapeWorld benchmark's items."""
    bench = registry.get(name)
    items = bench.load_items(Path(items_path))
    scene_splits: dict[str, str] = {}
    if bench.layout == "dpg":  # the question CSV carries no scenes; items.jsonl beside it does
        scenes_path = reference_scenes_path(name)
        for number, line in enumerate(scenes_path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                row = json.loads(line)
                if "split" not in row:
                    raise ValueError(f"{scenes_path}:{number}: item {row.get('item_id')} has no 'split' key")
                scene_splits[str(row["item_id"])] = str(row["split"])
    splits = {}
    for index, item in enumerate(items):
        # GenEval's layout names an item by its 5-digit index; the others by item_id.
        item_id = f"{index:05d}" if bench.layout == "geneval" else str(item["item_id"])
        split = item.get("split", scene_splits.get(item_id))
        if split is None:
            raise ValueError(f"{items_path}: item {item_id} has no 'split' key")
        splits[item_id] = str(split)
    return splits


def split_scores(
    rows: pd.DataFrame, splits: dict[str, str], aggregate: Callable[..., dict[str, float]]
) -> dict[str, float]:
    """The benchmark's own "overall" aggregate over the rows of each split's items."""
    item_ids = rows["item_id"].astype(str)
    unknown = sorted(set(item_ids) - set(splits))
    if unknown:
        raise ValueError(f"{len(unknown)} row item id(s) not in the item file, e.g. {unknown[:3]}")
    labelled = rows.assign(split=item_ids.map(splits))
    present = [s for s in SPLIT_ORDER if s in set(labelled["split"])]
    present += sorted(set(labelled["split"]) - set(present))
    return {s: float(aggregate(labelled[labelled["split"] == s], None)["overall"]) for s in present}


def seed_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std and count over seeds per (arm, benchmark, kind, key) of a :meth:`scores_frame`."""
    grouped = frame.groupby(["arm", "benchmark", "kind", "key"], sort=False)["value"]
    summary = grouped.agg(
        mean="mean", std=lambda v: float(v.std(ddof=1)) if len(v) > 1 else math.nan, n="count"
    )
    return summary.reset_index()


# ------------------------------------------------------------------------------------------- training


def train_stage(stage: Stage, start: Path, out_dir: Path) -> TrainedStage:
    """Train one stage from ``start``; a finished stage folder (final model + summary) is reused."""
    from reca_eval.models.janus.shapeworld import world_source
    from reca_eval.training.loop import SUMMARY_FILE as TRAIN_SUMMARY
    from reca_eval.training.loop import train
    from reca_eval.training.recipe import recipe_from_dict

    key = out_dir.name
    final, summary_path = out_dir / "final", out_dir / TRAIN_SUMMARY
    if (final / "config.json").exists() and summary_path.exists():
        summary = json.loads(summary_path.read_text())
        return TrainedStage(key, stage.name, final, list(summary["losses"]), int(summary["steps"]), 0.0, True)
    raw = json.loads(json.dumps(stage.recipe))
    raw["model"]["kwargs"] = {"path": str(start)}
    raw["train"]["output_dir"] = str(out_dir)
    for source in raw["data"]["sources"]:
        source["max_items"] = stage.streams[source["name"]].limit
    iterables = {
        name: world_source(stream.seed, stream.caption_mode, limit=stream.limit)
        for name, stream in stage.streams.items()
    }
    started = time.perf_counter()
    result = train(recipe_from_dict(raw), iterables=iterables)
    return TrainedStage(
        key,
        stage.name,
        result.final_dir,
        list(result.losses),
        result.steps,
        time.perf_counter() - started,
        False,
    )


def checkpoint_fingerprint(path: Path) -> str:
    """The base's identity for stage keys: its weights and configs, so a new base never reuses old stages."""
    # Sub-folders too: a flow checkpoint keeps its VLM, DiT and VAE in vlm/, transformer/, vae/.
    files = [
        p for p in sorted(Path(path).rglob("*")) if p.suffix in (".json", ".safetensors") and p.is_file()
    ]
    return sha256_of_files(files, Path(path))


def train_arm(arm: Arm, base: Path, train_dir: Path) -> tuple[Path, list[TrainedStage]]:
    """Train an arm's stages in order; returns the final checkpoint (the base for the base arm)."""
    checkpoint, start_key, stages = Path(base), checkpoint_fingerprint(Path(base)), []
    for stage in arm.stages:
        key = stage_key(stage, start_key)
        trained = train_stage(stage, checkpoint, Path(train_dir) / key)
        stages.append(trained)
        checkpoint, start_key = trained.checkpoint, key
    return checkpoint, stages


# ------------------------------------------------------------------------------------------- scoring


def score_checkpoint(
    checkpoint: Path,
    label: str,
    plan: ExperimentPlan,
    items_paths: dict[str, Path],
    options: dict[str, Any],
    benchmarks: tuple[str, ...],
    guidance_scale: float | None = None,
) -> dict[str, evaluate.RunOutcome]:
    from reca_eval.evaluation.generate import generate_for_benchmark
    from reca_eval.models import family_class
    from reca_eval.models.loading import detect_family

    # A family samples with the settings it has: the flow family has no temperature.
    known = family_class(detect_family(Path(checkpoint))).sampling_defaults()
    generate = functools.partial(
        generate_for_benchmark,
        batch_size=plan.generation_batch_size,
        guidance_scale=plan.guidance_scale if guidance_scale is None else guidance_scale,
        temperature=plan.temperature if "temperature" in known else None,
    )
    outcomes = {}
    for name in benchmarks:
        outcomes[name] = evaluate.generate_and_score(
            name,
            checkpoint,
            generate=generate,
            items_path=items_paths[name],
            label=label,
            options={**options, "progress": False},
            results_dir=plan.results,
        )
    return outcomes


def _record_options(plan: ExperimentPlan, arm: str, seed: int, family: FamilyPlan) -> dict[str, Any]:
    return {
        "arm": arm,
        "family": family.family,
        "train_seed": seed,
        "items_per_benchmark": plan.items_per_benchmark or "all",
        "guidance_scale": plan.guidance(family),
        "temperature": plan.temperature,
    }


# ------------------------------------------------------------------------------------------- runner


def run_experiment(plan: ExperimentPlan, on_arm: Callable[[ArmRun], None] | None = None) -> ExperimentResult:
    """Train every arm for every seed, score it on every benchmark, compare, and write a JSON summary.

    Training runs here, arm after arm; every scoring, probe, floor and reference-editor job goes to
    ``plan.workers`` worker processes (:mod:`reca_eval.experiments.workers`) as soon as what it needs
    exists, so the next arm trains while the last one is scored. ``on_arm`` hears of each arm, in plan
    order, once all of its jobs are done."""
    for base in (f.base for f in plan.families):
        if not (Path(base) / "config.json").exists():
            raise FileNotFoundError(f"base checkpoint {base} has no config.json (a save_pretrained folder)")
    if not plan.seeds:
        raise ValueError("the plan names no training seed")
    families = plan.family_plans()  # checks every arm against its family before anything trains
    # Our own progress bars say what is happening; transformers' per-load bars would bury them.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    import torch

    started = time.perf_counter()
    results = Path(plan.results)
    items_paths = {
        name: subset_items(name, plan.items_per_benchmark, results / ITEMS_DIR)
        if plan.items_per_benchmark
        else registry.get(name).default_items()
        for name in plan.all_benchmarks()
    }
    splits = {name: item_splits(name, path) for name, path in items_paths.items()}
    seconds = dict.fromkeys(("train", "evaluate", "probes", "references", "floors"), 0.0)
    pending: list[tuple[ArmRun, dict[str, Future], Future | None]] = []
    arm_runs: list[ArmRun] = []
    comparisons: dict[tuple[str, int, str], Future] = {}

    def collect(block: bool) -> None:
        """Fill in and report the arms at the head of ``pending`` whose jobs are done (all, if ``block``)."""
        while pending and (block or all(f.done() for f in _futures(pending[0]))):
            run, jobs, probe = pending.pop(0)
            for bench_name, job in jobs.items():
                outcomes, took = job.result()
                run.eval_seconds += took
                outcome = outcomes[bench_name]
                run.runs[bench_name] = outcome.run_dir
                run.scores[bench_name] = dict(outcome.record.scores)
                aggregate = registry.get(bench_name).aggregate
                run.split_scores[bench_name] = split_scores(outcome.rows, splits[bench_name], aggregate)
            seconds["evaluate"] += run.eval_seconds
            if probe is not None:
                run.alignment, took = probe.result()
                seconds["probes"] += took
            arm_runs.append(run)
            if on_arm is not None:
                on_arm(run)
            # A comparison starts as soon as both of its arms are scored, not after the last arm.
            submit_comparisons(plan, families, arm_runs, pool, comparisons)

    with job_pool(plan.workers, torch.get_num_threads()) as pool:
        # The longest jobs that need no trained arm go first, so the workers are busy while the first
        # arm trains and the last arm's jobs do not wait behind them.
        bounds_job = pool.submit(timed, score_bounds, plan, families, items_paths, splits)
        references_job = (
            pool.submit(
                timed,
                score_reference_editors,
                plan,
                items_paths["shapes-edit"],
                splits["shapes-edit"],
                families,
            )
            if "shapes-edit" in plan.all_benchmarks()
            else None
        )
        for seed in plan.seeds:
            for family in families:
                for name in family.arms:
                    if name == BASE and seed != plan.seeds[0]:
                        continue  # the base does not depend on a training seed
                    arm = build_arm(name, plan.budget, seed, family.family)
                    t0 = time.perf_counter()
                    checkpoint, stages = train_arm(arm, family.base, results / TRAIN_DIR)
                    seconds["train"] += time.perf_counter() - t0
                    label = plan.label(name, seed, family.family)
                    run = ArmRun(
                        arm.label, seed, label, checkpoint, stages, step_account(arm), family=family.family
                    )
                    options = _record_options(plan, arm.label, seed, family)
                    jobs = {
                        bench_name: pool.submit(
                            timed,
                            score_checkpoint,
                            checkpoint,
                            run.label,
                            plan,
                            items_paths,
                            options,
                            benchmarks=(bench_name,),
                            guidance_scale=plan.guidance(family),
                        )
                        for bench_name in family.benchmarks
                    }
                    probe = (
                        pool.submit(timed, probe_checkpoint, checkpoint, plan.probe_scenes)
                        if plan.probe_scenes
                        else None
                    )
                    pending.append((run, jobs, probe))
                    collect(block=False)
        collect(block=True)
        references: list[ArmRun] = []
        if references_job is not None:
            references, seconds["references"] = references_job.result()
        (bounds, bound_runs), seconds["floors"] = bounds_job.result()
        compared = [
            (seed, job.result())
            for seed, job in submit_comparisons(plan, families, arm_runs, pool, comparisons)
        ]
    result = ExperimentResult(
        plan,
        arm_runs,
        items_paths,
        compared,
        {**seconds, "total": time.perf_counter() - started},
        reference_runs=references,
        bounds=bounds,
        bound_runs=bound_runs,
    )
    write_summary(result, results / SUMMARY_FILE)
    return result


def _futures(entry: tuple[ArmRun, dict[str, Future], Future | None]) -> list[Future]:
    _, jobs, probe = entry
    return [*jobs.values(), *([probe] if probe is not None else [])]


def score_reference_editors(
    plan: ExperimentPlan,
    items_path: Path,
    splits: dict[str, str],
    families: Sequence[FamilyPlan] = (),
) -> list[ArmRun]:
    """Rows of the instruction-blind editors on shapes-edit, scored like an arm, so every table shows
    the floor beside the trained arms: identity, blank, drop-one, and the copier through the base
    tokenizer of each family in ``families`` that scores shapes-edit."""
    from reca_eval.diagnostics.copier import copier_label, score_copier
    from reca_eval.evaluation.references import REFERENCE_EDITORS, write_reference_editor_folder
    from reca_eval.models.loading import load_unified_model

    runs = []
    options = {
        "progress": False,
        "family": REFERENCE_FAMILY,
        "items_per_benchmark": plan.items_per_benchmark or "all",
    }
    copiers = {
        copier_label(tokenizer_name(f.family)): Path(f.base)
        for f in families
        if "shapes-edit" in f.benchmarks
    }
    for editor in [*REFERENCE_EDITORS, *copiers]:
        label = editor if editor in copiers else f"{editor} editor"
        run_dir = evaluate.new_run_dir(Path(plan.results), "shapes-edit", label)
        if editor in copiers:
            outcome = score_copier(
                load_unified_model(copiers[editor]),
                label=label,
                results_dir=Path(plan.results),
                items_path=items_path,
                model_id=str(copiers[editor]),
                options={**options, "arm": label},
                run_dir=run_dir,
            )
        else:
            write_reference_editor_folder(editor, run_dir / "images", items_path=items_path)
            outcome = evaluate.score_images(
                "shapes-edit",
                run_dir / "images",
                items_path=items_path,
                label=label,
                model_id=f"reference editor: {editor}",
                options={**options, "arm": label},
                results_dir=Path(plan.results),
                run_dir=run_dir,
            )
        run = ArmRun(label, plan.seeds[0], label, run_dir, [], StepAccount(label), family=REFERENCE_FAMILY)
        run.runs["shapes-edit"] = outcome.run_dir
        run.scores["shapes-edit"] = dict(outcome.record.scores)
        aggregate = registry.get("shapes-edit").aggregate
        run.split_scores["shapes-edit"] = split_scores(outcome.rows, splits, aggregate)
        runs.append(run)
    return runs


def score_bounds(
    plan: ExperimentPlan,
    families: list[FamilyPlan],
    items_paths: dict[str, Path],
    splits: dict[str, dict[str, str]],
) -> tuple[list[Bounds], list[ArmRun]]:
    """The prompt-blind floor of every FLOOR_BENCHMARKS benchmark the plan scores, over
    ``plan.floor_seeds``, as drawn and through the base tokenizer of each family scoring it, with that
    tokenizer's ceiling (records in ``<results>/bounds``); and their table rows (mean over seeds).
    Nothing is cached across runs."""
    from reca_eval.models.loading import load_unified_model

    if not plan.floor_seeds:
        return [], []
    where = Path(plan.results) / BOUNDS_DIR
    models: dict[Path, Any] = {}
    memos: dict[Path, dict[bytes, bytes]] = {}  # per base: round trips shared by both benchmarks
    bounds: list[Bounds] = []
    rows: dict[str, ArmRun] = {}

    def add_row(
        label: str, bench: str, outcomes: list[evaluate.RunOutcome], scores: dict[str, float]
    ) -> None:
        run = rows.setdefault(
            label,
            ArmRun(
                label,
                plan.seeds[0],
                label,
                outcomes[0].run_dir,
                [],
                StepAccount(label),
                family=REFERENCE_FAMILY,
            ),
        )
        run.runs[bench] = outcomes[0].run_dir
        run.scores[bench] = scores
        aggregate = registry.get(bench).aggregate
        per_seed = [split_scores(o.rows, splits[bench], aggregate) for o in outcomes]
        run.split_scores[bench] = {k: sum(s[k] for s in per_seed) / len(per_seed) for k in per_seed[0]}

    for bench in FLOOR_BENCHMARKS:
        scoring = [f for f in families if bench in f.benchmarks]
        drawn = None  # the floor as drawn: scored once, then sent through each family's tokenizer
        for index, family in enumerate(scoring):
            base = Path(family.base)
            if base not in models:
                models[base], memos[base] = load_unified_model(base), {}
            found = benchmark_bounds(
                bench,
                results_dir=where,
                model=models[base],
                memo=memos[base],
                drawn=drawn,
                seeds=plan.floor_seeds,
                items_path=items_paths[bench],
                model_id=str(base),
                family=family.family,
                options={
                    "family": REFERENCE_FAMILY,
                    "items_per_benchmark": plan.items_per_benchmark or "all",
                },
            )
            bounds.append(found)
            drawn = found.floor
            tok = tokenizer_name(family.family)
            if index == 0:
                add_row(found.floor.label, bench, found.floor.outcomes, found.floor.scores())
            if found.tokenizer_floor is not None:
                tf = found.tokenizer_floor
                add_row(tf.label, bench, tf.outcomes, tf.scores())
            if found.ceiling is not None:
                add_row(
                    f"exact references through {tok} (ceiling)",
                    bench,
                    [found.ceiling],
                    found.ceiling_scores(),
                )
    return bounds, list(rows.values())


@functools.cache
def probe_checkpoint(checkpoint: Path, scenes: int) -> dict[str, float]:
    """The alignment probe's summary (within, cross, chance, transfer) of a checkpoint; empty for a model
    without ``condition_hidden_states`` (the flow family reads text and images in a frozen VLM)."""
    from reca_eval.diagnostics.alignment import diagnose_alignment
    from reca_eval.models.loading import load_unified_model

    model = load_unified_model(Path(checkpoint))
    if not hasattr(model, "condition_hidden_states"):
        return {}
    return diagnose_alignment(model, scenes=scenes).summary()


def submit_comparisons(
    plan: ExperimentPlan,
    families: list[FamilyPlan],
    arm_runs: list[ArmRun],
    pool: Executor,
    started: dict[tuple[str, int, str], Future],
) -> list[tuple[int, Future]]:
    """Every paired comparison of the plan's two arms that ``arm_runs`` allow (within each family, on
    each of its benchmarks, per seed: B - A with its interval), in order, as jobs of ``pool``; a
    comparison already in ``started`` is not submitted again. ``families``: ``plan.family_plans()``,
    resolved once by the caller (resolving reads every base's config)."""
    by_key = {(run.arm, run.seed): run for run in arm_runs}
    base_seed = plan.seeds[0]
    jobs: list[tuple[int, Future]] = []
    for family in families:
        name_a, name_b = (qualified_name(n, family.family) for n in plan.compare)
        for seed in plan.seeds:
            run_a = by_key.get((name_a, base_seed if plan.compare[0] == BASE else seed))
            run_b = by_key.get((name_b, base_seed if plan.compare[1] == BASE else seed))
            if run_a is None or run_b is None:
                continue
            for bench_name in family.benchmarks:
                key = (family.family, seed, bench_name)
                if key not in started:
                    # The benchmark's aggregate is looked up where the job runs (a function travels
                    # to a worker by name only).
                    started[key] = pool.submit(
                        compare_runs,
                        run_a.runs[bench_name],
                        run_b.runs[bench_name],
                        None,
                        n_boot=plan.n_boot,
                        seed=0,
                    )
                jobs.append((seed, started[key]))
    return jobs


def write_summary(result: ExperimentResult, path: Path) -> None:
    plan = result.plan
    payload = {
        "base": str(plan.families[0].base),  # the first family's (as before families were listed)
        "arms": list(plan.families[0].arms),
        "families": [
            {"family": f.family, "base": str(f.base), "arms": list(f.arms), "benchmarks": list(f.benchmarks)}
            for f in plan.family_plans()
        ],
        "seeds": list(plan.seeds),
        "budget": {k: getattr(plan.budget, k) for k in plan.budget.__dataclass_fields__},
        "items_per_benchmark": plan.items_per_benchmark or "all",
        "items": {k: str(v) for k, v in result.items_paths.items()},
        "seconds": result.seconds,
        "arm_runs": [
            {
                "arm": run.arm,
                "family": run.family,
                "seed": run.seed,
                "label": run.label,
                "checkpoint": str(run.checkpoint),
                "steps": run.account.steps,
                "t2i_steps": run.account.t2i_steps,
                "batch_size": run.account.batch_size,
                "stages": [
                    {"key": s.key, "name": s.name, "steps": s.steps, "seconds": s.seconds, "reused": s.reused}
                    for s in run.stages
                ],
                "eval_seconds": run.eval_seconds,
                "runs": {k: str(v) for k, v in run.runs.items()},
                "scores": run.scores,
                "split_scores": run.split_scores,
                "alignment": run.alignment,
            }
            for run in result.arm_runs
        ],
        "reference_runs": [
            {"label": run.label, "runs": {k: str(v) for k, v in run.runs.items()}, "scores": run.scores}
            for run in result.reference_runs
        ],
        "floor_seeds": list(plan.floor_seeds),
        "bounds": [b.summary() for b in result.bounds],
        "bound_runs": [
            {"label": run.label, "runs": {k: str(v) for k, v in run.runs.items()}, "scores": run.scores}
            for run in result.bound_runs
        ],
        "normalised": [
            {
                "label": run.label,
                "scores": {
                    bench: result.normalised(run, bench) for bench in run.scores if result.bounds_for(bench)
                },
            }
            for run in result.arm_runs
        ],
    }
    atomic_write_text(path, json.dumps(payload, indent=1, default=str) + "\n")
