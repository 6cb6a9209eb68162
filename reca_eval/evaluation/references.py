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
