"""CPU step time and images/s of the tiny flow-matching models (RecA step: frozen VLM features + flow loss
+ backward + Adam step), and sampling throughput; then the ShapeWorld flow model (the shipped flow base's
architecture, reca_eval/models/shapeworld_flow.py) on rendered scenes: RecA step at batch 16 and sampling
(its own Euler steps, CFG) at the main command's generation batch.

    .venv/bin/python tests/perf/bench_flow.py [--steps 10] [--batch 4] [--threads 2]
    .venv/bin/python tests/perf/bench_flow.py --only shapeworld --threads 1    # the README's flow figures
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

from reca_eval.models.flow.tiny import build_tiny_flow, build_tiny_qwen_image_edit
from reca_eval.models.protocol import Condition, ImageEmbeds, SamplingConfig

SHAPEWORLD_TRAIN_BATCH = 16  # the arms' batch (reca_eval.experiments.arms.Budget)
SHAPEWORLD_SAMPLE_BATCH = 64  # a generation batch (the main command samples 256)


def random_images(count: int, size: int = 32) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


def bench(
    name: str,
    model,
    steps: int,
    batch: int,
    ims: list[Image.Image] | None = None,
    sample_batch: int | None = None,
    prompts: list[str] | None = None,
) -> dict[str, float]:
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ims = ims or random_images(batch, model.image_size)
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
    sample_batch = sample_batch or batch
    texts = prompts or ["a red circle"]
    conditions = [Condition.text(texts[i % len(texts)]) for i in range(sample_batch)]
    start = time.perf_counter()
    model.generate(conditions, SamplingConfig(guidance_scale=3.0))
    sample_s = time.perf_counter() - start
    print(
        f"{name:16s} RecA step batch {batch}: {per_step * 1000:7.1f} ms  ({batch / per_step:6.1f} train images/s)   "
        f"sampling batch {sample_batch}, {model.config.num_inference_steps} steps + CFG: "
        f"{sample_batch / sample_s:6.1f} images/s"
    )
    return {
        "step_s": per_step,
        "train_images_per_s": batch / per_step,
        "sample_images_per_s": sample_batch / sample_s,
    }


def bench_shapeworld(steps: int) -> dict[str, float]:
    """The ShapeWorld flow model on rendered scenes and their captions (the shipped base when present)."""
    from reca_eval.models.flow.shapeworld import build_shapeworld_flow, shipped_flow_base_path
    from reca_eval.models.janus.shapeworld import world_source
    from reca_eval.models.loading import load_unified_model

    path = shipped_flow_base_path()
    model = load_unified_model(path) if (path / "config.json").exists() else build_shapeworld_flow()
    pairs = list(world_source(4242, "sparse", limit=SHAPEWORLD_SAMPLE_BATCH))
    ims = [im for im, _ in pairs[:SHAPEWORLD_TRAIN_BATCH]]
    return bench(
        "shapeworld-flow",
        model,
        steps,
        SHAPEWORLD_TRAIN_BATCH,
        ims=ims,
        sample_batch=SHAPEWORLD_SAMPLE_BATCH,
        prompts=[c for _, c in pairs],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=("all", "tiny", "shapeworld"), default="all")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} CPU threads, 32x32 images")
    if args.only in ("all", "tiny"):
        bench("flow (Sana)", build_tiny_flow(), args.steps, args.batch)
        bench("qwen-image-edit", build_tiny_qwen_image_edit(), args.steps, args.batch)
    if args.only in ("all", "shapeworld"):
        bench_shapeworld(args.steps)


if __name__ == "__main__":
    main()
