"""The three ShapeWorld benchmarks: GenEval's, DPG-Bench's and an editing benchmark's semantics, scored
exactly by the ShapeWorld parser. They run on a laptop CPU with nothing but the core install.

Item files are versioned under ``benchmarks/<name>/`` (written by
``python -m reca_eval.benchmarks.shapes.build``); their spec.json carries the version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image

from reca_eval.benchmarks.dpg import layout as layouts_dpg
from reca_eval.benchmarks.dpg import rules as dpg
from reca_eval.benchmarks.dpg.items import load_dpg_items, per_sample_path, questions_frame
from reca_eval.benchmarks.edit import layout as layouts_edit
from reca_eval.benchmarks.edit import rules as edit
from reca_eval.benchmarks.geneval import layout as layouts_geneval
from reca_eval.benchmarks.geneval import rules as geneval
from reca_eval.core.spec import Benchmark, BenchmarkSpec, ScoreOutput, from_spec
from reca_eval.scorers import shapes
from reca_eval.shapeworld.render import DEFAULT_RESOLUTION

IMAGES_PER_PROMPT = 4  # as GenEval and DPG-Bench
EDITS_PER_ITEM = 1
SCORER = {"backend": shapes.SCORER_NAME, "version": shapes.SCORER_VERSION}


def _expected_size(options: dict[str, Any]) -> tuple[int, int]:
    res = int(options.get("resolution", DEFAULT_RESOLUTION))
    return (res, res)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"item file {path} does not exist")
    items = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
    return items


# ---------------------------------------------------------------------------------------------- geneval


def _score_shapes_geneval(items: list[dict], image_dir: Path, options: dict[str, Any]) -> ScoreOutput:
    output = layouts_geneval.score_geneval_folder(
        items,
        image_dir,
        shapes.detect_shapes,
        shapes.colour_of_image,
        images_per_prompt=IMAGES_PER_PROMPT,
        expected_size=_expected_size(options),
        progress=options.get("progress", True),
    )
    output.scorer = dict(SCORER)
    return output


def build_geneval(spec: BenchmarkSpec) -> Benchmark:
    return from_spec(
        spec,
        default_items=lambda: spec.folder / "items.jsonl",
        load_items=geneval.load_metadata,
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
        images_per_prompt=IMAGES_PER_PROMPT,
        expected_size=_expected_size(options),
        progress=options.get("progress", True),
    )
    output.scorer = {**SCORER, **output.scorer}
    return output


def build_dpg(spec: BenchmarkSpec) -> Benchmark:
    return from_spec(
        spec,
        default_items=lambda: spec.folder / "questions.csv",
        load_items=load_dpg_items,
        score=_score_shapes_dpg,
        aggregate=dpg.aggregate,
        prompt_of=lambda item: item["prompt"],
        sample_path=per_sample_path,
    )


# ------------------------------------------------------------------------------------------------- edit


def load_edit_items(path: Path) -> list[dict[str, Any]]:
    items = _read_jsonl(path)
    for number, item in enumerate(items, start=1):
        missing = [
            k
            for k in ("item_id", "edit_type", "instruction", "source_scene", "target_scene")
            if k not in item
        ]
        if missing:
            raise ValueError(f"{path}: item {number} lacks {missing}")
        item["category"] = item["edit_type"]
    return items


def _score_edit_item(item: dict[str, Any], image: Image.Image) -> dict[str, Any]:
    measured = shapes.score_edit(item["source_scene"], item["target_scene"], image)
    row = edit.shapes_edit_item(measured["success"], measured["preservation"], measured["quality"])
    row["reason"] = measured.get("reason", "")
    return row


def _score_shapes_edit(items: list[dict], image_dir: Path, options: dict[str, Any]) -> ScoreOutput:
    output = layouts_edit.score_edit_folder(
        items,
        image_dir,
        _score_edit_item,
        images_per_prompt=EDITS_PER_ITEM,
        expected_size=_expected_size(options),
        progress=options.get("progress", True),
    )
    output.scorer = dict(SCORER)
    return output


def build_edit(spec: BenchmarkSpec) -> Benchmark:
    return from_spec(
        spec,
        default_items=lambda: spec.folder / "items.jsonl",
        load_items=load_edit_items,
        score=_score_shapes_edit,
        aggregate=edit.aggregate_shapes_edit,
        prompt_of=lambda item: item["instruction"],
        sample_path=per_sample_path,
        source_image_of=shapes.render_source,
    )
