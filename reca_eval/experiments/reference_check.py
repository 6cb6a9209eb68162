"""`reca-eval demo --references`: the model-free pipeline check, with nothing but the core install.

It writes the exact reference renders of the three ShapeWorld benchmarks and a "perturbed" copy in
which a seeded quarter of the images have one object recoloured, scores both through the same path
``reca-eval run --images`` takes, prints the leaderboard and pairs the two runs with ``compare``.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

from rich.console import Console

from reca_eval import registry
from reca_eval.core.records import read_run
from reca_eval.evaluation import score as evaluate
from reca_eval.evaluation.references import SHAPES_BENCHMARKS, write_reference_folder
from reca_eval.results.leaderboard import (
    compare_runs,
    load_runs,
    render_compare,
    render_leaderboard,
    write_leaderboard,
)
from reca_eval.scorers.shapes import item_scene
from reca_eval.shapeworld.palette import COLOURS
from reca_eval.shapeworld.render import render_scene

PERTURB_FRACTION = 0.25
PERTURB_SEED = 0


def write_perturbed_folder(
    name: str, out_dir: Path, fraction: float = PERTURB_FRACTION, seed: int = PERTURB_SEED
) -> int:
    """References with one object recoloured in a seeded ``fraction`` of the images."""
    bench = registry.get(name)
    items = bench.load_items(bench.default_items())
    if name == "shapes-dpg":
        from reca_eval.benchmarks.shapes.benchmark import _read_jsonl
        from reca_eval.evaluation.references import reference_scenes_path

        scenes = {str(it["item_id"]): it for it in _read_jsonl(reference_scenes_path(name))}
        items = [{**item, **scenes[item["item_id"]]} for item in items]
    rng = random.Random(seed)
    images: dict[int, list] = {}
    for index, item in enumerate(items):
        images[index] = []
        for _ in range(bench.images_per_prompt):
            scene = item_scene(item)
            if scene.objects and rng.random() < fraction:
                obj = scene.objects[0]
                colour = rng.choice([c for c in COLOURS if c != obj.colour])
                scene = dataclasses.replace(
                    scene, objects=[dataclasses.replace(obj, colour=colour), *scene.objects[1:]]
                )
            images[index].append(render_scene(scene))
    bench.write_images(items, images, Path(out_dir))
    return sum(len(v) for v in images.values())


def run_reference_demo(results: Path, console: Console) -> None:
    """Score reference renders and a perturbed copy of them: every scoring stage at work, no model."""
    results = Path(results)
    pairs = []
    for name in SHAPES_BENCHMARKS:
        ref_dir = results / "images" / name / "reference"
        pert_dir = results / "images" / name / "perturbed"
        write_reference_folder(name, ref_dir)
        write_perturbed_folder(name, pert_dir)
        ref = evaluate.score_images(
            name, ref_dir, label="reference", results_dir=results, options={"progress": False}
        )
        pert = evaluate.score_images(
            name, pert_dir, label="perturbed", results_dir=results, options={"progress": False}
        )
        console.print(
            f"{name}: reference {ref.record.scores['overall']:.3f}, perturbed {pert.record.scores['overall']:.3f} "
            f"({ref.record.images_scored} images each)"
        )
        pairs.append((ref.run_dir, pert.run_dir))
    write_leaderboard(results)
    render_leaderboard(load_runs(results), console)
    for ref_dir, pert_dir in pairs:
        bench = registry.get(read_run(ref_dir)[0].benchmark)
        render_compare(compare_runs(ref_dir, pert_dir, bench.aggregate, n_boot=500, seed=0), console)
    console.print(f"records, per-image results and leaderboard files: {results}/")
