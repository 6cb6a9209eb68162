"""Pre-train a ShapeWorld Harmon base (:mod:`reca_eval.models.harmon.shapeworld`) from scratch, on CPU.

    python -m trainers.pretrain_shapeworld_harmon trainers/recipes/shapeworld_harmon_base.yaml [key=value ...]

The autoencoder is the flow base's, frozen (``autoencoder``: another diffusers autoencoder folder), so one
plain loop trains everything else (LLM, MAR, projectors, diffusion head) on text->image with MAR's masked
diffusion loss (captions dense or sparse, condition dropout to ``"Generate an image."`` for CFG), with an
image->text micro-batch every ``i2t_every`` steps: understanding and generation share the MAR encoder and
the LLM, and RecA's condition is that shared encoding. Logged on a fixed held-out batch: the loss with the
caption and with the unconditional prompt at the same masks and noise (their gap is what the model reads
from the caption); at the end, images from held-out dense captions are parsed, and the autoencoder's
round trip of held-out scenes is measured with the exact parser.

Scene streams as the other bases (2 training, 3 held out). Writes ``metrics.jsonl`` and ``summary.json``
under ``output_dir`` and the model (``save_pretrained``) to ``export_dir``.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from reca_eval.core.records import atomic_write_text
from reca_eval.models.harmon.adapter import HarmonAdapter
from reca_eval.models.harmon.shapeworld import build_shapeworld_harmon
from reca_eval.models.janus.shapeworld import world_scene
from reca_eval.models.protocol import Condition
from reca_eval.shapeworld.captions import caption
from trainers import pretrain_common
from trainers.pretrain_common import append_jsonl, scene_id
from trainers.pretrain_shapeworld_flow import (
    HELD_OUT_STREAM,
    METRICS_NAME,
    SUMMARY_NAME,
    TRAIN_STREAM,
    caption_batch,
    cosine_lr,
    fit_steps,
    held_out_losses,
    parsed_generations,
    render_pixels,
    round_trip_exactness,
)


@dataclass
class MARStageConfig:
    steps: int = 6000
    batch_size: int = 32
    lr: float = 1e-3
    min_lr: float = 5e-5
    warmup_steps: int = 100
    weight_decay: float = 0.01
    condition_dropout: float = 0.1
    dense_fraction: float = 0.5
    i2t_every: int = 4  # every this many steps is an image->text micro-batch (0 = none)
    eval_every: int = 250
    eval_scenes: int = 64
    generate_scenes: int = 64
    guidance_scale: float = 3.0
    max_minutes: float = 0.0


@dataclass
class HarmonBaseConfig:
    seed: int = 0
    threads: int = 1
    device: str = "cpu"
    output_dir: str = "results/pretrain/shapeworld-harmon-base"
    export_dir: str = "results/pretrain/shapeworld-harmon-base/model"
    autoencoder: str = ""  # a diffusers autoencoder folder; empty: the shipped flow base's vae/
    round_trip_scenes: int = 200
    mar: MARStageConfig = field(default_factory=MARStageConfig)


def train_mar(adapter: HarmonAdapter, cfg: HarmonBaseConfig, out: Path) -> dict[str, Any]:
    mc = cfg.mar
    params = [p for name, p in adapter.named_parameters() if not name.startswith("vae.")]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=mc.lr, weight_decay=mc.weight_decay, betas=(0.9, 0.95))
    held_ids = [scene_id(HELD_OUT_STREAM, i) for i in range(mc.eval_scenes)]
    held_latents = adapter.generation_targets(render_pixels(held_ids).to(adapter.device))
    held_captions = caption_batch(held_ids, [random.Random(i) for i in held_ids], mc.dense_fraction)
    started, row, step, steps = time.perf_counter(), {}, 0, mc.steps
    sums: dict[str, list[float]] = {}
    while step < steps:
        step += 1
        if step == 21:
            steps = fit_steps(steps, 20, time.perf_counter() - started, mc.max_minutes, "mar")
        lr = cosine_lr(step, steps, mc.lr, mc.min_lr, mc.warmup_steps)
        for g in opt.param_groups:
            g["lr"] = lr
        ids = [scene_id(TRAIN_STREAM, (step - 1) * mc.batch_size + i) for i in range(mc.batch_size)]
        rngs = [random.Random(f"{cfg.seed}:{i}") for i in ids]
        pixels = render_pixels(ids).to(adapter.device)
        adapter.train()
        if mc.i2t_every and step % mc.i2t_every == 0:
            kind = "i2t"
            texts = [caption(world_scene(i), "dense", i) for i in ids]
            loss = adapter.understanding_loss(pixels, texts)
        else:
            kind = "t2i"
            captions = caption_batch(ids, rngs, mc.dense_fraction)
            conditions = [
                Condition([]) if r.random() < mc.condition_dropout else Condition.text(c)
                for r, c in zip(rngs, captions, strict=True)
            ]
            loss = adapter.generation_loss(conditions, adapter.generation_targets(pixels))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sums.setdefault(f"loss/{kind}", []).append(float(loss.detach()))
        if step % mc.eval_every == 0 or step == steps:
            adapter.eval()
            row = {"stage": "mar", "step": step, "lr": lr}
            row.update({k: sum(v) / len(v) for k, v in sums.items()})
            sums = {}
            row.update(held_out_losses(adapter, held_latents, held_captions))
            row["elapsed_s"] = round(time.perf_counter() - started, 1)
            row["s_per_step"] = round(row["elapsed_s"] / step, 3)
            append_jsonl(out / "metrics.jsonl", row)
            print(json.dumps(row), flush=True)
    adapter.eval()
    row.update(parsed_generations(adapter, mc.generate_scenes, mc.guidance_scale))
    row["steps_planned"] = steps
    append_jsonl(out / "metrics.jsonl", {**row, "stage": "mar-final"})
    print(json.dumps(row), flush=True)
    return row


def asset_readme(summary: dict[str, Any]) -> str:
    """The shipped base's README: what it is, the command that made it, and its measured figures."""
    ae, mar = summary["vae"], summary["mar"]
    pct = pretrain_common.percent
    lines = [
        *pretrain_common.asset_readme_head(
            "shapeworld-harmon-base",
            [
                "The ShapeWorld Harmon base (masked autoregressive): a Qwen2 LLM (64 wide, 2 layers, word tokenizer",
                "over the ShapeWorld vocabulary) between a MAR encoder and decoder (64 wide, 2 + 2 blocks, 4 buffer",
                "tokens), a diffusion MLP per latent token, over the flow base's frozen DC-AE (8x8x8 latents of 32-px",
                "images). Load it with `reca_eval.models.loading.load_unified_model(path)` (family `harmon`). Built by",
            ],
            summary,
        ),
        f"| autoencoder (the flow base's, frozen) | 0 | round trip parsed back exactly: "
        f"{pct(ae, 'held_out/exact_scenes')} of {summary['config']['round_trip_scenes']} held-out scenes; "
        f"pixels within 40/255: {pct(ae, 'held_out/pixel_close')} |",
        f"| LLM + MAR + projectors + diffusion head, text->image with image->text | {mar.get('step', '?')} | "
        f"train loss {mar.get('loss/t2i', float('nan')):.4f} (image->text {mar.get('loss/i2t', float('nan')):.3f}); "
        f"held-out diffusion loss with caption {mar.get('held_out/t2i', float('nan')):.4f} vs unconditional "
        f"{mar.get('held_out/unconditional', float('nan')):.4f}; generations from held-out dense captions parsed "
        f"with exactly the caption's objects: {pct(mar, 'generated/exact_objects')}, right object count: "
        f"{pct(mar, 'generated/count_match')} |",
    ]
    if "sampling" in summary:
        after = summary["sampling"]
        lines += [
            "",
            "Sampled as exported, the chain leaves out the diffusion schedule's capped last step",
            "(`mar.skip_capped_step`; with it, the first step multiplies the head's epsilon error by 1,327 and",
            "samples blow up): generations from held-out dense captions then parse with exactly the caption's",
            f"objects {pct(after, 'generated/exact_objects')}, right object count {pct(after, 'generated/count_match')}.",
        ]
    lines += ["", f"Every logged row: `{METRICS_NAME}` and `{SUMMARY_NAME}` (this folder).", ""]
    return "\n".join(lines)


def write_asset_records(export: Path, out: Path, summary: dict[str, Any]) -> None:
    """The summary, every metrics row and the README beside the exported model."""
    atomic_write_text(export / SUMMARY_NAME, json.dumps(summary, indent=1) + "\n")
    atomic_write_text(export / METRICS_NAME, (out / "metrics.jsonl").read_text(encoding="utf-8"))
    atomic_write_text(export / "README.md", asset_readme(summary))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    started_run = pretrain_common.start_run(Path(argv[0]), argv[1:], HarmonBaseConfig)
    if started_run is None:
        return 2
    cfg, out = started_run
    adapter = build_shapeworld_harmon(cfg.seed, Path(cfg.autoencoder) if cfg.autoencoder else None)
    adapter = adapter.to(cfg.device)
    started = time.perf_counter()
    held_out = [scene_id(HELD_OUT_STREAM, i) for i in range(cfg.round_trip_scenes)]
    vae_row = {"stage": "autoencoder (frozen)", **round_trip_exactness(adapter, held_out)}
    print(json.dumps(vae_row), flush=True)
    mar_row = train_mar(adapter, cfg, out)
    adapter.save_pretrained(Path(cfg.export_dir))
    summary = {
        "command": "python -m trainers.pretrain_shapeworld_harmon " + " ".join(argv),
        "vae": vae_row,
        "mar": mar_row,
        "wall_s": round(time.perf_counter() - started, 1),
        "threads": cfg.threads,
        "device": cfg.device,
        "export_dir": cfg.export_dir,
        "config": asdict(cfg),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    write_asset_records(Path(cfg.export_dir), out, summary)
    print(json.dumps({"wall_s": summary["wall_s"], "export_dir": cfg.export_dir}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
