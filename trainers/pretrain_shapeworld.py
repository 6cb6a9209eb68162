"""Pre-train the ShapeWorld base model (reca_eval/assets/shapeworld-base) from scratch (GPU or CPU).

    python -m trainers.pretrain_shapeworld trainers/recipes/shapeworld_base.yaml [key=value ...]

Two stages, one plain loop each (nanoGPT-style; the generic trainer's sources cannot give one step the
image, its dense caption and its sparse caption of the same scene, which the alignment term needs):

1. VQ tokenizer: Janus's VQ-VAE trained as an autoencoder on rendered scenes (MSE + L1), then frozen.
   Each candidate codebook size (``vq.codebook_sizes``) trains in its own process on the same pool;
   the one whose held-out round trip (``encode`` -> ``decode`` -> the exact parser) keeps the most
   scenes exact is kept (``vq_sweep.json``). Codes are kept on the unit sphere because Janus's
   ``decode`` L2-normalises codebook entries; with unit-norm codes the quantizer's own nearest-code
   rule (used by ``encode``) picks the same code as cosine similarity, so ``encode`` -> ``decode`` at
   inference equals what was trained. Dead codes restart.
2. Everything but the VQ: image->text on dense captions (vision, aligner, trunk, lm head),
   text->image on sparse captions with condition dropout (trunk, generation heads), and alignment of
   the trunk itself: the pooled hidden states (``condition_hidden_states``) of an image prompt
   (instruction + the image's understanding embeddings) and of the dense-caption prompt of the same
   scene, at ``align_layers``, with a symmetric InfoNCE (ranking) plus an MSE (same coordinates,
   no modality offset for a linear probe to trip on). Both sides get gradients.

Writes ``metrics.jsonl`` (one line per ``log_every`` steps, with a held-out cross-modal probe at each
checkpoint), ``joint_checkpoint.pt`` + ``latest_export/`` at each checkpoint (``--resume`` continues,
and with a larger ``joint.steps`` extends a finished run), and exports the final model to
``export_dir`` with ``save_pretrained``. ``--init-from EXPORT`` skips stage 1 and trains the joint stage
from an exported model (e.g. the shipped base) with a fresh optimizer and schedule: how a base is
trained further where the run that made it (and its checkpoints) is gone.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from reca_eval.core.records import atomic_write_text
from reca_eval.models.instructions import sample_instruction
from reca_eval.models.janus.adapter import JanusAdapter
from reca_eval.models.janus.shapeworld import CODEBOOK_SIZE, RESOLUTION, build_shapeworld_model, world_scene
from reca_eval.models.protocol import Condition, ImageEmbeds
from reca_eval.shapeworld.captions import caption
from reca_eval.shapeworld.render import render_array
from trainers import pretrain_common
from trainers.pretrain_common import STREAM_SCENES, append_jsonl, round_trip, scene_id

VQ_STREAM, TRAIN_STREAM, HELD_OUT_STREAM = 1, 2, 3  # disjoint scene streams (see world_source)


@dataclass
class VQConfig:
    steps: int = 2500
    batch_size: int = 64
    lr: float = 2e-3
    pool: int = 20000
    restart_every: int = 100
    # Candidate codebook sizes, each trained side by side (one process each) on the same pool; the one
    # whose held-out round trip (encode -> decode -> exact parser) keeps the most scenes exact is kept,
    # the smaller on a tie. One entry = no sweep.
    codebook_sizes: list[int] = field(default_factory=lambda: [CODEBOOK_SIZE])
    l1_weight: float = 1.0  # L1 beside MSE: sharper edges, so pixels land nearer their palette colour
    eval_every: int = 500
    eval_scenes: int = 200  # held-out scenes (stream 3) of the round-trip check
    max_minutes: float = (
        0.0  # wall-clock cap per candidate (0 = none): shrinks the planned steps, as in joint
    )


@dataclass
class JointConfig:
    steps: int = 2400
    batch_size: int = 16
    lr: float = 2e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    condition_dropout: float = 0.1
    align_weight: float = 1.0
    align_layers: list[int] = field(default_factory=lambda: [2, -1])
    align_temperature: float = 0.1
    align_mse_weight: float = 1.0
    log_every: int = 25
    checkpoint_every: int = 200
    eval_scenes: int = 256
    data_workers: int = 0  # processes rendering batches ahead of the GPU (0 = in the training loop)
    # Index in the training stream of batch 0's first scene. A run that continues a base (--init-from)
    # starts past the scenes that base saw, so every batch is still unseen and the training loss stays
    # a held-out loss.
    first_scene: int = 0
    # Stop after this step (0 = run to ``steps``) with the schedule still planned over ``steps``: replays
    # a run that was interrupted part-way (the shipped base's second command; see shapeworld_base.sh).
    stop_at: int = 0
    # Wall-clock cap (0 = none): after 20 steps the planned step count shrinks to fit it, so the cosine
    # schedule still ends at min_lr; the summary records the steps actually planned and run.
    max_minutes: float = 0.0


@dataclass
class DecoderConfig:
    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    max_minutes: float = 0.0  # wall-clock cap (0 = none); the summary records the steps run


@dataclass
class BaseConfig:
    seed: int = 0
    threads: int = 2
    device: str = "cpu"
    output_dir: str = "results/pretrain/shapeworld-base"
    export_dir: str = "reca_eval/assets/shapeworld-base"
    vq: VQConfig = field(default_factory=VQConfig)
    joint: JointConfig = field(default_factory=JointConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)


def load_config(path: Path, overrides: list[str]) -> BaseConfig:
    return pretrain_common.load_config(path, overrides, BaseConfig)


# ------------------------------------------------------------------------------------------- data
def scene_ids(stream: int, start: int, count: int) -> range:
    return range(scene_id(stream, start), scene_id(stream, start + count))


def scene_batch(stream: int, start: int, count: int) -> tuple[torch.Tensor, list[str], list[str]]:
    """Pixels in [-1, 1] (B, 3, R, R), dense and sparse captions of scenes ``start..start+count``."""
    pixels, dense, sparse = [], [], []
    for sid in scene_ids(stream, start, count):
        scene = world_scene(sid)
        pixels.append(render_array(scene, RESOLUTION))
        dense.append(caption(scene, "dense", sid))
        sparse.append(caption(scene, "sparse", sid))
    x = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x, dense, sparse


def _pixels(args: tuple[int, int, int]) -> torch.Tensor:
    return scene_batch(*args)[0]


def render_pool(stream: int, count: int, workers: int, chunk: int = 500) -> torch.Tensor:
    """``count`` scenes of ``stream`` as pixels, rendered by ``workers`` processes (same result as one)."""
    jobs = [(stream, start, min(chunk, count - start)) for start in range(0, count, chunk)]
    if workers <= 1 or len(jobs) == 1:
        return torch.cat([_pixels(job) for job in jobs])
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(min(workers, len(jobs))) as pool:
        return torch.cat(pool.map(_pixels, jobs))


class JointBatches(torch.utils.data.Dataset):
    """Batch ``i`` of the joint stage is scenes ``first + i*B .. first + i*B+B-1`` of the training stream,
    whoever renders it: data workers change the speed, never the data."""

    def __init__(self, batch_size: int, steps: int, first_scene: int = 0) -> None:
        self.batch_size, self.steps, self.first_scene = batch_size, steps, first_scene
        if first_scene + steps * batch_size > STREAM_SCENES:  # would run into the held-out stream
            raise ValueError(
                f"joint.first_scene {first_scene} + joint.steps {steps} x joint.batch_size {batch_size} "
                f"passes the {STREAM_SCENES:,} scenes of the training stream"
            )

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> tuple[torch.Tensor, list[str], list[str]]:
        return scene_batch(TRAIN_STREAM, self.first_scene + index * self.batch_size, self.batch_size)


def _single(batch: list):
    return batch[0]


def _one_thread(_worker: int) -> None:
    torch.set_num_threads(1)  # workers only render; torch threads there would fight the trainer's


# Wall-clock caps: the step time is measured over steps FIT_WARMUP..FIT_AFTER (start-up excluded), then
# the planned step count shrinks so the stage ends inside its cap with its cosine schedule complete.
FIT_WARMUP, FIT_AFTER = 10, 40


def planned_steps(
    planned: int, done: int, elapsed_s: float, per_step_s: float, minutes: float, stage: str
) -> int:
    """Steps that fit ``minutes`` in all, given ``done`` steps in ``elapsed_s`` and ``per_step_s`` from now
    on (10% kept for evaluations); never fewer than ``done + 1``, never more than ``planned``."""
    fit = done + int((minutes * 60 - elapsed_s) / (per_step_s * 1.1))
    fit = max(done + 1, min(planned, fit))
    if fit < planned:
        print(
            f"{stage}: {per_step_s:.4f} s/step; planned steps {planned} -> {fit} to fit {minutes} min",
            flush=True,
        )
    return fit


# -------------------------------------------------------------------------------------- stage 1: VQ
def vq_forward(vqmodel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reconstruction, VQ loss and code ids, with unit-norm codes and a straight-through estimator."""
    h = F.normalize(vqmodel.quant_conv(vqmodel.encoder(x)), dim=1)  # (B, D, g, g)
    codebook = vqmodel.quantize.embedding.weight
    flat = h.permute(0, 2, 3, 1).reshape(-1, h.shape[1])
    ids = (flat @ codebook.t()).argmax(-1)
    q = codebook[ids].view(h.shape[0], h.shape[2], h.shape[3], -1).permute(0, 3, 1, 2)
    vq_loss = F.mse_loss(q, h.detach()) + 0.25 * F.mse_loss(h, q.detach())
    q_st = h + (q - h).detach()
    recon = vqmodel.decoder(vqmodel.post_quant_conv(q_st))
    return recon, vq_loss, ids


def vq_round_trip(adapter: JanusAdapter, x: torch.Tensor, scenes: list) -> dict[str, float]:
    """The VQ round trip (:func:`trainers.pretrain_common.round_trip`) under this stage's metric names."""
    check = round_trip(adapter, x.to(adapter.device), scenes)
    return {
        "pixel_acc": check["pixel_close"],
        "exact_pixels": check["exact_images"],
        "exact_parse": check["exact_scenes"],
    }


def held_out_scenes(count: int) -> tuple[torch.Tensor, list]:
    x, _, _ = scene_batch(HELD_OUT_STREAM, 0, count)
    return x, [world_scene(i) for i in scene_ids(HELD_OUT_STREAM, 0, count)]


def train_vq(adapter: JanusAdapter, cfg: BaseConfig, out: Path, pool: torch.Tensor) -> dict[str, Any]:
    """Train the VQ tokenizer of ``adapter`` on ``pool``; logs to ``out/metrics.jsonl``, returns the last row."""
    vc = cfg.vq
    vqmodel = adapter.model.model.vqmodel
    size = vqmodel.quantize.num_embeddings
    held_out, scenes = held_out_scenes(vc.eval_scenes)
    with torch.no_grad():
        vqmodel.quantize.embedding.weight.copy_(F.normalize(vqmodel.quantize.embedding.weight, dim=-1))
    params = [p for n, p in vqmodel.named_parameters()]
    opt = torch.optim.Adam(params, lr=vc.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    usage = torch.zeros(size, device=adapter.device)
    pool = pool.to(adapter.device)
    vqmodel.train()
    started, row = time.perf_counter(), {}
    steps, step, warm_clock = vc.steps, 0, 0.0
    while step < steps:
        step += 1
        if step == FIT_WARMUP + 1:
            warm_clock = time.perf_counter() - started
        if vc.max_minutes and step == FIT_AFTER + 1:
            clock = time.perf_counter() - started
            steps = planned_steps(
                steps,
                step - 1,
                clock,
                (clock - warm_clock) / (FIT_AFTER - FIT_WARMUP),
                vc.max_minutes,
                f"vq {size}",
            )
        lr = vc.lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        for g in opt.param_groups:
            g["lr"] = lr
        x = pool[torch.randint(0, pool.shape[0], (vc.batch_size,), generator=gen).to(pool.device)]
        recon, vq_loss, ids = vq_forward(vqmodel, x)
        rec_loss = F.mse_loss(recon, x)
        loss = rec_loss + vc.l1_weight * F.l1_loss(recon, x) + vq_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            cb = vqmodel.quantize.embedding.weight
            cb.copy_(F.normalize(cb, dim=-1))
            usage += torch.bincount(ids, minlength=usage.numel()).float()
            if step % vc.restart_every == 0 and step < 0.8 * steps:
                dead = (usage == 0).nonzero().flatten()
                if dead.numel():
                    # Restart unused codes at encoder outputs of this batch: keeps the codebook in use.
                    h = F.normalize(vqmodel.quant_conv(vqmodel.encoder(x)), dim=1)
                    flat = h.permute(0, 2, 3, 1).reshape(-1, h.shape[1])
                    pick = torch.randint(0, flat.shape[0], (dead.numel(),), generator=gen).to(flat.device)
                    cb[dead] = F.normalize(flat[pick] + 0.01 * torch.randn_like(flat[pick]), dim=-1)
                usage.zero_()
        if step % vc.eval_every == 0 or step == steps:
            vqmodel.eval()
            check = vq_round_trip(adapter, held_out, scenes)
            vqmodel.train()
            row = {
                "stage": "vq",
                "codebook_size": size,
                "step": step,
                "steps_planned": steps,
                "loss/recon": float(rec_loss.detach()),
                "loss/vq": float(vq_loss.detach()),
                "codes_used": int((torch.bincount(ids, minlength=usage.numel()) > 0).sum()),
                **{f"held_out/{k}": v for k, v in check.items()},
                "elapsed_s": round(time.perf_counter() - started, 1),
            }
            append_jsonl(out / "metrics.jsonl", row)
            print(json.dumps(row), flush=True)
    vqmodel.eval()
    return row


def vq_candidate(cfg: BaseConfig, size: int, out: Path, pool_file: Path) -> dict[str, Any]:
    """Train one codebook size's VQ (in its own process during a sweep); saves ``vq_<size>.pt``."""
    torch.set_num_threads(max(1, cfg.threads // max(1, len(cfg.vq.codebook_sizes))))
    torch.manual_seed(cfg.seed)
    model, processor = build_shapeworld_model(seed=cfg.seed, codebook_size=size)
    adapter = JanusAdapter(model.to(cfg.device), processor)
    row = train_vq(adapter, cfg, out, torch.load(pool_file))
    tmp = out / f"vq_{size}.tmp"
    torch.save(model.model.vqmodel.state_dict(), tmp)
    tmp.replace(out / f"vq_{size}.pt")
    return row


def best_candidate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Most held-out scenes exact after the round trip; then most exact pixels; then the smaller codebook."""
    return max(
        rows,
        key=lambda r: (r["held_out/exact_parse"], r["held_out/exact_pixels"], -r["codebook_size"]),
    )


def vq_sweep(cfg: BaseConfig, out: Path) -> dict[str, Any]:
    """Train every candidate codebook size (in parallel when there are several) and pick one."""
    pool_file = out / "vq_pool.pt"
    if not pool_file.exists():
        tmp = pool_file.with_suffix(".tmp")
        torch.save(render_pool(VQ_STREAM, cfg.vq.pool, cfg.threads), tmp)
        tmp.replace(pool_file)
    sizes = list(cfg.vq.codebook_sizes)
    if len(sizes) == 1:
        rows = [vq_candidate(cfg, sizes[0], out, pool_file)]
    else:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        # spawn: CUDA cannot be re-initialised in a forked child.
        with ProcessPoolExecutor(len(sizes), mp_context=get_context("spawn")) as ex:
            rows = list(
                ex.map(vq_candidate, [cfg] * len(sizes), sizes, [out] * len(sizes), [pool_file] * len(sizes))
            )
    chosen = best_candidate(rows)
    sweep = {"candidates": rows, "chosen": chosen["codebook_size"]}
    atomic_write_text(out / "vq_sweep.json", json.dumps(sweep, indent=1) + "\n")
    print(json.dumps({"vq_chosen": chosen}), flush=True)
    return chosen


# ------------------------------------------------------------------------------ stage 3: decoder
def refine_decoder(adapter: JanusAdapter, cfg: BaseConfig, out: Path) -> dict[str, Any]:
    """Sharpen the VQ decoder with the encoder and codebook frozen: the codes (what the trunk learned to
    generate) do not change, only how a code grid is drawn, so the trained trunk stays valid."""
    dc = cfg.decoder
    vqmodel = adapter.model.model.vqmodel
    vqmodel.requires_grad_(False)
    params = [*vqmodel.decoder.parameters(), *vqmodel.post_quant_conv.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=dc.lr)
    pool = render_pool(VQ_STREAM, cfg.vq.pool, cfg.threads).to(adapter.device)
    held_out, scenes = held_out_scenes(cfg.vq.eval_scenes)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    started, row = time.perf_counter(), {}
    for step in range(1, dc.steps + 1):
        x = pool[torch.randint(0, pool.shape[0], (dc.batch_size,), generator=gen).to(pool.device)]
        with torch.no_grad():
            codes = vqmodel.quantize.get_codebook_entry(adapter.generation_targets(x))
        vqmodel.decoder.train()
        recon = vqmodel.decoder(vqmodel.post_quant_conv(codes))
        loss = F.mse_loss(recon, x) + F.l1_loss(recon, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        timed_out = dc.max_minutes and time.perf_counter() - started > dc.max_minutes * 60
        if step % 200 == 0 or step == dc.steps or timed_out:
            vqmodel.eval()
            check = vq_round_trip(adapter, held_out, scenes)
            row = {
                "stage": "decoder",
                "step": step,
                "loss/recon": float(loss.detach()),
                **{f"held_out/{k}": v for k, v in check.items()},
                "elapsed_s": round(time.perf_counter() - started, 1),
            }
            append_jsonl(out / "metrics.jsonl", row)
            print(json.dumps(row), flush=True)
        if timed_out:
            break
    vqmodel.requires_grad_(False)
    vqmodel.eval()
    return row


# ----------------------------------------------------------------------------------- stage 2: joint
def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t() / temperature
    labels = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def alignment_loss(
    adapter: JanusAdapter,
    features: torch.Tensor,
    dense: list[str],
    jc: JointConfig,
    rngs: list[random.Random],
) -> torch.Tensor:
    text = [Condition.text(c) for c in dense]
    image = [Condition([sample_instruction(r), ImageEmbeds(f)]) for r, f in zip(rngs, features, strict=True)]
    total = features.new_zeros(())
    for layer in jc.align_layers:
        h_text = adapter.condition_hidden_states(text, layer=layer)
        h_image = adapter.condition_hidden_states(image, layer=layer)
        total = total + info_nce(h_image, h_text, jc.align_temperature)
        total = total + jc.align_mse_weight * F.mse_loss(h_image, h_text)
    return total / len(jc.align_layers)


@torch.no_grad()
def quick_probe(adapter: JanusAdapter, scenes: int) -> dict[str, float]:
    from reca_eval.diagnostics.alignment import diagnose_alignment

    report = diagnose_alignment(adapter, scenes=scenes, seed=HELD_OUT_STREAM)
    return {f"probe/{k}": v for k, v in report.summary().items()}


def joint_losses(
    adapter: JanusAdapter,
    x: torch.Tensor,
    dense: list[str],
    sparse: list[str],
    rngs: list[random.Random],
    jc: JointConfig,
) -> dict[str, torch.Tensor]:
    """The joint stage's three losses on one batch (pixels on the adapter's device), with gradients."""
    targets = adapter.generation_targets(x)
    features = adapter._image_features(x)  # with gradients: the base trains the encoder + aligner
    l_i2t = adapter.understanding_loss(x, dense)
    t2i_conditions = [
        Condition([]) if r.random() < jc.condition_dropout else Condition.text(c)
        for r, c in zip(rngs, sparse, strict=True)
    ]
    l_t2i = adapter.generation_loss(t2i_conditions, targets)
    l_align = alignment_loss(adapter, features, dense, jc, rngs) if jc.align_weight > 0 else l_t2i * 0
    return {"i2t": l_i2t, "t2i": l_t2i, "align": l_align}


def _last_step(jc: JointConfig) -> int:
    return min(jc.steps, jc.stop_at) if jc.stop_at else jc.steps


def train_joint(adapter: JanusAdapter, cfg: BaseConfig, out: Path, start_step: int = 0) -> dict[str, Any]:
    jc = cfg.joint
    model = adapter.model
    model.model.vqmodel.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=jc.lr, weight_decay=0.01, betas=(0.9, 0.98))
    ckpt = out / "joint_checkpoint.pt"
    if start_step and ckpt.exists():
        state = torch.load(ckpt, weights_only=False, map_location=adapter.device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
    adapter.train()
    model.model.vqmodel.eval()
    started = time.perf_counter()
    sums: dict[str, float] = {}
    row: dict[str, Any] = {}
    step = start_step
    warm_clock, last_log = 0.0, start_step
    batches = iter(
        torch.utils.data.DataLoader(
            torch.utils.data.Subset(
                JointBatches(jc.batch_size, jc.steps, jc.first_scene), range(start_step, jc.steps)
            ),
            batch_size=1,
            collate_fn=_single,
            num_workers=jc.data_workers,
            worker_init_fn=_one_thread,
            prefetch_factor=4 if jc.data_workers else None,
        )
    )
    while step < _last_step(jc):
        step += 1
        if jc.max_minutes and step == start_step + 1 + FIT_AFTER:
            clock = time.perf_counter() - started
            jc.steps = planned_steps(
                jc.steps,
                step - 1,
                clock,
                (clock - warm_clock) / (FIT_AFTER - FIT_WARMUP),
                jc.max_minutes,
                "joint",
            )
        if step == start_step + 1 + FIT_WARMUP:
            warm_clock = time.perf_counter() - started
        warm = step / max(1, jc.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, step / jc.steps)))
        lr = min(1.0, warm) * (jc.min_lr + (jc.lr - jc.min_lr) * cosine)
        for g in opt.param_groups:
            g["lr"] = lr
        waited = time.perf_counter()
        x, dense, sparse = next(batches)  # batch step-1 of the stream, rendered ahead by the workers
        sums["data_wait_s"] = sums.get("data_wait_s", 0.0) + time.perf_counter() - waited
        rngs = [random.Random(f"{cfg.seed}:{step}:{i}") for i in range(jc.batch_size)]
        losses = joint_losses(adapter, x.to(adapter.device), dense, sparse, rngs, jc)
        loss = losses["i2t"] + losses["t2i"] + jc.align_weight * losses["align"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        last = _last_step(jc)  # jc.steps may have shrunk to fit a cap
        if step % jc.log_every == 0 or step == last:
            n, last_log = step - last_log, step  # steps summed since the last row (a resume starts mid-way)
            row = {"stage": "joint", "step": step, "lr": lr}
            # Seconds per step spent waiting for the data workers: near s_per_step means rendering, not
            # the model, sets the pace (add data_workers); near 0 means the training step does.
            row["data_wait_s_per_step"] = round(sums.pop("data_wait_s", 0.0) / n, 4)
            row.update({f"loss/{k}": v / n for k, v in sums.items()})
            row["elapsed_s"] = round(time.perf_counter() - started, 1)
            row["s_per_step"] = round(row["elapsed_s"] / (step - start_step), 3)
            sums = {}
            if step % jc.checkpoint_every == 0 or step == last:
                adapter.eval()
                row.update(quick_probe(adapter, jc.eval_scenes))
                adapter.train()
                model.model.vqmodel.eval()
                tmp = ckpt.with_suffix(".tmp")
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step}, tmp)
                tmp.replace(ckpt)
                # A loadable model at every checkpoint (the resumable state above holds the optimizer too).
                adapter.save_pretrained(out / "latest_export")
            append_jsonl(out / "metrics.jsonl", row)
            print(json.dumps(row), flush=True)
    adapter.eval()
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainers.pretrain_shapeworld", description=__doc__.split("\n")[0]
    )
    parser.add_argument("config", type=Path)
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. joint.steps=100")
    parser.add_argument(
        "--resume", action="store_true", help="reuse a finished VQ stage and the joint checkpoint"
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="start the joint stage from this exported model (its VQ and every other weight; fresh "
        "optimizer and schedule) instead of training a VQ: continues a shipped base on another machine; "
        "with --resume, an interrupted run of this kind continues from its checkpoint",
    )
    parser.add_argument(
        "--decoder-only",
        type=Path,
        default=None,
        help="run only stage 3 on this exported model, writing export_dir",
    )
    args = parser.parse_intermixed_args(argv)
    run = pretrain_common.start_run(args.config, args.overrides, BaseConfig)
    if run is None:
        return 2
    cfg, out = run
    if args.decoder_only is not None:
        adapter = JanusAdapter.from_pretrained(args.decoder_only, device=cfg.device)
        adapter.model.model.vqmodel.quantize.embedding.weight.requires_grad_(False)
        row = refine_decoder(adapter, cfg, out)
        adapter.save_pretrained(Path(cfg.export_dir))
        print(json.dumps({"export_dir": cfg.export_dir, "decoder": row}))
        return 0
    started = time.perf_counter()
    sweep_file = out / "vq_sweep.json"
    start_step = 0
    ckpt = out / "joint_checkpoint.pt"
    if args.init_from is not None:
        if not (args.init_from / "config.json").is_file():
            print(
                f"error: --init-from {args.init_from}: no exported model (config.json) there", file=sys.stderr
            )
            return 2
        adapter = JanusAdapter.from_pretrained(args.init_from, device=cfg.device)
        vq_row: dict[str, Any] = {"init_from": str(args.init_from), "codebook_size": adapter.codebook_size}
        if args.resume and ckpt.exists():  # an interrupted --init-from run: its checkpoint wins
            start_step = int(torch.load(ckpt, weights_only=False)["step"])
    else:
        if args.resume and sweep_file.exists():
            vq_row = best_candidate(json.loads(sweep_file.read_text())["candidates"])
            vq_row["resumed"] = str(sweep_file)
        else:
            vq_row = vq_sweep(cfg, out)
        size = int(vq_row["codebook_size"])
        model, processor = build_shapeworld_model(seed=cfg.seed, codebook_size=size)
        model.model.vqmodel.load_state_dict(torch.load(out / f"vq_{size}.pt", map_location="cpu"))
        adapter = JanusAdapter(model.to(cfg.device), processor)
        if args.resume and ckpt.exists():
            start_step = int(torch.load(ckpt, weights_only=False)["step"])
    joint_row = train_joint(adapter, cfg, out, start_step)
    decoder_row = refine_decoder(adapter, cfg, out) if cfg.decoder.steps > 0 else {}
    adapter.save_pretrained(Path(cfg.export_dir))
    summary = {
        "vq": vq_row,
        "joint": joint_row,
        "decoder": decoder_row,
        "joint_steps_planned": cfg.joint.steps,
        "device": cfg.device,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    print(json.dumps({"export_dir": cfg.export_dir, **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
