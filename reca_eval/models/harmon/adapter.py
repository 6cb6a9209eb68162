"""Harmon (Wu et al. 2025: a Qwen2.5 LLM between a MAR encoder and decoder over KL-16 VAE latents) behind
the UnifiedModel protocol.

    image --frozen VAE--> latent tokens (B, N, 16) x 0.2325
    generation:    "<|im_start|>user\\n{condition}<|im_end|>\\n<|im_start|>assistant\\n"  +  proj_in(MAR encoder
                   over the visible tokens, 64 buffer tokens moved to the end)  --Qwen2-->  proj_out, added to
                   the encoder states  -->  MAR decoder  -->  diffusion MLP per masked token
    understanding: the same MAR encoder over *all* tokens --> proj_in --> image tokens in the LLM's prompt

Understanding and generation share the MAR encoder and the LLM, and both train (only the VAE is frozen).
So this family's :class:`ImageEmbeds` carry the frozen part only, the VAE latent tokens (N, 16) of an
image (what :meth:`HarmonAdapter.understanding_embeddings` returns, what the trainer caches); the adapter
runs the MAR encoder and ``proj_in`` on them inside every loss, where the gradient into the condition is
scaled by ``grad_scale`` (0.1, the RecA authors' setting).

Conditions: a text-only condition is a text->image prompt, ``"Generate an image: {prompt}"``; the empty
``Condition([])`` is the CFG branch, ``"Generate an image."``; a condition with images renders its segments
in order, an image as its N + 64 encoded tokens, a text after an image on a new line (RecA's
``<image>\\n{instruction}``, editing's ``<image>\\n{edit}``). Batches are left-padded with positions counted
from each row's first real token, so a batched result equals the per-example one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderDC, AutoencoderKL
from diffusers.image_processor import VaeImageProcessor
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoTokenizer, DynamicCache, Qwen2ForCausalLM

from reca_eval.core.records import atomic_write_dir
from reca_eval.models.harmon.mar import MAR, MARConfig
from reca_eval.models.protocol import Condition, FamilyFacts, ImageEmbeds, SamplingConfig, dispatch_objective
from reca_eval.models.sampling import cache_keyword, image_generators

MODEL_TYPE = "reca_harmon"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "harmon.safetensors"  # mar.*, proj_in.*, proj_out.* (the LLM and the VAE have their folders)
PROMPT_TEMPLATE = "<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n"
USER_PREFIX = "<|im_start|>user\n"
IM_END = "<|im_end|>"
IMAGE_PAD = "<|image_pad|>"  # a placeholder in the rendered prompt, expanded to the image's slots
IGNORE_INDEX = -100
CFG_SCHEDULES = ("constant", "linear")
PROMPT_CACHE_SIZE = 65536


@dataclass
class HarmonConfig:
    """What the composite adds to its parts; saved as ``config.json`` beside them."""

    image_size: int = 512
    vae_scale: float = 0.2325  # latents are multiplied by this before MAR sees them
    generation_prompt: str = "Generate an image: {prompt}"
    unconditional_prompt: str = "Generate an image."
    num_iterations: int = 64  # MAR sampling iterations (cosine mask schedule)
    cfg_schedule: str = "constant"  # constant | linear (Muse's ramp over the revealed fraction)
    grad_scale: float = 0.1  # gradient scale into the understanding encoding of a condition image
    mar: MARConfig = field(default_factory=MARConfig)

    def __post_init__(self) -> None:
        if isinstance(self.mar, dict):
            self.mar = _dataclass_from_json(MARConfig, self.mar, "mar")
        if self.cfg_schedule not in CFG_SCHEDULES:
            raise ValueError(f"cfg_schedule must be one of {CFG_SCHEDULES}, got {self.cfg_schedule!r}")
        if self.num_iterations < 1:
            raise ValueError(f"num_iterations must be >= 1, got {self.num_iterations}")
        if "{prompt}" not in self.generation_prompt:
            raise ValueError(f"generation_prompt must contain '{{prompt}}', got {self.generation_prompt!r}")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _dataclass_from_json(cls, data: dict, where: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    return cls(**data)


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the backward multiplies the gradient by ``scale``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


def build_mlp(width_in: int, hidden: int, width_out: int) -> nn.Sequential:
    """Harmon's projector: Linear -> SiLU -> Linear."""
    return nn.Sequential(nn.Linear(width_in, hidden), nn.SiLU(), nn.Linear(hidden, width_out))


def projectors(mar_width: int, llm_width: int) -> tuple[nn.Sequential, nn.Sequential]:
    """``proj_in`` (MAR encoder width -> LLM width) and ``proj_out`` (LLM width -> MAR encoder width)."""
    return build_mlp(mar_width, llm_width, llm_width), build_mlp(llm_width, llm_width, mar_width)


@dataclass
class _Row:
    """One prompt before embedding: token ids (an image's slots hold IMAGE_PAD), the latent tokens of its
    images in order, and which positions are the condition's own segments."""

    ids: list[int]
    images: list[torch.Tensor]
    content: list[bool]


@dataclass
class _Prefix:
    embeds: torch.Tensor  # (B, L, H), left-padded
    mask: torch.Tensor  # (B, L) long


class HarmonAdapter(nn.Module, FamilyFacts):
    """A Harmon model (Qwen2 LLM, MAR, projectors, KL VAE) as a :class:`reca_eval.models.protocol.UnifiedModel`."""

    family = "harmon"
    model_types = (MODEL_TYPE,)
    # Only the VAE: the MAR encoder is the understanding encoder and the generator's, shared with the LLM.
    frozen_modules = ("vae",)
    # Shared parameters, so image->text stays in RecA's mix (the authors' 2 recon : 2 i2t).
    reca_objectives = ("recon", "i2t")
    vq_ablation = False
    default_guidance_scale = 3.0
    extra_sampling_defaults = {"temperature": 1.0}  # the authors' setting; top-k/p do not apply
    shapeworld_asset = "shapeworld-harmon-base"
    shapeworld_build = (
        "python -m trainers.pretrain_shapeworld_harmon trainers/recipes/shapeworld_harmon_base.yaml"
    )
    # The question this family answers in the main command is text->image (does a shared encoder show
    # RecA's text->image gain over matched-compute SFT?), so it is scored where that is measured.
    main_arms = ("base", "SFT", "SFT+RecA", "SFT-matched", "SFT-half")
    main_benchmarks = ("shapes-geneval", "shapes-dpg")

    def __init__(
        self,
        llm: Qwen2ForCausalLM,
        tokenizer,
        mar: MAR,
        proj_in: nn.Module,
        proj_out: nn.Module,
        vae: AutoencoderKL | AutoencoderDC,
        config: HarmonConfig,
    ):
        super().__init__()
        channels = int(vae.config.latent_channels)
        if channels != config.mar.token_embed_dim:
            raise ValueError(
                f"VAE latent_channels {channels} != mar.token_embed_dim {config.mar.token_embed_dim} (patch size 1)"
            )
        stride = vae_stride(vae)
        if config.image_size % stride:
            raise ValueError(f"image_size {config.image_size} is not a multiple of the VAE stride {stride}")
        for token in (IMAGE_PAD, IM_END, "<|im_start|>"):
            if tokenizer.convert_tokens_to_ids(token) in (None, tokenizer.unk_token_id):
                raise ValueError(f"the tokenizer lacks the special token {token!r}")
        self.llm = llm
        self.tokenizer = tokenizer
        self.mar = mar
        self.proj_in = proj_in
        self.proj_out = proj_out
        self.vae = vae.requires_grad_(False).eval()
        self.config = config
        self.image_size = config.image_size
        self.vae_stride = stride
        self.grid = (config.image_size // stride, config.image_size // stride)
        self.channels = channels
        self.buffer_size = config.mar.buffer_size
        self._pixels = VaeImageProcessor(vae_scale_factor=stride)
        self._cache_keyword = cache_keyword(llm.model)
        self._prompt_cache: dict[str, list[int]] = {}
        self._image_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        self._end_id = tokenizer.convert_tokens_to_ids(IM_END)
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self._end_id
        self._user_prefix_len = len(tokenizer(USER_PREFIX, add_special_tokens=False)["input_ids"])

    # ----------------------------------------------------------------------------------------- basics
    @property
    def device(self) -> torch.device:
        return self.llm.device

    @property
    def dtype(self) -> torch.dtype:
        return self.llm.dtype

    @property
    def hidden_size(self) -> int:
        return int(self.llm.config.hidden_size)

    def train(self, mode: bool = True):
        super().train(mode)
        self.vae.eval()  # frozen: its outputs are what the trainer caches
        return self

    def forward(self, objective: str, **kwargs) -> torch.Tensor:
        return dispatch_objective(self, objective, **kwargs)

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {
            "llm": self.llm,
            "mar": self.mar,
            "diffusion_head": self.mar.diffloss,
            "proj_in": self.proj_in,
            "proj_out": self.proj_out,
            "vae": self.vae,
        }

    def encoder_modules(self) -> dict[str, nn.Module]:
        """What computes the frozen outputs (for the trainer's cache fingerprints): the VAE for both."""
        return {"understanding": self.vae, "generation_targets": self.vae}

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        """PIL -> (B, 3, image_size, image_size) in [-1, 1]."""
        rgb = [im.convert("RGB") for im in images]
        return self._pixels.preprocess(rgb, height=self.image_size, width=self.image_size).to(self.device)

    def recon_condition(self, instruction: str, embeds: torch.Tensor, drop: bool) -> Condition:
        """RecA's condition as the authors build it: the image first, then the instruction on a new line;
        a dropout draw replaces the instruction by the unconditional prompt and keeps the image."""
        return Condition([ImageEmbeds(embeds), self.config.unconditional_prompt if drop else instruction])

    # --------------------------------------------------------------------------------- latents
    @torch.no_grad()
    def generation_targets(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Scaled VAE latents (B, C, image_size / 16, image_size / 16): the posterior mode x vae_scale."""
        px = pixel_values.to(self.device, self.vae.dtype)
        return (encode_latents(self.vae, px) * self.config.vae_scale).detach()

    @torch.no_grad()
    def understanding_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The frozen part of the understanding path: latent tokens (B, N, C); the trainable MAR encoder
        and ``proj_in`` run on them inside the losses (see the module docstring)."""
        return latent_tokens(self.generation_targets(pixel_values))

    def encode_images(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """Latent tokens (N, C) of condition images -> LLM input embeddings (N + buffers, H): the MAR
        encoder over all tokens, ``proj_in``, buffers moved to the end; the gradient is scaled by grad_scale."""
        out: list[torch.Tensor | None] = [None] * len(images)
        by_size: dict[int, list[int]] = {}
        for i, tokens in enumerate(images):
            by_size.setdefault(tokens.shape[0], []).append(i)
        for n, members in by_size.items():
            side = math.isqrt(n)
            tokens = torch.stack([images[i] for i in members]).to(self.device, self.dtype)
            mask = tokens.new_zeros(tokens.shape[:2])
            encoded = self.proj_in(self.mar.forward_mae_encoder(tokens, mask, (side, side)))
            encoded = torch.cat([encoded[:, self.buffer_size :], encoded[:, : self.buffer_size]], dim=1)
            encoded = _ScaleGradient.apply(encoded, self.config.grad_scale)
            for j, i in enumerate(members):
                out[i] = encoded[j]
        return out  # type: ignore[return-value]

    # -------------------------------------------------------------------------------- prompts
    def _check_image(self, embeds: torch.Tensor, where: str) -> torch.Tensor:
        n = embeds.shape[0] if embeds.ndim == 2 else -1
        if embeds.ndim != 2 or embeds.shape[-1] != self.channels or math.isqrt(n) ** 2 != n or n == 0:
            raise ValueError(
                f"{where}: a Harmon ImageEmbeds holds the VAE latent tokens of a square image, "
                f"(side * side, {self.channels}) as understanding_embeddings returns them; got {tuple(embeds.shape)}"
            )
        return embeds

    def _prompt_ids(self, text: str) -> list[int]:
        if text not in self._prompt_cache:
            if len(self._prompt_cache) >= PROMPT_CACHE_SIZE:
                self._prompt_cache.clear()
            full = PROMPT_TEMPLATE.format(input=text)
            self._prompt_cache[text] = list(self.tokenizer(full, add_special_tokens=True)["input_ids"])
        return list(self._prompt_cache[text])

    def _row(self, condition: Condition, where: str) -> _Row:
        segments = condition.segments
        images: list[torch.Tensor] = []
        if not segments:
            text = self.config.unconditional_prompt
        elif all(isinstance(s, str) for s in segments):
            text = self.config.generation_prompt.format(prompt=" ".join(s.strip() for s in segments))
        else:
            pieces, after_image = [], False
            for j, seg in enumerate(segments):
                if isinstance(seg, ImageEmbeds):
                    images.append(self._check_image(seg.embeds, f"{where} segment {j}"))
                    pieces.append(IMAGE_PAD)
                    after_image = True
                elif isinstance(seg, str):
                    pieces.append(("\n" if after_image else "") + seg)
                    after_image = False
                else:
                    raise TypeError(
                        f"{where} segment {j}: expected str or ImageEmbeds, got {type(seg).__name__}"
                    )
            text = "".join(pieces)
        for j, seg in enumerate(segments):
            if isinstance(seg, str) and IMAGE_PAD in seg:
                raise ValueError(f"{where} segment {j}: text contains the image placeholder {IMAGE_PAD!r}")
        ids = self._prompt_ids(text)
        if ids.count(self._image_id) != len(images):
            raise ValueError(f"{where}: {len(images)} image(s) but {ids.count(self._image_id)} placeholders")
        end = ids.index(self._end_id) if self._end_id in ids else len(ids)
        row = _Row([], images, [])
        sizes = iter(images)
        for i, t in enumerate(ids):
            inside = self._user_prefix_len <= i < end
            n = next(sizes).shape[0] + self.buffer_size if t == self._image_id else 1
            row.ids += [t] * n
            row.content += [inside] * n
        return row

    def _rows(self, conditions: list[Condition]) -> list[_Row]:
        return [self._row(c, f"condition {i}") for i, c in enumerate(conditions)]

    def _embed_rows(self, rows: list[_Row], tails: list[list[int]] | None = None) -> _Prefix:
        """Left-padded input embeddings of ``rows`` (plus token ``tails``, e.g. answers), the condition
        images encoded into their slots (with the scaled gradient)."""
        tails = tails or [[] for _ in rows]
        seqs = [r.ids + t for r, t in zip(rows, tails, strict=True)]
        length = max(len(s) for s in seqs)
        ids = torch.tensor([[self._pad_id] * (length - len(s)) + s for s in seqs], device=self.device)
        mask = torch.tensor(
            [[0] * (length - len(s)) + [1] * len(s) for s in seqs], dtype=torch.long, device=self.device
        )
        embeds = self.llm.get_input_embeddings()(ids) * mask.unsqueeze(-1).to(self.dtype)
        images = [im for r in rows for im in r.images]
        if images:
            slots = (ids == self._image_id) & mask.bool()
            values = torch.cat(self.encode_images(images)).to(embeds.dtype)
            if int(slots.sum()) != values.shape[0]:
                raise ValueError(
                    f"{int(slots.sum())} image positions for {values.shape[0]} encoded image tokens: "
                    f"does a text contain {IMAGE_PAD!r}?"
                )
            embeds = embeds.masked_scatter(slots.unsqueeze(-1), values)
        return _Prefix(embeds, mask)

    def _prefix(self, conditions: list[Condition]) -> _Prefix:
        return self._embed_rows(self._rows(conditions))

    # ------------------------------------------------------------------------------- the MAR step
    def decoder_states(
        self,
        prefix: _Prefix,
        tokens: torch.Tensor,
        mask: torch.Tensor,
        cache: DynamicCache | None = None,
        copies: int = 1,
    ) -> torch.Tensor:
        """MAR decoder states (B, N, dec) of every latent position given the prompt prefix, the latent
        tokens and the mask (1 = masked: unseen by the encoder). With ``cache`` the prefix is already in
        it (prefilled) and only the image part runs; the cache is cropped back to the prefix afterwards.
        ``copies``: the prefix has that many rows per image (classifier-free guidance: 2), which see the
        same tokens; the MAR encoder, which does not read the prefix, runs once for all of them."""
        grid = _grid(tokens.shape[1])
        x_enc = self.mar.forward_mae_encoder(tokens.to(self.dtype), mask.to(self.dtype), grid)
        if copies > 1:
            x_enc, mask = x_enc.repeat(copies, 1, 1), mask.repeat(copies, 1)
        z_enc = self.proj_in(x_enc)
        z_enc = torch.cat([z_enc[:, self.buffer_size :], z_enc[:, : self.buffer_size]], dim=1)
        length = z_enc.shape[1]
        full_mask = torch.cat([prefix.mask, prefix.mask.new_ones(prefix.mask.shape[0], length)], dim=1)
        positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
        if cache is None:
            out = self.llm.model(
                inputs_embeds=torch.cat([prefix.embeds, z_enc.to(prefix.embeds.dtype)], dim=1),
                attention_mask=full_mask,
                position_ids=positions,
                use_cache=False,
            )
        else:
            out = self.llm.model(
                inputs_embeds=z_enc.to(prefix.embeds.dtype),
                attention_mask=full_mask,
                position_ids=positions[:, -length:],
                use_cache=True,
                **{self._cache_keyword: cache},
            )
            cache.crop(-length)  # back to the prefix: the next step's image part replaces this one
        z_llm = out.last_hidden_state[:, -length:]
        z_llm = torch.cat([z_llm[:, -self.buffer_size :], z_llm[:, : -self.buffer_size]], dim=1)
        return self.mar.forward_mae_decoder(x_enc + self.proj_out(z_llm), mask.to(self.dtype), grid)

    def prefill(self, prefix: _Prefix) -> DynamicCache:
        cache = DynamicCache(config=self.llm.config)
        self.llm.model(
            inputs_embeds=prefix.embeds,
            attention_mask=prefix.mask,
            position_ids=(prefix.mask.cumsum(-1) - 1).clamp(min=0),
            use_cache=True,
            **{self._cache_keyword: cache},
        )
        return cache

    # ------------------------------------------------------------------------------------- losses
    def training_mask(
        self, batch: int, length: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """MAR's training mask (B, N), 1 = masked: a random order per row, the first ceil(N * r) masked,
        r drawn once per batch from the truncated Gaussian (>= mask_ratio_min)."""
        orders = torch.rand(batch, length, generator=generator).argsort(dim=-1)
        masked = math.ceil(length * self.mar.mask_ratio(generator))
        mask = torch.zeros(batch, length)
        mask.scatter_(1, orders[:, :masked], 1.0)
        return mask.to(self.device)

    def diffusion_loss(self, z: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The diffusion loss on masked positions only, each row repeated ``diffusion_batch_mul`` times with
        its own timestep and noise."""
        picked = mask.bool()
        mul = self.config.mar.diffusion_batch_mul
        target = tokens.to(z.device)[picked].repeat(mul, 1)
        return self.mar.diffloss.token_losses(target, z[picked].repeat(mul, 1)).mean()

    def generation_loss(self, conditions: list[Condition], targets: torch.Tensor) -> torch.Tensor:
        tokens = self._check_targets(conditions, targets)
        mask = self.training_mask(tokens.shape[0], tokens.shape[1])
        z = self.decoder_states(self._prefix(conditions), tokens, mask)
        return self.diffusion_loss(z, tokens, mask)

    def _check_targets(self, conditions: list[Condition], targets: torch.Tensor) -> torch.Tensor:
        if targets.ndim != 4 or not targets.is_floating_point() or targets.shape[1] != self.channels:
            raise ValueError(
                f"targets must be scaled VAE latents (B, {self.channels}, h, w), got {tuple(targets.shape)} {targets.dtype}"
            )
        if targets.shape[0] != len(conditions):
            raise ValueError(f"{len(conditions)} condition(s) but {targets.shape[0]} target row(s)")
        return latent_tokens(targets.to(self.device, self.dtype))

    def understanding_loss(self, pixel_values: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """Image -> text CE over the answer tokens and <|im_end|> of "<|im_start|>user\\n<image><|im_end|>
        \\n<|im_start|>assistant\\n{text}<|im_end|>"; the image is the shared MAR encoding (gradient scaled)."""
        if pixel_values.shape[0] != len(texts):
            raise ValueError(f"{pixel_values.shape[0]} image(s) but {len(texts)} text(s)")
        empty = [i for i, t in enumerate(texts) if not t.strip()]
        if empty:
            raise ValueError(f"understanding text {empty[0]} is empty")
        latents = self.understanding_embeddings(pixel_values)
        rows = [
            self._row(Condition([ImageEmbeds(lat)]), f"understanding example {i}")
            for i, lat in enumerate(latents)
        ]
        answers = self.tokenizer([t.strip() for t in texts], add_special_tokens=False)["input_ids"]
        tails = [list(a) + [self._end_id] for a in answers]
        prefix = self._embed_rows(rows, tails)
        length = prefix.mask.shape[1]
        labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long, device=self.device)
        for i, tail in enumerate(tails):
            # position t predicts token t + 1: the answer's tokens are predicted from one position earlier
            labels[i, length - len(tail) - 1 : length - 1] = torch.tensor(tail, device=self.device)
        hidden = self.llm.model(
            inputs_embeds=prefix.embeds,
            attention_mask=prefix.mask,
            position_ids=(prefix.mask.cumsum(-1) - 1).clamp(min=0),
            use_cache=False,
        ).last_hidden_state
        logits = self.llm.lm_head(hidden).float()
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX
        )

    # ------------------------------------------------------------------------ condition states
    def condition_hidden_states(self, conditions: list[Condition], layer: int = -1) -> torch.Tensor:
        """The LLM's hidden state at ``layer`` (-1 = final) averaged over each condition's own positions
        (its text and encoded image tokens, not the template): (B, H)."""
        if not conditions:
            return torch.zeros(0, self.hidden_size, device=self.device)
        if any(not c.segments for c in conditions):
            raise ValueError("condition_hidden_states: an empty Condition([]) has no positions to pool")
        rows = self._rows(conditions)
        prefix = self._embed_rows(rows)
        length = prefix.mask.shape[1]
        content = torch.tensor(
            [[False] * (length - len(r.content)) + r.content for r in rows],
            dtype=torch.bool,
            device=self.device,
        )
        num_layers = int(self.llm.config.num_hidden_layers)
        if not -1 <= layer <= num_layers:
            raise ValueError(f"layer must be in [-1, {num_layers}], got {layer}")
        last = layer in (-1, num_layers)
        out = self.llm.model(
            inputs_embeds=prefix.embeds,
            attention_mask=prefix.mask,
            position_ids=(prefix.mask.cumsum(-1) - 1).clamp(min=0),
            use_cache=False,
            output_hidden_states=not last,
        )
        hidden = out.last_hidden_state if last else out.hidden_states[layer]
        weights = content.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    # ----------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample_tokens(self, conditions: list[Condition], sampling: SamplingConfig) -> torch.Tensor:
        """MAR sampling of latent tokens (B, N, C): a cosine mask schedule over ``num_iterations``, each
        step's newly revealed tokens drawn by the diffusion head with CFG against ``Condition([])``.
        Image i draws its order and its noise from a generator seeded ``sampling.seed + i`` (or
        ``sampling.seeds[i]``), so it does not depend on its batch-mates."""
        if sampling.temperature < 0:
            raise ValueError(f"SamplingConfig.temperature must be >= 0, got {sampling.temperature}")
        if sampling.top_k is not None or sampling.top_p is not None:
            raise ValueError("top_k / top_p do not apply to Harmon's continuous tokens; leave them unset")
        batch, n, channels = len(conditions), self.grid[0] * self.grid[1], self.channels
        tokens = torch.zeros(batch, n, channels, device=self.device)
        if batch == 0:
            return tokens
        guided = sampling.guidance_scale != 1.0
        rows = self._rows(conditions)
        if guided:
            rows += self._rows([Condition([])] * batch)
        prefix = self._embed_rows(rows)
        cache = self.prefill(prefix)
        generators = image_generators(sampling.seeds or sampling.seed, batch, torch.device("cpu"))
        orders = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(self.device)
        mask = torch.ones(batch, n, device=self.device)
        iterations = self.config.num_iterations
        diffusion, head = self.mar.diffloss.gen_diffusion, self.mar.diffloss.net
        denoise = functools.partial(head, embedded=True)  # the chain's conditions are embedded once
        for step in range(iterations):
            z = self.decoder_states(prefix, tokens, mask, cache=cache, copies=2 if guided else 1)
            # MaskGIT's cosine schedule: how many stay masked after this step (at least one, fewer than now).
            remaining = int(mask[0].sum())
            mask_len = math.floor(n * math.cos(math.pi / 2.0 * (step + 1) / iterations))
            mask_len = max(1, min(remaining - 1, mask_len))
            mask_next = torch.zeros_like(mask).scatter_(1, orders[:, :mask_len], 1.0)
            to_pred = mask.bool() if step == iterations - 1 else mask.bool() & ~mask_next.bool()
            mask = mask_next
            count = int(to_pred[0].sum())
            if count == 0:
                continue
            scale = sampling.guidance_scale
            if self.config.cfg_schedule == "linear":
                scale = 1 + (scale - 1) * (n - mask_len) / n
            noise = torch.cat(
                [torch.randn(diffusion.num_timesteps + 1, count, channels, generator=g) for g in generators],
                dim=1,
            ).to(self.device)
            cond = head.embed_condition(z[:batch][to_pred])
            uncond = head.embed_condition(z[batch:][to_pred]) if guided else None
            drawn = diffusion.sample(denoise, cond, noise, sampling.temperature, uncond, scale)
            tokens = tokens.clone()
            tokens[to_pred] = drawn.to(tokens.dtype)
        return tokens

    @torch.no_grad()
    def decode_images(self, latents: torch.Tensor) -> list[Image.Image]:
        """Scaled latents (B, C, h, w), as generation_targets returns them, or latent tokens (B, N, C)."""
        if latents.ndim == 3:
            latents = tokens_to_latents(latents, self.grid)
        latents = latents.to(self.device, self.vae.dtype) / self.config.vae_scale
        pixels = self.vae.decode(latents).sample
        return self._pixels.postprocess(pixels.float(), output_type="pil")

    def generate(self, conditions: list[Condition], sampling: SamplingConfig) -> list[Image.Image]:
        return self.decode_images(self.sample_tokens(conditions, sampling))

    # --------------------------------------------------------------------------------------- saving
    def save_pretrained(self, path: Path) -> None:
        """llm/ (transformers, with the tokenizer), vae/ (diffusers), harmon.safetensors (MAR and the
        projectors) and config.json, swapped in whole."""

        def write(root: Path) -> None:
            self.llm.save_pretrained(root / "llm")
            self.tokenizer.save_pretrained(root / "llm")
            self.vae.save_pretrained(root / "vae")
            weights = {}
            for name in ("mar", "proj_in", "proj_out"):
                weights.update({f"{name}.{k}": v for k, v in getattr(self, name).state_dict().items()})
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(root / WEIGHTS_FILE)
            )
            meta = {"model_type": MODEL_TYPE, **self.config.to_json()}
            (root / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

        atomic_write_dir(path, write)

    @classmethod
    def from_pretrained(
        cls, path: Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
    ) -> HarmonAdapter:
        path = Path(path)
        config_path = path / CONFIG_FILE
        try:
            meta = json.loads(config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{config_path}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
        if meta.pop("model_type", None) != MODEL_TYPE:
            raise ValueError(f"{config_path}: model_type is not {MODEL_TYPE!r}")
        config = _dataclass_from_json(HarmonConfig, meta, str(config_path))
        for part in ("llm", "vae", WEIGHTS_FILE):
            if not (path / part).exists():
                raise FileNotFoundError(f"{path / part} is missing: {path} is not a reca Harmon checkpoint")
        dtype = dtype or torch.float32
        llm = Qwen2ForCausalLM.from_pretrained(str(path / "llm"), dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(str(path / "llm"))
        vae = load_vae(path / "vae", dtype)
        mar = MAR(config.mar)
        proj_in, proj_out = projectors(config.mar.encoder_embed_dim, int(llm.config.hidden_size))
        weights = load_file(str(path / WEIGHTS_FILE))
        for name, module in (("mar", mar), ("proj_in", proj_in), ("proj_out", proj_out)):
            state = {k.removeprefix(f"{name}."): v for k, v in weights.items() if k.startswith(f"{name}.")}
            try:
                module.load_state_dict(state)
            except RuntimeError as exc:
                raise ValueError(
                    f"{path / WEIGHTS_FILE}: {name} weights do not fit {config_path} ({exc})"
                ) from exc
        adapter = cls(llm, tokenizer, mar.to(dtype), proj_in.to(dtype), proj_out.to(dtype), vae, config)
        return adapter.to(device).eval()


# ------------------------------------------------------------------------------------- the autoencoder
# Harmon's own VAE is KL-16 (diffusers' AutoencoderKL, read at its posterior mode); the ShapeWorld Harmon
# base shares the flow base's frozen DC-AE (diffusers' AutoencoderDC), so both latent families read one
# latent space. Only these three functions tell the two apart.
VAE_CLASSES = {"AutoencoderKL": AutoencoderKL, "AutoencoderDC": AutoencoderDC}


def vae_stride(vae: AutoencoderKL | AutoencoderDC) -> int:
    """Pixels per latent cell along a side: each level after the first halves the resolution."""
    levels = (
        vae.config.block_out_channels
        if isinstance(vae, AutoencoderKL)
        else vae.config.encoder_block_out_channels
    )
    return 2 ** (len(levels) - 1)


def encode_latents(vae: AutoencoderKL | AutoencoderDC, pixels: torch.Tensor) -> torch.Tensor:
    """Unscaled latents (B, C, h, w): a KL VAE's posterior mode, a DC-AE's latent."""
    if isinstance(vae, AutoencoderKL):
        return vae.encode(pixels).latent_dist.mode()
    return vae.encode(pixels).latent


def load_vae(folder: Path, dtype: torch.dtype) -> AutoencoderKL | AutoencoderDC:
    """The diffusers autoencoder saved in ``folder``, of the class its config.json names."""
    config_path = folder / "config.json"
    try:
        name = json.loads(config_path.read_text(encoding="utf-8")).get("_class_name")
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{config_path}: not a readable diffusers config ({exc})") from exc
    if name not in VAE_CLASSES:
        raise ValueError(f"{config_path}: _class_name {name!r} is not one of {', '.join(VAE_CLASSES)}")
    return VAE_CLASSES[name].from_pretrained(str(folder), dtype=dtype)


# ------------------------------------------------------------------------------------- latent layout
def latent_tokens(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h * w, C), row-major: MAR's token order (patch size 1)."""
    return latents.flatten(2).transpose(1, 2)


def tokens_to_latents(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)


def _grid(n: int) -> tuple[int, int]:
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"{n} latent tokens are not a square grid")
    return (side, side)
