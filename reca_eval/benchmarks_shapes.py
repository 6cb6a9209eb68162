"""The three ShapeWorld benchmarks: GenEval's, DPG-Bench's and an editing benchmark's semantics, scored
exactly by the ShapeWorld parser. They run on a laptop CPU with nothing but the core install.

Item files are versioned under ``benchmarks/<name>/`` (written by
``python -m reca_eval.world.build_benchmarks``); their spec.json carries the version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from reca_eval import layouts_dpg, layouts_edit, layouts_geneval
from reca_eval.protocols import dpg, edit, geneval
from reca_eval.registry import BENCHMARKS_DIR, Benchmark, ScoreOutput, get, register
from reca_eval.scorers import shapes
from reca_eval.world.render import DEFAULT_RESOLUTION

IMAGES_PER_PROMPT = 4  # as GenEval and DPG-Bench
EDITS_PER_ITEM = 1
SCORER = {"backend": shapes.SCORER_NAME, "version": shapes.SCORER_VERSION}


def _spec_version(name: str) -> str:
    spec = BENCHMARKS_DIR / name / "spec.json"
    try:
        return str(json.loads(spec.read_text())["version"])
    except (OSError, KeyError, json.JSONDecodeError):
        return "unversioned"


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


register(
    Benchmark(
        name="shapes-geneval",
        version=_spec_version("shapes-geneval"),
        description="GenEval's six tasks and exact schema on ShapeWorld; the exact parser is the detector.",
        task="t2i",
        layout="geneval",
        scorer_name="exact parser",
        extra=None,
        images_per_prompt=IMAGES_PER_PROMPT,
        resolution=DEFAULT_RESOLUTION,
        categories=geneval.TAGS,
        default_items=lambda: BENCHMARKS_DIR / "shapes-geneval" / "items.jsonl",
        load_items=geneval.load_metadata,
        score=_score_shapes_geneval,
        aggregate=geneval.aggregate,
        prompt_of=lambda item: item["prompt"],
        sample_path=layouts_geneval.sample_path,
        prepare_layout=layouts_geneval.prepare_geneval_folder,
    )
)

# -------------------------------------------------------------------------------------------------- dpg


def load_dpg_items(csv_path: Path) -> list[dict[str, Any]]:
    """DPG-style items: one per prompt, with its question rows (from the question-graph CSV)."""
    questions = dpg.load_questions(csv_path)
    items = []
    for item_id, group in questions.groupby("item_id", sort=False):
        items.append({"item_id": str(item_id), "prompt": str(group["text"].iloc[0]), "questions": group})
    return items


def questions_frame(items: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.concat([item["questions"] for item in items], ignore_index=True)


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


def per_sample_path(items: list[dict], index: int, k: int, out_dir: Path) -> Path:
    """DPG's and our edit benchmarks' layout: ``<item_id>_<k>.png``."""
    return layouts_edit.sample_path(out_dir, items[index]["item_id"], k)


register(
    Benchmark(
        name="shapes-dpg",
        version=_spec_version("shapes-dpg"),
        description="Dense ShapeWorld prompts with a DPG-style question graph, answered exactly, gated like DPG.",
        task="t2i",
        layout="dpg",
        scorer_name="exact parser (VQA)",
        extra=None,
        images_per_prompt=IMAGES_PER_PROMPT,
        resolution=DEFAULT_RESOLUTION,
        categories=("entity", "attribute", "relation", "count", "global"),
        default_items=lambda: BENCHMARKS_DIR / "shapes-dpg" / "questions.csv",
        load_items=load_dpg_items,
        score=_score_shapes_dpg,
        aggregate=dpg.aggregate,
        prompt_of=lambda item: item["prompt"],
        sample_path=per_sample_path,
    )
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


register(
    Benchmark(
        name="shapes-edit",
        version=_spec_version("shapes-edit"),
        description="ShapeWorld edits (recolour, remove, add, replace, move, resize, restyle, background, "
        "two-step): success, preservation and quality, aggregated GEdit- and ImgEdit-style.",
        task="edit",
        layout="edit",
        scorer_name="exact parser (edit)",
        extra=None,
        images_per_prompt=EDITS_PER_ITEM,
        resolution=DEFAULT_RESOLUTION,
        categories=(
            "recolour",
            "remove",
            "add",
            "replace",
            "move",
            "resize",
            "restyle",
            "background",
            "two-step",
        ),
        default_items=lambda: BENCHMARKS_DIR / "shapes-edit" / "items.jsonl",
        load_items=load_edit_items,
        score=_score_shapes_edit,
        aggregate=edit.aggregate_shapes_edit,
        prompt_of=lambda item: item["instruction"],
        sample_path=per_sample_path,
        source_image_of=shapes.render_source,
    )
)

SHAPES_BENCHMARKS = ("shapes-geneval", "shapes-dpg", "shapes-edit")


def reference_scenes_path(name: str) -> Path:
    return BENCHMARKS_DIR / name / "items.jsonl"


def write_reference_folder(name: str, out_dir: Path, *, items_path: Path | None = None) -> int:
    """Render every item's exact reference image(s) into ``out_dir`` in the benchmark's layout."""
    if name not in SHAPES_BENCHMARKS:
        raise KeyError(f"{name!r} is not a ShapeWorld benchmark ({', '.join(SHAPES_BENCHMARKS)})")
    bench = get(name)
    items = bench.load_items(Path(items_path) if items_path else bench.default_items())
    if name == "shapes-dpg":
        # The question CSV carries no scenes; the reference scenes sit in items.jsonl beside it.
        scenes = {str(it["item_id"]): it for it in _read_jsonl(reference_scenes_path(name))}
        items = [{**item, **scenes[item["item_id"]]} for item in items]
    images = {
        i: [shapes.render_reference(item, k) for k in range(bench.images_per_prompt)]
        for i, item in enumerate(items)
    }
    bench.write_images(items, images, Path(out_dir))
    return sum(len(v) for v in images.values())
