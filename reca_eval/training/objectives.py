"""The three training objectives, written once against the UnifiedModel protocol.

- ``recon`` (RecA): condition = [sampled instruction, ImageEmbeds(understanding_embeddings(bottlenecked
  image))], target = generation_targets(original image), loss = the model's own generation loss.
- ``t2i`` (SFT on caption pairs): condition = the caption, same target and loss.
- ``i2t``: the model's understanding (image -> text) loss, kept in the mix for shared-parameter models.

Frozen outputs are computed without gradients (the protocol's encoders are frozen) on the unwrapped
model, optionally through the on-disk cache; the trainable loss goes through the wrapped module's
``forward`` so DDP/FSDP synchronise gradients.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image, ImageFilter

from reca_eval.models.instructions import sample_instruction
from reca_eval.models.protocol import Condition, ImageEmbeds
from reca_eval.training.cache import FrozenOutputCache
from reca_eval.training.data import Example
from reca_eval.training.recipe import ObjectiveSpec

UNDERSTANDING = "understanding"
TARGETS = "targets"


@dataclass
class FrozenEncoders:
    """How frozen outputs are obtained: the model, and (when caching) the cache and encoder fingerprints."""

    model: torch.nn.Module  # the unwrapped UnifiedModel
    spec: ObjectiveSpec
    device: torch.device
    cache: FrozenOutputCache | None = None
    fingerprints: dict[str, str] | None = None  # UNDERSTANDING / TARGETS -> fingerprint

    def kinds_for(self, objective: str) -> tuple[str, ...]:
        if objective == "recon":
            return (UNDERSTANDING, TARGETS)
        if objective == "t2i":
            return (TARGETS,)
        return ()

    def all_cached(self, objective: str, content_hash: str) -> bool:
        """True when the example needs no pixels at all (every frozen output is in the cache)."""
        if self.cache is None or objective == "i2t":
            return False
        if objective == "recon" and self.spec.condition_on == "vq_embeddings":
            return False  # the ablation's condition is computed from pixels every time
        assert self.fingerprints is not None
        return all(
            self.cache.contains(k, self.fingerprints[k], content_hash) for k in self.kinds_for(objective)
        )


def example_rng(seed: int, source_index: int, position: int) -> random.Random:
    """Per-example randomness (instruction, dropout) from the example's identity, not from a global stream,
    so it is the same however the batch is split across processes and after a resume."""
    return random.Random(f"{seed}:{source_index}:{position}")


def bottleneck(image: Image.Image, spec: ObjectiveSpec, image_size: int) -> Image.Image:
    """The information bottleneck on the condition image: downscale (the model's preprocess scales it back
    up to its input size, so detail above ``bottleneck_size`` is gone) or gaussian blur."""
    if spec.bottleneck == "downscale":
        side = spec.bottleneck_size or image_size
        return image.resize((side, side), Image.Resampling.BICUBIC)
    if spec.bottleneck == "blur":
        return image.filter(ImageFilter.GaussianBlur(spec.blur_sigma))
    return image


def frozen_outputs(
    encoders: FrozenEncoders,
    kind: str,
    examples: list[Example],
    compute: Callable[[list[Image.Image]], torch.Tensor],
) -> torch.Tensor:
    """Stacked frozen outputs of one kind for ``examples``: cached ones loaded, the rest computed (and stored)."""
    out: list[torch.Tensor | None] = [None] * len(examples)
    if encoders.cache is not None:
        assert encoders.fingerprints is not None
        for i, ex in enumerate(examples):
            out[i] = encoders.cache.get(kind, encoders.fingerprints[kind], ex.content_hash)
    missing = [i for i, t in enumerate(out) if t is None]
    if missing:
        images = [examples[i].image for i in missing]
        if any(im is None for im in images):
            raise RuntimeError(f"cache entry for {kind} vanished during the step; rerun to recompute it")
        with torch.no_grad():
            computed = compute(images).detach()  # type: ignore[arg-type]
        for j, i in enumerate(missing):
            out[i] = computed[j]
            if encoders.cache is not None:
                encoders.cache.put(kind, encoders.fingerprints[kind], examples[i].content_hash, computed[j])  # type: ignore[index]
    return torch.stack([t.to(encoders.device) for t in out])  # type: ignore[union-attr]


def understanding_features(encoders: FrozenEncoders, examples: list[Example]) -> torch.Tensor:
    model, spec = encoders.model, encoders.spec

    def compute(images: list[Image.Image]) -> torch.Tensor:
        pixels = model.preprocess([bottleneck(im, spec, model.image_size) for im in images]).to(
            encoders.device
        )
        return model.understanding_embeddings(pixels)

    return frozen_outputs(encoders, UNDERSTANDING, examples, compute)


def generation_targets(encoders: FrozenEncoders, examples: list[Example]) -> torch.Tensor:
    model = encoders.model

    def compute(images: list[Image.Image]) -> torch.Tensor:
        return model.generation_targets(model.preprocess(images).to(encoders.device))

    return frozen_outputs(encoders, TARGETS, examples, compute)


def maybe_drop(condition: Condition, rng: random.Random, spec: ObjectiveSpec) -> Condition:
    """Condition dropout for CFG: the empty condition is the unconditional branch ``generate`` uses."""
    return Condition([]) if rng.random() < spec.condition_dropout else condition


def recon_conditions(
    encoders: FrozenEncoders, examples: list[Example], rngs: list[random.Random]
) -> list[Condition]:
    spec = encoders.spec
    if spec.condition_on == "understanding":
        feats = understanding_features(encoders, examples)
    else:
        # The copy/collapse ablation: condition on the generation tokenizer's own codes (original image,
        # no bottleneck), embedded as the generation path embeds them. Never cached: those embeddings
        # may be trainable.
        embed = getattr(encoders.model, "vq_condition_embeddings", None)
        if embed is None:
            raise ValueError(
                "objective.condition_on=vq_embeddings needs the adapter method "
                "vq_condition_embeddings(pixel_values) -> (B, T, hidden)"
            )
        pixels = encoders.model.preprocess([ex.image for ex in examples]).to(encoders.device)
        with torch.no_grad():
            feats = embed(pixels).detach()
    # The family says what a dropout draw removes (FamilyFacts.recon_condition); adapters without it drop
    # the whole condition.
    make = getattr(encoders.model, "recon_condition", None) or _recon_condition
    conditions = []
    for rng, f in zip(rngs, feats, strict=True):
        # drawn before dropout so the draw count never varies
        instruction = sample_instruction(rng, spec.instructions)
        conditions.append(make(instruction, f, rng.random() < spec.condition_dropout))
    return conditions


def _recon_condition(instruction: str, embeds: torch.Tensor, drop: bool) -> Condition:
    return Condition([]) if drop else Condition([instruction, ImageEmbeds(embeds)])


def objective_loss(
    objective: str,
    wrapped: torch.nn.Module,
    encoders: FrozenEncoders,
    examples: list[Example],
    rngs: list[random.Random],
) -> torch.Tensor:
    """One micro-batch's loss for ``objective`` (recon | t2i | i2t)."""
    if objective == "i2t":
        pixels = encoders.model.preprocess([ex.image for ex in examples]).to(encoders.device)
        return wrapped("understanding", pixel_values=pixels, texts=[ex.caption for ex in examples])
    targets = generation_targets(encoders, examples)
    if objective == "recon":
        conditions = recon_conditions(encoders, examples, rngs)
    elif objective == "t2i":
        conditions = [
            maybe_drop(Condition.text(ex.caption), rng, encoders.spec)
            for ex, rng in zip(examples, rngs, strict=True)
        ]
    else:
        raise ValueError(f"unknown objective {objective!r} (known: recon, t2i, i2t)")
    return wrapped("generation", conditions=conditions, targets=targets)
