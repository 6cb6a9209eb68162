"""CPU step time and images/s of the tiny flow-matching models (RecA step: frozen VLM features + flow loss
+ backward + Adam step), and sampling throughput.

    .venv/bin/python benchmarks/bench_flow.py [--steps 10] [--batch 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

from reca_eval.models.protocol import Condition, ImageEmbeds, SamplingConfig
from reca_eval.models.tiny_flow import build_tiny_flow, build_tiny_qwen_image_edit


def random_images(count: int, size: int = 32) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


def bench(name: str, model, steps: int, batch: int) -> None:
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ims = random_images(batch, model.image_size)
    model.train()

    def step() -> None:
        px = model.preprocess(ims)
        feats = model.understanding_embeddings(px)  # frozen VLM, no gradients
        targets = model.generation_targets(px)  # frozen VAE
        conditions = [Condition(["describe the image .", ImageEmbeds(f)]) for f in feats]
        loss = model("generation", conditions=conditions, targets=targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    per_step = (time.perf_counter() - start) / steps
    model.eval()
    conditions = [Condition.text("a red circle")] * batch
    start = time.perf_counter()
    model.generate(conditions, SamplingConfig(guidance_scale=3.0))
    sample_s = time.perf_counter() - start
    print(
        f"{name:16s} RecA step {per_step * 1000:7.1f} ms  ({batch / per_step:6.1f} train images/s)   "
        f"sampling {model.config.num_inference_steps} steps + CFG: {batch / sample_s:6.1f} images/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} CPU threads, batch {args.batch}, 32x32 images")
    bench("flow (Sana)", build_tiny_flow(), args.steps, args.batch)
    bench("qwen-image-edit", build_tiny_qwen_image_edit(), args.steps, args.batch)


if __name__ == "__main__":
    main()
