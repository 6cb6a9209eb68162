"""CPU (or GPU) seconds per image of GenEval's real-size Mask2Former Swin-S (random weights).

Runs the official test pipeline (a GenEval 512x512 image is resized to 800x800) through
reca_eval.scorers.mask2former.detect; random weights cost the same as the trained ones.

    .venv/bin/python tests/perf/bench_detector.py --images 2 --size 512
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from PIL import Image

from reca_eval.scorers.mask2former import build_mask2former, detect


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=2, help="timed images (after one warm-up image)")
    parser.add_argument("--size", type=int, default=512, help="square input image side in pixels")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    start = time.perf_counter()
    model = build_mask2former().to(args.device)
    build_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, size=(args.size, args.size, 3), dtype=np.uint8))
        for _ in range(args.images + 1)
    ]
    detect(model, images[0])  # warm-up: first-call allocations and lazy imports
    seconds, cpu_seconds = [], []
    for image in images[1:]:
        if args.device != "cpu":
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        detect(model, image)
        if args.device != "cpu":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
        # CPU time summed over threads: less sensitive than wall time to other processes on the machine.
        cpu_seconds.append(time.process_time() - cpu_start)
    print(
        json.dumps(
            {
                "device": args.device,
                "torch_threads": torch.get_num_threads(),
                "image_size": args.size,
                "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
                "build_s": round(build_s, 1),
                "seconds_per_image": [round(s, 2) for s in seconds],
                "mean_s": round(float(np.mean(seconds)), 2),
                "cpu_seconds_per_image": [round(s, 2) for s in cpu_seconds],
            }
        )
    )


if __name__ == "__main__":
    main()
