"""GenEval's scoring rules, separated from any detector or colour classifier.

Re-implements the semantics of the official scripts (djghosh13/geneval,
``evaluation/evaluate_images.py`` and ``evaluation/summary_scores.py``) with their default options:

- per class, keep detections scoring above 0.3 (0.9 for every class when the prompt's tag is
  ``counting``), most confident first, at most 16; no NMS (the official default ``max_overlap=1``);
  scores, thresholds and box geometry in float32 as the detector's arrays are, and equal scores in
  the official order (:mod:`~reca_eval.benchmarks.geneval.tie_order`: the later detection first);
- ``include`` clauses are ANDed, each judged on the top-``count`` objects of its class; a colour is
  checked on those objects, a position against every object of an earlier matched group;
- ``exclude`` clauses are ORed: ``count`` or more objects of the class fail the image;
- a task's score is the mean over its images; the overall score is the unweighted mean over tasks.

What looks at pixels (Mask2Former, the ShapeWorld parser, a CLIP colour classifier) lives in
``reca_eval.scorers``; here a detector's output is a ``dict[class name, list[Detection]]`` and the
colour classifier a callable.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reca_eval.benchmarks.geneval.tie_order import official_order
from reca_eval.core.detections import POSITION_THRESHOLD as POSITION_THRESHOLD  # re-exported: a rule constant
from reca_eval.core.detections import Detection, relative_position
from reca_eval.core.detections import crop_for_colour as crop_for_colour  # re-exported: the official crop
from reca_eval.core.paths import read_input_text

THRESHOLD = 0.3
COUNTING_THRESHOLD = 0.9
MAX_OBJECTS = 16
COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
RELATIONS = ("left of", "right of", "above", "below")

# (class name, the detections kept for it) -> one colour name per detection, in order.
ColourOf = Callable[[str, list[Detection]], list[str]]


# --------------------------------------------------------------------------------------------------
# Metadata


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_clause(clause: Any, where: str, kind: str, group_index: int) -> None:
    if not isinstance(clause, dict):
        raise ValueError(f"{where}: {kind}[{group_index}] must be an object, got {type(clause).__name__}")
    name = clause.get("class")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{where}: {kind}[{group_index}] lacks a non-empty string 'class'")
    if not _is_count(clause.get("count")):
        raise ValueError(
            f"{where}: {kind}[{group_index}] ({name}) has bad count {clause.get('count')!r} "
            "(must be an integer >= 1)"
        )
    if kind == "exclude":
        return
    if "color" in clause and clause["color"] not in COLORS:
        raise ValueError(f"{where}: include[{group_index}] ({name}) has unknown color {clause['color']!r}")
    if "position" in clause:
        position = clause["position"]
        if not (isinstance(position, list | tuple) and len(position) == 2):
            raise ValueError(
                f"{where}: include[{group_index}] ({name}) position must be [relation, group_index]"
            )
        relation, target = position
        if relation not in RELATIONS:
            raise ValueError(f"{where}: include[{group_index}] ({name}) has unknown relation {relation!r}")
        # The official loop only knows groups matched before this one, so the target must be earlier.
        if not (isinstance(target, int) and not isinstance(target, bool) and 0 <= target < group_index):
            raise ValueError(
                f"{where}: include[{group_index}] ({name}) position points to group {target!r}, "
                f"which is not an earlier include group (0..{group_index - 1})"
            )


def check_metadata(metadata: Any, where: str) -> None:
    """Raise ValueError (prefixed with ``where``) when ``metadata`` is not a valid GenEval item."""
    if not isinstance(metadata, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(metadata).__name__}")
    if "tag" not in metadata:
        raise ValueError(f"{where}: missing key 'tag'")
    if metadata["tag"] not in TAGS:
        raise ValueError(f"{where}: unknown tag {metadata['tag']!r} (known: {', '.join(TAGS)})")
    if "include" not in metadata:
        raise ValueError(f"{where}: missing key 'include'")
    include = metadata["include"]
    if not isinstance(include, list) or not include:
        raise ValueError(f"{where}: 'include' must be a non-empty list")
    for index, clause in enumerate(include):
        _check_clause(clause, where, "include", index)
    exclude = metadata.get("exclude", [])
    if not isinstance(exclude, list):
        raise ValueError(f"{where}: 'exclude' must be a list")
    for index, clause in enumerate(exclude):
        _check_clause(clause, where, "exclude", index)
    if not isinstance(metadata.get("prompt"), str):
        raise ValueError(f"{where}: missing string key 'prompt'")


def load_metadata(path: Path) -> list[dict]:
    """Read GenEval's official JSONL (one item per line), validating every line; extra keys are kept.

    Blank lines carry no item and are passed over; anything else malformed raises ValueError naming
    ``path:line`` and the problem.
    """
    path = Path(path)
    items: list[dict] = []
    for line_number, line in enumerate(read_input_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_number}"
        try:
            metadata = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
        except RecursionError:
            raise ValueError(f"{where}: JSON nested too deeply") from None
        check_metadata(metadata, where)
        items.append(metadata)
    if not items:
        raise ValueError(f"{path}: no GenEval items in file")
    return items


# --------------------------------------------------------------------------------------------------
# Rules


def select_detections(raw: dict[str, list[Detection]], tag: str) -> dict[str, list[Detection]]:
    """Per class: detections above the confidence threshold, most confident first, at most MAX_OBJECTS.

    Counting prompts use the strict threshold for every class (as the official script does), so a
    hesitant duplicate does not spoil a count. Classes left with nothing are dropped.

    As officially: scores and thresholds are compared in float32 (a score of exactly float32(0.3) is
    not above 0.3), and the ranking is :func:`~reca_eval.benchmarks.geneval.tie_order.official_order`
    over all of the class's detections in the order ``raw`` lists them: equal scores come latest-first.
    """
    threshold = float(np.float32(COUNTING_THRESHOLD if tag == "counting" else THRESHOLD))
    selected: dict[str, list[Detection]] = {}
    for classname, detections in raw.items():
        scores = np.asarray([d.score for d in detections], dtype=np.float32).tolist()
        ranked = [i for i in official_order(scores) if scores[i] > threshold]
        if ranked:
            selected[classname] = [detections[i] for i in ranked[:MAX_OBJECTS]]
    return selected


def _colour_failure(req: dict, objects: list[Detection], colour_of: ColourOf) -> str | None:
    classname, wanted, count = req["class"], req["color"], req["count"]
    colours = list(colour_of(classname, objects))
    if len(colours) != len(objects):
        raise ValueError(
            f"colour classifier returned {len(colours)} colours for {len(objects)} {classname} objects"
        )
    if colours.count(wanted) >= count:
        return None
    found = ", ".join(f"{colours.count(c)} {c}" for c in COLORS if c in colours)
    return f"expected {wanted} {classname}>={count}, found {colours.count(wanted)} {wanted}; and {found}"


def _position_failure(req: dict, objects: list[Detection], target_objects: list[Detection]) -> str | None:
    relation = req["position"][0]
    for obj in objects:
        for target in target_objects:
            found = relative_position(obj, target)
            if relation not in found:
                # Sorted so that the reason is reproducible (the official set order is not).
                return (
                    f"expected {req['class']} {relation} target, found {' and '.join(sorted(found))} target"
                )
    return None


def evaluate_image(
    metadata: dict, detections: dict[str, list[Detection]], colour_of: ColourOf
) -> tuple[bool, str]:
    """Judge one image's selected detections against one item. Returns (correct, reason).

    ``detections`` is the output of :func:`select_detections` (most confident first). The reason has
    one line per failed rule, worded as the official ``reason`` field.
    """
    reasons: list[str] = []
    # Per include group: its objects when the group matched, else None (a position target then fails).
    matched_groups: list[list[Detection] | None] = []
    for req in metadata["include"]:
        classname, count = req["class"], req["count"]
        objects = detections.get(classname, [])[:count]
        failure: str | None = None
        if len(objects) < count:
            failure = f"expected {classname}>={count}, found {len(objects)}"
        if failure is None and "color" in req:
            failure = _colour_failure(req, objects, colour_of)
        if failure is None and "position" in req:
            relation, target_group = req["position"]
            target_objects = matched_groups[target_group]
            if target_objects is None:
                failure = f"no target for {classname} to be {relation}"
            else:
                failure = _position_failure(req, objects, target_objects)
        if failure is not None:
            reasons.append(failure)
        matched_groups.append(objects if failure is None else None)
    for req in metadata.get("exclude", []):
        found = len(detections.get(req["class"], []))
        if found >= req["count"]:
            reasons.append(f"expected {req['class']}<{req['count']}, found {found}")
    return not reasons, "\n".join(reasons)


# --------------------------------------------------------------------------------------------------
# Aggregation


def aggregate(rows: pd.DataFrame, weights: np.ndarray | None = None) -> dict[str, float]:
    """Task scores (weighted mean of ``score`` over each ``category``'s rows) and their unweighted mean.

    ``weights`` are per-row multiplicities (a cluster bootstrap resamples prompts); a task whose rows
    all have weight 0 is absent from the result and from "overall". Keys: tags in TAGS order, any
    other categories after them, then "overall".
    """
    if len(rows) == 0:
        raise ValueError("no rows to aggregate")
    for column in ("category", "score"):
        if column not in rows.columns:
            raise ValueError(f"rows lack column {column!r}")
    scores = rows["score"].to_numpy(dtype=float)
    if np.isnan(scores).any():
        raise ValueError(f"{int(np.isnan(scores).sum())} rows have a NaN score")
    if weights is None:
        w = np.ones(len(scores))
    else:
        w = np.asarray(weights, dtype=float)
        if w.shape != scores.shape:
            raise ValueError(f"weights have shape {w.shape}, rows need ({len(scores)},)")
        if (w < 0).any():
            raise ValueError("weights must be non-negative")
    codes, names = pd.factorize(rows["category"], sort=False)
    weight_sums = np.bincount(codes, weights=w, minlength=len(names))
    score_sums = np.bincount(codes, weights=w * scores, minlength=len(names))
    present = weight_sums > 0
    task_means = np.divide(score_sums, weight_sums, out=np.zeros_like(score_sums), where=present)
    by_name = {str(name): float(task_means[i]) for i, name in enumerate(names) if present[i]}
    if not by_name:
        raise ValueError("every row has weight 0")
    order = [t for t in TAGS if t in by_name] + sorted(n for n in by_name if n not in TAGS)
    result = {name: by_name[name] for name in order}
    result["overall"] = float(np.mean(list(by_name.values())))
    return result
