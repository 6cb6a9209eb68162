"""Edges of the benchmark rules that the protocol tests leave open: messages that name what is wrong,
reasons listing several colours, and aggregates over replicates that draw nothing."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pandas as pd
import pytest

from reca_eval.benchmarks.dpg.rules import (
    QUESTION_COLUMNS,
    DroppedParentError,
    certain_failure,
    load_questions,
    normalise_answer,
)
from reca_eval.benchmarks.dpg.rules import aggregate as dpg_aggregate
from reca_eval.benchmarks.dpg.rules import gate as dpg_gate
from reca_eval.benchmarks.edit.rules import (
    aggregate_gedit,
    aggregate_imgedit,
    aggregate_shapes_edit,
    gedit_item,
    imgedit_item,
    shapes_edit_item,
)
from reca_eval.benchmarks.geneval import rules as geneval
from tests.test_dpg_protocol import STANDARD, q, write_csv
from tests.test_dpg_protocol import _rows as dpg_rows
from tests.test_geneval_protocol import det, judge


def test_a_colour_reason_lists_every_colour_found():
    metadata = {"tag": "color_attr", "include": [{"class": "car", "count": 2, "color": "red"}], "prompt": "p"}
    raw = {"car": [det(10, 10, score=0.9, color="blue"), det(60, 60, score=0.8, color="green")]}
    assert judge(metadata, raw) == (False, "expected red car>=2, found 0 red; and 1 green, 1 blue")


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (["not", "an", "object"], "^item 3: expected a JSON object, got list$"),
        (
            {"tag": "position", "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1, "position": "left of"}]},
            r"^item 3: include\[1\] \(dog\) position must be \[relation, group_index\]",
        ),
        (
            {"tag": "position", "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1, "position": ["left of", 0, 1]}]},
            r"^item 3: include\[1\] \(dog\) position must be \[relation, group_index\]",
        ),
        ({"tag": "single_object", "include": [{"count": 1}]}, r"^item 3: include\[0\] lacks a non-empty string 'class'"),
    ],
)  # fmt: skip
def test_malformed_items_are_named_by_where_and_what(metadata, message):
    with pytest.raises(ValueError, match=message):
        geneval.check_metadata(metadata, "item 3")


def test_the_aggregate_refuses_nan_scores_counting_them():
    rows = pd.DataFrame({"category": ["counting", "colors", "colors"], "score": [1.0, np.nan, np.nan]})
    with pytest.raises(ValueError, match="^2 rows have a NaN score$"):
        geneval.aggregate(rows)


def test_edit_aggregates_name_their_benchmark_and_missing_columns():
    with pytest.raises(ValueError, match=r"^ImgEdit rows lack column\(s\) \['imgedit'\]"):
        aggregate_imgedit(pd.DataFrame({"category": ["add"]}))
    with pytest.raises(ValueError, match=r"^ShapeWorld edit rows lack column\(s\) \['quality'\]"):
        aggregate_shapes_edit(pd.DataFrame({"category": ["add"], "success": [1], "preservation": [1.0]}))
    with pytest.raises(ValueError, match="^ImgEdit: expected 3 scores, got 2"):
        imgedit_item([4, 5])


def test_a_replicate_that_leaves_a_type_out_averages_the_others():
    rows = pd.DataFrame({"category": ["add", "remove"], "imgedit": [4.0, 2.0]})
    scores = aggregate_imgedit(rows, np.array([0.0, 1.0]))
    assert math.isnan(scores["add"]) and scores["overall"] == 2.0 == scores["overall_micro"]
    with pytest.raises(ValueError, match="all weights are zero"):
        aggregate_imgedit(rows, np.zeros(2))


# ---------------------------------------------------------------------------------------------- DPG


def test_dpg_question_files_name_the_file_line_and_what_is_wrong(tmp_path):
    with pytest.raises(
        ValueError, match=r"dpg\.csv:3: proposition_id must be >= 1 \(0 means 'no parent'\), got 0"
    ):
        load_questions(write_csv(tmp_path, [STANDARD[0], q("A", 0, "0", "entity", "whole")]))
    # the detailed category must be the tuple's own L2 (here "whole", not "part")
    with pytest.raises(
        ValueError, match=r"dpg\.csv:3: category_broad/category_detailed 'entity'/'part' disagree"
    ):
        load_questions(write_csv(tmp_path, [STANDARD[0], "A,t,k,2,0,entity,part,entity - whole (x),q?"]))
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage\x00")
    with pytest.raises(ValueError, match=r"binary\.csv"):
        load_questions(binary)


def test_dpg_rows_carry_the_answer_and_categories_come_out_sorted(tmp_path):
    qs = load_questions(write_csv(tmp_path, STANDARD))
    rows = dpg_rows(qs, {("A", 0): {1: "yes", 2: "no", 3: "Yes"}, ("B", 0): {1: "no", 2: "yes"}})
    assert list(rows["answer"]) == ["yes", "no", "Yes", "no", "yes"]
    scores = dpg_aggregate(rows, None)
    categories = [k for k in scores if k != "overall" and "/" not in k]
    assert categories == sorted(categories) == ["attribute", "entity", "relation"]
    with pytest.raises(ValueError, match="^no DPG rows to aggregate$"):
        dpg_aggregate(rows.iloc[:0], None)
    with pytest.raises(ValueError, match="^all weights are zero$"):
        dpg_aggregate(rows, np.zeros(len(rows)))


def test_dpg_gating_that_reads_the_dropped_row_says_so_in_full(tmp_path):
    qs = load_questions(write_csv(tmp_path, STANDARD))
    with pytest.raises(DroppedParentError) as dropped:
        dpg_gate(qs[qs["item_id"] == "A"], {2: 1.0, 3: 1.0}, "official")
    assert str(dropped.value) == (
        "proposition 2 depends on proposition 1, which official mode drops with the CSV's first row "
        "(compute_dpg_bench.py L73); the official script fails this image (L146)"
    )


def test_dpg_scores_do_not_change_when_every_weight_is_scaled(tmp_path):
    # "relation" has one question: its weight is 0.5 when every row weighs 0.5
    qs = load_questions(write_csv(tmp_path, STANDARD))
    rows = dpg_rows(qs, {("A", 0): {1: "yes", 2: "no", 3: "yes"}, ("B", 0): {1: "yes", 2: "yes"}})
    assert dpg_aggregate(rows, np.full(len(rows), 0.5)) == pytest.approx(dpg_aggregate(rows, None))
    assert dpg_aggregate(rows, [2] * len(rows)) == pytest.approx(dpg_aggregate(rows, None))  # a list is taken
    with pytest.raises(ValueError, match="^weights must be non-negative$"):
        dpg_aggregate(rows, np.array([1.0, -1.0, 1.0, 1.0, 1.0]))


def test_dpg_rows_without_a_mode_are_fixed_mode_and_float_sample_numbers_count_as_integers(tmp_path):
    qs = load_questions(write_csv(tmp_path, STANDARD))
    fixed = dpg_rows(qs, {("A", 0): {1: "yes", 2: "no", 3: "yes"}, ("B", 0): {1: "yes", 2: "yes"}})
    assert dpg_aggregate(fixed.drop(columns="mode"), None) == dpg_aggregate(fixed, None)
    # official mode: categories come from each item's last sample, found from the sample numbers
    official = dpg_rows(qs, {("B", 0): {1: "yes", 2: "no"}, ("B", 1): {1: "no", 2: "yes"}}, mode="official")
    scores = dpg_aggregate(official, None)
    assert (scores["entity"], scores["attribute"]) == (0.0, 100.0)  # sample 1's raw answers
    assert dpg_aggregate(official.assign(sample=official["sample"].astype(float)), None) == scores


def test_dpg_fixed_answers_read_the_first_word_only():
    assert [normalise_answer(a) for a in ("Yes, there is.", "", "!!", "- yes indeed", "NO yes")] == [
        "yes",
        "",
        "",
        "",  # the first word has no letters: not a yes, whatever follows
        "no",
    ]


# ---------------------------------------------------------------------------------------------- GenEval


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"tag": "single_object", "include": ["cat"]}, "item 3: include[0] must be an object, got str"),
        (
            {"tag": "single_object", "include": [{"class": "cat", "count": 0}]},
            "item 3: include[0] (cat) has bad count 0 (must be an integer >= 1)",
        ),
        (
            {"tag": "position", "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1, "position": ["left of", 1]}]},
            "item 3: include[1] (dog) position points to group 1, which is not an earlier include group (0..0)",
        ),
        (
            {"tag": "nope", "include": [{"class": "cat", "count": 1}]},
            "item 3: unknown tag 'nope' (known: single_object, two_object, counting, colors, position, color_attr)",
        ),
        (
            {"tag": "single_object", "include": [{"class": "cat", "count": 1}], "exclude": {"class": "dog"}},
            "item 3: 'exclude' must be a list",
        ),
    ],
)  # fmt: skip
def test_geneval_item_messages_in_full(metadata, message):
    with pytest.raises(ValueError) as refused:
        geneval.check_metadata(metadata | {"prompt": "p"}, "item 3")
    assert str(refused.value) == message


def test_geneval_exclude_clauses_are_not_checked_for_colour_or_position():
    exclude = [{"class": "dog", "count": 1, "color": "mauve", "position": "nowhere"}]
    geneval.check_metadata(
        {
            "tag": "single_object",
            "include": [{"class": "cat", "count": 1}],
            "exclude": exclude,
            "prompt": "p",
        },
        "item",
    )


def test_geneval_metadata_nested_too_deeply_is_named(tmp_path):
    path = tmp_path / "meta.jsonl"
    path.write_text("[" * 100_000 + "\n")
    with pytest.raises(ValueError) as refused:
        geneval.load_metadata(path)
    assert str(refused.value) == f"{path}:1: JSON nested too deeply"


def test_geneval_colour_reason_counts_the_wanted_colour_and_asks_by_class():
    metadata = {"tag": "colors", "include": [{"class": "car", "count": 2, "color": "red"}], "prompt": "p"}
    raw = {"car": [det(10, 10, score=0.9, color="red"), det(60, 60, score=0.8, color="blue")]}
    assert judge(metadata, raw) == (False, "expected red car>=2, found 1 red; and 1 red, 1 blue")
    asked = []

    def colour_of(classname, objects):
        asked.append(classname)
        return [o.attributes["color"] for o in objects]

    geneval.evaluate_image(metadata, geneval.select_detections(raw, "colors"), colour_of)
    assert asked == ["car"]


def test_geneval_aggregate_messages_and_weights():
    rows = pd.DataFrame(
        {"category": ["counting", "colors", "colors", "mine"], "score": [1.0, 1.0, 0.0, 0.25]}
    )
    scores = geneval.aggregate(rows)
    assert list(scores) == ["counting", "colors", "mine", "overall"]  # tags in order, then the others
    assert scores["mine"] == 0.25
    # a task whose rows weigh 0.5 in all is still there, with the same mean
    assert geneval.aggregate(rows, np.full(4, 0.5)) == pytest.approx(scores)
    assert geneval.aggregate(rows.assign(score=rows["score"].astype(object))) == scores
    assert geneval.aggregate(rows.iloc[:1]) == {"counting": 1.0, "overall": 1.0}
    for frame, weights, message in (
        (rows.iloc[:0], None, "no rows to aggregate"),
        (rows.drop(columns="score"), None, "rows lack column 'score'"),
        (rows, np.array([1.0, -1.0, 1.0, 1.0]), "weights must be non-negative"),
        (rows, np.zeros(4), "every row has weight 0"),
    ):
        with pytest.raises(ValueError) as refused:
            geneval.aggregate(frame, weights)
        assert str(refused.value) == message


def test_geneval_a_replicate_without_a_task_warns_about_nothing():
    # the bootstrap aggregates thousands of replicates: a task drawn zero times must not warn each time
    rows = pd.DataFrame({"category": ["counting", "colors"], "score": [1.0, 0.0]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert geneval.aggregate(rows, np.array([1.0, 0.0])) == {"counting": 1.0, "overall": 1.0}


# ---------------------------------------------------------------------------------------------- edits


def test_a_shapes_edit_row_keeps_its_inputs_beside_both_scales():
    row = shapes_edit_item(1, 0.5, 0.25)
    assert row == pytest.approx(
        {"success": 1.0, "preservation": 0.5, "quality": 0.25, "sc": 5.0, "pq": 2.5, "o": math.sqrt(12.5),
         "imgedit": 1 + 4 * 0.5 * 1.75 / 3}
    )  # fmt: skip
    assert shapes_edit_item(0, 0.0, 0.0)["imgedit"] == 1.0  # 0 is in range
    for args, message in (
        ((1, -0.1, 0.5), "preservation must be in [0, 1], got -0.1"),
        ((1, 0.5, 1.5), "quality must be in [0, 1], got 1.5"),
    ):
        with pytest.raises(ValueError) as refused:
            shapes_edit_item(*args)
        assert str(refused.value) == f"ShapeWorld edit {message}"


def shapes_rows(n: int = 8) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "category": ["move", "add"] * (n // 2),
            "success": [1.0, 0.0] * (n // 2),
            "preservation": [1.0, 0.0] * (n // 2),
            "quality": [0.5, 1.0] * (n // 2),
        }
    )


def test_shapes_edit_aggregate_names_the_bad_rows_five_at_most():
    rows = shapes_rows()
    assert aggregate_shapes_edit(
        rows.astype({"success": object, "preservation": object, "quality": object})
    ) == (aggregate_shapes_edit(rows))
    cases = (
        ("success", [2], 0.5, "success must be 0 or 1; rows [2]"),
        ("success", [0, 1, 2, 3, 4, 5], 0.5, "success must be 0 or 1; rows [0 1 2 3 4]"),
        ("preservation", [1], -0.5, "preservation must be in [0, 1]; rows [1]"),
        ("quality", [0, 1, 2, 3, 4, 5], 1.5, "quality must be in [0, 1]; rows [0 1 2 3 4]"),
    )
    for column, at, value, message in cases:
        bad = rows.copy()
        bad.loc[at, column] = value
        with pytest.raises(ValueError) as refused:
            aggregate_shapes_edit(bad)
        assert str(refused.value) == f"ShapeWorld edit {message}"


def test_gedit_scores_name_their_aspect_and_categories_come_sorted():
    for sc, pq, message in (
        ([11], [5], "GEdit SC: scores [11.0] outside [0, 10]"),
        ([5], [-1], "GEdit PQ: scores [-1.0] outside [0, 10]"),
    ):
        with pytest.raises(ValueError) as refused:
            gedit_item(sc, pq)
        assert str(refused.value) == message
    rows = pd.DataFrame({"category": ["swap", "add"], "sc": [4.0, 9.0], "pq": [9.0, 4.0], "o": [6.0, 6.0]})
    assert list(aggregate_gedit(rows))[:2] == ["add", "swap"]
    assert aggregate_gedit(rows.iloc[:1]) == {"swap": 6.0, "SC": 4.0, "PQ": 9.0, "overall": 6.0}


def test_edit_weights_scale_freely_and_a_language_drawn_zero_times_is_nan_without_warnings():
    rows = pd.DataFrame(
        {
            "category": ["add", "add", "swap"],
            "sc": [4.0, 8.0, 9.0],
            "pq": [9.0, 8.0, 4.0],
            "o": [6.0, 8.0, 6.0],
            "language": ["en", "en", "cn"],
        }
    )
    assert aggregate_gedit(rows, np.full(3, 0.5)) == pytest.approx(aggregate_gedit(rows))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = aggregate_gedit(rows, np.array([1.0, 1.0, 0.0]))
    assert math.isnan(scores["cn/overall"]) and math.isnan(scores["cn/SC"]) and scores["en/overall"] == 7.0
    imgedit = pd.DataFrame({"category": ["add", "swap"], "imgedit": [4.0, 2.0]})
    assert aggregate_imgedit(imgedit.astype({"imgedit": object})) == aggregate_imgedit(imgedit)
    for weights, message in (
        (np.array([1.0, -1.0]), "weights must be finite and non-negative"),
        (np.array([1.0, np.inf]), "weights must be finite and non-negative"),
        (np.zeros(2), "all weights are zero"),
    ):
        with pytest.raises(ValueError) as refused:
            aggregate_imgedit(imgedit, weights)
        assert str(refused.value) == message
    with pytest.raises(ValueError) as empty:
        aggregate_imgedit(imgedit.iloc[:0])
    assert str(empty.value) == "no rows to aggregate"


def test_dpg_certain_failures_say_why_in_full(tmp_path):
    alone = load_questions(write_csv(tmp_path, [q("A", 1, "0", "entity", "whole"), *STANDARD[3:]]))
    only = certain_failure(alone[alone["item_id"] == "A"], "official")
    assert str(only) == (
        "the item's only question is the CSV's first row, which official mode drops "
        "(compute_dpg_bench.py L73); the official script has no questions for it and fails this image"
    )
    qs = load_questions(write_csv(tmp_path, STANDARD))
    assert str(certain_failure(qs[qs["item_id"] == "A"], "official")) == (
        "proposition 2 depends on proposition 1, which official mode drops with the CSV's first row "
        "(compute_dpg_bench.py L73); the official script fails this image (L146)"
    )


def test_dpg_l2_categories_come_out_sorted_within_and_across_l1(tmp_path):
    lines = [
        q("A", 1, "0", "entity", "whole", "cat"),
        q("A", 2, "1", "attribute", "size", "big cat"),
        q("A", 3, "1", "attribute", "color", "black cat"),
        q("A", 4, "1", "attribute", "texture", "furry cat"),
    ]
    qs = load_questions(write_csv(tmp_path, lines))
    rows = dpg_rows(qs, {("A", 0): {1: "yes", 2: "yes", 3: "no", 4: "yes"}})
    l2 = [k for k in dpg_aggregate(rows, None) if "/" in k]
    assert l2 == ["attribute/color", "attribute/size", "attribute/texture", "entity/whole"]
    assert dpg_aggregate(rows, None)["attribute/color"] == 0.0


def test_dpg_question_file_messages_in_full(tmp_path):
    missing = tmp_path / "nowhere.csv"
    with pytest.raises(FileNotFoundError) as absent:
        load_questions(missing)
    assert str(absent.value) == f"question file {missing} does not exist"
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError) as no_header:
        load_questions(empty)
    assert str(no_header.value) == (
        f"{empty}: empty file, expected a header with ['item_id', 'text', 'keywords', 'proposition_id', "
        "'dependency', 'category_broad', 'category_detailed', 'tuple', 'question_natural_language']"
    )
    path = write_csv(tmp_path, [])
    cases = (
        ([], f"{path}: no questions"),
        ([q("", 1, "0", "entity", "whole")], f"{path}:2: empty item_id"),
        ([q("A", "x", "0", "entity", "whole")], f"{path}:2: proposition_id 'x' is not an integer"),
    )
    for lines, message in cases:
        with pytest.raises(ValueError) as refused:
            load_questions(write_csv(tmp_path, lines))
        assert str(refused.value) == message
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}:2: "):
        load_questions(write_csv(tmp_path, [q("a/b", 1, "0", "entity", "whole")]))  # not a safe id


def test_dpg_question_files_skip_blank_lines_strip_fields_and_keep_hyphens(tmp_path):
    lines = [
        STANDARD[0],
        "",
        ",,,,,,,,",
        ' A ,prompt A,kw,2,"1", attribute , three-dimensional ,attribute - three-dimensional (cube),Is it 3D?',
        'A,prompt A,kw,3,"1",entity,whole,entity-whole (x),Is there x?',
    ]
    qs = load_questions(write_csv(tmp_path, lines))
    assert list(qs.columns) == [*QUESTION_COLUMNS, "category_official", "csv_line", "row_index"]
    assert list(qs["item_id"]) == ["A", "A", "A"] and list(qs["csv_line"]) == [2, 5, 6]
    assert list(qs["category_broad"]) == ["entity", "attribute", "entity"]
    assert list(qs["category_detailed"]) == ["whole", "three-dimensional", "whole"]
    assert list(qs["category_official"]) == [
        "entity - whole",
        "attribute - three-dimensional",
        "entity-whole",
    ]
