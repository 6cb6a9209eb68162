"""The Python API for notebooks: score, compare, check and load runs as pandas frames.

    import reca_eval.api as reca
    reca.score("shapes-geneval", images="images/shapes-geneval", label="RecA")
    reca.compare("SFT", "SFT+RecA")            # one row per (benchmark, category): a, b, delta, interval
    reca.load_runs(per_image=True)             # per-image rows of every run, with run id, label, benchmark

The command line and these functions share every line of library code; only the printing differs.
Every frame carries ``run_id``, ``label`` and ``benchmark`` columns, so frames of several runs concatenate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from reca_eval.core.records import read_run
from reca_eval.evaluation import score as evaluation
from reca_eval.results import leaderboard

DEFAULT_RESULTS = Path("results")
_RUN_COLUMNS = ("run_id", "label", "benchmark", "model", "created")


def _identity(record) -> dict[str, Any]:
    return {name: getattr(record, name) for name in _RUN_COLUMNS}


def _scores_frame(record) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {**_identity(record), "category": key, "score": float(value)}
            for key, value in record.scores.items()
        ]
    )


def score(
    benchmark: str,
    images: str | Path | None = None,
    ckpt: str | Path | None = None,
    *,
    label: str = "",
    items: str | Path | None = None,
    options: dict[str, Any] | None = None,
    results: str | Path = DEFAULT_RESULTS,
    run_dir: str | Path | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """Score an image folder (``images``) or generate with a checkpoint (``ckpt``) and score; the run is
    written to ``results`` as with `reca-eval run`. ``options`` are checked against the benchmark's
    declared ones (:class:`reca_eval.core.spec.OptionError`); ``limit`` scores an evenly spaced subset.
    Returns one row per category; the per-image rows are in ``frame.attrs["per_image"]`` and the run
    folder in ``frame.attrs["run_dir"]``."""
    from reca_eval import registry
    from reca_eval.core.spec import check_options

    if (images is None) == (ckpt is None):
        raise ValueError("give exactly one of images= or ckpt=")
    options = check_options(registry.spec(benchmark), dict(options or {}))
    common = dict(items_path=items, label=label, options=options, results_dir=Path(results), limit=limit)
    if images is not None:
        outcome = evaluation.score_images(benchmark, Path(images), run_dir=run_dir, **common)
    else:
        from reca_eval.evaluation.generate import generate_for_benchmark

        outcome = evaluation.generate_and_score(
            benchmark, Path(ckpt), generate=generate_for_benchmark, run_dir=run_dir, **common
        )
        if outcome is None:  # a non-main process under `accelerate launch`
            return pd.DataFrame(columns=[*_RUN_COLUMNS, "category", "score"])
    leaderboard.write_leaderboard(Path(results))
    frame = _scores_frame(outcome.record)
    frame.attrs["per_image"] = _with_identity(outcome.rows, outcome.record)
    frame.attrs["run_dir"] = outcome.run_dir
    return frame


def _with_identity(rows: pd.DataFrame, record) -> pd.DataFrame:
    rows = rows.copy()
    for i, (name, value) in enumerate(_identity(record).items()):
        if name in ("run_id", "label", "benchmark"):
            rows.insert(i, name, value)
    return rows


def load_runs(
    results: str | Path = DEFAULT_RESULTS,
    *,
    per_image: bool = False,
    benchmark: str | None = None,
    label: str | None = None,
) -> pd.DataFrame:
    """Every run under ``results``: one row per (run, category), or with ``per_image`` the per-image
    rows of every run, each prefixed with its run id, label and benchmark."""
    frames = []
    for record, path in leaderboard.load_runs(Path(results)):
        if (benchmark is not None and record.benchmark != benchmark) or (
            label is not None and record.label != label
        ):
            continue
        if per_image:
            frames.append(_with_identity(read_run(path)[1], record))
        else:
            frames.append(_scores_frame(record))
    if not frames:
        return pd.DataFrame(
            columns=["run_id", "label", "benchmark"] if per_image else [*_RUN_COLUMNS, "category", "score"]
        )
    return pd.concat(frames, ignore_index=True)


def compare(
    run_a: str | Path,
    run_b: str | Path,
    *,
    results: str | Path = DEFAULT_RESULTS,
    benchmark: str | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """B against A on every benchmark the two references share (labels resolve per benchmark): one row
    per (benchmark, category) with both scores, ``delta = b - a`` and its paired interval."""
    rows = []
    for name, path_a, path_b in leaderboard.resolve_pairs(str(run_a), str(run_b), Path(results), benchmark):
        result = leaderboard.compare_runs(path_a, path_b, n_boot=n_boot, seed=seed, alpha=alpha)
        for key, d in result.deltas.items():
            rows.append(
                {
                    "benchmark": name,
                    "category": key,
                    "run_id_a": result.record_a.run_id,
                    "run_id_b": result.record_b.run_id,
                    "a": d.a,
                    "b": d.b,
                    "delta": d.delta,
                    "low": d.low,
                    "high": d.high,
                    "n_pairs": d.n_pairs,
                }
            )
    return pd.DataFrame(rows)


def check(
    baseline: str | Path,
    run: str | Path | None = None,
    *,
    results: str | Path = DEFAULT_RESULTS,
    tolerance: float | None = None,
    relative: bool = False,
    significant: bool = False,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """The `reca-eval check` gate as a frame: one row per category with the delta, its interval, the
    allowed drop, which rule fired and whether the category failed (``frame.attrs["passed"]``)."""
    base_record, _ = read_run(Path(baseline))
    if run is None:
        run_path = leaderboard.latest_run(Path(results), base_record.benchmark, excluding=base_record.run_id)
    else:
        run_path = leaderboard.resolve_run(str(run), Path(results), benchmark=base_record.benchmark)
    result = leaderboard.check_regression(
        run_path,
        Path(baseline),
        tolerance=tolerance,
        n_boot=n_boot,
        seed=seed,
        relative=relative,
        significant=significant,
    )
    frame = pd.DataFrame(
        [
            {
                "benchmark": base_record.benchmark,
                "category": key,
                "baseline": v.delta.a,
                "run": v.delta.b,
                "delta": v.delta.delta,
                "low": v.delta.low,
                "high": v.delta.high,
                "allowed_drop": v.allowed_drop,
                "point_drop": v.point_drop,
                "significant_drop": v.significant_drop,
                "failed": v.failed,
                "verdict": v.verdict,
            }
            for key, v in result.verdicts.items()
        ]
    )
    frame.attrs["passed"] = result.passed
    frame.attrs["rule"] = result.rule
    return frame
