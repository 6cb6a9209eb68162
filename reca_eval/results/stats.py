"""Uncertainty of benchmark scores: cluster bootstrap intervals and paired comparisons of two runs.

The images of one prompt are not independent draws: a prompt the model cannot do fails on all of its
samples. Resampling images would treat four correlated images as four pieces of evidence and give
intervals that are too narrow, so every replicate here resamples *prompts* (clusters) with
replacement and keeps all rows of a drawn prompt together.

A replicate is expressed as per-row weights (the multiplicity of the row's cluster) handed to the
benchmark's own ``aggregate(rows, weights) -> {key: score}``. That keeps the statistics independent of
how a benchmark aggregates (mean of category means, DPG's question gating, ...): whatever the
benchmark computes, the bootstrap resamples it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

AggregateFn = Callable[[pd.DataFrame, "np.ndarray | None"], dict[str, float]]

# Columns that identify one scored unit across two runs of the same benchmark, most general first.
# Question-level benchmarks (DPG) add their own question id so that questions pair one-to-one.
DEFAULT_PAIR_KEYS = ("item_id", "sample", "proposition_id", "question_id")


@dataclass
class Interval:
    """A point estimate with its percentile bootstrap interval and bootstrap standard error."""

    estimate: float
    low: float
    high: float
    se: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


@dataclass
class PairedDelta:
    """Score of run A, run B and ``delta = b - a`` with its interval, on the rows the two runs share.

    ``n_pairs``, ``unmatched_a`` and ``unmatched_b`` are counts of rows for the whole comparison (the
    same in every key's entry): rows of one run with no partner in the other are left out of ``a``,
    ``b`` and ``delta``, so these counts say how much was left out.
    """

    a: float
    b: float
    delta: float
    low: float
    high: float
    n_pairs: int
    unmatched_a: int = 0
    unmatched_b: int = 0

    @property
    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)


def cluster_multiplicities(n_clusters: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_clusters) counts: how often each cluster is drawn in each bootstrap replicate."""
    if n_clusters < 1:
        raise ValueError("cluster bootstrap needs at least one cluster")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=n_boot)


def _cluster_codes(rows: pd.DataFrame, cluster: str) -> tuple[np.ndarray, int]:
    if cluster not in rows.columns:
        raise ValueError(f"rows have no cluster column {cluster!r} (columns: {list(rows.columns)})")
    if len(rows) == 0:
        raise ValueError("cannot bootstrap an empty set of rows")
    codes, uniques = pd.factorize(rows[cluster])
    n_missing = int((codes < 0).sum())
    if n_missing:
        raise ValueError(f"{n_missing} row(s) have no value in cluster column {cluster!r}")
    return codes, len(uniques)


def _replicate_weights(codes: np.ndarray, n_clusters: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    # Weights are materialised one replicate at a time: a (n_boot, n_rows) matrix for DPG's
    # question-level rows would take hundreds of MB.
    counts = cluster_multiplicities(n_clusters, n_boot, seed)
    for replicate in counts:
        yield replicate[codes].astype(np.float64)


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _percentile_interval(values: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """(low, high, se) over the finite replicate values; NaN when there are none.

    A replicate can leave a rare category out entirely (the aggregate then gives NaN for it); the
    interval is then taken over the replicates that contain it.
    """
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan"), float("nan")
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    se = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
    return float(low), float(high), se


def cluster_bootstrap(
    rows: pd.DataFrame,
    aggregate: AggregateFn,
    *,
    cluster: str = "item_id",
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Interval]:
    """Percentile intervals for every key ``aggregate`` returns, resampling clusters (prompts).

    ``aggregate(rows, None)`` is the estimate; each replicate calls ``aggregate(rows, weights)`` with
    ``weights[i]`` = how often row i's cluster was drawn (constant within a cluster, 0 when not drawn).
    """
    _check_alpha(alpha)
    codes, n_clusters = _cluster_codes(rows, cluster)
    estimate = aggregate(rows, None)
    keys = list(estimate)
    replicates = np.full((n_boot, len(keys)), np.nan)
    for b, weights in enumerate(_replicate_weights(codes, n_clusters, n_boot, seed)):
        result = aggregate(rows, weights)
        replicates[b] = [result.get(k, np.nan) for k in keys]
    out: dict[str, Interval] = {}
    for j, key in enumerate(keys):
        low, high, se = _percentile_interval(replicates[:, j], alpha)
        out[key] = Interval(estimate=float(estimate[key]), low=low, high=high, se=se)
    return out


def _pair_keys(
    rows_a: pd.DataFrame, rows_b: pd.DataFrame, keys: Sequence[str] | None, cluster: str
) -> list[str]:
    if keys is None:
        chosen = [k for k in DEFAULT_PAIR_KEYS if k in rows_a.columns and k in rows_b.columns]
    else:
        chosen = list(keys)
        for side, frame in (("A", rows_a), ("B", rows_b)):
            missing = [k for k in chosen if k not in frame.columns]
            if missing:
                raise ValueError(
                    f"pairing key(s) {missing} not in run {side}'s rows (columns: {list(frame.columns)})"
                )
    if cluster not in chosen:
        # Pairs must share a cluster, or joint resampling of clusters would split a pair.
        raise ValueError(f"pairing keys {chosen} must include the cluster column {cluster!r}")
    return chosen


def _check_unique(frame: pd.DataFrame, keys: list[str], side: str) -> None:
    dup = frame.duplicated(subset=keys, keep=False)
    if dup.any():
        example = frame.loc[dup, keys].iloc[0].to_dict()
        raise ValueError(
            f"pairing keys {keys} do not identify run {side}'s rows uniquely ({int(dup.sum())} rows share "
            f"a key, e.g. {example}); pass keys that include the row's own id (e.g. proposition_id)"
        )


def pair_rows(
    rows_a: pd.DataFrame, rows_b: pd.DataFrame, keys: Sequence[str] | None = None, *, cluster: str = "item_id"
) -> tuple[pd.DataFrame, pd.DataFrame, int, int]:
    """Align two runs' rows on ``keys``: (paired A, paired B, unmatched in A, unmatched in B).

    The paired frames have the same length and row order, so row i of A and row i of B are the same
    prompt, sample (and question). ``keys=None`` uses those of :data:`DEFAULT_PAIR_KEYS` present in both.
    """
    chosen = _pair_keys(rows_a, rows_b, keys, cluster)
    _check_unique(rows_a, chosen, "A")
    _check_unique(rows_b, chosen, "B")
    left = rows_a[chosen].assign(_pos_a=np.arange(len(rows_a)))
    right = rows_b[chosen].assign(_pos_b=np.arange(len(rows_b)))
    try:
        joined = left.merge(right, on=chosen, how="inner", sort=False)
    except ValueError as exc:  # e.g. an int key on one side and a str key on the other
        raise ValueError(f"cannot pair runs on {chosen}: {exc}") from exc
    if joined.empty:
        raise ValueError(
            f"no rows of run A pair with run B on {chosen} ({len(rows_a)} rows in A, {len(rows_b)} in B): "
            "are these runs of the same benchmark items?"
        )
    paired_a = rows_a.iloc[joined["_pos_a"].to_numpy()].reset_index(drop=True)
    paired_b = rows_b.iloc[joined["_pos_b"].to_numpy()].reset_index(drop=True)
    if "category" in paired_a.columns and "category" in paired_b.columns:
        differ = paired_a["category"].astype(str) != paired_b["category"].astype(str)
        if differ.any():
            i = int(np.flatnonzero(differ.to_numpy())[0])
            raise ValueError(
                f"{int(differ.sum())} paired row(s) have different categories in A and B, e.g. "
                f"{paired_a.loc[i, chosen].to_dict()}: {paired_a.loc[i, 'category']!r} vs "
                f"{paired_b.loc[i, 'category']!r}; the runs did not score the same items"
            )
    return paired_a, paired_b, len(rows_a) - len(joined), len(rows_b) - len(joined)


def paired_bootstrap(
    rows_a: pd.DataFrame,
    rows_b: pd.DataFrame,
    aggregate: AggregateFn,
    *,
    keys: Sequence[str] | None = None,
    cluster: str = "item_id",
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, PairedDelta]:
    """Interval of ``aggregate(B) - aggregate(A)`` per key, resampling shared clusters jointly.

    Both runs get the same weights in each replicate, so what the two runs have in common (a prompt
    that is hard for both) cancels in the delta; that is what makes a paired interval narrower than
    two independent ones. Rows are paired with :func:`pair_rows`; raises ValueError when none pair.
    """
    _check_alpha(alpha)
    paired_a, paired_b, unmatched_a, unmatched_b = pair_rows(rows_a, rows_b, keys, cluster=cluster)
    codes, n_clusters = _cluster_codes(paired_a, cluster)
    est_a = aggregate(paired_a, None)
    est_b = aggregate(paired_b, None)
    keys_out = [k for k in est_a if k in est_b]
    deltas = np.full((n_boot, len(keys_out)), np.nan)
    for b, weights in enumerate(_replicate_weights(codes, n_clusters, n_boot, seed)):
        rep_a = aggregate(paired_a, weights)
        rep_b = aggregate(paired_b, weights)
        deltas[b] = [rep_b.get(k, np.nan) - rep_a.get(k, np.nan) for k in keys_out]
    out: dict[str, PairedDelta] = {}
    for j, key in enumerate(keys_out):
        low, high, _ = _percentile_interval(deltas[:, j], alpha)
        a, b_score = float(est_a[key]), float(est_b[key])
        out[key] = PairedDelta(
            a=a,
            b=b_score,
            delta=b_score - a,
            low=low,
            high=high,
            n_pairs=len(paired_a),
            unmatched_a=unmatched_a,
            unmatched_b=unmatched_b,
        )
    return out
