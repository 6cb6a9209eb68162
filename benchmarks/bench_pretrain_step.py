"""One joint pre-training step of the ShapeWorld base (trainers/pretrain_shapeworld.py) at several batch sizes.

    python benchmarks/bench_pretrain_step.py --device cuda --batch-sizes 256,512,1024
    python benchmarks/bench_pretrain_step.py --device cpu --batch-sizes 16,32    # runs anywhere

Times the very step ``train_joint`` takes (``joint_losses`` + backward + clip + AdamW) on the shipped base,
on one rendered batch reused across steps (rendering runs in data workers during training, so it is left
out here). Prints one JSON line per batch size: seconds per step and scenes per second. On a GPU a step
of this 1.35 M-parameter model is bound by kernel launches and Python, not arithmetic, so scenes/s grows
with the batch until the GPU fills up: the pre-training recipe's batch size follows this figure.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from reca_eval.models.janus import JanusAdapter
from trainers.pretrain_shapeworld import TRAIN_STREAM, JointConfig, joint_losses, scene_batch

BASE = Path(__file__).resolve().parent.parent / "reca_eval" / "assets" / "shapeworld-base"


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_step(adapter: JanusAdapter, batch_size: int, steps: int, warmup: int) -> dict[str, float]:
    jc = JointConfig(batch_size=batch_size, align_layers=[-1])
    x, dense, sparse = scene_batch(TRAIN_STREAM, 0, batch_size)
    x = x.to(adapter.device)
    params = [p for p in adapter.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    for i in range(warmup + steps):
        if i == warmup:
            _sync(adapter.device)
            started = time.perf_counter()
        rngs = [random.Random(f"bench:{i}:{j}") for j in range(batch_size)]
        losses = joint_losses(adapter, x, dense, sparse, rngs, jc)
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    _sync(adapter.device)
    per_step = (time.perf_counter() - started) / steps
    return {"batch_size": batch_size, "s_per_step": round(per_step, 4), "scenes_per_s": round(batch_size / per_step, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", default="256,512,1024")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--base", type=Path, default=BASE)
    args = parser.parse_args()
    adapter = JanusAdapter.from_pretrained(args.base, device=args.device)
    adapter.train()
    adapter.model.model.vqmodel.eval()
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        row = time_step(adapter, batch_size, args.steps, args.warmup)
        print(json.dumps({"device": args.device, **row}), flush=True)


if __name__ == "__main__":
    main()
