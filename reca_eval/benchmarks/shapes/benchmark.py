"""The three ShapeWorld benchmarks: GenEval's, DPG-Bench's and an editing benchmark's semantics, scored
exactly by the ShapeWorld parser. They run on a laptop CPU with nothing but the core install.

Item files are versioned under ``benchmarks/<name>/`` (written by
``python -m reca_eval.benchmarks.shapes.build``); their spec.json carries the version.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from reca_eval.benchmarks.dpg import layout as layouts_dpg
from reca_eval.benchmarks.dpg import rules as dpg
from reca_eval.benchmarks.dpg.items import load_dpg_items, per_sample_path, questions_frame
from reca_eval.benchmarks.edit import layout as layouts_edit
from reca_eval.benchmarks.edit import rules as edit
from reca_eval.benchmarks.geneval import layout as layouts_geneval
from reca_eval.benchmarks.geneval import rules as geneval
from reca_eval.core.paths import check_item_id, read_input_text
from reca_eval.core.spec import Benchmark, BenchmarkSpec, ScoreOutput, from_spec
from reca_eval.scorers import shapes
from reca_eval.shapeworld.edits import EDIT_TYPES, RELATIONS
from reca_eval.shapeworld.palette import BACKGROUNDS, COLOURS, SHAPES, SIZES, STYLES
from reca_eval.shapeworld.questions import parse_tuple
from reca_eval.shapeworld.render import DEFAULT_RESOLUTION
from reca_eval.shapeworld.scene import scene_from_json

IMAGES_PER_PROMPT = 4  # as GenEval and DPG-Bench
EDITS_PER_ITEM = 1
SCORER = {"backend": shapes.SCORER_NAME, "version": shapes.SCORER_VERSION}


def _expected_size(options: dict[str, Any]) -> tuple[int, int]:
    res = int(options.get("resolution", DEFAULT_RESOLUTION))
    return (res, res)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [item for _, item in _read_jsonl_lines(path)]


def _read_jsonl_lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, JSON object) of every non-blank line; errors name the file and line."""
    path = Path(path)
    items = []
    for number, line in enumerate(read_input_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        except RecursionError:
            raise ValueError(f"{path}:{number}: JSON nested too deeply") from None
        if not isinstance(item, dict):
            raise ValueError(f"{path}:{number}: an item is a JSON object, got {type(item).__name__}")
        items.append((number, item))
    if not items:
        raise ValueError(f"{path}: no items in file")
    return items


def load_geneval_items(path: Path) -> list[dict[str, Any]]:
    """GenEval-style items, checked as GenEval's loader does, plus what only ShapeWorld knows: every
    class is a ShapeWorld shape and a reference scene is a valid scene (as `run` and the renders use)."""
    items = geneval.load_metadata(path)
    for (number, _), item in zip(_read_jsonl_lines(path), items, strict=True):
        where = f"{path}:{number}"
        for clause in [*item["include"], *item.get("exclude", [])]:
            if clause.get("class") not in SHAPES:
                raise ValueError(
                    f"{where}: class {clause.get('class')!r} is not a ShapeWorld shape ({', '.join(SHAPES)})"
                )
        if "reference_scene" in item:
            scene_from_json(item["reference_scene"], f"{where}: reference_scene")
    return items


# ---------------------------------------------------------------------------------------------- geneval


def _score_shapes_geneval(items: list[dict], image_dir: Path, options: dict[str, Any]) -> ScoreOutput:
    output = layouts_geneval.score_geneval_folder(
        items,
        image_dir,
        shapes.detect_shapes,
        shapes.colour_of_image,
        images_per_prompt=int(options.get("images_per_prompt", IMAGES_PER_PROMPT)),
        expected_size=_expected_size(options),
        progress=options.get("progress", True),
    )
    output.scorer = dict(SCORER)
    return output


def build_geneval(spec: BenchmarkSpec) -> Benchmark:
    return from_spec(
        spec,
        default_items=lambda: spec.folder / "items.jsonl",
        load_items=load_geneval_items,
        score=_score_shapes_geneval,
        aggregate=geneval.aggregate,
        prompt_of=lambda item: item["prompt"],
        sample_path=layouts_geneval.sample_path,
        prepare_layout=layouts_geneval.prepare_geneval_folder,
    )


# -------------------------------------------------------------------------------------------------- dpg


def _answer_shapes(image: Image.Image, questions: list[dict]) -> list[str]:
    parsed = shapes.parse_image(image)
    return [shapes.answer_question(parsed, q) for q in questions]


def _score_shapes_dpg(items: list[dict], image_dir: Path, options: dict[str, Any]) -> ScoreOutput:
    output = layouts_dpg.score_dpg_folder(
        questions_frame(items),
        image_dir,
        _answer_shapes,
        mode=options.get("mode") or "fixed",
        images_per_prompt=int(options.get("images_per_prompt", IMAGES_PER_PROMPT)),
        expected_size=_expected_size(options),
        progress=options.get("progress", True),
    )
    output.scorer = {**SCORER, **output.scorer}
    return output


# What each question kind takes: ShapeWorld's vocabulary, so a question nothing could answer "yes" to
# (a shape the world never draws, a colour it has no name for) is refused when the file is read.
_QUESTION_ARGS = {
    ("entity", "whole"): (SHAPES,),
    ("attribute", "color"): (SHAPES, tuple(COLOURS)),
    ("attribute", "size"): (SHAPES, tuple(SIZES)),
    ("attribute", "style"): (SHAPES, STYLES),
    ("relation", "spatial"): (SHAPES, SHAPES, RELATIONS),
    ("global", "background"): (tuple(BACKGROUNDS),),
}


def _check_shapes_question(row: dict[str, Any], where: str) -> None:
    try:
        broad, detailed, args = parse_tuple(str(row["tuple"]))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    if (broad, detailed) == ("other", "count"):
        if len(args) == 2 and args[1].startswith("==") and args[1][2:].isascii() and args[1][2:].isdigit():
            return
        raise ValueError(f"{where}: count tuple {row['tuple']!r} must read 'other - count (shapes, ==N)'")
    allowed = _QUESTION_ARGS.get((broad, detailed))
    if allowed is None:
        raise ValueError(f"{where}: no ShapeWorld answerer for {broad} - {detailed} (tuple {row['tuple']!r})")
    if len(args) != len(allowed) or any(a not in ok for a, ok in zip(args, allowed, strict=False)):
        raise ValueError(f"{where}: tuple {row['tuple']!r} names something ShapeWorld has no word for")


def load_shapes_dpg_items(path: Path) -> list[dict[str, Any]]:
    """DPG-style items whose every question the exact ShapeWorld answerer can answer."""
    items = load_dpg_items(path)
    for item in items:
        for row in dpg.frame_records(item["questions"]):
            _check_shapes_question(row, f"{path}:{row['csv_line']}")
    return items


def build_dpg(spec: BenchmarkSpec) -> Benchmark:
    return from_spec(
        spec,
        default_items=lambda: spec.folder / "questions.csv",
        load_items=load_shapes_dpg_items,
        score=_score_shapes_dpg,
        aggregate=dpg.aggregate,
        prompt_of=lambda item: item["prompt"],
        sample_path=per_sample_path,
    )


# ------------------------------------------------------------------------------------------------- edit


def load_edit_items(path: Path) -> list[dict[str, Any]]:
    """Edit items, every field checked as scoring and rendering use it; errors name the file and line.
    Each gets ``category`` (its edit type) and, when its counterfactual twin (``twin_id``) is in the same
    file, ``twin_target_scene``. A twin must name the item back, share its source scene and ``pair_id``
    and ask for another target; an item whose twin is not in the file (a subset) is scored unpaired."""
    items = []
    seen: dict[str, int] = {}
    for number, item in _read_jsonl_lines(path):
        where = f"{path}:{number}"
        missing = [
            k
            for k in ("item_id", "edit_type", "instruction", "source_scene", "target_scene")
            if k not in item
        ]
        if missing:
            raise ValueError(f"{where}: item lacks {missing}")
        item_id = check_item_id(item["item_id"], where)
        if item_id in seen:
            raise ValueError(f"{where}: duplicate item_id {item_id!r} (first on line {seen[item_id]})")
        seen[item_id] = number
        if item["edit_type"] not in EDIT_TYPES:
            raise ValueError(
                f"{where}: edit_type {item['edit_type']!r} is not one of {', '.join(EDIT_TYPES)}"
            )
        if not isinstance(item["instruction"], str) or not item["instruction"].strip():
            raise ValueError(
                f"{where}: instruction must be a non-empty string, got {item['instruction']!r:.60}"
            )
        for key in ("source_scene", "target_scene"):
            scene_from_json(item[key], f"{where}: {key}")
        item["item_id"] = item_id
        item["category"] = item["edit_type"]
        items.append(item)
    by_id = {item["item_id"]: item for item in items}
    for item in items:
        twin = by_id.get(str(item.get("twin_id")))
        if "twin_id" not in item or twin is None:
            continue
        where = f"{path}:{seen[item['item_id']]}: item {item['item_id']!r} and its twin {item['twin_id']!r}"
        if str(twin.get("twin_id")) != item["item_id"] or twin.get("pair_id") != item.get("pair_id"):
            raise ValueError(f"{where}: twins must name each other and share a pair_id")
        if twin["source_scene"] != item["source_scene"] or twin["target_scene"] == item["target_scene"]:
            raise ValueError(f"{where}: twins need the same source_scene and different target_scenes")
        item["twin_target_scene"] = twin["target_scene"]
    return items


def _score_edit_item(item: dict[str, Any], image: Image.Image) -> dict[str, Any]:
    parsed = shapes.parse_image(image)
    measured = shapes.score_edit(item["source_scene"], item["target_scene"], parsed)
    row = edit.shapes_edit_item(measured["success"], measured["preservation"], measured["quality"])
    row["reason"] = measured.get("reason", "")
    if "twin_target_scene" in item:
        # Does this output also do what its twin asks? Then it did not tell the two instructions apart.
        twin = shapes.score_edit(item["source_scene"], item["twin_target_scene"], parsed)
        row["twin_success"] = float(twin["success"])
    row["image_sha256"] = hashlib.sha256(np.asarray(image.convert("RGB")).tobytes()).hexdigest()
    return row


PAIR_COLUMNS = ("paired", "followed", "both_success", "same_as_twin")


def pair_columns(rows: pd.DataFrame, items: list[dict[str, Any]]) -> pd.DataFrame:
    """Add the counterfactual-pair columns to shapes-edit rows (one per output image):

    - ``paired``: the item's twin was scored in the same run (same sample index);
    - ``followed``: this output and its twin's both succeed on their own instruction and fail the
      other's (the headline's success: an output that depends on the source image alone gives the same
      image to both twins, and one image cannot succeed and fail the same instruction, so it scores 0);
    - ``both_success``: both outputs succeed on their own instruction;
    - ``same_as_twin``: the two outputs are the same image, pixel for pixel.

    Unpaired rows get 0 in all four (an edit without its counterfactual shows no instruction following).
    """
    rows = rows.copy()
    twin_of = {str(i["item_id"]): str(i["twin_id"]) for i in items if "twin_target_scene" in i}
    if rows.empty or "success" not in rows.columns:
        for column in PAIR_COLUMNS:
            rows[column] = pd.Series(dtype=float)
        return rows.drop(columns=["image_sha256", "twin_success"], errors="ignore")
    if "twin_success" not in rows.columns:
        rows["twin_success"] = np.nan
    own = rows["success"].astype(float) * (1.0 - rows["twin_success"].fillna(1.0).astype(float))
    key = {(str(i), int(k)): n for n, (i, k) in enumerate(zip(rows["item_id"], rows["sample"], strict=True))}
    partner = np.array(
        [
            key.get((twin_of.get(str(i), ""), int(k)), -1)
            for i, k in zip(rows["item_id"], rows["sample"], strict=True)
        ]
    )
    paired = partner >= 0
    safe = np.where(paired, partner, 0)
    success = rows["success"].to_numpy(float)
    sha = rows["image_sha256"].to_numpy(object)
    rows["paired"] = paired.astype(float)
    rows["followed"] = np.where(paired, own.to_numpy() * own.to_numpy()[safe], 0.0)
    rows["both_success"] = np.where(paired, success * success[safe], 0.0)
    rows["same_as_twin"] = np.where(paired, (sha == sha[safe]).astype(float), 0.0)
    return rows.drop(columns=["image_sha256", "twin_success"])


def _score_shapes_edit(items: list[dict], image_dir: Path, options: dict[str, Any]) -> ScoreOutput:
    output = layouts_edit.score_edit_folder(
        items,
        image_dir,
        _score_edit_item,
        images_per_prompt=int(options.get("images_per_prompt", EDITS_PER_ITEM)),
        expected_size=_expected_size(options),
        progress=options.get("progress", True),
    )
    output.rows = pair_columns(output.rows, items)
    output.scorer = dict(SCORER)
    return output


def aggregate_edit_pairs(rows: pd.DataFrame, weights: np.ndarray | None = None) -> dict[str, float]:
    """shapes-edit scores. The headline (per-type O, ``SC``, ``PQ``, ``overall``, the ImgEdit-style
    keys) is :func:`reca_eval.benchmarks.edit.rules.aggregate_shapes_edit` with success = ``followed``
    (see :func:`pair_columns`); ``single/<type>``, ``single/overall`` and ``single/imgedit_macro`` are
    those figures with each output's own success alone; ``single/success`` and ``preservation`` are the
    mean success and preservation over outputs. Instruction sensitivity, over paired outputs: ``pairs/followed``,
    ``pairs/both_success``, ``pairs/same_image`` (overall and ``/<type>``), and ``pairs/unpaired``
    (share of outputs whose twin was not scored). Rows without pair columns (records of an item file
    without twins' columns) get the per-output aggregate only."""
    if "followed" not in rows.columns:
        return edit.aggregate_shapes_edit(rows, weights)
    # The bootstrap calls this once per replicate on the same rows: the two rule calls get a frame of
    # the four columns they read, with plain numpy columns (a record's strings load as Arrow strings,
    # whose conversions cost more than the arithmetic), and the pair figures are bincounts.
    categories = rows["category"].to_numpy(dtype=object, na_value="nan").astype(str)
    columns = {name: rows[name].to_numpy(float) for name in ("success", "preservation", "quality")}
    slim = pd.DataFrame({"category": categories, **columns}, copy=False)
    headline = edit.aggregate_shapes_edit(slim.assign(success=rows["followed"].to_numpy(float)), weights)
    single = edit.aggregate_shapes_edit(slim, weights)
    result = dict(headline)
    result["single/overall"] = single["overall"]
    result["single/imgedit_macro"] = single["imgedit_macro"]
    w = np.ones(len(rows)) if weights is None else np.asarray(weights, dtype=float)
    # Per-output rates, unweighted by type: how often an output does its own edit, and how much of what
    # the edit leaves alone it copies (an editor that only copies its input scores preservation 1).
    for column, key in (("success", "single/success"), ("preservation", "preservation")):
        result[key] = float((columns[column] * w).sum() / w.sum()) if w.sum() > 0 else float("nan")
    result.update({f"single/{c}": single[c] for c in sorted(set(categories))})
    paired = rows["paired"].to_numpy(float)
    result["pairs/unpaired"] = float(((1 - paired) * w).sum() / w.sum()) if w.sum() > 0 else float("nan")
    if paired.any():
        pw = w * paired
        for column, name in (
            ("followed", "followed"),
            ("both_success", "both_success"),
            ("same_as_twin", "same_image"),
        ):
            values = rows[column].to_numpy(float)
            result[f"pairs/{name}"] = float((values * pw).sum() / pw.sum()) if pw.sum() > 0 else float("nan")
            per_type = edit._group_means(categories[paired > 0], values[paired > 0], pw[paired > 0])
            result.update({f"pairs/{name}/{c}": v for c, v in per_type.items()})
    return result


def build_edit(spec: BenchmarkSpec) -> Benchmark:
    return from_spec(
        spec,
        default_items=lambda: spec.folder / "items.jsonl",
        load_items=load_edit_items,
        score=_score_shapes_edit,
        aggregate=aggregate_edit_pairs,
        prompt_of=lambda item: item["instruction"],
        sample_path=per_sample_path,
        source_image_of=shapes.render_source,
    )
