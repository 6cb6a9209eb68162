"""DPG-Bench: question-graph loading, gating, official vs fixed mode, aggregation, grids and folder scoring."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from reca_eval.benchmarks.dpg.layout import make_grid, score_dpg_folder, split_grid, write_dpg_folder
from reca_eval.benchmarks.dpg.rules import (
    ANSWER_RULES,
    DroppedParentError,
    aggregate,
    answer_is_yes,
    certain_failure,
    frame_records,
    gate,
    item_rows,
    load_questions,
)
from reca_eval.benchmarks.edit.layout import scan_per_sample_folder

SHARED_BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
HEADER = "item_id,text,keywords,proposition_id,dependency,category_broad,category_detailed,tuple,question_natural_language"


def q(item, prop, dep, broad, detailed, thing="x"):
    """One CSV line; the tuple agrees with the category columns the way the official CSV's do."""
    return f'{item},prompt {item},kw,{prop},"{dep}",{broad},{detailed},{broad} - {detailed} ({thing}),Is there {thing}?'


def write_csv(tmp_path: Path, lines: list[str], name="dpg.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([HEADER, *lines]) + "\n", encoding="utf-8")
    return path


# item A: 1 (entity) <- 2 (attribute) <- 3 (relation, also needs 1); item B: 1 <- 2.
STANDARD = [
    q("A", 1, "0", "entity", "whole", "cat"),
    q("A", 2, "1", "attribute", "color", "black cat"),
    q("A", 3, "1,2", "relation", "spatial", "cat on mat"),
    q("B", 1, "0", "entity", "whole", "dog"),
    q("B", 2, "1", "attribute", "color", "brown dog"),
]


def for_item(questions: pd.DataFrame, item: str) -> pd.DataFrame:
    return questions[questions["item_id"] == item]


# --- loading ---------------------------------------------------------------------------------------


def test_load_questions_parses_graph_and_lines(tmp_path):
    qs = load_questions(write_csv(tmp_path, STANDARD))
    assert len(qs) == 5
    assert qs["dependency"].tolist() == [(0,), (1,), (1, 2), (0,), (1,)]
    assert qs["csv_line"].tolist() == [2, 3, 4, 5, 6]
    assert qs["row_index"].tolist() == [0, 1, 2, 3, 4]
    assert qs["proposition_id"].dtype.kind == "i"


def test_missing_column_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(HEADER.replace(",dependency", "") + "\nA,t,k,1,entity,whole,entity - whole (x),q?\n")
    with pytest.raises(ValueError, match=r"bad\.csv:1: header lacks column\(s\) \['dependency'\]"):
        load_questions(path)


def test_dependency_on_unknown_proposition_names_file_and_line(tmp_path):
    path = write_csv(
        tmp_path, [*STANDARD[:3], q("B", 1, "0", "entity", "whole"), q("B", 2, "5", "entity", "part")]
    )
    with pytest.raises(ValueError, match=r"dpg\.csv:6: proposition 2 of item 'B' depends on \[5\]"):
        load_questions(path)


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        (q("A", 2, "one", "entity", "whole"), r"dpg\.csv:3: dependency 'one' is not"),
        (q("A", 1, "0", "entity", "whole"), r"dpg\.csv:3: duplicate proposition_id 1"),
        (q("A", 2, "2", "entity", "whole"), r"dpg\.csv:3: proposition 2 of item 'A' depends on itself"),
        ("A,t,k,2,0,entity,whole,attribute - color (x),q?", r"dpg\.csv:3: .*disagree with the tuple"),
        ("A,t,k,2,0,entity", r"dpg\.csv:3: 6 fields, header has 9"),
    ],
)
def test_malformed_rows_error_with_line(tmp_path, bad_line, message):
    with pytest.raises(ValueError, match=message):
        load_questions(write_csv(tmp_path, [STANDARD[0], bad_line]))


def test_non_contiguous_item_is_an_error(tmp_path):
    lines = [STANDARD[0], STANDARD[3], q("A", 2, "1", "entity", "part")]
    with pytest.raises(ValueError, match=r"dpg\.csv:4: rows of item 'A' are not contiguous"):
        load_questions(write_csv(tmp_path, lines))


def test_line_numbers_count_multiline_fields(tmp_path):
    multiline = 'A,"a prompt\nover two lines",kw,2,"1",entity,part,entity - part (x),q?'
    bad = q("A", 3, "9", "entity", "part")
    with pytest.raises(ValueError, match=r"dpg\.csv:5: proposition 3"):
        load_questions(write_csv(tmp_path, [STANDARD[0], multiline, bad]))


# --- answers and gating ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "official", "fixed"),
    [("yes", True, True), ("Yes", False, True), ("YES", False, True), (" yes\n", False, True),
     ("yes.", False, True), ("Yes, it is.", False, True), ("no", False, False), ("yess", False, False),
     ("", False, False), ("y", False, False), ("no, yes", False, False)],
)  # fmt: skip
def test_official_counts_only_the_exact_string_and_fixed_normalises(answer, official, fixed):
    # compute_dpg_bench.py L135: float(answer == 'yes'), no normalisation at all.
    assert answer_is_yes(answer, "official") is official
    assert answer_is_yes(answer) is official  # official is the default
    assert answer_is_yes(answer, "fixed") is fixed


def test_chain_zeroed_parent_zeroes_descendants(tmp_path):
    lines = [
        q("A", 1, "0", "entity", "whole"),
        q("A", 2, "1", "entity", "part"),
        q("A", 3, "2", "entity", "part"),
    ]
    qs = load_questions(write_csv(tmp_path, lines))
    assert gate(qs, {1: 0.0, 2: 1.0, 3: 1.0}, "fixed") == {1: 0.0, 2: 0.0, 3: 0.0}
    assert gate(qs, {1: 1.0, 2: 0.0, 3: 1.0}, "fixed") == {1: 1.0, 2: 0.0, 3: 0.0}
    assert gate(qs, {1: 1.0, 2: 1.0, 3: 1.0}, "fixed") == {1: 1.0, 2: 1.0, 3: 1.0}
    # a child answered "no" does not touch its parent
    assert gate(qs, {1: 1.0, 2: 1.0, 3: 0.0}, "fixed") == {1: 1.0, 2: 1.0, 3: 0.0}


def test_multiple_parents_any_zero_zeroes(tmp_path):
    qs = for_item(load_questions(write_csv(tmp_path, STANDARD)), "A")
    assert gate(qs, {1: 1.0, 2: 0.0, 3: 1.0}, "fixed")[3] == 0.0
    assert gate(qs, {1: 1.0, 2: 1.0, 3: 1.0}, "fixed")[3] == 1.0


def test_in_place_gating_depends_on_row_order(tmp_path):
    # Children listed before their parents read the parent's *ungated* score, as the official loop does.
    lines = [
        q("A", 3, "2", "entity", "part"),
        q("A", 2, "1", "entity", "part"),
        q("A", 1, "0", "entity", "whole"),
    ]
    reversed_order = load_questions(write_csv(tmp_path, lines, "rev.csv"))
    forward = load_questions(write_csv(tmp_path, lines[::-1], "fwd.csv"))
    raw = {1: 0.0, 2: 1.0, 3: 1.0}
    assert gate(forward, raw, "fixed") == {1: 0.0, 2: 0.0, 3: 0.0}
    assert gate(reversed_order, raw, "fixed") == {1: 0.0, 2: 0.0, 3: 1.0}


def test_gate_needs_every_raw_score(tmp_path):
    qs = for_item(load_questions(write_csv(tmp_path, STANDARD)), "A")
    with pytest.raises(KeyError, match=r"no raw score for proposition\(s\) \[3\]"):
        gate(qs, {1: 1.0, 2: 1.0}, "fixed")


# --- official vs fixed ---------------------------------------------------------------------------------


def test_official_drops_exactly_the_first_csv_row(tmp_path):
    # First item's first proposition has no children here, so official mode can score the image.
    lines = [q("A", 1, "0", "entity", "whole"), q("A", 2, "0", "entity", "whole"), *STANDARD[3:]]
    qs = load_questions(write_csv(tmp_path, lines))
    answers = {"A": {1: "no", 2: "yes"}, "B": {1: "yes", 2: "no"}}
    rows = {
        mode: pd.DataFrame(
            [r for item in ("A", "B") for r in item_rows(item, 0, for_item(qs, item), answers[item], mode)]
        )
        for mode in ("official", "fixed")
    }
    key = ["item_id", "proposition_id"]
    fixed_only = rows["fixed"].merge(rows["official"][key], on=key, how="left", indicator=True)
    assert fixed_only.loc[fixed_only["_merge"] == "left_only", key].values.tolist() == [["A", 1]]
    shared = rows["fixed"].iloc[1:].drop(columns="mode").reset_index(drop=True)
    assert shared.equals(rows["official"].drop(columns="mode").reset_index(drop=True))
    # overall: fixed (0.5 + 0.5) / 2; official item A has only its "yes" question left: (1 + 0.5) / 2
    assert aggregate(rows["fixed"], None)["overall"] == pytest.approx(50.0)
    assert aggregate(rows["official"], None)["overall"] == pytest.approx(75.0)


def test_official_mode_fails_image_whose_question_needs_the_dropped_row(tmp_path):
    qs = load_questions(write_csv(tmp_path, STANDARD))
    with pytest.raises(DroppedParentError, match="L73"):
        gate(for_item(qs, "A"), {2: 1.0, 3: 1.0}, "official")
    # other items are untouched by the quirk
    assert gate(for_item(qs, "B"), {1: 1.0, 2: 1.0}, "official") == {1: 1.0, 2: 1.0}


def test_official_fails_only_when_the_gating_reads_the_dropped_row(tmp_path):
    # The example: dependencies "2,1" with question 2 answered "no": the official loop stops at
    # parent 2 (score 0) and never reads the dropped 1, so the image scores: (0 + 0 + 1 + 1) / 4 = 50.
    lines = [
        q("A", 1, "0", "entity", "whole"),  # the dropped first row
        q("A", 2, "0", "entity", "whole"),
        q("A", 3, "2,1", "attribute", "color"),
        q("A", 4, "0", "entity", "whole"),
        q("A", 5, "0", "entity", "whole"),
        *STANDARD[3:],
    ]
    qs = load_questions(write_csv(tmp_path, lines))
    a = for_item(qs, "A")
    assert gate(a, {2: 0.0, 3: 1.0, 4: 1.0, 5: 1.0}, "official") == {2: 0.0, 3: 0.0, 4: 1.0, 5: 1.0}
    with pytest.raises(DroppedParentError, match="depends on proposition 1"):
        gate(a, {2: 1.0, 3: 1.0, 4: 1.0, 5: 1.0}, "official")  # 2 is not 0: the loop reads 1
    assert certain_failure(a, "official") is None  # it depends on the answers

    images = tmp_path / "images"
    write_dpg_folder({"A": [solid(COLOURS[0])] * 4, "B": [solid(COLOURS[0])] * 4}, images, grid=True)

    def answers_for(item_a_2: str):
        def vqa(image, questions):
            return [item_a_2 if (q["item_id"], q["proposition_id"]) == ("A", 2) else "yes" for q in questions]

        return vqa

    out = score_dpg_folder(qs, images, answers_for("no"), mode="official", progress=False)
    assert out.skips == []
    a_rows = out.rows[out.rows["item_id"] == "A"]
    assert a_rows.groupby("sample")["score"].mean().tolist() == [0.5] * 4
    out = score_dpg_folder(qs, images, answers_for("yes"), mode="official", progress=False)
    assert [(Path(s.path).name, "depends on proposition 1" in s.reason) for s in out.skips] == [
        ("A.png", True)
    ]
    assert set(out.rows["item_id"]) == {"B"}


def test_official_failure_skips_every_sample_of_the_item_and_spares_certain_ones_the_vqa(tmp_path):
    # A's question 2 depends on the dropped 1 first thing: every tile reads it, whatever the answers.
    qs = load_questions(write_csv(tmp_path, STANDARD))
    assert certain_failure(for_item(qs, "A"), "official") is not None
    assert certain_failure(for_item(qs, "A"), "fixed") is None
    images = tmp_path / "images"
    write_dpg_folder({"A": [solid(COLOURS[0])] * 2, "B": [solid(COLOURS[0])] * 2}, images)
    asked_items = []

    def vqa(image, questions):
        asked_items.append(questions[0]["item_id"])
        return ["yes"] * len(questions)

    out = score_dpg_folder(qs, images, vqa, mode="official", images_per_prompt=2, progress=False)
    assert sorted(Path(s.path).name for s in out.skips) == ["A_0.png", "A_1.png"]
    assert set(asked_items) == {"B"}
    # Only the first row's proposition dropped, nothing left of the item: the official fails it too.
    lone = load_questions(write_csv(tmp_path, [q("A", 1, "0", "entity", "whole"), *STANDARD[3:]], "lone.csv"))
    assert "no questions" in str(certain_failure(for_item(lone, "A"), "official"))


def test_official_l2_is_the_tuple_text(tmp_path):
    lines = [
        q("X", 1, "0", "entity", "whole"),  # dropped in official mode
        'A,prompt A,kw,1,"0",global,style,global - (photo),Is it a photo?',
        'A,prompt A,kw,2,"0",other,text,other (sign),Is there a sign?',
        q("A", 3, "0", "entity", "whole"),
    ]
    qs = load_questions(write_csv(tmp_path, lines))
    answers = {("A", 0): {1: "yes", 2: "no", 3: "yes"}}
    official = aggregate(_rows(qs, answers, "official"), None)
    assert {k for k in official if "/" in k} == {"global/global -", "other/other", "entity/entity - whole"}
    fixed = aggregate(_rows(qs, answers, "fixed"), None)
    assert {k for k in fixed if "/" in k} == {"global/style", "other/text", "entity/whole"}


def test_unknown_mode_rejected(tmp_path):
    qs = load_questions(write_csv(tmp_path, STANDARD))
    with pytest.raises(ValueError, match="DPG mode must be one of"):
        gate(qs, {}, "lenient")


# --- aggregation ----------------------------------------------------------------------------------------


def _rows(qs, answers: dict[tuple[str, int], dict[int, str]], mode="fixed") -> pd.DataFrame:
    out = []
    for (item, sample), ans in answers.items():
        out += item_rows(item, sample, for_item(qs, item), ans, mode)
    return pd.DataFrame(out)


def test_category_scores_use_raw_answers_and_overall_uses_gated(tmp_path):
    qs = load_questions(write_csv(tmp_path, STANDARD))
    answers = {
        ("A", 0): {1: "no", 2: "yes", 3: "yes"},  # raw 0,1,1 gated 0,0,0 -> image 0
        ("B", 0): {1: "yes", 2: "yes"},  # raw 1,1 gated 1,1 -> image 1
        ("B", 1): {1: "yes", 2: "no"},  # raw 1,0 gated 1,0 -> image 0.5
    }
    rows = _rows(qs, answers)
    scores = aggregate(rows, None)
    assert scores["overall"] == pytest.approx((0 + 1 + 0.5) / 3 * 100)
    # entity raw: A1=0, B1=1, B1=1 -> 2/3; attribute raw: A2=1, B2=1, B2=0 -> 2/3; relation raw A3=1
    assert scores["entity"] == pytest.approx(200 / 3)
    assert scores["attribute"] == pytest.approx(200 / 3)
    assert scores["relation"] == pytest.approx(100.0)  # gated it would be 0
    assert scores["entity/whole"] == pytest.approx(200 / 3)
    assert scores["attribute/color"] == pytest.approx(200 / 3)
    assert scores["relation/spatial"] == pytest.approx(100.0)
    assert set(scores) == {"overall", "entity", "attribute", "relation", "entity/whole", "attribute/color",
                           "relation/spatial"}  # fmt: skip


def test_l2_keys_split_an_l1_category(tmp_path):
    lines = [
        q("A", 1, "0", "entity", "whole"),
        q("A", 2, "1", "entity", "part"),
        q("A", 3, "1", "entity", "part"),
    ]
    qs = load_questions(write_csv(tmp_path, lines))
    scores = aggregate(_rows(qs, {("A", 0): {1: "yes", 2: "no", 3: "no"}}), None)
    assert scores["entity"] == pytest.approx(100 / 3)
    assert scores["entity/whole"] == pytest.approx(100.0)
    assert scores["entity/part"] == pytest.approx(0.0)


def test_official_categories_come_from_each_items_last_sample(tmp_path):
    lines = [
        q("X", 1, "0", "global", "style"),
        q("B", 1, "0", "entity", "whole"),
        q("B", 2, "1", "entity", "part"),
    ]
    qs = load_questions(write_csv(tmp_path, lines))
    answers = {("B", 0): {1: "yes", 2: "yes"}, ("B", 1): {1: "yes", 2: "no"}, ("B", 2): {1: "no", 2: "no"}}
    fixed = aggregate(_rows(qs, answers, "fixed"), None)
    official = aggregate(_rows(qs, answers, "official"), None)
    assert fixed["overall"] == pytest.approx(official["overall"])  # item B is not the first row
    assert fixed["entity"] == pytest.approx(300 / 6)  # raw over all three samples
    assert official["entity"] == pytest.approx(0.0)  # only sample 2 (the last), where both are "no"


def test_weights_equal_duplicating_clusters(tmp_path):
    qs = load_questions(write_csv(tmp_path, STANDARD))
    answers = {
        ("A", 0): {1: "yes", 2: "no", 3: "yes"},
        ("A", 1): {1: "yes", 2: "yes", 3: "yes"},
        ("B", 0): {1: "no", 2: "yes"},
    }
    rows = _rows(qs, answers)
    multiplicity = {"A": 3, "B": 1}
    weights = rows["item_id"].map(multiplicity).to_numpy(float)
    # a bootstrap draws a cluster m times: m distinct copies of the prompt
    duplicated = pd.concat(
        [
            rows[rows["item_id"] == i].assign(item_id=f"{i}#{c}")
            for i, m in multiplicity.items()
            for c in range(m)
        ]
    )
    weighted, expanded = aggregate(rows, weights), aggregate(duplicated, None)
    assert weighted.keys() == expanded.keys()
    for key in weighted:
        assert weighted[key] == pytest.approx(expanded[key]), key
    # images A0 = 1/3 (gated 1, 0, 0), A1 = 1, B0 = 0: weighted (3/3 + 3 + 0) / 7
    assert weighted["overall"] == pytest.approx(400 / 7)
    assert aggregate(rows, None)["overall"] == pytest.approx(400 / 9)
    # a cluster drawn zero times does not count at all; a category it alone holds becomes NaN
    only_b = aggregate(rows, (rows["item_id"] == "B").to_numpy(float))
    assert only_b["overall"] == pytest.approx(0.0)
    assert np.isnan(only_b["relation"])


def test_aggregate_rejects_bad_input(tmp_path):
    qs = load_questions(write_csv(tmp_path, STANDARD))
    rows = _rows(qs, {("B", 0): {1: "yes", 2: "yes"}})
    with pytest.raises(ValueError, match="weights have shape"):
        aggregate(rows, np.ones(5))
    with pytest.raises(ValueError, match="lack column"):
        aggregate(rows.drop(columns="raw"), None)
    mixed = pd.concat([rows, rows.assign(mode="official")])
    with pytest.raises(ValueError, match="mix modes"):
        aggregate(mixed, None)


# --- grids ----------------------------------------------------------------------------------------------

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def solid(colour, size=16):
    return Image.new("RGB", (size, size), colour)


def test_grid_split_is_official_order_and_inverts_make_grid():
    grid = make_grid([solid(c) for c in COLOURS])
    assert grid.size == (32, 32)
    assert grid.getpixel((20, 3)) == COLOURS[1]  # top-right
    assert grid.getpixel((3, 20)) == COLOURS[2]  # bottom-left
    tiles = split_grid(grid)
    assert [t.size for t in tiles] == [(16, 16)] * 4
    assert [t.getpixel((8, 8)) for t in tiles] == COLOURS
    assert [t.getpixel((0, 0)) for t in split_grid(grid, 2)] == COLOURS[:2]
    with pytest.raises(ValueError, match="square with even sides"):
        split_grid(Image.new("RGB", (32, 30)))
    with pytest.raises(ValueError, match="exactly 4"):
        make_grid([solid(c) for c in COLOURS[:3]])


# --- folder scoring -------------------------------------------------------------------------------------


def colour_vqa(image: Image.Image, questions: list[dict]) -> list[str]:
    """A fake VQA model: a red image answers "Yes" (mixed case on purpose), anything else "no"."""
    red = image.getpixel((0, 0)) == (255, 0, 0)
    return ["Yes" if red else "no" for _ in questions]


def test_folder_scorer_counts_every_skip(tmp_path):
    qs = load_questions(write_csv(tmp_path, [*STANDARD, q("C", 1, "0", "entity", "whole")]))
    images = tmp_path / "images"
    write_dpg_folder({"A": [solid(COLOURS[0]), solid(COLOURS[1])], "B": [solid(COLOURS[0])] * 2}, images)
    (images / "C_0.png").write_bytes(b"not an image")  # corrupt
    png = (images / "B_1.png").read_bytes()
    (images / "B_1.png").write_bytes(png[: len(png) // 2])  # truncated
    solid(COLOURS[0], size=8).save(images / "C_1.png")  # wrong size
    (images / "notes.txt").write_text("hi")  # unexpected
    solid(COLOURS[0]).save(images / "Z_0.png")  # unknown item
    solid(COLOURS[0]).save(images / "A_2.png")  # sample out of range
    out = score_dpg_folder(qs, images, colour_vqa, mode="fixed", images_per_prompt=2, expected_size=(16, 16),
                           progress=False)  # fmt: skip
    reasons = {Path(s.path).name: s.reason for s in out.skips}
    assert set(reasons) == {"C_0.png", "B_1.png", "C_1.png", "notes.txt", "Z_0.png", "A_2.png"}
    assert reasons["C_0.png"].startswith("unreadable image")
    assert reasons["B_1.png"].startswith("unreadable image")
    assert reasons["C_1.png"] == "wrong size 8x8, expected 16x16"
    assert "no item 'Z'" in reasons["Z_0.png"] and "sample 2 >= images_per_prompt 2" in reasons["A_2.png"]
    assert out.scorer["mode"] == "fixed" and out.scorer["layout"] == "per-sample"
    assert sorted(p.name for p in out.images) == ["A_0.png", "A_1.png", "B_0.png"]
    assert len(out.rows) == 3 + 3 + 2
    per_image = out.rows.groupby(["item_id", "sample"])["score"].mean()
    assert per_image.to_dict() == {("A", 0): 1.0, ("A", 1): 0.0, ("B", 0): 1.0}
    assert aggregate(out.rows, None)["overall"] == pytest.approx(200 / 3)


def test_folder_scorer_reports_missing_samples(tmp_path):
    qs = load_questions(write_csv(tmp_path, STANDARD))
    images = tmp_path / "images"
    write_dpg_folder({"A": [solid(COLOURS[0])]}, images)
    out = score_dpg_folder(qs, images, colour_vqa, mode="fixed", images_per_prompt=2, progress=False)
    assert sorted((Path(s.path).name, s.reason) for s in out.skips) == [
        ("A_1.png", "missing file"),
        ("B_0.png", "missing file"),
        ("B_1.png", "missing file"),
    ]


def test_grid_folder_autodetected_and_split(tmp_path):
    qs = load_questions(write_csv(tmp_path, STANDARD))
    images = tmp_path / "grids"
    tiles = [solid(COLOURS[0]), solid(COLOURS[1]), solid(COLOURS[0]), solid(COLOURS[2])]
    write_dpg_folder({"A": tiles, "B": tiles}, images, grid=True)
    assert sorted(p.name for p in images.iterdir()) == ["A.png", "B.png"]
    for mode in ("fixed", "official"):
        out = score_dpg_folder(qs, images, colour_vqa, mode=mode, expected_size=(16, 16), progress=False)
        assert out.scorer["layout"] == "grid" and out.scorer["mode"] == mode
        if mode == "official":  # item A's proposition 2 and 3 depend on the dropped proposition 1
            assert [(Path(s.path).name, s.reason.split(":")[0]) for s in out.skips] == [
                ("A.png", "official mode")
            ]
            assert set(out.rows["item_id"]) == {"B"}
        else:
            assert out.skips == []
        b = out.rows[out.rows["item_id"] == "B"]
        # colour_vqa says "Yes": only fixed mode's normalised rule counts it (official wants 'yes').
        expected = {0: 1.0, 1: 0.0, 2: 1.0, 3: 0.0} if mode == "fixed" else dict.fromkeys(range(4), 0.0)
        assert b.groupby("sample")["score"].mean().to_dict() == expected
        assert out.scorer["answer_rule"] == ANSWER_RULES[mode]
    wrong = score_dpg_folder(qs, images, colour_vqa, mode="fixed", expected_size=(32, 32), progress=False)
    assert {s.reason for s in wrong.skips} == {"wrong size 32x32, expected 64x64"}
    assert wrong.rows.empty


def test_mixed_layouts_need_an_explicit_choice(tmp_path):
    qs = load_questions(write_csv(tmp_path, STANDARD))
    images = tmp_path / "images"
    write_dpg_folder({"A": [solid(c) for c in COLOURS]}, images, grid=True)
    write_dpg_folder({"B": [solid(COLOURS[0])]}, images)
    with pytest.raises(ValueError, match="pass grid=True or grid=False"):
        score_dpg_folder(qs, images, colour_vqa, mode="fixed", progress=False)
    out = score_dpg_folder(qs, images, colour_vqa, mode="fixed", grid=True, progress=False)
    assert {(Path(s.path).name, s.reason) for s in out.skips} == {
        ("B.png", "missing file"),
        ("B_0.png", "unexpected file (not <item_id>.<image suffix> of a known item)"),
    }


def test_answer_count_mismatch_is_an_error(tmp_path):
    qs = load_questions(write_csv(tmp_path, STANDARD))
    images = tmp_path / "images"
    write_dpg_folder({"A": [solid(COLOURS[0])]}, images)
    with pytest.raises(ValueError, match=r"returned 1 answers for 3 questions of item 'A'"):
        score_dpg_folder(
            qs, images, lambda im, qq: ["yes"], mode="fixed", images_per_prompt=1, progress=False
        )


def test_real_dpg_item_ids_round_trip_the_sample_layout(tmp_path):
    prompts = SHARED_BENCHMARKS / "dpgbench" / "prompts.json"
    if not prompts.exists():
        pytest.skip(f"DPG-Bench prompts not found at {prompts}")
    item_ids = [name.removesuffix(".txt") for name in json.loads(prompts.read_text())]
    assert len(item_ids) > 1000
    for item_id in item_ids:  # the scan reads names only, so empty files will do
        (tmp_path / f"{item_id}_0.png").touch()
    scan = scan_per_sample_folder(tmp_path, item_ids, images_per_prompt=1)
    assert scan.missing == [] and scan.unexpected == []
    assert {i for i, _ in scan.found} == set(item_ids)


def test_records_of_any_answerer_but_mplug_say_they_are_not_comparable():
    from reca_eval.scorers.vqa import NOT_COMPARABLE, make_vqa

    def planted(image, questions):
        return ["yes"] * len(questions)

    answer, describe = make_vqa({"vqa": planted})
    assert answer is planted
    assert describe()["comparability"] == NOT_COMPARABLE
    assert "not comparable to published DPG-Bench scores" in NOT_COMPARABLE


def test_frame_records_equal_pandas_records_value_for_value():
    """The scorer's fast rows equal ``to_dict("records")``: same keys, values and Python types (the
    shipped shapes-dpg questions: ints, strings, dependency tuples; plus a float column with a NaN)."""
    from reca_eval import registry

    frame = load_questions(registry.get("shapes-dpg").default_items()).assign(weight=0.5)
    frame.loc[frame.index[1], "weight"] = float("nan")
    for part in (frame, frame.iloc[3:9], frame.iloc[:0]):
        ours, theirs = frame_records(part), part.to_dict("records")
        assert len(ours) == len(theirs) == len(part)
        for a, b in zip(ours, theirs, strict=True):
            assert list(a) == list(b)
            assert [type(v) for v in a.values()] == [type(v) for v in b.values()]
            assert {k: v for k, v in a.items() if v == v} == {k: v for k, v in b.items() if v == v}
    assert {type(v) for v in frame_records(frame)[0].values()} == {str, int, tuple, float}
