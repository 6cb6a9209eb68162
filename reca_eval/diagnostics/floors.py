"""Floors beside ceilings: what a ShapeWorld benchmark gives by chance, and the most a tokenizer allows.

The **floor** is the score of a *prompt-blind generator*: every image an independent training-distribution
scene (:func:`reca_eval.models.janus.shapeworld.world_scene`) picked by a seed, the prompt never read
(:func:`reca_eval.evaluation.references.write_prompt_blind_folder`). It is scored through the very path of
``reca-eval run --images`` (one run record per seed), over several seeds, and given as the mean over seeds
with a 95% interval for *one* prompt-blind run on these items: the images of every seed are pooled per
item, and each bootstrap replicate draws an item's images (as many as one run has) from its pool, so the
interval holds the spread of one run's score without asking three seeds to estimate a standard
deviation (:func:`one_run_interval`). An arm whose score sits inside that interval cannot be told from
chance.

With a model, the same scenes also go once through the model's own generation tokenizer
(:func:`reca_eval.diagnostics.tokenizer_ceiling.round_trip_folder`, as the ceiling does), so the floor
pays the tokenizer loss every arm pays; and the **ceiling** is the exact references through that
tokenizer (:func:`reca_eval.diagnostics.tokenizer_ceiling.tokenizer_ceiling`). An arm's score is then
read as ``(score - floor) / (ceiling - floor)``: 0 at chance, 1 at the tokenizer's limit.

    bounds = benchmark_bounds("shapes-dpg", model=model, seeds=(0, 1, 2), results_dir=Path("results/bounds"))
    bounds.floor_mean(), bounds.floor_interval(), bounds.ceiling_score(), bounds.normalise(21.1)
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from reca_eval.evaluation import score as evaluate

# What the exact references score on each ShapeWorld benchmark (the "overall" of a perfect generator).
FULL_SCORES = {"shapes-geneval": 1.0, "shapes-dpg": 100.0, "shapes-edit": 10.0}
FLOOR_SEEDS = (0, 1, 2, 3, 4)  # `diagnose floor`'s default
FLOOR_RESOLUTION = 32  # the world's training renders (and the shipped bases' generations)
FLOOR_LABEL = "prompt-blind (floor)"
CONFIDENCE = 0.95
N_BOOT = 400  # replicates of one_run_interval


def one_run_interval(
    rows_per_seed: list[pd.DataFrame],
    aggregate,
    images_per_prompt: int,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> dict[str, tuple[float, float]]:
    """Percentile interval of every key ``aggregate(rows, weights)`` returns, for one run of a generator
    whose images are independent of the prompt: the per-image rows of every seed are pooled per item,
    and each replicate draws ``images_per_prompt`` of an item's pooled images with replacement (row
    weight = how often its image was drawn). Items and their categories are held fixed, as they are for
    the arms the floor is read against."""
    frames = [rows.assign(_seed=i) for i, rows in enumerate(rows_per_seed) if len(rows)]
    if not frames:
        return {}
    rows = pd.concat(frames, ignore_index=True)
    images = pd.MultiIndex.from_frame(rows[["item_id", "_seed", "sample"]].astype(str))
    image_codes, image_keys = pd.factorize(images, sort=True)  # sorted: an item's images are contiguous
    items = np.asarray([key[0] for key in image_keys])
    starts = np.flatnonzero(np.r_[True, items[1:] != items[:-1]])
    sizes = np.diff(np.r_[starts, len(items)])
    rng = np.random.default_rng(seed)
    keys = list(aggregate(rows, None))
    replicates = np.full((n_boot, len(keys)), np.nan)
    for b in range(n_boot):
        draws = starts[:, None] + (rng.random((len(starts), images_per_prompt)) * sizes[:, None]).astype(int)
        drawn = np.bincount(draws.ravel(), minlength=len(image_keys)).astype(float)
        result = aggregate(rows, drawn[image_codes])
        replicates[b] = [result.get(k, np.nan) for k in keys]
    alpha = 1 - confidence
    out = {}
    for j, key in enumerate(keys):
        finite = replicates[:, j][np.isfinite(replicates[:, j])]
        if finite.size:
            low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
            out[key] = (float(low), float(high))
    return out


def prediction_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Where one more draw falls with probability ``confidence``, from ``values`` drawn alike:
    mean ± t(n-1) · sd · sqrt(1 + 1/n). A single value gives (value, value): no spread is known."""
    values = [float(v) for v in values if not math.isnan(v)]
    if not values:
        return (math.nan, math.nan)
    mean = statistics.fmean(values)
    if len(values) < 2:
        return (mean, mean)
    from scipy.stats import t

    half = float(t.ppf(0.5 + confidence / 2, len(values) - 1)) * statistics.stdev(values)
    half *= math.sqrt(1 + 1 / len(values))
    return (mean - half, mean + half)


@dataclass
class SeededRuns:
    """One row kind (the prompt-blind floor, as drawn or through a tokenizer) over several seeds: one
    scored run per seed."""

    label: str
    seeds: tuple[int, ...]
    outcomes: list[evaluate.RunOutcome]
    # key -> 95% interval of one run (one_run_interval); a key not here falls back to the t prediction
    # interval over the seeds' scores
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)

    def values(self, key: str = "overall") -> list[float]:
        return [float(o.record.scores.get(key, math.nan)) for o in self.outcomes]

    def mean(self, key: str = "overall") -> float:
        values = [v for v in self.values(key) if not math.isnan(v)]
        return statistics.fmean(values) if values else math.nan

    def interval(self, key: str = "overall") -> tuple[float, float]:
        if key in self.intervals:
            return self.intervals[key]
        return prediction_interval(self.values(key))

    def scores(self) -> dict[str, float]:
        """The mean over seeds of every score key the runs share."""
        keys = dict.fromkeys(k for o in self.outcomes for k in o.record.scores)
        return {k: self.mean(k) for k in keys}


@dataclass
class Bounds:
    """A ShapeWorld benchmark's floor (and, with a model, the tokenizer floor and ceiling)."""

    benchmark: str
    full: float  # what the exact references score
    floor: SeededRuns  # prompt-blind scenes as drawn
    tokenizer_floor: SeededRuns | None = None  # the same scenes through the model's tokenizer
    ceiling: evaluate.RunOutcome | None = None  # the exact references through the model's tokenizer
    model: str = ""  # whose tokenizer ("" = none)
    family: str = ""  # that model's family, where known
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def arm_floor(self) -> SeededRuns:
        """The floor an arm is read against: through the tokenizer when there is one."""
        return self.tokenizer_floor or self.floor

    def floor_mean(self, key: str = "overall") -> float:
        return self.arm_floor.mean(key)

    def floor_interval(self, key: str = "overall") -> tuple[float, float]:
        return self.arm_floor.interval(key)

    def ceiling_score(self, key: str = "overall") -> float:
        """The tokenizer ceiling; the exact references' score where no tokenizer was given."""
        if self.ceiling is None:
            return self.full
        return float(self.ceiling.record.scores.get(key, math.nan))

    def ceiling_scores(self) -> dict[str, float]:
        return {} if self.ceiling is None else {k: float(v) for k, v in self.ceiling.record.scores.items()}

    def normalise(self, score: float, key: str = "overall") -> float:
        """(score - floor) / (ceiling - floor): 0 at chance, 1 at the tokenizer's limit."""
        low, high = self.floor_mean(key), self.ceiling_score(key)
        if math.isnan(score) or not high > low:
            return math.nan
        return (float(score) - low) / (high - low)

    def within_floor(self, score: float, key: str = "overall") -> bool:
        """Whether ``score`` sits inside the floor's 95% prediction interval (cannot be told from chance)."""
        low, high = self.floor_interval(key)
        return bool(low <= float(score) <= high)

    def summary(self) -> dict[str, object]:
        """JSON-ready figures: floor (mean, interval, per seed), tokenizer floor, ceiling."""
        out: dict[str, object] = {
            "benchmark": self.benchmark,
            "full": self.full,
            "seeds": list(self.floor.seeds),
            "floor": {
                "mean": self.floor.mean(),
                "interval": list(self.floor.interval()),
                "per_seed": self.floor.values(),
                "scores": self.floor.scores(),
                "runs": [str(o.run_dir) for o in self.floor.outcomes],
            },
        }
        if self.tokenizer_floor is not None:
            out["tokenizer_floor"] = {
                "mean": self.tokenizer_floor.mean(),
                "interval": list(self.tokenizer_floor.interval()),
                "per_seed": self.tokenizer_floor.values(),
                "scores": self.tokenizer_floor.scores(),
                "runs": [str(o.run_dir) for o in self.tokenizer_floor.outcomes],
            }
        if self.ceiling is not None:
            out["ceiling"] = {"scores": dict(self.ceiling.record.scores), "run": str(self.ceiling.run_dir)}
        if self.model:
            out["model"] = self.model
        if self.family:
            out["family"] = self.family
        return out


def tokenizer_name(family: str = "") -> str:
    """How rows name a tokenizer: "janus VQ", "flow VAE", or "tokenizer"."""
    kind = {"janus": "VQ", "flow": "VAE", "qwen_image_edit": "VAE"}.get(family, "")
    return f"{family} {kind}".strip() if family else "tokenizer"


def benchmark_bounds(
    benchmark: str,
    *,
    results_dir: Path,
    model=None,
    seeds: tuple[int, ...] | list[int] = FLOOR_SEEDS,
    items_path: Path | None = None,
    resolution: int = FLOOR_RESOLUTION,
    model_id: str = "",
    family: str = "",
    ceiling: bool = True,
    options: dict | None = None,
    memo: dict[bytes, bytes] | None = None,
    drawn: SeededRuns | None = None,
) -> Bounds:
    """Score the prompt-blind floor of ShapeWorld ``benchmark`` for every seed (one run record each under
    ``results_dir``); with ``model``, the same images through its generation tokenizer (one record per
    seed) and, unless ``ceiling=False``, the tokenizer ceiling (one record). ``options`` join every
    record's options (the experiment says its arm and family there). ``memo``: round trips already made
    with this model in this process (image j of seed s is the same scene on every benchmark, so a
    shared memo sends it through the tokenizer once); a fresh one when None. ``drawn``: the floor as
    drawn that an earlier call scored for the same benchmark, items, seeds and resolution (another
    model's bounds): its runs and images are used again, not drawn and scored a second time."""
    from reca_eval.diagnostics.tokenizer_ceiling import round_trip_folder, tokenizer_ceiling
    from reca_eval.evaluation.references import SHAPES_BENCHMARKS, write_prompt_blind_folder

    if benchmark not in SHAPES_BENCHMARKS:
        raise KeyError(f"{benchmark!r} is not a ShapeWorld benchmark ({', '.join(SHAPES_BENCHMARKS)})")
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("a floor needs at least one seed")
    results_dir = Path(results_dir)
    memo = {} if memo is None else memo
    tok = tokenizer_name(family)
    floor_label, tok_label = FLOOR_LABEL, f"prompt-blind through {tok} (floor)"
    floor_runs: list[evaluate.RunOutcome] = []
    tok_runs: list[evaluate.RunOutcome] = []
    common = {"progress": False, **(options or {})}
    if drawn is not None and tuple(drawn.seeds) != seeds:
        raise ValueError(f"the floor given was drawn with seeds {drawn.seeds}, not {seeds}")

    def score_seed(
        run_dir: Path, label: str, seed: int, resolution: int, through: str = ""
    ) -> evaluate.RunOutcome:
        """One prompt-blind run of ``seed`` (its images in ``run_dir/images``), scored into ``run_dir``."""
        return evaluate.score_images(
            benchmark,
            run_dir / "images",
            items_path=items_path,
            label=f"{label} seed {seed}",
            model_id=f"prompt-blind generator (world scenes), seed {seed}{through}",
            options={**common, "resolution": resolution, "prompt_blind_seed": seed},
            results_dir=results_dir,
            run_dir=run_dir,
            seeds=[seed],
        )

    for index, seed in enumerate(seeds):
        if drawn is not None:
            floor_runs.append(drawn.outcomes[index])
        else:
            run_dir = evaluate.new_run_dir(results_dir, benchmark, f"{floor_label} seed {seed}")
            write_prompt_blind_folder(
                benchmark, run_dir / "images", seed=seed, items_path=items_path, resolution=resolution
            )
            floor_runs.append(score_seed(run_dir, floor_label, seed, resolution))
        if model is None:
            continue
        trip_dir = evaluate.new_run_dir(results_dir, benchmark, f"{tok_label} seed {seed}")
        round_trip_folder(model, floor_runs[-1].run_dir / "images", trip_dir / "images", memo=memo)
        trip_size = _png_size(trip_dir / "images")
        tok_runs.append(score_seed(trip_dir, tok_label, seed, trip_size, f", through {model_id or tok}"))
    top = None
    if model is not None and ceiling:
        top = tokenizer_ceiling(
            model,
            benchmark,
            label=f"exact references through {tok} (ceiling)",  # the experiment's row name too
            results_dir=results_dir,
            items_path=items_path,
            model_id=model_id or None,
            memo=memo,
        )
    from reca_eval import registry

    bench = registry.get(benchmark)

    def seeded(label: str, outcomes: list[evaluate.RunOutcome]) -> SeededRuns:
        intervals = one_run_interval([o.rows for o in outcomes], bench.aggregate, bench.images_per_prompt)
        return SeededRuns(label, seeds, outcomes, intervals)

    return Bounds(
        benchmark,
        FULL_SCORES[benchmark],
        drawn if drawn is not None else seeded(floor_label, floor_runs),
        seeded(tok_label, tok_runs) if model is not None else None,
        top,
        model=model_id,
        family=family,
    )


def _png_size(folder: Path) -> int:
    from PIL import Image

    first = next(Path(folder).rglob("*.png"))
    with Image.open(first) as im:
        return im.size[0]


def checkpoint_bounds(
    benchmarks: list[str] | tuple[str, ...],
    *,
    results_dir: Path,
    ckpt: Path | None = None,
    seeds: tuple[int, ...] | list[int] = FLOOR_SEEDS,
    resolution: int = FLOOR_RESOLUTION,
    items_path: Path | None = None,
) -> dict[str, Bounds]:
    """The bounds of each benchmark: the prompt-blind floor, and with ``ckpt`` (a checkpoint folder of any
    family) the floor through its tokenizer and its tokenizer ceiling. ``items_path``: another item file
    (one benchmark only). Records land under ``results_dir``; nothing is cached between calls."""
    if items_path is not None and len(benchmarks) != 1:
        raise ValueError(f"an item file names one benchmark's items; got {len(benchmarks)} benchmarks")
    model, model_id, family = None, "", ""
    if ckpt is not None:
        from reca_eval.models.loading import detect_family, load_unified_model

        ckpt = Path(ckpt)
        model, model_id, family = load_unified_model(ckpt), str(ckpt.resolve()), detect_family(ckpt)
    memo: dict[bytes, bytes] = {}  # this call's round trips, shared by its benchmarks
    return {
        name: benchmark_bounds(
            name,
            results_dir=Path(results_dir),
            model=model,
            seeds=seeds,
            resolution=resolution,
            model_id=model_id,
            family=family,
            items_path=items_path,
            memo=memo,
        )
        for name in benchmarks
    }


def question_chance(rows_per_seed: list[pd.DataFrame]) -> pd.DataFrame:
    """Where a DPG-style floor comes from: per question type (``category/category_detailed``), its share
    of the questions, how often the prompt-blind images answer it right (raw, and gated: counted only
    when the questions it depends on are right too, as the benchmark scores), and the points of the
    overall it brings (the overall is the mean over images of each image's mean gated score x 100, so
    the contributions add up to it); then the overall without that type's questions. Means over the
    seeds' runs."""
    rows = pd.concat([r.assign(_seed=i) for i, r in enumerate(rows_per_seed)], ignore_index=True)
    needed = ("item_id", "sample", "category", "category_detailed", "raw", "score")
    missing = [c for c in needed if c not in rows.columns]
    if missing:
        raise ValueError(f"rows lack column(s) {missing}: question_chance reads DPG-style per-question rows")
    image = ["_seed", "item_id", "sample"]
    rows = rows.assign(kind=rows["category"].astype(str) + "/" + rows["category_detailed"].astype(str))
    per_image = rows.groupby(image)["score"].transform("size")
    n_images = rows.groupby(image).ngroups
    overall = float(rows.groupby(image)["score"].mean().mean() * 100)
    out = []
    for kind, part in rows.groupby("kind", sort=False):
        kept = rows[rows["kind"] != kind]
        without = float(kept.groupby(image)["score"].mean().mean() * 100) if len(kept) else math.nan
        out.append(
            {
                "question type": kind,
                "share of questions": len(part) / len(rows),
                "raw accuracy": float(part["raw"].mean()),
                "gated accuracy": float(part["score"].mean()),
                "points of the overall": float(
                    (part["score"] / per_image[part.index]).sum() / n_images * 100
                ),
                "overall without it": without,
            }
        )
    table = pd.DataFrame(out).set_index("question type")
    table.attrs["overall"] = overall
    return table
