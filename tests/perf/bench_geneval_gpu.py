"""GenEval's detector, GenEval's one-image loop against batches (``-o detector_batch=N``), on the same
images: images/s of each, their ratio measured in one run, and whether every image's detections agree.

    python tests/perf/bench_geneval_gpu.py --out tests/perf/results/geneval_gpu.json   # needs: a GPU
    python tests/perf/bench_geneval_gpu.py --device cpu --arch tiny --images 6 --batch 4 --size 96

Mask2Former Swin-S at its real size with random weights (they cost what the trained ones cost) on
512-px images, as ``reca-eval run geneval`` runs it: ``mask2former.detect`` per image is the official
loop, ``mask2former.detect_many`` the batched one. Agreement is checked on every detection of every image
(100 per image: class, score, box and mask), not only on those above GenEval's thresholds, so random
weights test it as hard as trained ones. The colour classifier (CLIP on each object's crop, only for the
colour rules) is not part of the comparison: it runs per image either way.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from bench_generation_gpu import timed
from PIL import Image

from reca_eval.scorers import mask2former


def flat(detections: dict) -> list[tuple[str, object]]:
    return [(name, d) for name, found in detections.items() for d in found]


def agreement(alone: list[dict], batched: list[dict]) -> dict[str, float]:
    """How far the batched detections are from the one-image ones: images whose classes (in score order)
    or masks differ, and the largest score and box differences."""
    differing, score_diff, box_diff = 0, 0.0, 0.0
    for a, b in zip(alone, batched, strict=True):
        fa, fb = flat(a), flat(b)
        if [n for n, _ in fa] != [n for n, _ in fb]:
            differing += 1
            continue
        pairs = [(x, y) for (_, x), (_, y) in zip(fa, fb, strict=True)]
        differing += not all(
            (x.mask is None and y.mask is None) or np.array_equal(x.mask, y.mask) for x, y in pairs
        )
        for x, y in pairs:
            score_diff = max(score_diff, abs(x.score - y.score))
            box_diff = max(box_diff, float(np.abs(np.subtract(x.box, y.box)).max()))
    return {"images_differing": differing, "max_score_diff": score_diff, "max_box_diff_px": box_diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    gpu = torch.cuda.is_available()
    # Without a GPU (`nox -s bench` on a CPU) the defaults are the small check that runs in seconds.
    parser.add_argument("--device", default="cuda" if gpu else "cpu")
    parser.add_argument("--arch", choices=("swin-s", "tiny"), default="swin-s" if gpu else "tiny")
    parser.add_argument("--images", type=int, default=64 if gpu else 6)
    parser.add_argument("--batch", type=int, default=16 if gpu else 4, help="images per batched forward pass")
    parser.add_argument("--size", type=int, default=512 if gpu else 96, help="square image side in pixels")
    parser.add_argument("--out", type=Path, help="also write the JSON here (tests/perf/results/)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    tiny = args.arch == "tiny"
    scale = (args.size, args.size) if tiny else mask2former.TEST_SCALE
    model = mask2former.build_mask2former(tiny=tiny, test_scale=scale).to(device).eval()
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, size=(args.size, args.size, 3), dtype=np.uint8))
        for _ in range(args.images)
    ]
    mask2former.detect_many(model, images[: min(2, len(images))])  # warm-up: allocations, lazy imports

    def loop() -> list[dict]:
        return [mask2former.detect(model, image) for image in images]

    def batched() -> list[dict]:
        out: list[dict] = []
        for start in range(0, len(images), args.batch):
            out += mask2former.detect_many(model, images[start : start + args.batch])
        return out

    alone, loop_s = timed(loop, device)
    together, batch_s = timed(batched, device)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "arch": args.arch,
        "images": args.images,
        "size": args.size,
        "batch": args.batch,
        "official_loop_images_per_s": round(args.images / loop_s, 2),
        "batched_images_per_s": round(args.images / batch_s, 2),
        "ratio": round(loop_s / batch_s, 2),
        **agreement(alone, together),
        "torch": torch.__version__,
    }
    line = json.dumps(result)
    print(line)
    if args.out:
        args.out.write_text(line + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
