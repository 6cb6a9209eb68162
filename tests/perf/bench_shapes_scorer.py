"""Parse speed of the exact ShapeWorld scorer: images/s on 64x64 PNGs, PNG decode included.

.venv/bin/python tests/perf/bench_shapes_scorer.py [--images 2000] [--resolution 64]
"""

from __future__ import annotations

import argparse
import io
import time

from PIL import Image

from reca_eval.scorers.shapes import detect_shapes
from reca_eval.shapeworld.render import render_scene
from reca_eval.shapeworld.scene import random_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--resolution", type=int, default=64)
    args = parser.parse_args()
    pngs = []
    for seed in range(args.images):
        buffer = io.BytesIO()
        render_scene(random_scene(seed), args.resolution).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    start = time.perf_counter()
    objects = 0
    for data in pngs:
        with Image.open(io.BytesIO(data)) as im:
            detections = detect_shapes(im.convert("RGB"))
        objects += sum(len(d) for d in detections.values())
    elapsed = time.perf_counter() - start
    print(
        f"{args.images} images ({args.resolution}x{args.resolution} PNG, {objects} objects) in {elapsed:.2f} s: "
        f"{args.images / elapsed:.0f} images/s"
    )


if __name__ == "__main__":
    main()
