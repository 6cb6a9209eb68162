"""RecA training throughput with and without the frozen-output cache, and peak memory.

    .venv/bin/python tests/perf/bench_trainer.py                 # tiny Janus (32 px), CPU
    .venv/bin/python tests/perf/bench_trainer.py --model toy     # toy model with a heavy frozen encoder

Three runs on the same synthetic images: (1) no cache, (2) a first epoch that fills the cache (all
misses), (3) repeat epochs served from the cache (all hits). Throughput is images/s over the training
loop (global batch x steps / loop wall time). Peak memory: max RSS of this process (getrusage) and the
Python-heap peak (tracemalloc; tensors' storage is outside it, so RSS is the number that matters).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from reca_eval.training.loop import train  # noqa: E402
from reca_eval.training.recipe import recipe_from_dict  # noqa: E402
from tests.toy_model import make_image_folder, toy_recipe_dict  # noqa: E402

MODELS = {
    "tiny_janus": (
        {"builder": "reca_eval.training.builders:tiny_janus", "freeze": ["vision", "aligner", "vqmodel"]},
        32,
    ),
    "toy": (
        {
            "builder": "tests.toy_model:build_toy",
            "kwargs": {"image_size": 32, "patch": 8, "encoder_width": 2048, "encoder_depth": 3},
            "freeze": ["vision", "vq"],
        },
        32,
    ),
}


def run(
    images: Path, out: Path, model: dict, epochs: int, count: int, batch: int, cache: Path | None
) -> dict:
    raw = toy_recipe_dict(
        images, out, steps=max(1, epochs * count // batch), batch_size=batch, checkpoint_every=10**6
    )
    raw["model"] = model
    raw["data"]["num_workers"] = 2
    raw["objective"]["bottleneck_size"] = 16
    if cache is not None:
        raw["data"]["cache_dir"] = str(cache)
    started = time.perf_counter()
    result = train(recipe_from_dict(raw))
    return {
        "images_per_s": round(result.images_per_s, 2),
        "steps": result.steps,
        "wall_s": round(time.perf_counter() - started, 2),
        "cache": result.cache,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny_janus")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--tracemalloc", action="store_true", help="also trace the Python heap (slows every run)"
    )
    args = parser.parse_args()
    model, size = MODELS[args.model]
    tracemalloc.start() if args.tracemalloc else None
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        images = make_image_folder(tmp_path / "images", args.images, size=size)
        run(
            images, tmp_path / "warmup", model, 1, args.batch, args.batch, None
        )  # first-call costs, not timed
        no_cache = run(images, tmp_path / "a", model, args.epochs, args.images, args.batch, None)
        fill = run(images, tmp_path / "b", model, 1, args.images, args.batch, tmp_path / "cache")
        warm = run(images, tmp_path / "c", model, args.epochs, args.images, args.batch, tmp_path / "cache")
    _, py_peak = tracemalloc.get_traced_memory()
    report = {
        "model": args.model,
        "images": args.images,
        "batch": args.batch,
        "no_cache": no_cache,
        "cache_fill_epoch": fill,
        "cache_warm_epochs": warm,
        "speedup_warm_vs_no_cache": round(warm["images_per_s"] / no_cache["images_per_s"], 2),
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "python_heap_peak_mib": round(py_peak / 2**20, 1),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
