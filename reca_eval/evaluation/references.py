"""Exact reference images of the ShapeWorld benchmarks (`reca-eval render-references`): what a perfect
generator would draw, written in each benchmark's official layout."""

from __future__ import annotations

from pathlib import Path

from reca_eval import registry
from reca_eval.benchmarks.shapes.benchmark import _read_jsonl
from reca_eval.scorers import shapes

SHAPES_BENCHMARKS = ("shapes-geneval", "shapes-dpg", "shapes-edit")


def reference_scenes_path(name: str) -> Path:
    return registry.spec(name).folder / "items.jsonl"


def write_reference_folder(name: str, out_dir: Path, *, items_path: Path | None = None) -> int:
    """Render every item's exact reference image(s) into ``out_dir`` in the benchmark's layout."""
    if name not in SHAPES_BENCHMARKS:
        raise KeyError(f"{name!r} is not a ShapeWorld benchmark ({', '.join(SHAPES_BENCHMARKS)})")
    bench = registry.get(name)
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


# Editors that never read the instruction: every shapes-edit headline must put them at its floor, so a
# table that shows them beside the trained arms shows what "no editing" scores.
REFERENCE_EDITORS = ("identity", "blank")


def reference_editor_output(item: dict, editor: str):
    """What an instruction-blind editor returns for a shapes-edit item: the source image itself
    (identity) or the source's background with no object (blank)."""
    import dataclasses

    from reca_eval.shapeworld.render import render_scene
    from reca_eval.shapeworld.scene import scene_from_json

    if editor not in REFERENCE_EDITORS:
        raise KeyError(f"unknown reference editor {editor!r} ({', '.join(REFERENCE_EDITORS)})")
    source = scene_from_json(item["source_scene"], f"item {item.get('item_id')!r}: source_scene")
    return render_scene(source if editor == "identity" else dataclasses.replace(source, objects=[]))


def write_reference_editor_folder(editor: str, out_dir: Path, *, items_path: Path | None = None) -> int:
    """Write an instruction-blind editor's outputs for every shapes-edit item into ``out_dir``."""
    bench = registry.get("shapes-edit")
    items = bench.load_items(Path(items_path) if items_path else bench.default_items())
    images = {i: [reference_editor_output(item, editor)] for i, item in enumerate(items)}
    bench.write_images(items, images, Path(out_dir))
    return len(images)
