"""Editing protocols: GEdit VIEScore, ImgEdit micro/macro, ShapeWorld mapping, and the edit folder scorer."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from reca_eval.benchmarks.edit.layout import score_edit_folder, write_edit_folder
from reca_eval.benchmarks.edit.rules import (
    aggregate_gedit,
    aggregate_imgedit,
    aggregate_shapes_edit,
    gedit_item,
    imgedit_item,
    shapes_edit_item,
)

# --- per-item scores ------------------------------------------------------------------------------------


def test_gedit_item_takes_minima_and_geometric_mean():
    assert gedit_item([8, 6], [9, 4]) == {"sc": 6.0, "pq": 4.0, "o": pytest.approx(math.sqrt(24))}
    assert gedit_item([10, 10], [0, 7])["o"] == 0.0  # a failed aspect caps the score


@pytest.mark.parametrize(
    ("sc", "pq"), [([11, 5], [5, 5]), ([5, 5], [-1, 5]), ([], [5]), ([float("nan")], [5])]
)
def test_gedit_item_rejects_out_of_range(sc, pq):
    with pytest.raises(ValueError, match="GEdit"):
        gedit_item(sc, pq)


def test_imgedit_item_averages_three_scores():
    assert imgedit_item([5, 4, 3]) == 4.0
    assert imgedit_item([1, 1, 2]) == pytest.approx(4 / 3)
    with pytest.raises(ValueError, match="expected 3 scores"):
        imgedit_item([5, 4])
    with pytest.raises(ValueError, match=r"outside \[1, 5\]"):
        imgedit_item([0, 4, 5])


def test_shapes_item_maps_to_both_scales():
    out = shapes_edit_item(1, 0.5, 0.64)
    assert out["sc"] == 5.0 and out["pq"] == pytest.approx(6.4)
    assert out["o"] == pytest.approx(math.sqrt(32))
    # Compliance c = min(success, preservation) = 0.5 scales every rubric score: 1 + 4c, 1 + 4c * 0.5,
    # 1 + 4c * 0.64.
    assert out["imgedit"] == pytest.approx((3 + 2 + 2.28) / 3)
    failed = shapes_edit_item(0, 1.0, 1.0)
    # A failed edit earns nothing on either scale, however well it preserved the scene (a copy).
    assert failed["sc"] == 0.0 and failed["o"] == 0.0 and failed["imgedit"] == 1.0
    with pytest.raises(ValueError, match="success must be 0 or 1"):
        shapes_edit_item(0.5, 1, 1)
    with pytest.raises(ValueError, match=r"quality must be in \[0, 1\]"):
        shapes_edit_item(1, 1, 1.5)


# --- GEdit aggregation ---------------------------------------------------------------------------------


def gedit_rows(spec: list[tuple[str, str, list[float], list[float]]]) -> pd.DataFrame:
    rows = []
    for n, (category, language, sc, pq) in enumerate(spec):
        rows.append({"item_id": f"i{n}", "sample": 0, "category": category, "language": language,
                     **gedit_item(sc, pq)})  # fmt: skip
    return pd.DataFrame(rows)


SPEC = [
    ("background", "en", [8, 9], [9, 9]),  # sc 8, pq 9, o sqrt(72)
    ("background", "cn", [4, 6], [9, 9]),  # sc 4, pq 9, o 6
    ("background", "en", [2, 9], [8, 8]),  # sc 2, pq 8, o 4
    ("style", "cn", [9, 9], [4, 9]),  # sc 9, pq 4, o 6
]


def test_gedit_overall_is_unweighted_mean_over_categories():
    scores = aggregate_gedit(gedit_rows(SPEC).drop(columns="language"), None)
    background_o = (math.sqrt(72) + 6 + 4) / 3
    assert scores["background"] == pytest.approx(background_o)
    assert scores["style"] == pytest.approx(6.0)
    assert scores["overall"] == pytest.approx((background_o + 6) / 2)  # not the mean over 4 images
    assert scores["overall"] != pytest.approx((math.sqrt(72) + 6 + 4 + 6) / 4)
    assert scores["SC"] == pytest.approx(((8 + 4 + 2) / 3 + 9) / 2)
    assert scores["PQ"] == pytest.approx(((9 + 9 + 8) / 3 + 4) / 2)
    assert not any("/" in k for k in scores)


def test_gedit_language_subsets():
    scores = aggregate_gedit(gedit_rows(SPEC), None)
    assert scores["en/background"] == pytest.approx((math.sqrt(72) + 4) / 2)
    assert scores["en/overall"] == pytest.approx((math.sqrt(72) + 4) / 2)  # en has no style item
    assert "en/style" not in scores
    assert scores["cn/background"] == pytest.approx(6.0)
    assert scores["cn/overall"] == pytest.approx(6.0)
    assert scores["cn/SC"] == pytest.approx((4 + 9) / 2)
    assert scores["overall"] == pytest.approx(((math.sqrt(72) + 6 + 4) / 3 + 6) / 2)


def test_gedit_weights_act_as_repeated_clusters():
    rows = gedit_rows(SPEC)
    weights = np.array([2.0, 0.0, 1.0, 1.0])
    repeated = pd.concat([rows.iloc[[0]], rows.iloc[[0, 2, 3]]])
    weighted, expanded = aggregate_gedit(rows, weights), aggregate_gedit(repeated, None)
    assert set(weighted) - set(expanded) == {"cn/background"}
    assert math.isnan(weighted["cn/background"])  # drawn zero times
    for key in expanded:
        assert weighted[key] == pytest.approx(expanded[key]), key


def test_gedit_rejects_missing_columns_and_bad_weights():
    with pytest.raises(ValueError, match=r"GEdit rows lack column\(s\) \['o'\]"):
        aggregate_gedit(gedit_rows(SPEC).drop(columns="o"), None)
    with pytest.raises(ValueError, match="weights have shape"):
        aggregate_gedit(gedit_rows(SPEC), np.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        aggregate_gedit(gedit_rows(SPEC), np.array([1.0, -1.0, 1.0, 1.0]))


# --- ImgEdit aggregation -------------------------------------------------------------------------------


def imgedit_rows(spec: list[tuple[str, list[float]]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"item_id": f"i{n}", "sample": 0, "category": t, "imgedit": imgedit_item(s)}
            for n, (t, s) in enumerate(spec)
        ]
    )


def test_imgedit_micro_and_macro_differ_when_types_are_unbalanced():
    rows = imgedit_rows([("add", [5, 5, 5])] * 3 + [("remove", [1, 1, 1])])
    scores = aggregate_imgedit(rows, None)
    assert scores["add"] == 5.0 and scores["remove"] == 1.0
    assert scores["overall_micro"] == pytest.approx((15 + 1) / 4)
    assert scores["overall_macro"] == pytest.approx((5 + 1) / 2)
    assert scores["overall"] == scores["overall_macro"]


def test_imgedit_balanced_types_agree_and_weights_count():
    rows = imgedit_rows(
        [("add", [5, 4, 3]), ("add", [3, 3, 3]), ("remove", [2, 2, 2]), ("remove", [4, 4, 4])]
    )
    scores = aggregate_imgedit(rows, None)
    assert scores["overall_micro"] == pytest.approx(scores["overall_macro"]) == pytest.approx(3.25)
    weighted = aggregate_imgedit(rows, np.array([3.0, 1.0, 0.0, 1.0]))
    assert weighted["add"] == pytest.approx((3 * 4 + 3) / 4)
    assert weighted["remove"] == pytest.approx(4.0)
    assert weighted["overall_micro"] == pytest.approx((3 * 4 + 3 + 4) / 5)


# --- ShapeWorld edit ------------------------------------------------------------------------------------


def test_shapes_aggregate_maps_then_averages():
    rows = pd.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "sample": [0, 0, 0],
            "category": ["recolour", "recolour", "move"],
            "success": [1, 0, 1],
            "preservation": [0.5, 1.0, 1.0],
            "quality": [0.64, 1.0, 0.25],
        }
    )
    scores = aggregate_shapes_edit(rows, None)
    recolour_o = (math.sqrt(5 * 6.4) + 0.0) / 2
    move_o = math.sqrt(10 * 2.5)
    assert scores["recolour"] == pytest.approx(recolour_o)
    assert scores["move"] == pytest.approx(move_o)
    assert scores["overall"] == pytest.approx((recolour_o + move_o) / 2)
    assert scores["SC"] == pytest.approx(((5 + 0) / 2 + 10) / 2)
    assert scores["PQ"] == pytest.approx(((6.4 + 10) / 2 + 2.5) / 2)
    per_item_imgedit = [shapes_edit_item(s, p, q)["imgedit"] for s, p, q in
                        zip(rows["success"], rows["preservation"], rows["quality"], strict=True)]  # fmt: skip
    assert scores["imgedit_micro"] == pytest.approx(np.mean(per_item_imgedit))
    assert scores["imgedit_macro"] == pytest.approx((np.mean(per_item_imgedit[:2]) + per_item_imgedit[2]) / 2)
    assert scores["imgedit/move"] == pytest.approx(per_item_imgedit[2])
    only_move = aggregate_shapes_edit(rows, np.array([0.0, 0.0, 2.0]))
    assert only_move["overall"] == pytest.approx(move_o) and math.isnan(only_move["recolour"])
    with pytest.raises(ValueError, match="success must be 0 or 1"):
        aggregate_shapes_edit(rows.assign(success=[1, 0.5, 1]), None)


# --- folder scoring -------------------------------------------------------------------------------------


def brightness_judge(item: dict, image: Image.Image) -> dict:
    """A fake GEdit judge: semantic score from the red channel, quality from the green one."""
    r, g, _ = image.getpixel((0, 0))
    out = gedit_item([r / 25.5, 10], [g / 25.5, 10])
    out["judge_item"] = item["item_id"]
    return out


ITEMS = [
    {"item_id": "e1", "category": "style", "language": "en"},
    {"item_id": "e2", "category": "style", "language": "cn"},
    {"item_id": "e3", "category": "background", "language": "en"},
]


def test_edit_folder_scores_and_counts_skips(tmp_path):
    white, grey = Image.new("RGB", (8, 8), (255, 255, 255)), Image.new("RGB", (8, 8), (51, 102, 0))
    paths = write_edit_folder({"e1": [white, grey], "e2": [white]}, tmp_path)
    assert sorted(p.name for p in paths) == ["e1_0.png", "e1_1.png", "e2_0.png"]
    (tmp_path / "e2_1.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")  # corrupt
    Image.new("RGB", (4, 8)).save(tmp_path / "e3_0.png")  # wrong size
    Image.new("RGB", (8, 8)).save(tmp_path / "e1_0.jpg")  # duplicate of e1_0.png
    (tmp_path / "e1_x.png").write_bytes(b"")  # not the layout
    (tmp_path / "sub").mkdir()
    out = score_edit_folder(ITEMS, tmp_path, brightness_judge, images_per_prompt=2, expected_size=(8, 8),
                            progress=False)  # fmt: skip
    reasons = {Path(s.path).name: s.reason for s in out.skips}
    assert reasons["e2_1.png"].startswith("unreadable image")
    assert reasons["e3_0.png"] == "wrong size 4x8, expected 8x8"
    assert reasons["e3_1.png"] == "missing file"
    assert reasons["e1_0.jpg"] == "duplicate of e1_0.png"
    assert reasons["e1_x.png"].startswith("unexpected file")
    assert reasons["sub"] == "unexpected sub-folder"
    assert len(out.skips) == 6
    rows = out.rows.set_index(["item_id", "sample"])
    assert len(rows) == 3
    assert rows.loc[("e1", 1), "sc"] == pytest.approx(2.0) and rows.loc[("e1", 1), "pq"] == pytest.approx(4.0)
    assert rows.loc[("e1", 1), "score"] == pytest.approx(math.sqrt(8))  # score falls back to O
    assert rows.loc[("e2", 0), "language"] == "cn" and rows.loc[("e2", 0), "judge_item"] == "e2"
    scores = aggregate_gedit(out.rows, None)
    assert scores["style"] == pytest.approx((10 + 10 + math.sqrt(8)) / 3)
    assert sorted(p.name for p in out.images) == ["e1_0.png", "e1_1.png", "e2_0.png"]


def test_edit_folder_rejects_bad_items_and_scorer_output(tmp_path):
    write_edit_folder({"e1": [Image.new("RGB", (8, 8))]}, tmp_path)
    with pytest.raises(ValueError, match="duplicate item_id 'e1'"):
        score_edit_folder([ITEMS[0], ITEMS[0]], tmp_path, brightness_judge, progress=False)
    with pytest.raises(ValueError, match="lacks 'item_id' or 'category'"):
        score_edit_folder([{"item_id": "e1"}], tmp_path, brightness_judge, progress=False)
    with pytest.raises(ValueError, match="needs 'score', 'o' or 'imgedit'"):
        score_edit_folder(ITEMS[:1], tmp_path, lambda item, im: {"sc": 1.0}, progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        score_edit_folder(ITEMS, tmp_path / "nope", brightness_judge, progress=False)
