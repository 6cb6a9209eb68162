"""Pre-train the ShapeWorld flow base (reca_eval/assets/shapeworld-flow-base) from scratch, on CPU.

    python -m trainers.pretrain_shapeworld_flow trainers/recipes/shapeworld_flow_base.yaml [key=value ...]

Two stages, one plain loop each (nanoGPT-style):

1. DC-AE: the autoencoder trained on rendered scenes (MSE + L1 + a palette cross-entropy: each decoded
   pixel's distance to every palette colour as logits, so the nearest colour, which is what the parser
   reads, is the right one by a margin; with a little noise on the latents so the decoder also draws
   clean palette images from the DiT's imperfect latents), then frozen, its
   ``scaling_factor`` set to 1 / std of the latents (flow matching wants unit-scale targets). The
   round trip is measured the way the benchmarks see images: encode -> decode -> PNG-exact uint8 ->
   the exact parser (``reca_eval.shapeworld.parse``); ``held_out/exact_scenes`` is the fraction of held-out
   scenes parsed back exactly (every object's shape, colour, size, style and box; the background; no
   noise components).
2. Queries + connector + DiT on text->image: captions of training scenes (dense or sparse, drawn per
   example), condition dropout for CFG, the VLM frozen and *random* (see below). Logged on a fixed
   held-out batch: the flow loss with the caption and with the empty condition, at the same noise
   and timesteps; their gap is what the DiT reads from the VLM. At the end, images generated from
   held-out dense captions are parsed: how many match the caption's objects exactly.

The VLM stays randomly initialised and frozen: its word embeddings are distinct per word and the
learnable queries sit in its input, so they learn what to attend to through its frozen attention;
whether that carries the caption is measured (the conditional gap and the parsed generations), not
assumed.

Scene streams: 1 (autoencoder pool), 2 (text->image), 3 (held out), as the Janus base; the arms'
streams start at ``reca_eval.experiments.arms.STREAM_OFFSET``. Writes ``metrics.jsonl`` and ``summary.json``
under ``output_dir``, exports the model to ``export_dir`` with ``save_pretrained`` and writes
``pretrain_summary.json`` beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from reca_eval.core.records import atomic_write_text
from reca_eval.models.flow.adapter import FlowAdapter
from reca_eval.models.flow.shapeworld import build_shapeworld_flow
from reca_eval.models.janus.shapeworld import RESOLUTION, world_scene
from reca_eval.models.protocol import Condition, SamplingConfig
from reca_eval.shapeworld.captions import caption
from reca_eval.shapeworld.palette import PALETTE_RGB
from reca_eval.shapeworld.parse import parse_image
from reca_eval.shapeworld.render import render_array
from trainers import pretrain_common
from trainers.pretrain_common import append_jsonl, round_trip, scene_id

AE_STREAM, TRAIN_STREAM, HELD_OUT_STREAM = 1, 2, 3  # disjoint scene streams (see world_source)
SUMMARY_NAME = "pretrain_summary.json"
METRICS_NAME = "pretrain_metrics.jsonl"


@dataclass
class AutoencoderConfig:
    steps: int = 3000
    batch_size: int = 32
    lr: float = 2e-3
    min_lr: float = 5e-5
    pool: int = 20000  # training scenes rendered once
    latent_noise: float = 0.05  # std of noise added to latents before decoding, relative to their std
    palette_weight: float = 0.1  # weight of the palette cross-entropy
    palette_temperature: float = 0.02  # squared-distance scale of its logits (pixels in [-1, 1])
    eval_every: int = 250
    eval_scenes: int = 200
    max_minutes: float = 0.0  # wall-clock cap (0 = none): the cosine schedule is re-planned to fit it


@dataclass
class DiTConfig:
    steps: int = 6000
    batch_size: int = 32
    lr: float = 1e-3
    min_lr: float = 5e-5
    warmup_steps: int = 100
    weight_decay: float = 0.01
    condition_dropout: float = 0.1
    dense_fraction: float = 0.5  # captions: dense with this probability, else sparse
    eval_every: int = 250
    eval_scenes: int = 64
    generate_scenes: int = 64  # parsed generations at the end
    guidance_scale: float = 3.0
    max_minutes: float = 0.0


@dataclass
class FlowBaseConfig:
    seed: int = 0
    threads: int = 1
    device: str = "cpu"
    output_dir: str = "results/pretrain/shapeworld-flow-base"
    export_dir: str = "reca_eval/assets/shapeworld-flow-base"
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)


def load_config(path: Path, overrides: list[str]) -> FlowBaseConfig:
    return pretrain_common.load_config(path, overrides, FlowBaseConfig)


# ------------------------------------------------------------------------------------------- data
def render_pixels(ids: list[int]) -> torch.Tensor:
    """Renders of ``world_scene(i)`` for each id, in [-1, 1]: (B, 3, R, R)."""
    arrays = np.stack([render_array(world_scene(i), RESOLUTION) for i in ids])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def cosine_lr(step: int, steps: int, lr: float, min_lr: float, warmup: int = 0) -> float:
    warm = min(1.0, step / warmup) if warmup else 1.0
    return warm * (min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / steps))))


def fit_steps(planned: int, done: int, elapsed: float, max_minutes: float, name: str) -> int:
    """Steps that fit a wall-clock cap at the speed so far (with 15% headroom for evaluations)."""
    if not max_minutes:
        return planned
    per_step = elapsed / done
    fit = done + int((max_minutes * 60 - elapsed) / (per_step * 1.15))
    if fit < planned:
        print(
            f"{name}: {per_step:.3f} s/step; planned steps {planned} -> {fit} to fit {max_minutes} min",
            flush=True,
        )
        return max(fit, done)
    return planned


# --------------------------------------------------------------------------- stage 1: autoencoder
def round_trip_exactness(adapter: FlowAdapter, ids: list[int]) -> dict[str, float]:
    """The VAE round trip of held-out scenes ``ids`` (:func:`trainers.pretrain_common.round_trip`)."""
    check = round_trip(adapter, render_pixels(ids).to(adapter.device), [world_scene(i) for i in ids])
    return {"held_out/exact_scenes": check["exact_scenes"], "held_out/pixel_close": check["pixel_close"]}


def palette_logits(pixels: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, P, H, W): minus the squared distance of each pixel (in [-1, 1]) to each palette colour."""
    palette = torch.from_numpy(PALETTE_RGB).float().to(pixels.device) / 127.5 - 1.0  # (P, 3)
    distance = ((pixels[:, None] - palette[None, :, :, None, None]) ** 2).sum(dim=2)
    return -distance / temperature


def train_palette_autoencoder(
    adapter: Any,
    vae: torch.nn.Module,
    ac: AutoencoderConfig,
    seed: int,
    out: Path,
    *,
    stage: str,
    encode: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[dict[str, Any], float]:
    """The image autoencoder stage both ShapeWorld bases share: MSE + L1 + palette cross-entropy on a
    pool of renders, noise on the latents before decoding, the held-out round trip measured with the
    exact parser every ``eval_every`` steps. ``encode`` maps pixels to latents (the family's posterior
    read). Returns the last metrics row and the std of the trained latents (their scale)."""
    pool = render_pixels([scene_id(AE_STREAM, i) for i in range(ac.pool)])
    # Renders are palette-exact, so the nearest colour is the pixel's own.
    pool_palette = torch.cat(
        [palette_logits(pool[i : i + 512], 1.0).argmax(1) for i in range(0, pool.shape[0], 512)]
    )
    held_out = [scene_id(HELD_OUT_STREAM, i) for i in range(ac.eval_scenes)]
    vae.requires_grad_(True)
    opt = torch.optim.Adam(vae.parameters(), lr=ac.lr)
    gen = torch.Generator().manual_seed(seed)
    started, row, step, steps = time.perf_counter(), {}, 0, ac.steps
    while step < steps:
        step += 1
        if step == 21:
            steps = fit_steps(steps, 20, time.perf_counter() - started, ac.max_minutes, stage)
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, ac.lr, ac.min_lr)
        pick = torch.randint(0, pool.shape[0], (ac.batch_size,), generator=gen)
        x, colours = pool[pick].to(adapter.device), pool_palette[pick].to(adapter.device)
        vae.train()
        latents = encode(x)
        noisy = latents + ac.latent_noise * latents.detach().std() * torch.randn_like(latents)
        recon = vae.decode(noisy).sample
        palette_ce = F.cross_entropy(palette_logits(recon, ac.palette_temperature), colours)
        loss = F.mse_loss(recon, x) + F.l1_loss(recon, x) + ac.palette_weight * palette_ce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % ac.eval_every == 0 or step == steps:
            vae.eval()
            row = {"stage": stage, "step": step, "loss/recon": float(loss.detach())}
            row.update(round_trip_exactness(adapter, held_out))
            row["elapsed_s"] = round(time.perf_counter() - started, 1)
            append_jsonl(out / "metrics.jsonl", row)
            print(json.dumps(row), flush=True)
    vae.requires_grad_(False).eval()
    with torch.no_grad():
        std = float(encode(pool[: 8 * ac.batch_size].to(adapter.device)).std())
    row["latent_std"] = std
    row["steps_planned"] = steps
    return row, std


def train_autoencoder(adapter: FlowAdapter, cfg: FlowBaseConfig, out: Path) -> dict[str, Any]:
    vae = adapter.vae
    row, std = train_palette_autoencoder(
        adapter,
        vae,
        cfg.autoencoder,
        cfg.seed,
        out,
        stage="autoencoder",
        encode=lambda x: vae.encode(x).latent,
    )
    # Unit-scale targets for flow matching; generation_targets / decode_images read it from the config.
    vae.register_to_config(scaling_factor=1.0 / std)
    return row


def caption_batch(ids: list[int], rngs: list[random.Random], dense_fraction: float) -> list[str]:
    return [
        caption(world_scene(i), "dense" if r.random() < dense_fraction else "sparse", i)
        for i, r in zip(ids, rngs, strict=True)
    ]


@torch.no_grad()
def held_out_losses(adapter: FlowAdapter, latents: torch.Tensor, captions: list[str]) -> dict[str, float]:
    """Flow loss on a fixed held-out batch with its captions and with the empty condition (same noise
    and timesteps): the gap is what the DiT takes from the VLM's reading of the caption."""
    out = {}
    for name, conditions in (
        ("t2i", [Condition.text(c) for c in captions]),
        ("unconditional", [Condition([])] * len(captions)),
    ):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1234)
            out[f"held_out/{name}"] = float(adapter.generation_loss(conditions, latents))
    out["held_out/gap"] = out["held_out/unconditional"] - out["held_out/t2i"]
    return out


@torch.no_grad()
def parsed_generations(adapter: FlowAdapter, count: int, guidance: float) -> dict[str, float]:
    """Images from held-out dense captions, parsed: exact scenes (every object and the background, boxes
    aside: positions are only relative in a caption), and matching object counts."""
    ids = [scene_id(HELD_OUT_STREAM, 10_000 + i) for i in range(count)]
    scenes = [world_scene(i) for i in ids]
    conditions = [
        Condition.text(caption(s, "dense", i, hide_uncaptioned=False))
        for s, i in zip(scenes, ids, strict=True)
    ]
    images = adapter.generate(conditions, SamplingConfig(guidance_scale=guidance, seed=0))
    objects = count_ok = 0
    for scene, image in zip(scenes, images, strict=True):
        parsed = parse_image(image)
        want = sorted(o.attributes() for o in scene.objects)
        got = sorted(o.attributes() for o in parsed.objects)
        objects += want == got and parsed.background == scene.background
        count_ok += len(want) == len(got)
    return {"generated/exact_objects": objects / count, "generated/count_match": count_ok / count}


def train_dit(adapter: FlowAdapter, cfg: FlowBaseConfig, out: Path) -> dict[str, Any]:
    dc = cfg.dit
    params = [
        *adapter.queries.parameters(),
        *adapter.connector.parameters(),
        *adapter.transformer.parameters(),
    ]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=dc.lr, weight_decay=dc.weight_decay, betas=(0.9, 0.98))
    held_ids = [scene_id(HELD_OUT_STREAM, i) for i in range(dc.eval_scenes)]
    held_latents = adapter.generation_targets(render_pixels(held_ids).to(adapter.device))
    held_captions = caption_batch(held_ids, [random.Random(i) for i in held_ids], dc.dense_fraction)
    started, row, step, steps = time.perf_counter(), {}, 0, dc.steps
    sums: dict[str, float] = {}
    while step < steps:
        step += 1
        if step == 21:
            steps = fit_steps(steps, 20, time.perf_counter() - started, dc.max_minutes, "dit")
        lr = cosine_lr(step, steps, dc.lr, dc.min_lr, dc.warmup_steps)
        for g in opt.param_groups:
            g["lr"] = lr
        ids = [scene_id(TRAIN_STREAM, (step - 1) * dc.batch_size + i) for i in range(dc.batch_size)]
        rngs = [random.Random(f"{cfg.seed}:{i}") for i in ids]
        captions = caption_batch(ids, rngs, dc.dense_fraction)
        conditions = [
            Condition([]) if r.random() < dc.condition_dropout else Condition.text(c)
            for r, c in zip(rngs, captions, strict=True)
        ]
        latents = adapter.generation_targets(render_pixels(ids).to(adapter.device))
        adapter.train()
        loss = adapter.generation_loss(conditions, latents)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sums["loss/t2i"] = sums.get("loss/t2i", 0.0) + float(loss.detach())
        sums["n"] = sums.get("n", 0) + 1
        if step % dc.eval_every == 0 or step == steps:
            adapter.eval()
            row = {"stage": "dit", "step": step, "lr": lr, "loss/t2i": sums["loss/t2i"] / sums["n"]}
            sums = {}
            row.update(held_out_losses(adapter, held_latents, held_captions))
            row["elapsed_s"] = round(time.perf_counter() - started, 1)
            row["s_per_step"] = round(row["elapsed_s"] / step, 3)
            append_jsonl(out / "metrics.jsonl", row)
            print(json.dumps(row), flush=True)
    adapter.eval()
    row.update(parsed_generations(adapter, dc.generate_scenes, dc.guidance_scale))
    row["steps_planned"] = steps
    append_jsonl(out / "metrics.jsonl", {**row, "stage": "dit-final"})
    print(json.dumps(row), flush=True)
    return row


def asset_readme(summary: dict[str, Any]) -> str:
    """The shipped base's README: what it is, the command that made it, and its measured figures."""
    ae, dit = summary["autoencoder"], summary.get("dit", {})
    pct = pretrain_common.percent
    lines = [
        *pretrain_common.asset_readme_head(
            "shapeworld-flow-base",
            [
                "The ShapeWorld flow-matching base (OpenUni / MetaQuery pattern): a frozen Qwen2.5-VL (word",
                "tokenizer over the ShapeWorld vocabulary, randomly initialised and never trained), 16 learnable",
                "queries, a one-layer connector, a Sana DiT on 8x8x8 DC-AE latents of 32-px images. Load it with",
                "`reca_eval.models.loading.load_unified_model(path)` (family `flow`). Built by",
            ],
            summary,
        ),
        f"| DC-AE autoencoder | {ae.get('step', '?')} | recon loss {ae.get('loss/recon', float('nan')):.4f}; "
        f"VAE round trip parsed back exactly: {pct(ae, 'held_out/exact_scenes')} of "
        f"{summary['config']['autoencoder']['eval_scenes']} held-out scenes; pixels within 40/255: "
        f"{pct(ae, 'held_out/pixel_close')} |",
    ]
    if dit:
        lines.append(
            f"| queries + connector + DiT, text->image | {dit.get('step', '?')} | train loss "
            f"{dit.get('loss/t2i', float('nan')):.4f}; held-out flow loss with caption "
            f"{dit.get('held_out/t2i', float('nan')):.4f} vs empty condition "
            f"{dit.get('held_out/unconditional', float('nan')):.4f}; generations from held-out dense captions "
            f"parsed with exactly the caption's objects: {pct(dit, 'generated/exact_objects')}, "
            f"right object count: {pct(dit, 'generated/count_match')} |"
        )
    if "held_out/gap" in dit and dit.get("held_out/unconditional"):
        share = 100 * dit["held_out/gap"] / dit["held_out/unconditional"]
        lines += [
            "",
            f"The caption lowers the held-out flow loss by {share:.1f}% of the unconditional loss: what the DiT",
            "reads from the frozen VLM's view of a caption. The base never sees an image condition; RecA",
            "(reconstruction from the VLM's view of the image) is where the family learns one.",
        ]
    lines += ["", f"Every logged row: `{METRICS_NAME}` and `{SUMMARY_NAME}` (this folder).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainers.pretrain_shapeworld_flow", description=__doc__.split("\n")[0]
    )
    parser.add_argument("config", type=Path)
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. dit.steps=100")
    parser.add_argument("--resume", action="store_true", help="reuse a finished autoencoder stage")
    args = parser.parse_intermixed_args(argv)
    run = pretrain_common.start_run(args.config, args.overrides, FlowBaseConfig)
    if run is None:
        return 2
    cfg, out = run
    adapter = build_shapeworld_flow(seed=cfg.seed).to(cfg.device)
    ae_file = out / "autoencoder_stage.pt"
    started = time.perf_counter()
    if args.resume and ae_file.exists():
        state = torch.load(ae_file, map_location=cfg.device)
        adapter.vae.load_state_dict(state["weights"])
        adapter.vae.register_to_config(scaling_factor=state["scaling_factor"])
        ae_row: dict[str, Any] = {"resumed": str(ae_file), **state["row"]}
    else:
        ae_row = train_autoencoder(adapter, cfg, out)
        tmp = ae_file.with_suffix(".tmp")
        state = {
            "weights": adapter.vae.state_dict(),
            "scaling_factor": adapter.vae.config.scaling_factor,
            "row": ae_row,
        }
        torch.save(state, tmp)
        tmp.replace(ae_file)
    ae_seconds = time.perf_counter() - started
    dit_row = train_dit(adapter, cfg, out) if cfg.dit.steps > 0 else {}
    export = Path(cfg.export_dir)
    adapter.save_pretrained(export)
    summary = {
        "command": "python -m trainers.pretrain_shapeworld_flow "
        + " ".join(map(str, [args.config, *args.overrides])),
        "vlm": "randomly initialised, frozen (not pre-trained)",
        "autoencoder": ae_row,
        "dit": dit_row,
        "autoencoder_s": round(ae_seconds, 1),
        "wall_s": round(time.perf_counter() - started, 1),
        "threads": cfg.threads,
        "device": cfg.device,
        "config": asdict(cfg),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(export / SUMMARY_NAME, json.dumps(summary, indent=1) + "\n")
    atomic_write_text(export / METRICS_NAME, (out / "metrics.jsonl").read_text(encoding="utf-8"))
    atomic_write_text(export / "README.md", asset_readme(summary))
    print(json.dumps({"export_dir": str(export), "wall_s": summary["wall_s"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
