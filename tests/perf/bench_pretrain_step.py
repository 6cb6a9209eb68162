"""One joint pre-training step of the ShapeWorld base (trainers/pretrain_shapeworld.py) at several batch sizes.

    python tests/perf/bench_pretrain_step.py --device cuda --batch-sizes 256,512,1024
    python tests/perf/bench_pretrain_step.py --device cpu --batch-sizes 16,32    # runs anywhere

Times the very step ``train_joint`` takes (``joint_losses`` + backward + clip + AdamW) on the shipped base.
``--fresh`` (the default) gives every step its own batch of unseen scenes, rendered before the clock
starts (in training, data workers render them), so the per-caption prompt work is timed as in training;
``--no-fresh`` reuses one batch, whose prompts the adapter then serves from its memo: the difference
between the two is the cost of building prompts for new captions. Prints one JSON line per batch size:
seconds per step and scenes per second. On one H100, reusing one batch: 0.137 / 0.205 /
0.446 / 0.854 s per step at batch 256 / 512 / 1024 / 2048 (1,870 / 2,504 / 2,297 / 2,397 scenes/s),
while training at batch 512 on fresh scenes took 0.45-0.47 s per step.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from reca_eval.models.janus.adapter import JanusAdapter
from trainers.pretrain_shapeworld import TRAIN_STREAM, joint_losses, load_config, scene_batch

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "reca_eval" / "assets" / "shapeworld-base"
RECIPE = ROOT / "trainers" / "recipes" / "shapeworld_base.yaml"


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_step(
    adapter: JanusAdapter, batch_size: int, steps: int, warmup: int, fresh: bool
) -> dict[str, float]:
    jc = load_config(RECIPE, [f"joint.batch_size={batch_size}"]).joint  # the recipe's losses and weights
    # Past the scenes any shipped run trained on; batch i = scenes i*B.. (or batch 0 throughout)
    first = 5_000_000
    batches = [
        scene_batch(TRAIN_STREAM, first + (i * batch_size if fresh else 0), batch_size)
        for i in range(warmup + steps)
    ]
    params = [p for p in adapter.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    for i, (x, dense, sparse) in enumerate(batches):
        if i == warmup:
            _sync(adapter.device)
            started = time.perf_counter()
        rngs = [random.Random(f"bench:{i}:{j}") for j in range(batch_size)]
        losses = joint_losses(adapter, x.to(adapter.device), dense, sparse, rngs, jc)
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    _sync(adapter.device)
    per_step = (time.perf_counter() - started) / steps
    return {
        "batch_size": batch_size,
        "fresh": fresh,
        "s_per_step": round(per_step, 4),
        "scenes_per_s": round(batch_size / per_step, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", default="256,512,1024")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--base", type=Path, default=BASE)
    parser.add_argument(
        "--fresh",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a new batch of unseen scenes every step, as in training (--no-fresh: one batch reused)",
    )
    args = parser.parse_args()
    adapter = JanusAdapter.from_pretrained(args.base, device=args.device)
    adapter.train()
    adapter.model.model.vqmodel.eval()
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        row = time_step(adapter, batch_size, args.steps, args.warmup, args.fresh)
        print(json.dumps({"device": args.device, **row}), flush=True)


if __name__ == "__main__":
    main()
