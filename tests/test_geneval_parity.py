"""GenEval parity: our rules against a transcription of the official per-image logic.

The reference below transcribes ``evaluation/evaluate_images.py`` of djghosh13/geneval at af4902f
(``evaluate_image``'s selection loop, ``evaluate``, ``relative_position``) with its default options,
the detector and CLIP replaced by planted inputs: per class a float32 array of ``[x1, y1, x2, y2,
score]`` rows in detector order, and per detection the colour CLIP would name. Both sides then run
over the real GenEval metadata with random planted detection sets, ties and scores on the thresholds
included, and must agree on every image: the verdict, the reason, and the objects kept per class in
their order.

The official ranks with ``np.argsort(scores)[::-1]`` under numpy 1.23.1 (GenEval's pin). Up to 16
scores that is a stable sort (numpy 1.23's introsort insertion-sorts such arrays), which the
reference writes as ``kind="stable"``; past 16 it uses our transcription of numpy 1.23's introsort,
which :func:`test_tie_order_is_numpy_1_23s_own` checks against numpy 1.23.1's recorded output.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import numpy as np
import pytest

from reca_eval.benchmarks.geneval import rules as geneval
from reca_eval.benchmarks.geneval.tie_order import numpy123_argsort, official_order
from reca_eval.core.detections import Detection, relative_position
from tests.test_geneval_protocol import GENEVAL_DIR

DATA = Path(__file__).resolve().parent / "data"
CASES = 20_000

# --------------------------------------------------------------------------------------------------
# The reference: the official per-image logic, transcribed (defaults: threshold 0.3, counting 0.9,
# max_objects 16, max_overlap 1 = no NMS, position_threshold 0.1).

REF_THRESHOLD = 0.3
REF_COUNTING_THRESHOLD = 0.9
REF_MAX_OBJECTS = 16
REF_NMS_THRESHOLD = 1.0
REF_POSITION_THRESHOLD = 0.1
REF_COLORS = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white"]


def ref_argsort(scores: np.ndarray) -> np.ndarray:
    """``np.argsort(scores)`` as numpy 1.23.1 computes it (see the module docstring)."""
    if len(scores) <= 16:
        return np.argsort(scores, kind="stable")
    return np.asarray(numpy123_argsort(scores.tolist()), dtype=np.int64)


def ref_relative_position(obj_a, obj_b):
    boxes = np.array([obj_a[0], obj_b[0]])[:, :4].reshape(2, 2, 2)
    center_a, center_b = boxes.mean(axis=-2)
    dim_a, dim_b = np.abs(np.diff(boxes, axis=-2))[..., 0, :]
    offset = center_a - center_b
    revised_offset = np.maximum(np.abs(offset) - REF_POSITION_THRESHOLD * (dim_a + dim_b), 0) * np.sign(
        offset
    )
    if np.all(np.abs(revised_offset) < 1e-3):
        return set()
    dx, dy = revised_offset / np.linalg.norm(offset)
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def ref_color_classification(found_objects):
    return [mask for _, mask in found_objects]  # the planted "mask" is the colour CLIP would name


def ref_evaluate(objects, metadata):
    correct = True
    reason = []
    matched_groups = []
    for req in metadata.get("include", []):
        classname = req["class"]
        matched = True
        found_objects = objects.get(classname, [])[: req["count"]]
        if len(found_objects) < req["count"]:
            correct = matched = False
            reason.append(f"expected {classname}>={req['count']}, found {len(found_objects)}")
        else:
            if "color" in req:
                colors = ref_color_classification(found_objects)
                if colors.count(req["color"]) < req["count"]:
                    correct = matched = False
                    reason.append(
                        f"expected {req['color']} {classname}>={req['count']}, found "
                        + f"{colors.count(req['color'])} {req['color']}; and "
                        + ", ".join(f"{colors.count(c)} {c}" for c in REF_COLORS if c in colors)
                    )
            if "position" in req and matched:
                expected_rel, target_group = req["position"]
                if matched_groups[target_group] is None:
                    correct = matched = False
                    reason.append(f"no target for {classname} to be {expected_rel}")
                else:
                    for obj in found_objects:
                        for target_obj in matched_groups[target_group]:
                            true_rels = ref_relative_position(obj, target_obj)
                            if expected_rel not in true_rels:
                                correct = matched = False
                                reason.append(
                                    f"expected {classname} {expected_rel} target, found "
                                    + f"{' and '.join(true_rels)} target"
                                )
                                break
                        if not matched:
                            break
        if matched:
            matched_groups.append(found_objects)
        else:
            matched_groups.append(None)
    for req in metadata.get("exclude", []):
        classname = req["class"]
        if len(objects.get(classname, [])) >= req["count"]:
            correct = False
            reason.append(f"expected {classname}<{req['count']}, found {len(objects[classname])}")
    return correct, "\n".join(reason)


def ref_evaluate_image(bbox: dict[str, np.ndarray], segm: dict[str, list], metadata: dict):
    """``evaluate_image`` after ``inference_detector``: bbox/segm per class name instead of by index."""
    detected = {}
    confidence_threshold = REF_THRESHOLD if metadata["tag"] != "counting" else REF_COUNTING_THRESHOLD
    for classname in bbox:
        ordering = ref_argsort(bbox[classname][:, 4])[::-1]
        ordering = ordering[bbox[classname][ordering, 4] > confidence_threshold]
        ordering = ordering[:REF_MAX_OBJECTS].tolist()
        detected[classname] = []
        while ordering:
            max_obj = ordering.pop(0)
            detected[classname].append((bbox[classname][max_obj], segm[classname][max_obj]))
            assert REF_NMS_THRESHOLD == 1  # the official default: the IoU filter keeps everything
        if not detected[classname]:
            del detected[classname]
    is_correct, reason = ref_evaluate(detected, metadata)
    return is_correct, reason, detected


# --------------------------------------------------------------------------------------------------
# Random planted detections

F32 = np.float32


LOW, HIGH = float(F32(0.3)), float(F32(0.9))
DETECTIONS_PER_CLASS = np.array([0, 1, 1, 2, 2, 3, 3, 4, 5, 6, 8, 16, 17, 20])


def planted_sets(items: list[dict], other_classes: list[str], cases: int, rng: np.random.Generator):
    """Yield (item, bbox per class, colours per class, our raw detections) for ``cases`` planted images.

    Per image: the item's include and exclude classes (and 30% of the time one other class), each with
    0-20 detections (over 16 in one class in ~1 of 5 classes). A detection's score is, in equal parts,
    on or next to a threshold (float32(0.3), float32(0.9), one float32 step either side, 0.3 and 0.9
    as float64, and float64 values a hair above that float32 rounds onto them), one of the image's two
    tie scores, or uniform in [0.25, 1]. Boxes lie on an integer grid (exact 0.5 position boundaries)
    or anywhere. Colours: 60% one the item asks for. All numbers are drawn at once: the test is fast.
    """
    threshold_scores = np.array(
        [LOW, HIGH, 0.3, 0.9, 0.3 + 1e-9, 0.9 + 1e-9]
        + [float(np.nextafter(F32(t), F32(d))) for t in (0.3, 0.9) for d in (0, 1)]
    )
    picked = [items[i % len(items)] for i in range(cases)]
    extra = rng.random(cases) < 0.3
    extra_class = rng.integers(len(other_classes), size=cases)
    classes_of = []
    for case, item in enumerate(picked):
        names = [r["class"] for r in item["include"]] + [r["class"] for r in item.get("exclude", [])]
        if extra[case]:
            names.append(other_classes[extra_class[case]])
        classes_of.append(list(dict.fromkeys(names)))
    n_classes = sum(len(c) for c in classes_of)
    counts = DETECTIONS_PER_CLASS[rng.integers(len(DETECTIONS_PER_CLASS), size=n_classes)]
    on_grid = np.repeat(rng.random(n_classes) < 0.5, counts)
    total = int(counts.sum())
    case_of = np.repeat(np.repeat(np.arange(cases), [len(c) for c in classes_of]), counts)

    ties = np.stack([threshold_scores[rng.integers(len(threshold_scores), size=cases)], rng.random(cases)], 1)
    ties = ties.astype(np.float32).astype(float)
    kind = rng.integers(4, size=total)
    scores = np.where(
        kind == 0,
        threshold_scores[rng.integers(len(threshold_scores), size=total)],
        np.where(kind == 1, ties[case_of, rng.integers(2, size=total)], rng.uniform(0.25, 1.0, size=total)),
    )
    xy = np.where(on_grid[:, None], rng.integers(0, 48, size=(total, 2)), rng.uniform(0, 512, (total, 2)))
    wh = np.where(on_grid[:, None], rng.integers(1, 24, size=(total, 2)), rng.uniform(1, 200, (total, 2)))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    rows = np.concatenate([boxes, scores[:, None]], axis=1).astype(np.float32)
    wants_colour = rng.random(total) < 0.6
    any_colour = rng.integers(len(REF_COLORS), size=total)
    which_wanted = rng.integers(2, size=total)

    box_list, score_list = boxes.tolist(), scores.tolist()
    at, class_index = 0, 0
    for case, item in enumerate(picked):
        wanted = [r["color"] for r in item["include"] if "color" in r] or ["red"]
        bbox, colours, raw = {}, {}, {}
        for classname in classes_of[case]:
            n = int(counts[class_index])
            class_index += 1
            names = [
                wanted[which_wanted[i] % len(wanted)] if wants_colour[i] else REF_COLORS[any_colour[i]]
                for i in range(at, at + n)
            ]
            bbox[classname], colours[classname] = rows[at : at + n], names
            raw[classname] = [
                Detection(box=tuple(box_list[i]), score=score_list[i], attributes={"color": names[i - at]})
                for i in range(at, at + n)
            ]
            at += n
        yield item, bbox, colours, raw


def colour_from_attributes(classname: str, objects: list[Detection]) -> list[str]:
    return [o.attributes["color"] for o in objects]


def comparable_reason(reason: str) -> list[str]:
    """The official joins a set of relations (arbitrary order); ours sorts them: compare as sets."""
    lines = []
    for line in reason.splitlines():
        if " target, found " in line:
            head, found = line.split(" target, found ", 1)
            line = head + " | " + ",".join(sorted(found.removesuffix(" target").split(" and ")))
        lines.append(line)
    return lines


def real_items() -> list[dict]:
    path = GENEVAL_DIR / "evaluation_metadata.jsonl"
    if not path.exists():
        pytest.skip(f"official GenEval metadata not found at {path} (shared/benchmarks is not in the repo)")
    return geneval.load_metadata(path)


def test_ours_agrees_with_the_official_logic_on_random_planted_detections():
    items = real_items()
    names_path = GENEVAL_DIR / "object_names.txt"
    other_classes = names_path.read_text().split("\n") if names_path.exists() else ["person", "cat"]
    other_classes = [c.strip() for c in other_classes if c.strip()]
    started = time.perf_counter()
    disagreements = []
    seen = {"correct": 0, "ties among kept": 0, "on a threshold": 0, "over 16 in a class": 0}
    cases = planted_sets(items, other_classes, CASES, np.random.default_rng(15))
    for case, (item, bbox, colours, raw) in enumerate(cases):
        ref_correct, ref_reason, ref_detected = ref_evaluate_image(bbox, colours, item)
        selected = geneval.select_detections(raw, item["tag"])
        correct, reason = geneval.evaluate_image(item, selected, colour_from_attributes)
        ref_kept = {
            c: [(row[:4].tolist(), colour) for row, colour in objs] for c, objs in ref_detected.items()
        }
        kept = {
            c: [(np.asarray(d.box, np.float32).tolist(), d.attributes["color"]) for d in objs]
            for c, objs in selected.items()
        }
        if (correct, comparable_reason(reason), kept) != (
            ref_correct,
            comparable_reason(ref_reason),
            ref_kept,
        ):
            disagreements.append((case, item["prompt"], ref_reason, reason))
        seen["correct"] += ref_correct
        for rows in bbox.values():
            scores = rows[:, 4].tolist()
            kept_scores = [x for x in scores if x > LOW]
            seen["ties among kept"] += len(set(kept_scores)) < len(kept_scores)
            seen["on a threshold"] += LOW in scores or HIGH in scores
            seen["over 16 in a class"] += len(scores) > 16
    elapsed = time.perf_counter() - started
    assert not disagreements, (len(disagreements), disagreements[:3])
    # The random sets reach every kind of case this test exists for.
    assert seen["correct"] > CASES // 20, seen
    assert seen["ties among kept"] > CASES // 4, seen
    assert seen["on a threshold"] > CASES // 4, seen
    assert seen["over 16 in a class"] > CASES // 20, seen
    print(f"{CASES} cases, 100% agreement, {seen}, {elapsed:.1f} s")


# --------------------------------------------------------------------------------------------------
# The pieces, on the examples of the issue that found them


def test_equal_scores_rank_the_later_detection_first():
    # "a photo of a black donut": two donuts at 0.6257593, the detector listing the pink one first.
    item = {"tag": "colors", "include": [{"class": "donut", "count": 1, "color": "black"}], "prompt": "p"}
    donuts = [
        Detection(box=(0, 0, 10, 10), score=0.6257593, attributes={"color": "pink"}),
        Detection(box=(20, 0, 30, 10), score=0.6257593, attributes={"color": "black"}),
    ]
    selected = geneval.select_detections({"donut": donuts}, "colors")
    assert [d.attributes["color"] for d in selected["donut"]] == ["black", "pink"]
    assert geneval.evaluate_image(item, selected, colour_from_attributes) == (True, "")
    # Scores equal only in float32 tie too (the detector's array is float32).
    assert official_order([0.5, 0.5 + 1e-12, 0.2]) == [1, 0, 2]


def test_thresholds_compare_in_float32():
    def kept(score: float, tag: str = "single_object") -> int:
        return len(geneval.select_detections({"cat": [Detection((0, 0, 1, 1), score)]}, tag).get("cat", []))

    assert kept(float(F32(0.3))) == 0
    assert kept(0.3 + 1e-9) == 0  # above 0.3 in float64, exactly float32(0.3) in the detector's array
    assert kept(float(np.nextafter(F32(0.3), F32(1)))) == 1
    assert kept(float(F32(0.9)), "counting") == 0
    assert kept(float(np.nextafter(F32(0.9), F32(1))), "counting") == 1


def test_position_arithmetic_is_float32():
    # Found by search (1 pair in 200,000 of one-decimal boxes): dy's shrunk offset over the offset's
    # length is at most 0.5 in float64 (no relation), just above it in float32 ("below").
    a = Detection(box=(4.8, 16.2, 30.8, 22.6), score=1.0)
    b = Detection(box=(16.4, 9.3, 19.2, 21.9), score=1.0)
    boxes = np.array([a.box, b.box], dtype=np.float32)
    assert ref_relative_position((boxes[0], None), (boxes[1], None)) == {"below"}
    assert relative_position(a, b) == {"below"}


def test_tie_order_is_numpy_1_23s_own():
    """Our transcription of numpy 1.23's argsort reproduces numpy 1.23.1's recorded output exactly."""
    with gzip.open(DATA / "numpy123_argsort_cases.json.gz", "rt") as fh:
        recorded = json.load(fh)
    assert recorded["numpy"] == "1.23.1"
    lengths = set()
    for values, expected in recorded["cases"]:
        values = [float("nan") if v == "nan" else v for v in values]
        assert numpy123_argsort(values) == expected, values
        lengths.add(len(values))
    assert len(recorded["cases"]) > 1000 and {1, 16, 17, 120} <= lengths
    # Up to 16 scores: a stable sort, reversed -- the later of equal scores first.
    assert official_order([0.5, 0.7, 0.5, 0.7]) == [3, 1, 2, 0]


def test_parity_tool_reads_the_official_results_and_finds_no_difference(tmp_path, monkeypatch):
    import pandas as pd

    from reca_eval.benchmarks.geneval import parity

    items = real_items()
    records, ours = [], []
    cases = planted_sets(items, ["person"], 60, np.random.default_rng(3))
    for case, (item, bbox, colours, raw) in enumerate(cases):
        index, k = case // 4, case % 4
        correct, reason, detected = ref_evaluate_image(bbox, colours, item)
        records.append(  # as evaluate_images.py writes them (its sample names have 4 digits)
            {
                "filename": f"/data/images/{index:05d}/samples/{k:04d}.png",
                "tag": item["tag"],
                "prompt": item["prompt"],
                "correct": correct,
                "reason": reason,
                "metadata": json.dumps(item),
                "details": json.dumps({c: [box.tolist() for box, _ in v] for c, v in detected.items()}),
            }
        )
        ok, why = geneval.evaluate_image(
            item, geneval.select_detections(raw, item["tag"]), colour_from_attributes
        )
        ours.append(
            {
                "item_id": f"{index:05d}",
                "sample": k,
                "category": item["tag"],
                "score": float(ok),
                "reason": why,
            }
        )
    official_path = tmp_path / "results.jsonl"
    pd.DataFrame(records).to_json(official_path, orient="records", lines=True)
    ours = pd.DataFrame(ours)
    report = parity.diff_results(parity.read_official_results(official_path), ours)
    assert report["images_compared"] == 60 and report["verdicts_differ"] == 0
    assert report["only_official"] == report["only_ours"] == []
    assert report["scores_official"] == report["scores_ours"]
    monkeypatch.setattr(parity, "read_run", lambda path: (None, ours))
    assert parity.main([str(official_path), "run"]) == 0
    flipped = ours.assign(score=ours["score"].where(ours.index != 5, 1.0 - ours["score"]))
    assert parity.diff_results(parity.read_official_results(official_path), flipped)["verdicts_differ"] == 1
