"""GenEval scoring rules: each rule in isolation, then every real GenEval item with planted detections."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from reca_eval.benchmarks.geneval import rules as geneval
from reca_eval.core.detections import Detection

GENEVAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "geneval"
METADATA_FILES = ("evaluation_metadata.jsonl", "evaluation_metadata_long.jsonl")
# The official prompt set's composition (djghosh13/geneval prompts/evaluation_metadata.jsonl).
OFFICIAL_TAG_COUNTS = {
    "single_object": 80,
    "two_object": 99,
    "counting": 80,
    "colors": 94,
    "position": 100,
    "color_attr": 100,
}
CANVAS = 512
OBJECT_SIZE = 60
# Far enough that the offset's margin (0.1 * 2 * OBJECT_SIZE) cannot hide the relation.
POSITION_STEP = 180
DIRECTIONS = {"left of": (-1, 0), "right of": (1, 0), "above": (0, -1), "below": (0, 1)}


def box_at(
    cx: float, cy: float, w: float = OBJECT_SIZE, h: float = OBJECT_SIZE
) -> tuple[float, float, float, float]:
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def det(
    cx: float, cy: float, w: float = 10, h: float = 10, score: float = 0.95, color: str = "red"
) -> Detection:
    return Detection(box=box_at(cx, cy, w, h), score=score, attributes={"color": color})


def colour_from_attributes(classname: str, objects: list[Detection]) -> list[str]:
    return [o.attributes["color"] for o in objects]


def plant_detections(metadata: dict, score: float = 0.95) -> dict[str, list[Detection]]:
    """Raw detections that satisfy ``metadata``: right counts, colours and relative positions."""
    centres: list[tuple[float, float]] = []
    planted: dict[str, list[Detection]] = {}
    for group, req in enumerate(metadata["include"]):
        cx, cy = CANVAS / 2, CANVAS / 2
        if "position" in req:
            relation, target = req["position"]
            step_x, step_y = DIRECTIONS[relation]
            cx, cy = centres[target][0] + step_x * POSITION_STEP, centres[target][1] + step_y * POSITION_STEP
        elif group > 0:
            cx += 100 * group
        centres.append((cx, cy))
        colour = req.get("color", "white")
        planted.setdefault(req["class"], []).extend(
            Detection(
                box=box_at(cx + 2 * j, cy + 2 * j), score=score - 0.001 * j, attributes={"color": colour}
            )
            for j in range(req["count"])
        )
    return planted


def judge(metadata: dict, raw: dict[str, list[Detection]]) -> tuple[bool, str]:
    return geneval.evaluate_image(
        metadata, geneval.select_detections(raw, metadata["tag"]), colour_from_attributes
    )


def other_colour(colour: str) -> str:
    return geneval.COLORS[(geneval.COLORS.index(colour) + 1) % len(geneval.COLORS)]


def perturbations(
    metadata: dict, planted: dict[str, list[Detection]]
) -> dict[str, dict[str, list[Detection]]]:
    """Per tag, changes to satisfying detections that must make the image wrong."""
    tag, include = metadata["tag"], metadata["include"]
    first, last = include[0], include[-1]

    def copy() -> dict[str, list[Detection]]:
        return {k: list(v) for k, v in planted.items()}

    out: dict[str, dict[str, list[Detection]]] = {}
    dropped = copy()
    dropped[last["class"]] = dropped[last["class"]][:-1]
    out["drop one object"] = dropped
    if tag == "counting":
        extra = copy()
        template = extra[first["class"]][0]
        extra[first["class"]].append(
            Detection(box=template.box, score=0.97, attributes=dict(template.attributes))
        )
        out["one object too many (exclude clause)"] = extra
    for group, req in enumerate(include):
        if "color" in req:
            wrong = copy()
            wrong[req["class"]] = [
                Detection(d.box, d.score, attributes={"color": other_colour(req["color"])})
                for d in wrong[req["class"]]
            ]
            out[f"wrong colour in group {group}"] = wrong
    if tag == "position":
        swapped = copy()
        a, b = first["class"], last["class"]
        swapped[a] = [
            Detection(bd.box, ad.score, attributes=ad.attributes)
            for ad, bd in zip(planted[a], planted[b], strict=True)
        ]
        swapped[b] = [
            Detection(ad.box, bd.score, attributes=bd.attributes)
            for ad, bd in zip(planted[a], planted[b], strict=True)
        ]
        out["positions swapped"] = swapped
    return out


# --------------------------------------------------------------------------------------------------
# The real metadata files


def real_metadata(name: str) -> Path:
    path = GENEVAL_DIR / name
    if not path.exists():
        pytest.skip(
            f"official GenEval metadata not found at {path} (shared/benchmarks is not part of the repo)"
        )
    return path


def test_real_metadata_files_load_with_official_composition():
    short = geneval.load_metadata(real_metadata(METADATA_FILES[0]))
    long = geneval.load_metadata(real_metadata(METADATA_FILES[1]))
    assert len(short) == len(long) == 553
    assert Counter(m["tag"] for m in short) == OFFICIAL_TAG_COUNTS
    assert Counter(m["tag"] for m in long) == OFFICIAL_TAG_COUNTS
    # The long prompts rephrase the same items: every rule matches line by line, only the prompt differs.
    for line, (s, lg) in enumerate(zip(short, long, strict=True), start=1):
        assert {k: v for k, v in s.items() if k != "prompt"} == {
            k: v for k, v in lg.items() if k != "prompt"
        }, line
        assert len(lg["prompt"]) > len(s["prompt"]), line
    # counting prompts always forbid one more than they ask for
    for m in short:
        if m["tag"] == "counting":
            assert m["exclude"] == [
                {"class": m["include"][0]["class"], "count": m["include"][0]["count"] + 1}
            ]


@pytest.mark.parametrize("name", METADATA_FILES)
def test_every_real_item_accepts_planted_detections_and_rejects_perturbations(name):
    items = geneval.load_metadata(real_metadata(name))
    wrongly_rejected, wrongly_accepted = [], []
    perturbation_counts: Counter[str] = Counter()
    for line, metadata in enumerate(items, start=1):
        planted = plant_detections(metadata)
        correct, reason = judge(metadata, planted)
        if not correct or reason:
            wrongly_rejected.append((line, reason))
        for what, raw in perturbations(metadata, planted).items():
            perturbation_counts[f"{metadata['tag']}: {what}"] += 1
            correct, reason = judge(metadata, raw)
            if correct or not reason:
                wrongly_accepted.append((line, what))
    assert not wrongly_rejected, wrongly_rejected[:5]
    assert not wrongly_accepted, wrongly_accepted[:5]
    assert perturbation_counts["counting: one object too many (exclude clause)"] == 80
    assert perturbation_counts["position: positions swapped"] == 100
    assert perturbation_counts["color_attr: wrong colour in group 1"] == 100
    assert perturbation_counts["colors: wrong colour in group 0"] == 94


# --------------------------------------------------------------------------------------------------
# Detection selection


def test_counting_threshold_applies_to_every_class_only_for_counting():
    raw = {"cat": [det(50, 50, score=0.85)], "dog": [det(80, 50, score=0.95)]}
    assert set(geneval.select_detections(raw, "two_object")) == {"cat", "dog"}
    assert set(geneval.select_detections(raw, "counting")) == {"dog"}
    # Both thresholds are strict: a score equal to the threshold is dropped.
    assert geneval.select_detections({"cat": [det(1, 1, score=0.3)]}, "single_object") == {}
    assert geneval.select_detections({"cat": [det(1, 1, score=0.9)]}, "counting") == {}
    assert len(geneval.select_detections({"cat": [det(1, 1, score=0.31)]}, "single_object")["cat"]) == 1


def test_hesitant_duplicate_does_not_spoil_a_count():
    metadata = {
        "tag": "counting",
        "include": [{"class": "cat", "count": 2}],
        "exclude": [{"class": "cat", "count": 3}],
    }
    raw = {"cat": [det(50, 50), det(150, 50), det(250, 50, score=0.85)]}
    assert judge(metadata, raw) == (True, "")
    raw["cat"][2] = det(250, 50, score=0.92)
    assert judge(metadata, raw) == (False, "expected cat<3, found 3")


def test_selection_orders_by_confidence_and_keeps_at_most_max_objects():
    rng = np.random.default_rng(0)
    scores = rng.permutation(np.linspace(0.35, 0.99, 20))
    raw = {"cat": [det(i, i, score=float(s)) for i, s in enumerate(scores)]}
    kept = geneval.select_detections(raw, "single_object")["cat"]
    assert len(kept) == geneval.MAX_OBJECTS == 16
    assert [d.score for d in kept] == sorted(scores, reverse=True)[:16]


def test_colour_is_judged_on_the_most_confident_objects_only():
    metadata = {
        "tag": "colors",
        "include": [{"class": "car", "count": 1, "color": "red"}],
        "prompt": "a red car",
    }
    red_second = {"car": [det(10, 10, score=0.6, color="red"), det(50, 50, score=0.8, color="blue")]}
    assert judge(metadata, red_second) == (False, "expected red car>=1, found 0 red; and 1 blue")
    red_first = {"car": [det(10, 10, score=0.9, color="red"), det(50, 50, score=0.8, color="blue")]}
    assert judge(metadata, red_first) == (True, "")


def test_colour_classifier_must_name_one_colour_per_object():
    metadata = {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}], "prompt": "p"}
    with pytest.raises(ValueError, match="returned 2 colours for 1"):
        geneval.evaluate_image(metadata, {"car": [det(1, 1)]}, lambda c, objs: ["red", "red"])


# --------------------------------------------------------------------------------------------------
# Relative position


def rel(dx: float, dy: float, size_a=(10, 10), size_b=(10, 10)) -> set[str]:
    b = Detection(box=box_at(100, 100, *size_b), score=1.0)
    a = Detection(box=box_at(100 + dx, 100 + dy, *size_a), score=1.0)
    return geneval.relative_position(a, b)


def test_position_margin_by_hand():
    # Sizes 10 + 10: margin 0.1 * 20 = 2 px per axis. Within it the offset vanishes entirely.
    assert rel(1.9, 0) == set()
    assert rel(-1.9, 1.9) == set()
    # Past the margin the shrunk offset is divided by the *unshrunk* length: (|dx| - 2) / |dx| > 0.5
    # needs |dx| > 4. dx = 3.9 -> 1.9 / 3.9 = 0.487; dx = 4.1 -> 2.1 / 4.1 = 0.512.
    assert rel(2.1, 0) == set()
    assert rel(3.9, 0) == set()
    assert rel(4.1, 0) == {"right of"}
    assert rel(-4.1, 0) == {"left of"}
    assert rel(0, -4.1) == {"above"}  # image y grows downwards
    assert rel(0, 4.1) == {"below"}
    # The margin is per axis, from each axis' own extents: widths 20 + 10 -> margin 3, cut at |dx| = 6.
    assert rel(5.9, 0, size_a=(20, 10)) == set()
    assert rel(6.1, 0, size_a=(20, 10)) == {"right of"}
    # Heights don't enter the x margin.
    assert rel(4.1, 0, size_a=(10, 50)) == {"right of"}


def test_diagonal_relations():
    # dx = dy = 20, margin 2: (18, 18) / 28.28 = (0.636, 0.636): both relations hold.
    assert rel(20, 20) == {"right of", "below"}
    assert rel(-20, -20) == {"left of", "above"}
    assert rel(20, -20) == {"right of", "above"}
    # dx = 20, dy = 8: (18, 6) / 21.54 = (0.836, 0.279): only the horizontal one.
    assert rel(20, 8) == {"right of"}
    assert rel(0, 0) == set()


def position_item(relation: str, target_count: int = 1) -> dict:
    return {
        "tag": "position",
        "include": [
            {"class": "teddy bear", "count": target_count},
            {"class": "dog", "count": 1, "position": [relation, 0]},
        ],
        "prompt": f"a photo of a dog {relation} a teddy bear",
    }


def test_position_against_every_object_of_the_target_group():
    bears = [det(200, 200, score=0.9), det(400, 200, score=0.8)]
    dog = det(300, 200)  # right of the first bear, left of the second
    assert judge(position_item("right of", target_count=1), {"teddy bear": bears, "dog": [dog]}) == (True, "")
    correct, reason = judge(position_item("right of", target_count=2), {"teddy bear": bears, "dog": [dog]})
    assert not correct
    assert reason == "expected dog right of target, found left of target"


def test_position_without_a_matched_target_group_fails():
    correct, reason = judge(position_item("right of"), {"dog": [det(300, 200)]})
    assert not correct
    assert reason.splitlines() == ["expected teddy bear>=1, found 0", "no target for dog to be right of"]
    # A target group that failed its colour is unmatched too, though its objects exist.
    metadata = position_item("right of")
    metadata["include"][0]["color"] = "blue"
    raw = {"teddy bear": [det(200, 200, color="red")], "dog": [det(300, 200)]}
    correct, reason = judge(metadata, raw)
    assert not correct
    assert reason.splitlines()[1] == "no target for dog to be right of"
    raw["teddy bear"] = [det(200, 200, color="blue")]
    assert judge(metadata, raw) == (True, "")


def test_position_reason_lists_diagonal_relations_in_stable_order():
    raw = {"teddy bear": [det(200, 200)], "dog": [det(100, 100)]}
    assert judge(position_item("right of"), raw) == (
        False,
        "expected dog right of target, found above and left of target",
    )
    raw["dog"] = [det(200, 200)]
    assert judge(position_item("right of"), raw) == (False, "expected dog right of target, found  target")


def test_exclude_clauses_are_ored():
    metadata = {
        "tag": "counting",
        "include": [{"class": "cat", "count": 1}],
        "exclude": [{"class": "dog", "count": 1}, {"class": "cat", "count": 3}],
        "prompt": "p",
    }
    assert judge(metadata, {"cat": [det(1, 1)]}) == (True, "")
    assert judge(metadata, {"cat": [det(1, 1)], "dog": [det(5, 5)]}) == (False, "expected dog<1, found 1")
    cats = {"cat": [det(1, 1), det(20, 20), det(40, 40)]}
    assert judge(metadata, cats) == (False, "expected cat<3, found 3")


# --------------------------------------------------------------------------------------------------
# Colour crops


def test_crop_for_colour_masks_onto_grey_then_crops_to_box():
    image = Image.new("RGB", (20, 10), (255, 0, 0))
    mask = np.zeros((10, 20), dtype=bool)
    mask[2:6, 4:8] = True
    crop = geneval.crop_for_colour(image, Detection(box=(2, 2, 10, 8), score=1.0, mask=mask))
    pixels = np.asarray(crop)
    assert crop.size == (8, 6)
    assert tuple(pixels[0, 2]) == (255, 0, 0)  # image (4, 2): inside the mask
    assert tuple(pixels[0, 0]) == (153, 153, 153)  # image (2, 2): outside the mask -> #999
    assert tuple(pixels[5, 7]) == (153, 153, 153)
    unmasked = geneval.crop_for_colour(image, Detection(box=(2, 2, 10, 8), score=1.0))
    assert (np.asarray(unmasked) == (255, 0, 0)).all()
    with pytest.raises(ValueError, match="mask shape"):
        geneval.crop_for_colour(image, Detection(box=(0, 0, 5, 5), score=1.0, mask=np.ones((20, 10), bool)))


# --------------------------------------------------------------------------------------------------
# Aggregation


def rows_of(categories: list[str], scores: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [f"{i:05d}" for i in range(len(scores))],
            "sample": 0,
            "category": categories,
            "score": scores,
        }
    )


def test_overall_is_unweighted_mean_of_task_means_independent_of_row_order():
    rows = rows_of(["single_object"] * 4 + ["counting"] * 2, [1, 0, 1, 1, 0, 1])
    result = geneval.aggregate(rows, None)
    assert result == {"single_object": 0.75, "counting": 0.5, "overall": 0.625}  # not the row mean 4/6
    assert list(result) == ["single_object", "counting", "overall"]  # keyed in TAGS order
    shuffled = rows.sample(frac=1.0, random_state=3).reset_index(drop=True)
    assert geneval.aggregate(shuffled, None) == result
    reversed_rows = rows.iloc[::-1].reset_index(drop=True)
    assert geneval.aggregate(reversed_rows, None) == result


def test_aggregate_respects_weights():
    rows = rows_of(["single_object"] * 4 + ["counting"] * 2, [1, 0, 1, 1, 0, 1])
    # single_object: (2*1 + 3*0 + 0 + 1*1) / 6 = 0.5; counting: (1*0 + 3*1) / 4 = 0.75.
    result = geneval.aggregate(rows, np.array([2, 3, 0, 1, 1, 3]))
    assert result == pytest.approx({"single_object": 0.5, "counting": 0.75, "overall": 0.625})
    # A task with no weight left is absent, from the keys and from the overall mean.
    result = geneval.aggregate(rows, np.array([1, 1, 1, 1, 0, 0]))
    assert result == {"single_object": 0.75, "overall": 0.75}
    with pytest.raises(ValueError, match="shape"):
        geneval.aggregate(rows, np.ones(5))
    with pytest.raises(ValueError, match="non-negative"):
        geneval.aggregate(rows, -np.ones(6))


def test_aggregate_matches_pandas_groupby_on_random_rows():
    rng = np.random.default_rng(1)
    n = 2212
    rows = rows_of(list(rng.choice(geneval.TAGS, n)), list(rng.integers(0, 2, n).astype(float)))
    weights = rng.poisson(1.0, n).astype(float)
    expected = rows.assign(w=weights, ws=weights * rows["score"]).groupby("category")[["w", "ws"]].sum()
    task_means = expected["ws"] / expected["w"]
    result = geneval.aggregate(rows, weights)
    assert result["overall"] == pytest.approx(task_means.mean())
    for tag, value in task_means.items():
        assert result[tag] == pytest.approx(value)


# --------------------------------------------------------------------------------------------------
# Malformed metadata


GOOD_LINE = json.dumps({"tag": "single_object", "include": [{"class": "cat", "count": 1}], "prompt": "a cat"})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"include": [{"class": "cat", "count": 1}], "prompt": "p"}', "missing key 'tag'"),
        ('{"tag": "single_object", "prompt": "p"}', "missing key 'include'"),
        (
            '{"tag": "singular", "include": [{"class": "cat", "count": 1}], "prompt": "p"}',
            "unknown tag 'singular'",
        ),
        ('{"tag": "single_object", "include": [], "prompt": "p"}', "non-empty list"),
        ('{"tag": "single_object", "include": [{"count": 1}], "prompt": "p"}', "'class'"),
        ('{"tag": "counting", "include": [{"class": "cat", "count": 0}], "prompt": "p"}', "bad count 0"),
        ('{"tag": "counting", "include": [{"class": "cat", "count": "2"}], "prompt": "p"}', "bad count '2'"),
        (
            '{"tag": "counting", "include": [{"class": "cat", "count": true}], "prompt": "p"}',
            "bad count True",
        ),
        (
            '{"tag": "counting", "include": [{"class": "cat", "count": 2}], "exclude": [{"class": "cat", "count": -1}], "prompt": "p"}',
            "exclude\\[0\\] \\(cat\\) has bad count -1",
        ),
        (
            '{"tag": "colors", "include": [{"class": "cat", "count": 1, "color": "teal"}], "prompt": "p"}',
            "unknown color 'teal'",
        ),
        (
            '{"tag": "position", "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1, "position": ["right of", 1]}], "prompt": "p"}',
            "points to group 1, which is not an earlier include group",
        ),
        (
            '{"tag": "position", "include": [{"class": "cat", "count": 1, "position": ["right of", 1]}, {"class": "dog", "count": 1}], "prompt": "p"}',
            "include\\[0\\] \\(cat\\) position points to group 1",
        ),
        (
            '{"tag": "position", "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1, "position": ["beside", 0]}], "prompt": "p"}',
            "unknown relation 'beside'",
        ),
        (
            '{"tag": "single_object", "include": [{"class": "cat", "count": 1}]}',
            "missing string key 'prompt'",
        ),
    ],
)
def test_malformed_metadata_line_is_named_by_file_and_line(tmp_path, line, message):
    path = tmp_path / "items.jsonl"
    path.write_text(GOOD_LINE + "\n" + line + "\n" + GOOD_LINE + "\n")
    with pytest.raises(ValueError, match=message) as info:
        geneval.load_metadata(path)
    assert str(info.value).startswith(f"{path}:2:")


def test_metadata_keeps_extra_keys_and_passes_blank_lines(tmp_path):
    extra = json.loads(GOOD_LINE) | {"source": "mine", "seed": 7}
    path = tmp_path / "items.jsonl"
    path.write_text(GOOD_LINE + "\n\n" + json.dumps(extra) + "\n")
    items = geneval.load_metadata(path)
    assert items == [json.loads(GOOD_LINE), extra]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="no GenEval items"):
        geneval.load_metadata(empty)
