"""The compact trainer: one plain training function for RecA / SFT / I2T on accelerate.

    recipe = load_recipe("trainers/recipes/reca.yaml", ["train.steps=200"])
    result = train(recipe, on_finish=score_checkpoint)

The same code runs on one CPU process, N GPUs (DDP), FSDP or DeepSpeed: launch it with
``accelerate launch [--config_file ...] -m reca_eval.training.loop RECIPE [key=value ...]`` (N CPU processes:
``torchrun --standalone --nproc_per_node N -m reca_eval.training.loop RECIPE``, gloo).

One optimizer step = ``grad_accum`` micro-steps; each micro-step reads one source (drawn by ratio) and
takes a global micro-batch of ``batch_size x num_processes`` items from it, each process its slice. So
the global batch, and the trajectory, do not depend on how many processes share it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import set_seed
from PIL import Image

from reca_eval.core.records import atomic_write_text
from reca_eval.models.protocol import UnifiedModel
from reca_eval.training.builders import encoder_modules
from reca_eval.training.cache import FrozenOutputCache, describe, module_fingerprint
from reca_eval.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from reca_eval.training.data import (
    Order,
    SkipCounter,
    build_sources,
    import_object,
    read_usable,
    source_for_step,
)
from reca_eval.training.objectives import TARGETS, UNDERSTANDING, FrozenEncoders, example_rng, objective_loss
from reca_eval.training.recipe import Recipe, RecipeError, load_recipe, recipe_to_yaml

log = logging.getLogger("reca_eval.trainer")

SUMMARY_FILE = "train_summary.json"
METRICS_FILE = "metrics.jsonl"
COPY_COLLAPSE_LABEL = "condition_on=vq_embeddings (copy/collapse ablation)"


class TrainingDiverged(RuntimeError):
    """The loss or gradient norm became NaN/inf; the message names the step and the last good checkpoint."""


@dataclass
class TrainResult:
    output_dir: Path
    final_dir: Path  # the exported model (native format, or a peft adapter)
    steps: int
    losses: list[float]  # one per optimizer step: mean over micro-steps and processes
    skipped: dict[str, str] = field(default_factory=dict)  # "source/item" -> reason
    cache: dict[str, int] = field(default_factory=dict)
    images_per_s: float = 0.0
    resumed_from: str = ""


def train(
    recipe: Recipe,
    *,
    model: torch.nn.Module | None = None,
    iterables: dict[str, Iterable[tuple[Image.Image, str]]] | None = None,
    on_finish: Callable[[Path], Any] | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train as the recipe says; ``resume`` continues from the newest checkpoint in the output folder.

    ``model`` overrides ``model.builder``; ``iterables`` supplies world/iterable sources by name. The run
    closes with ``on_finish(final_dir)`` on the main process.
    """
    tr, obj = recipe.train, recipe.objective
    out = Path(tr.output_dir)
    ckpt_root = out / "checkpoints"
    objectives = sorted({s.objective for s in recipe.data.sources})
    accelerator = Accelerator(
        gradient_accumulation_steps=tr.grad_accum,
        mixed_precision=resolve_mixed_precision(tr.mixed_precision),
        log_with="tensorboard" if tr.logger == "tensorboard" else None,
        project_dir=str(out),
        cpu=cpu_distributed(),
        # A micro-step of one objective leaves the other objectives' heads without gradients.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=len(objectives) > 1)],
    )
    main = accelerator.is_main_process
    set_seed(tr.seed)
    if obj.condition_on == "vq_embeddings" and main:
        log.warning(
            "training with %s: conditions are the generation tokenizer's own codes", COPY_COLLAPSE_LABEL
        )

    sources = build_sources(recipe.data.sources, iterables)  # fails here, before any model is built
    if model is None:
        model = build_model(recipe)
    unified = model
    prepare_trainable(unified, recipe)
    model = apply_lora(unified, recipe) if recipe.model.lora.enabled else unified
    encoders = FrozenEncoders(unified, obj, accelerator.device, *frozen_cache(unified, recipe))
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise RecipeError("model.freeze: every parameter is frozen; nothing to train")
    optimizer = torch.optim.AdamW(params, lr=tr.lr, weight_decay=tr.weight_decay, betas=tuple(tr.betas))
    scheduler = make_scheduler(recipe, optimizer)
    model, optimizer = accelerator.prepare(model, optimizer)
    # Not prepared: accelerate would step it once per process; ours steps once per optimizer step.
    accelerator.register_for_checkpointing(scheduler)

    state: dict[str, Any] = {
        "step": 0,
        "micro_step": 0,
        "positions": [0] * len(sources),
        "losses": [],
        "skips": {},
    }
    resumed_from = ""
    if resume and (last := latest_checkpoint(ckpt_root)) is not None:
        state = load_checkpoint(accelerator, last)
        resumed_from = str(last)
        if main:
            log.info("resumed from %s at step %d", last, state["step"])
    skips = SkipCounter(dict(state["skips"]))
    orders = [Order(tr.seed, i, s.size) for i, s in enumerate(sources)]
    ratios = [s.ratio for s in sources]
    rank, world = accelerator.process_index, accelerator.num_processes
    global_micro = tr.batch_size * world

    if main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "recipe.yaml", recipe_to_yaml(recipe))
    if tr.logger == "tensorboard":
        accelerator.init_trackers(recipe.name, config=flat_config(recipe))

    model.train()
    set_frozen_eval(unified, recipe)
    pool = ThreadPoolExecutor(max_workers=recipe.data.num_workers) if recipe.data.num_workers > 0 else None
    progress = make_progress(main and tr.progress)
    task = progress.add_task(recipe.name, total=tr.steps, completed=state["step"], loss="", speed="")
    started, images_seen, start_step = time.perf_counter(), 0, state["step"]
    last_good = resumed_from or "none"
    with progress:
        while state["step"] < tr.steps:
            micro_losses: dict[str, list[float]] = {}
            for _ in range(tr.grad_accum):
                s = source_for_step(tr.seed, state["micro_step"], ratios)
                source, first = sources[s], state["positions"][s] + rank * tr.batch_size
                state["positions"][s] += global_micro
                state["micro_step"] += 1
                positions = range(first, first + tr.batch_size)

                def read(pos: int, source=source, s=s):
                    def needs_image(item, content_hash: str) -> bool:
                        return not encoders.all_cached(source.objective, content_hash)

                    return read_usable(source, orders[s], pos, skips, needs_image)

                examples = list(pool.map(read, positions)) if pool else [read(p) for p in positions]
                rngs = [example_rng(tr.seed, s, ex.position) for ex in examples]
                with accelerator.accumulate(model):
                    loss = objective_loss(source.objective, model, encoders, examples, rngs)
                    every_loss = accelerator.gather(loss.detach().float().reshape(1))
                    if not torch.isfinite(every_loss).all():
                        raise TrainingDiverged(
                            f"loss is {every_loss.tolist()} at step {state['step'] + 1} (source {source.name}); "
                            f"stopped. Last good checkpoint: {last_good}"
                        )
                    micro_losses.setdefault(source.objective, []).append(every_loss.mean().item())
                    accelerator.backward(loss)
                    grad_norm = None
                    if accelerator.sync_gradients and tr.max_grad_norm > 0:
                        grad_norm = accelerator.clip_grad_norm_(params, tr.max_grad_norm)
                        if not torch.isfinite(torch.as_tensor(grad_norm)).all():
                            raise TrainingDiverged(
                                f"gradient norm is {float(grad_norm)} at step {state['step'] + 1}; stopped. "
                                f"Last good checkpoint: {last_good}"
                            )
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            state["step"] += 1
            images_seen += global_micro * tr.grad_accum
            step_loss = sum(sum(v) for v in micro_losses.values()) / tr.grad_accum
            state["losses"].append(step_loss)
            elapsed = time.perf_counter() - started
            speed = images_seen / elapsed if elapsed > 0 else 0.0
            if state["step"] % tr.log_every == 0 or state["step"] == tr.steps:
                metrics = {"loss": step_loss, "lr": scheduler.get_last_lr()[0], "images_per_s": speed}
                metrics.update({f"loss/{k}": sum(v) / len(v) for k, v in micro_losses.items()})
                if grad_norm is not None:
                    metrics["grad_norm"] = float(grad_norm)
                metrics["skipped_items"] = len(skips)
                if tr.logger == "tensorboard":
                    accelerator.log(metrics, step=state["step"])
                if main:
                    append_metrics(out / METRICS_FILE, {"step": state["step"], **metrics})
            progress.update(
                task, completed=state["step"], loss=f"loss {step_loss:.4f}", speed=f"{speed:.1f} img/s"
            )
            if state["step"] % tr.checkpoint_every == 0 or state["step"] == tr.steps:
                state["skips"] = gather_skips(accelerator, skips)
                last_good = str(save_checkpoint(accelerator, ckpt_root, state["step"], state, tr.keep_last))
    if pool:
        pool.shutdown()

    all_skips = gather_skips(accelerator, skips)
    cache_stats = encoders.cache.stats() if encoders.cache else {}
    elapsed = time.perf_counter() - started
    final_dir = out / "final"
    if main:
        export_model(accelerator.unwrap_model(model), final_dir, recipe)
        summary = {
            "recipe": recipe.name,
            "steps": state["step"],
            "losses": state["losses"],
            "skipped": len(all_skips),
            "skips": all_skips,
            "cache": cache_stats,
            "images_per_s": images_seen / elapsed if elapsed > 0 else 0.0,
            "condition_on": COPY_COLLAPSE_LABEL if obj.condition_on == "vq_embeddings" else obj.condition_on,
            "condition_dropout": obj.condition_dropout,
            "resumed_from": resumed_from,
            "trained_steps_this_run": state["step"] - start_step,
        }
        atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=1) + "\n")
        if all_skips:
            log.warning("skipped %d unreadable/unusable items (see %s)", len(all_skips), out / SUMMARY_FILE)
    accelerator.wait_for_everyone()
    if tr.logger == "tensorboard":
        accelerator.end_training()
    if main and on_finish is not None:
        on_finish(final_dir)
    return TrainResult(
        output_dir=out,
        final_dir=final_dir,
        steps=state["step"],
        losses=list(state["losses"]),
        skipped=all_skips,
        cache=cache_stats,
        images_per_s=images_seen / elapsed if elapsed > 0 else 0.0,
        resumed_from=resumed_from,
    )


# --- pieces of the setup --------------------------------------------------------------------------


def resolve_mixed_precision(setting: str) -> str:
    """ "auto" = bf16 where the device has it (CUDA with bf16), else full precision."""
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def cpu_distributed() -> bool:
    """Processes started by torchrun on a machine without CUDA: accelerate only forms a gloo group for
    them when told it runs on CPU (``accelerate launch --cpu`` itself starts a single process)."""
    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def build_model(recipe: Recipe) -> torch.nn.Module:
    if not recipe.model.builder:
        raise RecipeError("model.builder: name a 'module:function' that returns a UnifiedModel")
    try:
        builder = import_object(recipe.model.builder)
    except (ImportError, AttributeError, ValueError) as exc:
        raise RecipeError(f"model.builder: cannot import {recipe.model.builder!r} ({exc})") from exc
    model = builder(**recipe.model.kwargs)  # type: ignore[operator]
    if not isinstance(model, UnifiedModel) or not isinstance(model, torch.nn.Module):
        raise RecipeError(f"model.builder: {recipe.model.builder} did not return a UnifiedModel nn.Module")
    return model


def prepare_trainable(model: torch.nn.Module, recipe: Recipe) -> None:
    """Freeze the named sub-modules; switch on activation checkpointing where HF modules support it."""
    named = model.trainable_modules()
    for name in recipe.model.freeze:
        if name not in named:
            raise RecipeError(f"model.freeze: {name!r} is not one of {sorted(named)}")
        named[name].requires_grad_(False)
    if recipe.model.gradient_checkpointing:
        enabled = [n for n, m in named.items() if hasattr(m, "gradient_checkpointing_enable")]
        if hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable()
            enabled.append("<model>")
        else:
            for n in enabled:
                named[n].gradient_checkpointing_enable()
        if not enabled:
            raise RecipeError("model.gradient_checkpointing: no module of this model supports it")


def set_frozen_eval(model: torch.nn.Module, recipe: Recipe) -> None:
    """Frozen modules run in eval mode (no dropout, fixed norm statistics), as their cached outputs assume."""
    named = model.trainable_modules()
    for name in recipe.model.freeze:
        named[name].eval()
    for module in (encoder_modules(model) or {}).values():
        module.eval()


def apply_lora(model: torch.nn.Module, recipe: Recipe) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    spec = recipe.model.lora
    config = LoraConfig(
        r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=spec.target_modules
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise RecipeError(f"model.lora.target_modules: {exc}") from exc


def frozen_cache(
    model: torch.nn.Module, recipe: Recipe
) -> tuple[FrozenOutputCache | None, dict[str, str] | None]:
    """The cache and the encoder fingerprints, when ``data.cache_dir`` is set and the encoders are frozen."""
    if not recipe.data.cache_dir:
        return None, None
    modules = encoder_modules(model)
    if modules is None:
        raise RecipeError(
            "data.cache_dir: this adapter does not declare encoder_modules() "
            "({'understanding': ..., 'generation_targets': ...}), so its outputs cannot be cached safely"
        )
    for name, module in modules.items():
        if any(p.requires_grad for p in module.parameters()):
            raise RecipeError(
                f"data.cache_dir: encoder {name!r} has trainable parameters; freeze it (model.freeze) or turn "
                "the cache off, since its cached outputs would go stale"
            )
    obj = recipe.objective
    view = describe(
        bottleneck=obj.bottleneck, size=obj.bottleneck_size, sigma=obj.blur_sigma, image_size=model.image_size
    )
    fingerprints = {
        UNDERSTANDING: module_fingerprint(modules["understanding"], extra=view),
        TARGETS: module_fingerprint(modules["generation_targets"], extra=f"image_size={model.image_size}"),
    }
    return FrozenOutputCache(Path(recipe.data.cache_dir)), fingerprints


def make_scheduler(recipe: Recipe, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup, then constant, linear decay or cosine decay to zero (a LambdaLR, so it checkpoints)."""
    tr = recipe.train
    warmup, total = tr.warmup_steps, tr.steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if tr.scheduler == "linear":
            return 1.0 - progress
        if tr.scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def gather_skips(accelerator: Accelerator, skips: SkipCounter) -> dict[str, str]:
    from accelerate.utils import gather_object

    merged: dict[str, str] = {}
    for part in gather_object([skips.reasons]) if accelerator.num_processes > 1 else [skips.reasons]:
        merged.update(part)
    return dict(sorted(merged.items()))


def export_model(model: torch.nn.Module, final_dir: Path, recipe: Recipe) -> None:
    """Write the trained model atomically: native ``save_pretrained``, or a peft adapter / merged weights."""
    tmp = final_dir.parent / f".tmp-{final_dir.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if recipe.model.lora.enabled and recipe.model.lora.save == "adapter":
        model.save_pretrained(str(tmp))  # peft: adapter_config.json + adapter weights only
    else:
        if recipe.model.lora.enabled:
            model = model.merge_and_unload()
        model.save_pretrained(tmp)
    if final_dir.exists():
        shutil.rmtree(final_dir)
    os.replace(tmp, final_dir)


def flat_config(recipe: Recipe) -> dict[str, Any]:
    """Scalars for TensorBoard's hparams: nested keys dotted, lists as text."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        elif isinstance(value, (int, float, str, bool)):
            flat[prefix] = value
        else:
            flat[prefix] = json.dumps(value)

    walk("", dataclasses.asdict(recipe))
    return flat


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    """A human-readable log line per step (the summary file, written atomically, is the record)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(
            json.dumps(
                {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v)) for k, v in row.items()}
            )
            + "\n"
        )


def make_progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),
        TextColumn("{task.fields[speed]}"),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reca_eval.training.loop", description=__doc__.split("\n")[0]
    )
    parser.add_argument("recipe", type=Path)
    parser.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-4 data.sources.0.ratio=2"
    )
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        recipe = load_recipe(args.recipe, args.overrides)
        result = train(recipe, resume=args.resume)
    except (RecipeError, TrainingDiverged, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {"final_dir": str(result.final_dir), "steps": result.steps, "skipped": len(result.skipped)}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
