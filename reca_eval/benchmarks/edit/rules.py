"""Editing benchmarks' semantics: GEdit-Bench's VIEScore (SC, PQ, O) and ImgEdit's 1-5 judge scores.

GEdit-Bench (Step1X-Edit) asks a judge for two 0-10 semantic-consistency scores (instruction followed;
no over-editing) and two 0-10 perceptual-quality scores (naturalness; no artifacts). Per image
``SC = min(SC scores)``, ``PQ = min(PQ scores)``, ``O = sqrt(SC * PQ)`` (VIEScore: any failed aspect
caps the score). A category's score is the mean over its images; the benchmark's ``SC``, ``PQ`` and
``overall`` (= O) are unweighted means over categories. Chinese and English instructions are
different conditions, so with a ``language`` column each language is also reported on its own
(``"en/overall"``, ``"cn/<category>"``, ...).

ImgEdit-Bench asks a judge for three 1-5 scores per edit, averaged per image. Per-type means; the
paper's "Overall" is the mean of the type columns (BAGEL: nine type scores average to its 3.20), so
``overall`` here is that macro mean, reported beside ``overall_micro`` (mean over images), which
differs when the types have unequal numbers of items.

Our exact ShapeWorld editing benchmark measures success in {0, 1}, preservation in [0, 1] and quality
in [0, 1] exactly; :func:`shapes_edit_item` puts them on both scales so that one number per run is
comparable in form with the published ones.

Every aggregate takes optional per-row weights (cluster-bootstrap multiplicities; None = 1). A group
with no weight in a replicate is NaN and left out of the means over groups.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

GEDIT_RANGE = (0.0, 10.0)
IMGEDIT_RANGE = (1.0, 5.0)
IMGEDIT_SCORES_PER_ITEM = 3


def _check_scores(
    name: str, scores: Sequence[float], low: float, high: float, count: int | None = None
) -> list[float]:
    values = [float(s) for s in scores]
    if not values:
        raise ValueError(f"{name}: no scores")
    if count is not None and len(values) != count:
        raise ValueError(f"{name}: expected {count} scores, got {len(values)}: {values}")
    bad = [v for v in values if not (low <= v <= high)]  # also catches NaN
    if bad:
        raise ValueError(f"{name}: scores {bad} outside [{low:g}, {high:g}]")
    return values


def gedit_item(sc: list[float], pq: list[float]) -> dict[str, float]:
    """One image's VIEScore: ``{"sc": min(sc), "pq": min(pq), "o": sqrt(sc * pq)}`` on the 0-10 scale."""
    sc_min = min(_check_scores("GEdit SC", sc, *GEDIT_RANGE))
    pq_min = min(_check_scores("GEdit PQ", pq, *GEDIT_RANGE))
    return {"sc": sc_min, "pq": pq_min, "o": math.sqrt(sc_min * pq_min)}


def imgedit_item(scores: list[float]) -> float:
    """One image's ImgEdit score: the mean of the judge's three 1-5 scores."""
    return float(np.mean(_check_scores("ImgEdit", scores, *IMGEDIT_RANGE, count=IMGEDIT_SCORES_PER_ITEM)))


def imgedit_style(success, preservation, quality):
    """ShapeWorld's ImgEdit-style 1-5 score (scalars or arrays); see :func:`shapes_edit_item`."""
    complied = np.minimum(success, preservation)
    return 1 + 4 * complied * (1 + preservation + quality) / 3


def shapes_edit_item(success: float, preservation: float, quality: float) -> dict[str, float]:
    """ShapeWorld edit measurements on GEdit's and ImgEdit's scales.

    ``SC = 10 * min(success, preservation)`` (an edit that wrecks the rest of the scene is not a
    consistent edit), ``PQ = 10 * quality``, ``O = sqrt(SC * PQ)``. ImgEdit-style: its three 1-5
    rubric scores (instruction compliance, preservation, quality) are ``1 + 4 * c``, ``1 + 4 * c *
    preservation`` and ``1 + 4 * c * quality`` with ``c = min(success, preservation)``, averaged: the
    ImgEdit rubrics score a non-edit low on every criterion, so a failed edit (or one that wrecks the
    scene) earns no preservation or quality credit and an editor that copies its input, or returns a
    blank canvas, sits at the floor of 1. The inputs are kept in the returned row.
    """
    if success not in (0, 1):
        raise ValueError(f"ShapeWorld edit success must be 0 or 1, got {success!r}")
    for name, x in (("preservation", preservation), ("quality", quality)):
        if not 0.0 <= float(x) <= 1.0:
            raise ValueError(f"ShapeWorld edit {name} must be in [0, 1], got {x!r}")
    sc = 10.0 * min(float(success), float(preservation))
    pq = 10.0 * float(quality)
    imgedit = imgedit_style(float(success), float(preservation), float(quality))
    return {
        "success": float(success),
        "preservation": float(preservation),
        "quality": float(quality),
        "sc": sc,
        "pq": pq,
        "o": math.sqrt(sc * pq),
        "imgedit": imgedit,
    }


def _weights(rows: pd.DataFrame, weights: np.ndarray | None) -> np.ndarray:
    if len(rows) == 0:
        raise ValueError("no rows to aggregate")
    w = np.ones(len(rows)) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (len(rows),):
        raise ValueError(f"weights have shape {w.shape}, expected ({len(rows)},)")
    if (w < 0).any() or not np.isfinite(w).all():
        raise ValueError("weights must be finite and non-negative")
    if w.sum() <= 0:
        raise ValueError("all weights are zero")
    return w


def _require(rows: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in rows.columns]
    if missing:
        raise ValueError(f"{what} rows lack column(s) {missing}; have {list(rows.columns)}")


def _group_means(labels: np.ndarray, values: np.ndarray, w: np.ndarray) -> dict[str, float]:
    """Weighted mean of ``values`` per label, NaN where a label has no weight."""
    codes, names = pd.factorize(labels, sort=True)
    total = np.bincount(codes, weights=w * values, minlength=len(names))
    mass = np.bincount(codes, weights=w, minlength=len(names))
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(mass > 0, total / np.where(mass > 0, mass, 1.0), np.nan)
    return {str(n): float(m) for n, m in zip(names, means, strict=True)}


def _macro(means: dict[str, float]) -> float:
    values = [v for v in means.values() if not math.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def _micro(values: np.ndarray, w: np.ndarray) -> float:
    return float((w * values).sum() / w.sum()) if w.sum() > 0 else float("nan")


def _gedit_scores(rows: pd.DataFrame, w: np.ndarray, prefix: str) -> dict[str, float]:
    labels = rows["category"].astype(str).to_numpy()
    per_category = {key: _group_means(labels, rows[key].to_numpy(float), w) for key in ("sc", "pq", "o")}
    result = {f"{prefix}{c}": v for c, v in per_category["o"].items()}
    result[f"{prefix}SC"] = _macro(per_category["sc"])
    result[f"{prefix}PQ"] = _macro(per_category["pq"])
    result[f"{prefix}overall"] = _macro(per_category["o"])
    return result


def aggregate_gedit(rows: pd.DataFrame, weights: np.ndarray | None = None) -> dict[str, float]:
    """GEdit scores: per-category O, and ``SC``, ``PQ``, ``overall`` (O) as means over categories.

    Rows need ``category``, ``sc``, ``pq``, ``o`` (per image, from :func:`gedit_item`). With a
    ``language`` column, every key is repeated per language as ``"<language>/<key>"``; the unprefixed
    keys then cover all rows.
    """
    _require(rows, ("category", "sc", "pq", "o"), "GEdit")
    w = _weights(rows, weights)
    result = _gedit_scores(rows, w, "")
    if "language" in rows.columns:
        languages = rows["language"].astype(str).to_numpy()
        for language in sorted(set(languages)):
            mask = languages == language
            subset = _gedit_scores(rows[mask], w[mask], f"{language}/")
            result.update(subset)
    return result


def _imgedit_scores(rows: pd.DataFrame, column: str, w: np.ndarray) -> dict[str, float]:
    values = rows[column].to_numpy(float)
    per_type = _group_means(rows["category"].astype(str).to_numpy(), values, w)
    return {**per_type, "overall_micro": _micro(values, w), "overall_macro": _macro(per_type)}


def aggregate_imgedit(rows: pd.DataFrame, weights: np.ndarray | None = None) -> dict[str, float]:
    """ImgEdit scores: per-type means, ``overall_micro``, ``overall_macro`` and ``overall`` (= macro, as published).

    Rows need ``category`` (edit type) and ``imgedit`` (per image, from :func:`imgedit_item`).
    """
    _require(rows, ("category", "imgedit"), "ImgEdit")
    result = _imgedit_scores(rows, "imgedit", _weights(rows, weights))
    result["overall"] = result["overall_macro"]
    return result


def aggregate_shapes_edit(rows: pd.DataFrame, weights: np.ndarray | None = None) -> dict[str, float]:
    """Our ShapeWorld edit benchmark on both published scales.

    Rows need ``category`` (edit type), ``success``, ``preservation``, ``quality``. Returns per-type O
    (keyed by type), ``SC``, ``PQ``, ``overall`` (GEdit-style: O's mean over types), ``imgedit_micro``,
    ``imgedit_macro`` and per-type ImgEdit scores keyed ``"imgedit/<type>"``.
    """
    _require(rows, ("category", "success", "preservation", "quality"), "ShapeWorld edit")
    w = _weights(rows, weights)
    success = rows["success"].to_numpy(float)
    preservation = rows["preservation"].to_numpy(float)
    quality = rows["quality"].to_numpy(float)
    if not np.isin(success, (0.0, 1.0)).all():
        raise ValueError(
            f"ShapeWorld edit success must be 0 or 1; rows {np.flatnonzero(~np.isin(success, (0.0, 1.0)))[:5]}"
        )
    for name, x in (("preservation", preservation), ("quality", quality)):
        bad = np.flatnonzero(~((x >= 0) & (x <= 1)))
        if bad.size:
            raise ValueError(f"ShapeWorld edit {name} must be in [0, 1]; rows {bad[:5]}")
    # Vectorised twin of shapes_edit_item: the bootstrap calls this once per replicate.
    sc = 10.0 * np.minimum(success, preservation)
    pq = 10.0 * quality
    mapped = pd.DataFrame(
        {
            "category": rows["category"].astype(str).to_numpy(),
            "sc": sc,
            "pq": pq,
            "o": np.sqrt(sc * pq),
            "imgedit": imgedit_style(success, preservation, quality),
        }
    )
    result = _gedit_scores(mapped, w, "")
    imgedit = _imgedit_scores(mapped, "imgedit", w)
    result["imgedit_micro"] = imgedit.pop("overall_micro")
    result["imgedit_macro"] = imgedit.pop("overall_macro")
    result.update({f"imgedit/{t}": v for t, v in imgedit.items()})
    return result
