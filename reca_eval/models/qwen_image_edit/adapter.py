"""Qwen-Image-Edit (diffusers ``QwenImageEditPipeline`` parts) behind the UnifiedModel protocol.

Parts: Qwen2.5-VL (the pipeline's ``text_encoder``, frozen), ``QwenImageTransformer2DModel`` (the DiT,
trained) and ``AutoencoderKLQwenImage`` (frozen). A condition is rendered into the pipeline's own edit
template (system prompt, then the user turn with ``<|vision_start|><|image_pad|>..<|vision_end|>`` per
image segment and the text), read by the VLM; the template's system part is dropped, as the pipeline
drops it, and the remaining last-layer hidden states condition the DiT.

RecA: the DiT sees the VLM's hidden states of the (bottlenecked) image *only*. The pipeline's VAE
reference latents, which it concatenates to the noisy latents for editing, are left out of
:meth:`generation_loss` and :meth:`generate`: with them the model would learn to copy its target.
Editing at inference (:meth:`edit`) keeps the pipeline's normal path, reference latents included.
Saved as a plain diffusers pipeline folder: ``QwenImageEditPipeline.from_pretrained`` loads it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    AutoencoderKLQwenImage,
    FlowMatchEulerDiscreteScheduler,
    QwenImageEditPipeline,
    QwenImageTransformer2DModel,
)
from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit import calculate_shift
from PIL import Image

from reca_eval.core.records import atomic_write_dir
from reca_eval.models.flow.adapter import (
    VISION_START,
    FrozenVLMAdapter,
    check_latent_targets,
    check_timestep_config,
    config_from_json,
    flow_matching_loss,
    fresh_scheduler,
    render_condition,
    sample_sigmas,
    seeded_noise,
    vlm_hidden_states,
    vlm_image_features,
)
from reca_eval.models.protocol import Condition, SamplingConfig
from reca_eval.models.sampling import image_generators

RECA_CONFIG_FILE = "reca_qwen_image_edit.json"
PIPELINE_CLASS = "QwenImageEditPipeline"


@dataclass
class QwenImageEditConfig:
    """Settings the pipeline folder does not hold; saved as ``reca_qwen_image_edit.json`` beside it."""

    image_size: int = 512
    understanding_size: int = 224  # pixels at which the VLM reads a condition image (bottleneck)
    timestep_sampling: str = "logit_normal"  # uniform | logit_normal
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 1.0  # SD3 time shift on training sigmas
    num_inference_steps: int = 30
    negative_prompt: str = " "  # the unconditional text of Qwen-Image's CFG at editing time

    def __post_init__(self) -> None:
        check_timestep_config(self.timestep_sampling, self.shift, self.logit_std)


def split_template(template: str) -> tuple[str, str]:
    """The pipeline's edit template -> (prefix up to the user content, suffix after it)."""
    if VISION_START not in template or "{}" not in template:
        raise ValueError("unexpected QwenImageEditPipeline.prompt_template_encode layout")
    return template.split(VISION_START, 1)[0], template.split("{}", 1)[1]


class QwenImageEditAdapter(FrozenVLMAdapter):
    family = "qwen_image_edit"
    pipeline_classes = (PIPELINE_CLASS,)
    # As the flow family: the VLM and the VAE stay frozen, RecA is reconstruction alone (no ShapeWorld
    # base is shipped, so it is not in the main command).
    frozen_modules = ("vlm", "vae")
    reca_objectives = ("recon",)
    default_guidance_scale = 4.0  # QwenImageEditPipeline's true_cfg_scale default

    def __init__(
        self,
        vlm,
        tokenizer,
        processor,
        transformer: QwenImageTransformer2DModel,
        vae: AutoencoderKLQwenImage,
        scheduler: FlowMatchEulerDiscreteScheduler,
        config: QwenImageEditConfig,
    ):
        super().__init__()
        self.vlm = vlm.requires_grad_(False).eval()
        self.vae = vae.requires_grad_(False).eval()
        self.transformer = transformer
        self.tokenizer = tokenizer
        self.processor = processor
        self.scheduler = scheduler
        self.config = config
        self.image_size = config.image_size
        self.hidden_size = vlm.config.text_config.hidden_size
        # The pipeline object only groups the parts (it is not an nn.Module): it supplies the template,
        # latent packing, VAE normalisation, the editing path and the native folder layout.
        self.pipeline = QwenImageEditPipeline(
            scheduler=scheduler,
            vae=vae,
            text_encoder=vlm,
            tokenizer=tokenizer,
            processor=processor,
            transformer=transformer,
        )
        self.pipeline.set_progress_bar_config(disable=True)
        self._prefix, self._suffix = split_template(self.pipeline.prompt_template_encode)
        # The pipeline hard-codes 64 (its system prompt's length in Qwen's tokenizer); counting the
        # prefix gives the same for Qwen's tokenizer and the right number for any other.
        self._drop = len(tokenizer(self._prefix, add_special_tokens=False)["input_ids"])
        self._vae_scale = self.pipeline.vae_scale_factor
        unit = self._vae_scale * 2
        if config.image_size % unit:
            raise ValueError(
                f"image_size {config.image_size} is not a multiple of {unit} (VAE factor x packing)"
            )
        merge = vlm.config.vision_config.spatial_merge_size
        if config.understanding_size % (vlm.config.vision_config.patch_size * merge):
            raise ValueError(
                f"understanding_size {config.understanding_size} is not a multiple of patch x merge"
            )
        self._merge = merge

    # ----------------------------------------------------------------------------------------- basics
    def trainable_modules(self) -> dict[str, torch.nn.Module]:
        return {
            "transformer": self.transformer,
            "vlm": self.vlm,
            "vision": self.vlm.model.visual,
            "vae": self.vae,
        }

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        rgb = [im.convert("RGB") for im in images]
        size = self.image_size
        return self.pipeline.image_processor.preprocess(rgb, height=size, width=size).to(self.device)

    # ------------------------------------------------------------------------------- image encoders
    def understanding_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return vlm_image_features(
            self.vlm, self.processor.image_processor, pixel_values, self.config.understanding_size
        )

    @torch.no_grad()
    def generation_targets(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Normalised VAE latents (B, z, h, w) (the pipeline's ``(x - mean) / std``, frame axis dropped)."""
        px = pixel_values.to(self.device, self.vae.dtype).unsqueeze(2)
        return self.pipeline._encode_vae_image(px, generator=None)[:, :, 0].detach()

    # ------------------------------------------------------------------------------------ condition
    def condition_embeddings(self, conditions: list[Condition]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, L, H) VLM hidden states of each condition after the system prompt, right-padded, and their
        mask (None when nothing is padded, as the pipeline passes it)."""
        rendered = [
            render_condition(
                self.tokenizer, c, self._prefix, self._suffix, self.hidden_size, self._merge, f"condition {i}"
            )
            for i, c in enumerate(conditions)
        ]
        hidden, mask = vlm_hidden_states(self.vlm, rendered, self.tokenizer.pad_token_id)
        rows = [h[m.bool()][self._drop :] for h, m in zip(hidden, mask, strict=True)]
        length = max(r.shape[0] for r in rows)
        embeds = hidden.new_zeros(len(rows), length, hidden.shape[-1])
        keep = torch.zeros(len(rows), length, dtype=torch.long, device=hidden.device)
        for i, r in enumerate(rows):
            embeds[i, : r.shape[0]] = r
            keep[i, : r.shape[0]] = 1
        return embeds.to(self.transformer.dtype), (None if bool(keep.all()) else keep)

    def _velocity(self, packed, embeds, mask, sigmas, side: int) -> torch.Tensor:
        # img_shapes lists the generated image only: no reference-latent entry, none concatenated.
        return self.transformer(
            hidden_states=packed.to(self.transformer.dtype),
            timestep=sigmas.to(packed.device, packed.dtype),
            encoder_hidden_states=embeds,
            encoder_hidden_states_mask=mask,
            img_shapes=[[(1, side // 2, side // 2)]] * packed.shape[0],
            guidance=None,
            return_dict=False,
        )[0]

    def _pack(self, latents: torch.Tensor) -> torch.Tensor:
        b, c, h, w = latents.shape
        return self.pipeline._pack_latents(latents, b, c, h, w)

    # ------------------------------------------------------------------------------------- losses
    def generation_loss(self, conditions: list[Condition], targets: torch.Tensor) -> torch.Tensor:
        check_latent_targets(conditions, targets, self.vae.config.z_dim)
        side = targets.shape[-1]
        if targets.shape[-2] != side or side % 2:
            raise ValueError(f"targets must be square latents with an even side, got {tuple(targets.shape)}")
        packed = self._pack(targets.to(self.device, self.transformer.dtype))
        embeds, mask = self.condition_embeddings(conditions)
        cfg = self.config
        sigmas = sample_sigmas(
            packed.shape[0],
            cfg.timestep_sampling,
            cfg.shift,
            cfg.logit_mean,
            cfg.logit_std,
            device=self.device,
        )
        return flow_matching_loss(lambda x, s: self._velocity(x, embeds, mask, s, side), packed, sigmas)

    def understanding_loss(self, pixel_values: torch.Tensor, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError(
            "Qwen-Image-Edit is decoupled: its VLM is frozen, so RecA needs no image->text loss "
            "(drop i2t sources from the recipe)"
        )

    # ----------------------------------------------------------------------------------- sampling
    def _timesteps(self, scheduler: FlowMatchEulerDiscreteScheduler, seq_len: int) -> torch.Tensor:
        steps = self.config.num_inference_steps
        sigmas = np.linspace(1.0, 1 / steps, steps)
        kwargs = {}
        if scheduler.config.get("use_dynamic_shifting", False):
            kwargs["mu"] = calculate_shift(
                seq_len,
                scheduler.config.get("base_image_seq_len", 256),
                scheduler.config.get("max_image_seq_len", 4096),
                scheduler.config.get("base_shift", 0.5),
                scheduler.config.get("max_shift", 1.15),
            )
        scheduler.set_timesteps(sigmas=sigmas, device=self.device, **kwargs)
        return scheduler.timesteps

    @torch.no_grad()
    def sample_latents(self, conditions: list[Condition], sampling: SamplingConfig) -> torch.Tensor:
        """Normalised latents (B, z, h, w): Euler steps with the pipeline's true CFG (norm-rescaled)."""
        side = self.image_size // self._vae_scale
        latents = seeded_noise((len(conditions), self.vae.config.z_dim, side, side), sampling, self.device)
        if not conditions:
            return latents
        packed = self._pack(latents.to(self.transformer.dtype))
        embeds, mask = self.condition_embeddings(conditions)
        guided = sampling.guidance_scale > 1.0
        if guided:
            neg, neg_mask = self.condition_embeddings([Condition([])] * len(conditions))
        scheduler = fresh_scheduler(self.scheduler)
        for t in self._timesteps(scheduler, packed.shape[1]):
            sigma = (t / 1000).expand(packed.shape[0])
            v = self._velocity(packed, embeds, mask, sigma, side)
            if guided:
                v_neg = self._velocity(packed, neg, neg_mask, sigma, side)
                combined = v_neg + sampling.guidance_scale * (v - v_neg)
                v = combined * (v.norm(dim=-1, keepdim=True) / combined.norm(dim=-1, keepdim=True))
            packed = scheduler.step(v, t, packed, return_dict=False)[0]
        unpacked = self.pipeline._unpack_latents(packed, self.image_size, self.image_size, self._vae_scale)
        return unpacked[:, :, 0]

    @torch.no_grad()
    def decode_images(self, latents: torch.Tensor) -> list[Image.Image]:
        z = self.vae.config.z_dim
        mean = torch.tensor(self.vae.config.latents_mean).view(1, z, 1, 1, 1).to(self.device, self.vae.dtype)
        std = torch.tensor(self.vae.config.latents_std).view(1, z, 1, 1, 1).to(self.device, self.vae.dtype)
        raw = latents.to(self.device, self.vae.dtype).unsqueeze(2) * std + mean
        pixels = self.vae.decode(raw, return_dict=False)[0][:, :, 0]
        return self.pipeline.image_processor.postprocess(pixels.float(), output_type="pil")

    def generate(self, conditions: list[Condition], sampling: SamplingConfig) -> list[Image.Image]:
        return self.decode_images(self.sample_latents(conditions, sampling))

    @torch.no_grad()
    def edit(
        self, images: list[Image.Image], instructions: list[str], sampling: SamplingConfig
    ) -> list[Image.Image]:
        """Editing through the pipeline's normal path (VLM reads the image, VAE reference latents included)."""
        if len(images) != len(instructions):
            raise ValueError(f"{len(images)} image(s) but {len(instructions)} instruction(s)")
        out = []
        # One call per image: the pipeline resizes by the first image's aspect ratio for the whole batch.
        for i, (image, instruction) in enumerate(zip(images, instructions, strict=True)):
            result = self.pipeline(
                image=image.convert("RGB"),
                prompt=instruction,
                negative_prompt=self.config.negative_prompt,
                true_cfg_scale=sampling.guidance_scale,
                height=self.image_size,
                width=self.image_size,
                num_inference_steps=self.config.num_inference_steps,
                generator=image_generators(
                    sampling.seeds[i] if sampling.seeds else sampling.seed + i, 1, torch.device("cpu")
                )[0],
            )
            out.append(result.images[0])
        return out

    # --------------------------------------------------------------------------------------- saving
    def save_pretrained(self, path: Path) -> None:
        """A diffusers pipeline folder (model_index.json, text_encoder/, tokenizer/, processor/,
        transformer/, vae/, scheduler/) plus reca_qwen_image_edit.json, swapped in whole."""

        def write(root: Path) -> None:
            self.pipeline.save_pretrained(root)
            text = json.dumps(dataclasses.asdict(self.config), indent=2) + "\n"
            (root / RECA_CONFIG_FILE).write_text(text, encoding="utf-8")

        atomic_write_dir(path, write)

    @classmethod
    def from_pretrained(
        cls,
        path: Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        **config_overrides,
    ) -> QwenImageEditAdapter:
        """A QwenImageEditPipeline folder (e.g. Qwen/Qwen-Image-Edit, or one this adapter saved)."""
        path = Path(path)
        pipe = QwenImageEditPipeline.from_pretrained(str(path), dtype=dtype or torch.float32)
        config_path = path / RECA_CONFIG_FILE
        data = json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
        data.update(config_overrides)
        config = config_from_json(QwenImageEditConfig, data, str(config_path))
        adapter = cls(
            vlm=pipe.text_encoder,
            tokenizer=pipe.tokenizer,
            processor=pipe.processor,
            transformer=pipe.transformer,
            vae=pipe.vae,
            scheduler=pipe.scheduler,
            config=config,
        )
        return adapter.to(device).eval()
