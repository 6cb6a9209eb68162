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


def _write_drawn_folder(
    name: str, out_dir: Path, items_path: Path | None, draw, with_scenes: bool = False
) -> int:
    """Load the items of ShapeWorld benchmark ``name``, draw ``draw(index, item, k)`` for every sample
    and write them in the benchmark's layout; returns the number of images written."""
    if name not in SHAPES_BENCHMARKS:
        raise KeyError(f"{name!r} is not a ShapeWorld benchmark ({', '.join(SHAPES_BENCHMARKS)})")
    bench = registry.get(name)
    items = bench.load_items(Path(items_path) if items_path else bench.default_items())
    if with_scenes and name == "shapes-dpg":
        # The question CSV carries no scenes; the reference scenes sit in items.jsonl beside it.
        scenes = {str(it["item_id"]): it for it in _read_jsonl(reference_scenes_path(name))}
        items = [{**item, **scenes[item["item_id"]]} for item in items]
    images = {i: [draw(i, item, k) for k in range(bench.images_per_prompt)] for i, item in enumerate(items)}
    bench.write_images(items, images, Path(out_dir))
    return sum(len(v) for v in images.values())


def write_reference_folder(name: str, out_dir: Path, *, items_path: Path | None = None) -> int:
    """Render every item's exact reference image(s) into ``out_dir`` in the benchmark's layout."""
    return _write_drawn_folder(
        name, out_dir, items_path, lambda i, item, k: shapes.render_reference(item, k), with_scenes=True
    )


# Editors that never read the instruction: every shapes-edit headline must put them at its floor, so a
# table that shows them beside the trained arms shows what "no editing" scores. drop-one removes one
# object chosen from the source scene alone (seeded), so an object lost by chance looks like a removal.
# The copier (the source through a base's own tokenizer) needs a model: reca_eval.diagnostics.copier.
REFERENCE_EDITORS = ("identity", "blank", "drop-one")


def reference_editor_output(item: dict, editor: str, seed: int = 0):
    """What an instruction-blind editor returns for a shapes-edit item: the source image itself
    (identity), the source's background with no object (blank), or the source less one object drawn by
    ``seed`` and the source scene (drop-one: counterfactual twins, which share their source, get the
    same image)."""
    import dataclasses
    import json
    import random

    from reca_eval.shapeworld.render import render_scene
    from reca_eval.shapeworld.scene import scene_from_json

    if editor not in REFERENCE_EDITORS:
        raise KeyError(f"unknown reference editor {editor!r} ({', '.join(REFERENCE_EDITORS)})")
    source = scene_from_json(item["source_scene"], f"item {item.get('item_id')!r}: source_scene")
    if editor == "identity":
        return render_scene(source)
    if editor == "blank" or not source.objects:
        return render_scene(dataclasses.replace(source, objects=[]))
    rng = random.Random(f"{seed}:{json.dumps(item['source_scene'], sort_keys=True)}")
    objects = list(source.objects)
    del objects[rng.randrange(len(objects))]
    return render_scene(dataclasses.replace(source, objects=objects))


def write_reference_editor_folder(
    editor: str, out_dir: Path, *, items_path: Path | None = None, seed: int = 0
) -> int:
    """Write an instruction-blind editor's outputs for every shapes-edit item into ``out_dir``."""
    return _write_drawn_folder(
        "shapes-edit", out_dir, items_path, lambda i, item, k: reference_editor_output(item, editor, seed)
    )


# A prompt-blind generator draws training-distribution scenes whatever the prompt says: what it scores is
# what a benchmark gives by chance. Its scene ids sit far above every training stream's
# (``world_scene(seed * 10**7 + i)``), so a floor never redraws a scene a model was trained on.
PROMPT_BLIND_OFFSET = 10**12


def prompt_blind_scene_id(seed: int, image: int) -> int:
    """The world scene id of image number ``image`` (items in file order, samples within an item) of the
    prompt-blind generator with seed ``seed``."""
    if seed < 0 or not 0 <= image < 10**9:
        raise ValueError(f"prompt-blind seed must be >= 0 and image index in [0, 1e9), got {seed}, {image}")
    return PROMPT_BLIND_OFFSET * (seed + 1) + image


def write_prompt_blind_folder(
    name: str, out_dir: Path, *, seed: int, items_path: Path | None = None, resolution: int = 32
) -> int:
    """Write what a prompt-blind generator draws for every item of ShapeWorld benchmark ``name``, in its
    layout: each image an independent training-distribution scene (``world_scene``), picked by ``seed``
    and the image's position, rendered at ``resolution`` (32 px: the world's training renders). The
    prompt (or the edit instruction and source) is never read."""
    from reca_eval.models.janus.shapeworld import world_scene
    from reca_eval.shapeworld.render import render_scene

    per_item = registry.spec(name).images_per_prompt if name in SHAPES_BENCHMARKS else 0
    return _write_drawn_folder(
        name,
        out_dir,
        items_path,
        lambda i, item, k: render_scene(
            world_scene(prompt_blind_scene_id(seed, i * per_item + k)), resolution
        ),
    )
