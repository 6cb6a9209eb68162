"""The UnifiedModel protocol: the one interface the generation driver and the trainer both use.

A family adapter (``janus.py``, later flow-matching and masked-autoregressive ones) maps it onto a
real library model. RecA is then written once, against this protocol:

    feats   = model.understanding_embeddings(images)            # frozen understanding encoder
    targets = model.generation_targets(images)                  # frozen VQ ids / VAE latents
    cond    = [Condition([instruction, ImageEmbeds(f)]) for f in feats]
    loss    = model.generation_loss(cond, targets)              # the model's normal generation loss

Conditions are interleaved sequences of text and image-embedding segments, so text->image (one text
segment), reconstruction (instruction + the image's own understanding embeddings) and editing
(source-image embeddings + edit instruction) are the same call.
A condition with no segments, ``Condition([])``, is the unconditional input (what condition dropout
trains and what the CFG branch of ``generate`` uses; Janus: BOS, pad tokens, BOI).

How the other families map (the protocol does not change for them):
- Flow matching on VAE latents (OpenUni/MetaQuery: VLM + learnable queries + connector + DiT;
  Qwen-Image-Edit): ``understanding_embeddings`` = the frozen VLM's vision tower output projected to
  the VLM's input space; ``generation_targets`` = VAE latents (scaled, packed); ``generation_loss`` =
  the VLM reads the condition (+ queries), the connector maps the query hidden states to the DiT's
  conditioning, and the loss is flow matching (velocity MSE at a sampled timestep) on the latents.
  Qwen-Image-Edit's reference-latent path is *not* part of the condition for RecA (it would copy).
  Sampling integrates the flow with FlowMatchEulerDiscreteScheduler and decodes with the VAE.
- Masked autoregressive (Harmon: MAR with a shared MAR encoder for understanding): the
  understanding embeddings come from the same encoder the generator uses, read at low resolution;
  targets are VAE latents; the loss is MAR's masked diffusion loss on masked latent tokens;
  ``understanding_loss`` matters because parameters are shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

import torch
from PIL import Image


@dataclass
class ImageEmbeds:
    """A segment of understanding embeddings already in the LLM's input space: (num_tokens, hidden)."""

    embeds: torch.Tensor


Segment = str | ImageEmbeds


@dataclass
class Condition:
    """An interleaved condition: text and image-embedding segments, in order."""

    segments: list[Segment]

    @classmethod
    def text(cls, prompt: str) -> Condition:
        return cls([prompt])


@dataclass
class SamplingConfig:
    guidance_scale: float = 5.0
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0  # image i of a batch uses seed + i ...
    seeds: list[int] | None = None  # ... unless one seed per image is given here


class FamilyFacts:
    """Per-family facts, read from the adapter class (no weights loaded) by the loader, the trainer, the
    experiment arms, the main command and the CLI. Adapters inherit the defaults and override what is
    theirs; :data:`reca_eval.models.FAMILIES` finds the class.
    """

    family: ClassVar[str] = ""  # the name in FAMILIES, in labels (``flow/SFT``) and in records
    # How a checkpoint folder says it is of this family (reca_eval.models.loading.detect_family):
    # config.json ``model_type`` values, or a diffusers folder's model_index.json ``_class_name`` values.
    model_types: ClassVar[tuple[str, ...]] = ()
    pipeline_classes: ClassVar[tuple[str, ...]] = ()
    # trainable_modules() names every RecA training stage keeps frozen (what the condition and the
    # targets are computed with).
    frozen_modules: ClassVar[tuple[str, ...]] = ()
    # RecA's objectives: "recon" (reconstruction), plus "i2t" (image->text) where understanding and
    # generation share trained parameters.
    reca_objectives: ClassVar[tuple[str, ...]] = ("recon",)
    # Whether the RecA-VQ ablation arm applies (a condition of the generation tokenizer's code embeddings).
    vq_ablation: ClassVar[bool] = False
    # Classifier-free guidance the experiments and the main command sample this family with.
    default_guidance_scale: ClassVar[float] = 5.0
    # The SamplingConfig fields this family's sampler reads beside the guidance scale, with their
    # published defaults (None: off); `run --ckpt` starts from these and `--cfg`, `--temperature` or
    # `-s KEY=VALUE` override them.
    extra_sampling_defaults: ClassVar[dict[str, float | int | None]] = {}
    # The shipped ShapeWorld base: its folder under reca_eval/assets (None: none shipped) and the command
    # that builds it.
    shapeworld_asset: ClassVar[str | None] = None
    shapeworld_build: ClassVar[str] = ""
    # What the main command (`reca-eval demo`) runs for this family: arm names of
    # reca_eval.experiments.arms, and the benchmarks they are scored on (empty: not in the main command).
    main_arms: ClassVar[tuple[str, ...]] = ()
    main_benchmarks: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def sampling_defaults(cls) -> dict[str, float | int | None]:
        """What `run --ckpt` samples this family with unless told otherwise (SamplingConfig fields)."""
        return {"guidance_scale": cls.default_guidance_scale, **cls.extra_sampling_defaults}

    def recon_condition(self, instruction: str, embeds: torch.Tensor, drop: bool) -> Condition:
        """RecA's condition for one image's understanding embeddings; ``drop`` is the condition-dropout
        draw. Default: instruction then image, and a drop removes the whole condition (the CFG branch).
        A family whose authors keep the image and drop only the instruction overrides this."""
        return Condition([]) if drop else Condition([instruction, ImageEmbeds(embeds)])

    @classmethod
    def shipped_base_path(cls) -> Path | None:
        """The ShapeWorld base shipped inside the package (``reca_eval/assets/<shapeworld_asset>``)."""
        if cls.shapeworld_asset is None:
            return None
        return Path(str(resources.files("reca_eval") / "assets" / cls.shapeworld_asset))


@runtime_checkable
class UnifiedModel(Protocol):
    """Adapters are ``torch.nn.Module`` subclasses. Their ``forward(objective, **kwargs)`` dispatches
    ``"generation"`` to :meth:`generation_loss` and ``"understanding"`` to :meth:`understanding_loss`,
    so that accelerate/DDP/FSDP wrap one module and gradients synchronise through its forward.
    """

    family: str  # "janus", "flow", "mar", ...
    image_size: int

    def understanding_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Frozen understanding features of images, mapped into the LLM input space: (B, N, H)."""

    def generation_targets(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Frozen generation targets: VQ ids (B, T) long, or latents (B, C, h, w)."""

    def generation_loss(self, conditions: list[Condition], targets: torch.Tensor) -> torch.Tensor:
        """The model's normal generation loss for ``targets`` given ``conditions`` (a scalar)."""

    def understanding_loss(self, pixel_values: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """Image -> text cross-entropy (for shared-parameter models in the RecA mix)."""

    def generate(self, conditions: list[Condition], sampling: SamplingConfig) -> list[Image.Image]:
        """Sample one image per condition, with classifier-free guidance (the unconditional branch
        drops every segment)."""

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        """PIL images -> pixel values as the model's encoders expect them."""

    def trainable_modules(self) -> dict[str, torch.nn.Module]:
        """Named sub-modules a recipe may freeze or train (e.g. "language_model", "vision")."""

    def save_pretrained(self, path: Path) -> None:
        """Save in the library's native format (a plain ``from_pretrained`` loads it)."""


@runtime_checkable
class ConditionStatesModel(Protocol):
    """What the cross-modal alignment diagnostic needs of an adapter, beside :class:`UnifiedModel`.

    A separate protocol so that adapters without it still satisfy ``UnifiedModel``; the diagnostic
    (``reca_eval.diagnostics.alignment``) works for any adapter that has it.
    """

    def condition_hidden_states(self, conditions: list[Condition], layer: int = -1) -> torch.Tensor:
        """The trunk's hidden state at ``layer`` (-1 = final) pooled over each condition's own positions
        (its text and image-embedding segments, not the prompt template): (B, hidden)."""


def dispatch_objective(model: UnifiedModel, objective: str, **kwargs) -> torch.Tensor:
    """The body of every adapter's ``forward``: route an objective name to its loss method."""
    if objective == "generation":
        return model.generation_loss(**kwargs)
    if objective == "understanding":
        return model.understanding_loss(**kwargs)
    raise ValueError(f"unknown objective {objective!r}; expected 'generation' or 'understanding'")
