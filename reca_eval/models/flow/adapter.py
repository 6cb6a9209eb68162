"""Flow matching on VAE latents behind the UnifiedModel protocol: the OpenUni / MetaQuery composite.

    frozen Qwen2.5-VL  --reads-->  "<|im_start|>user\\n <segments> <|im_end|>\\n<|im_start|>assistant\\n" q_1 ... q_N
    connector(last hidden states of q_1..q_N)  -->  DiT conditioning (Sana's caption input)
    Sana DiT on DC-AE latents, trained with flow matching (velocity = noise - x0, x_t = (1-s) x0 + s noise)

Only the N learnable queries, the connector and the DiT train: the VLM and the VAE are frozen (the
decoupled rule of RecA: no image->text data needed). Gradients still flow *through* the frozen VLM into
the queries, which sit in its input.

An :class:`ImageEmbeds` segment becomes ``<|vision_start|> <|image_pad|> x n <|vision_end|>`` with the
embeddings in place of the pads and Qwen2.5-VL's 3-D rotary positions for them (the grid is inferred from
n, square). ``Condition([])`` is the user turn with no content: the unconditional input of CFG.

The module also holds what the Qwen-Image-Edit adapter shares: timestep sampling, the flow-matching
loss, rendering a condition into VLM token ids, running the frozen VLM, and atomic directory saving.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderDC, FlowMatchEulerDiscreteScheduler, SanaTransformer2DModel
from diffusers.image_processor import VaeImageProcessor
from diffusers.training_utils import compute_density_for_timestep_sampling
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoImageProcessor, AutoTokenizer, Qwen2_5_VLForConditionalGeneration

from reca_eval.core.records import atomic_write_dir
from reca_eval.models.protocol import (
    Condition,
    FamilyFacts,
    ImageEmbeds,
    SamplingConfig,
    dispatch_objective,
)
from reca_eval.models.sampling import image_generators

TIMESTEP_SAMPLINGS = ("uniform", "logit_normal")
RECA_CONFIG_FILE = "config.json"
RECA_WEIGHTS_FILE = "reca_flow.safetensors"
MODEL_TYPE = "reca_flow"

IMAGE_PAD = "<|image_pad|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
CHAT_PREFIX = "<|im_start|>user\n"
CHAT_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"


@dataclass
class FlowConfig:
    """What the composite adds to its standard parts; saved as ``config.json`` beside them."""

    image_size: int = 512  # generated images (and VAE targets) are image_size x image_size
    understanding_size: int = 224  # pixels at which the VLM reads a condition image: the bottleneck
    num_queries: int = 64
    connector_layers: int = 2  # transformer layers over the query hidden states (0 = MLP only)
    connector_heads: int = 8
    timestep_sampling: str = "logit_normal"  # uniform | logit_normal
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 1.0  # SD3 time shift on training sigmas: s' = shift s / (1 + (shift - 1) s)
    num_inference_steps: int = 30

    def __post_init__(self) -> None:
        check_timestep_config(self.timestep_sampling, self.shift, self.logit_std)
        if self.num_queries < 1:
            raise ValueError(f"num_queries must be >= 1, got {self.num_queries}")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def check_timestep_config(sampling: str, shift: float, logit_std: float) -> None:
    if sampling not in TIMESTEP_SAMPLINGS:
        raise ValueError(f"timestep_sampling must be one of {TIMESTEP_SAMPLINGS}, got {sampling!r}")
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    if logit_std <= 0:
        raise ValueError(f"logit_std must be > 0, got {logit_std}")


def config_from_json(cls, data: dict, where: str):
    """A config dataclass from JSON, naming the file and any unknown key."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    return cls(**data)


# ------------------------------------------------------------------------------------ flow matching
def sample_sigmas(
    batch: int,
    sampling: str,
    shift: float = 1.0,
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Noise levels in (0, 1) for a training batch: uniform or logit-normal (SD3), then time-shifted.

    A shift > 1 moves mass to high noise, which larger images need (the signal survives more noise)."""
    check_timestep_config(sampling, shift, logit_std)
    u = compute_density_for_timestep_sampling(
        weighting_scheme="logit_normal" if sampling == "logit_normal" else "none",
        batch_size=batch,
        logit_mean=logit_mean,
        logit_std=logit_std,
        device=device,
        generator=generator,
    )
    return shift * u / (1 + (shift - 1) * u)


def flow_matching_loss(
    predict_velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    latents: torch.Tensor,
    sigmas: torch.Tensor,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rectified-flow loss: MSE between the predicted and true velocity ``noise - latents`` at
    ``x_s = (1 - s) latents + s noise``. ``predict_velocity(x_s, sigmas)`` is the conditioned DiT."""
    noise = torch.randn_like(latents) if noise is None else noise
    s = sigmas.to(latents.dtype).view(-1, *([1] * (latents.ndim - 1)))
    noisy = (1 - s) * latents + s * noise
    velocity = predict_velocity(noisy, sigmas)
    return F.mse_loss(velocity.float(), (noise - latents).float())


def seeded_noise(shape: tuple[int, ...], sampling: SamplingConfig, device: torch.device) -> torch.Tensor:
    """(B, *shape) starting noise; image i draws from a generator seeded ``sampling.seed + i`` (or
    ``sampling.seeds[i]``: the generation driver's per-image seeds, so an image does not depend on its
    batch or shard)."""
    batch, rest = shape[0], shape[1:]
    generators = image_generators(sampling.seeds or sampling.seed, batch, torch.device("cpu"))
    # Drawn on the CPU so an image is the same on every device.
    return torch.stack([torch.randn(rest, generator=g) for g in generators]).to(device)


def fresh_scheduler(scheduler: FlowMatchEulerDiscreteScheduler) -> FlowMatchEulerDiscreteScheduler:
    # A scheduler keeps step state; each sampling run gets its own so concurrent calls never share it.
    return FlowMatchEulerDiscreteScheduler.from_config(scheduler.config)


# --------------------------------------------------------------------------------- the frozen VLM
def vision_grid(num_tokens: int, merge: int, where: str) -> tuple[int, int, int]:
    """The (t, h, w) patch grid of a square image that the VLM turned into ``num_tokens`` tokens."""
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f"{where}: ImageEmbeds with {num_tokens} tokens is not a square grid")
    return (1, side * merge, side * merge)


def render_condition(
    tokenizer, condition: Condition, prefix: str, suffix: str, hidden: int, merge: int, where: str
) -> tuple[list[int], list[int], list[torch.Tensor], list[tuple[int, int, int]]]:
    """Token ids of ``prefix <segments> suffix``, with ``<|image_pad|>`` x n per image segment.

    Returns ids, modality types (1 at image pads, as Qwen2.5-VL's rope index wants), image embeddings
    and their grids."""

    def encode(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    pad_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    ids, feats, grids = encode(prefix), [], []
    for j, seg in enumerate(condition.segments):
        if isinstance(seg, ImageEmbeds):
            e = seg.embeds
            if e.ndim != 2 or e.shape[-1] != hidden:
                raise ValueError(
                    f"{where} segment {j}: ImageEmbeds must be (num_tokens, {hidden}), got {tuple(e.shape)}"
                )
            grids.append(vision_grid(e.shape[0], merge, f"{where} segment {j}"))
            ids += encode(VISION_START) + [pad_id] * e.shape[0] + encode(VISION_END)
            feats.append(e)
        elif isinstance(seg, str):
            if IMAGE_PAD in seg:
                raise ValueError(f"{where} segment {j}: text contains the image placeholder {IMAGE_PAD!r}")
            ids += encode(seg)
        else:
            raise TypeError(f"{where} segment {j}: expected str or ImageEmbeds, got {type(seg).__name__}")
    ids += encode(suffix)
    types = [1 if t == pad_id else 0 for t in ids]
    return ids, types, feats, grids


def left_pad(rows: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad, dtype=torch.long, device=device)
    mask = torch.zeros(len(rows), length, dtype=torch.long, device=device)
    for i, r in enumerate(rows):
        if r:
            ids[i, length - len(r) :] = torch.tensor(r, device=device)
            mask[i, length - len(r) :] = 1
    return ids, mask


def vlm_hidden_states(
    vlm: Qwen2_5_VLForConditionalGeneration,
    rendered: list[tuple[list[int], list[int], list[torch.Tensor], list[tuple[int, int, int]]]],
    pad_id: int,
    tail: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the (frozen) VLM on left-padded rendered conditions; returns the last layer's hidden states
    (B, L, H) and the attention mask. ``tail`` (T, H) embeddings (the learnable queries) are appended to
    every row, taking the text positions after the prompt; gradients reach them through the VLM."""
    device = vlm.device
    rows = [r[0] + ([pad_id] * tail.shape[0] if tail is not None else []) for r in rendered]
    type_rows = [r[1] + ([0] * tail.shape[0] if tail is not None else []) for r in rendered]
    ids, mask = left_pad(rows, pad_id, device)
    types, _ = left_pad(type_rows, 0, device)
    grids = [g for r in rendered for g in r[3]]
    grid = torch.tensor(grids, dtype=torch.long, device=device) if grids else None
    inner = vlm.model
    positions, _ = inner.get_rope_index(
        ids, mm_token_type_ids=types, image_grid_thw=grid, attention_mask=mask
    )
    embeds = inner.get_input_embeddings()(ids)
    feats = [f for r in rendered for f in r[2]]
    if feats:
        image = torch.cat(feats).to(device, embeds.dtype)
        slots = (ids == vlm.config.image_token_id) & mask.bool()
        embeds = embeds.masked_scatter(slots.unsqueeze(-1), image)
    if tail is not None:
        embeds = torch.cat(
            [embeds[:, : -tail.shape[0]], tail.to(embeds.dtype).expand(len(rows), -1, -1)], dim=1
        )
    out = inner.language_model(
        inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False
    )
    return out.last_hidden_state, mask


@torch.no_grad()
def vlm_image_features(vlm, image_processor, pixel_values: torch.Tensor, side: int) -> torch.Tensor:
    """Qwen2.5-VL vision tower + merger output (B, n, H) of images given in [-1, 1], read at ``side`` px."""
    if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
        raise ValueError(f"pixel_values must be (B, 3, H, W) in [-1, 1], got {tuple(pixel_values.shape)}")
    small = F.interpolate(
        pixel_values.float(), size=(side, side), mode="bicubic", antialias=True, align_corners=False
    )
    unit = ((small.clamp(-1, 1) + 1) / 2).cpu()
    inputs = image_processor(
        images=list(unit),
        do_rescale=False,
        size={"shortest_edge": side * side, "longest_edge": side * side},
        return_tensors="pt",
    )
    grid = inputs["image_grid_thw"].to(vlm.device)
    px = inputs["pixel_values"].to(vlm.device, vlm.model.visual.dtype)
    feats = vlm.model.get_image_features(px, grid).pooler_output
    return torch.stack(list(feats)).detach()


def check_latent_targets(
    conditions: list[Condition], targets: torch.Tensor, channels: int, ndim: int = 4
) -> None:
    if targets.ndim != ndim or not targets.is_floating_point():
        raise ValueError(
            f"targets must be float VAE latents with {ndim} dims, got {tuple(targets.shape)} {targets.dtype}"
        )
    if targets.shape[1] != channels:
        raise ValueError(f"targets have {targets.shape[1]} latent channels, the DiT expects {channels}")
    if targets.shape[0] != len(conditions):
        raise ValueError(f"{len(conditions)} condition(s) but {targets.shape[0]} target row(s)")


# ------------------------------------------------------------------------------------ the composite
def build_connector(config: FlowConfig, vlm_hidden: int, dit_channels: int) -> torch.nn.Sequential:
    """Query hidden states (B, N, vlm_hidden) -> DiT caption features (B, N, dit_channels)."""
    layers: list[torch.nn.Module] = []
    if config.connector_layers > 0:
        layer = torch.nn.TransformerEncoderLayer(
            vlm_hidden, config.connector_heads, 4 * vlm_hidden, dropout=0.0, batch_first=True, norm_first=True
        )
        layers.append(torch.nn.TransformerEncoder(layer, config.connector_layers, enable_nested_tensor=False))
    layers += [
        torch.nn.LayerNorm(vlm_hidden),
        torch.nn.Linear(vlm_hidden, dit_channels),
        torch.nn.GELU(approximate="tanh"),
        torch.nn.Linear(dit_channels, dit_channels),
    ]
    return torch.nn.Sequential(*layers)


class FrozenVLMAdapter(torch.nn.Module, FamilyFacts):
    """What the frozen-VLM flow adapters share (this family and Qwen-Image-Edit): a frozen VLM reads
    images (the understanding side), a frozen VAE makes the latent targets, a DiT is trained. Subclasses
    set ``vlm``, ``vae`` and ``transformer`` and name their own trainable modules."""

    vlm: torch.nn.Module
    vae: torch.nn.Module
    transformer: torch.nn.Module

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    def train(self, mode: bool = True):
        super().train(mode)
        # The frozen parts stay in eval mode whatever the trainer switches.
        self.vlm.eval()
        self.vae.eval()
        return self

    def encoder_modules(self) -> dict[str, torch.nn.Module]:
        """What computes the frozen outputs (for the trainer's cache fingerprints)."""
        return {"understanding": self.vlm.model.visual, "generation_targets": self.vae}

    def forward(self, objective: str, **kwargs) -> torch.Tensor:
        return dispatch_objective(self, objective, **kwargs)


class FlowAdapter(FrozenVLMAdapter):
    """Qwen2.5-VL + learnable queries + connector + Sana DiT + DC-AE as a UnifiedModel."""

    family = "flow"
    model_types = (MODEL_TYPE,)
    # The VLM (vision tower + language model) and the VAE; queries, connector and DiT train.
    frozen_modules = ("vlm", "vae")
    # The VLM is frozen and never trained on text (understanding_loss refuses), so RecA is reconstruction
    # alone; there is no VQ tokenizer, so no RecA-VQ ablation.
    reca_objectives = ("recon",)
    vq_ablation = False
    default_guidance_scale = 3.0
    shapeworld_asset = "shapeworld-flow-base"
    shapeworld_build = (
        "python -m trainers.pretrain_shapeworld_flow trainers/recipes/shapeworld_flow_base.yaml"
    )
    # The main command's flow part fits about two minutes: three trained arms, scored on shapes-edit only
    # (180 images per checkpoint; shapes-geneval would add 1,080 per checkpoint), where editing
    # fidelity is the claim.
    main_arms = ("base", "SFT", "SFT+RecA", "SFT-matched")
    main_benchmarks = ("shapes-edit",)

    def __init__(
        self,
        vlm: Qwen2_5_VLForConditionalGeneration,
        tokenizer,
        image_processor,
        queries: torch.Tensor,
        connector: torch.nn.Module,
        transformer: SanaTransformer2DModel,
        vae: AutoencoderDC,
        scheduler: FlowMatchEulerDiscreteScheduler,
        config: FlowConfig,
    ):
        super().__init__()
        hidden = vlm.config.text_config.hidden_size
        if tuple(queries.shape) != (config.num_queries, hidden):
            raise ValueError(f"queries must be ({config.num_queries}, {hidden}), got {tuple(queries.shape)}")
        merge = vlm.config.vision_config.spatial_merge_size
        unit = vlm.config.vision_config.patch_size * merge
        if config.understanding_size % unit:
            raise ValueError(
                f"understanding_size {config.understanding_size} is not a multiple of {unit} (patch x merge)"
            )
        if transformer.config.in_channels != vae.config.latent_channels:
            raise ValueError(
                f"DiT in_channels {transformer.config.in_channels} != VAE latent_channels {vae.config.latent_channels}"
            )
        self.vlm = vlm.requires_grad_(False).eval()
        self.vae = vae.requires_grad_(False).eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.queries = torch.nn.Embedding(config.num_queries, hidden)
        with torch.no_grad():
            self.queries.weight.copy_(queries)
        self.connector = connector
        self.transformer = transformer
        self.scheduler = scheduler
        self.config = config
        self.image_size = config.image_size
        self.hidden_size = hidden
        self._merge = merge
        self._pad_id = tokenizer.pad_token_id
        self._vae_scale = 2 ** (len(vae.config.encoder_block_out_channels) - 1)
        self._pixels = VaeImageProcessor(vae_scale_factor=self._vae_scale)

    # ----------------------------------------------------------------------------------------- basics
    def trainable_modules(self) -> dict[str, torch.nn.Module]:
        return {
            "queries": self.queries,
            "connector": self.connector,
            "transformer": self.transformer,
            "vlm": self.vlm,
            "vision": self.vlm.model.visual,
            "vae": self.vae,
        }

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        """PIL -> (B, 3, image_size, image_size) in [-1, 1] (the VAE's range; the VLM rescales its own view)."""
        rgb = [im.convert("RGB") for im in images]
        return self._pixels.preprocess(rgb, height=self.image_size, width=self.image_size).to(self.device)

    # ------------------------------------------------------------------------------- image encoders
    def understanding_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return vlm_image_features(
            self.vlm, self.image_processor, pixel_values, self.config.understanding_size
        )

    @torch.no_grad()
    def generation_targets(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Scaled DC-AE latents (B, C, image_size / f, image_size / f)."""
        px = pixel_values.to(self.device, self.vae.dtype)
        return (self.vae.encode(px).latent * self.vae.config.scaling_factor).detach()

    # ------------------------------------------------------------------------------------ condition
    def condition_embeddings(self, conditions: list[Condition]) -> torch.Tensor:
        """DiT conditioning (B, N, caption_channels): the VLM reads each condition plus the queries; the
        connector maps the queries' last hidden states. Depends on the conditions only, never the targets."""
        rendered = [
            render_condition(
                self.tokenizer, c, CHAT_PREFIX, CHAT_SUFFIX, self.hidden_size, self._merge, f"condition {i}"
            )
            for i, c in enumerate(conditions)
        ]
        hidden, _ = vlm_hidden_states(self.vlm, rendered, self._pad_id, tail=self.queries.weight)
        query_states = hidden[:, -self.config.num_queries :]
        return self.connector(query_states.to(self.queries.weight.dtype)).to(self.transformer.dtype)

    def _velocity(self, latents: torch.Tensor, cond: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return self.transformer(
            hidden_states=latents.to(self.transformer.dtype),
            encoder_hidden_states=cond,
            timestep=timesteps.to(latents.device),
            return_dict=False,
        )[0]

    # ------------------------------------------------------------------------------------- losses
    def generation_loss(self, conditions: list[Condition], targets: torch.Tensor) -> torch.Tensor:
        check_latent_targets(conditions, targets, self.transformer.config.in_channels)
        targets = targets.to(self.device, self.transformer.dtype)
        cond = self.condition_embeddings(conditions)
        cfg = self.config
        sigmas = sample_sigmas(
            targets.shape[0],
            cfg.timestep_sampling,
            cfg.shift,
            cfg.logit_mean,
            cfg.logit_std,
            device=self.device,
        )
        train_steps = self.scheduler.config.num_train_timesteps
        return flow_matching_loss(lambda x, s: self._velocity(x, cond, s * train_steps), targets, sigmas)

    def understanding_loss(self, pixel_values: torch.Tensor, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError(
            "the flow composite is decoupled: its VLM is frozen, so RecA needs no image->text loss "
            "(drop i2t sources from the recipe)"
        )

    # ----------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample_latents(self, conditions: list[Condition], sampling: SamplingConfig) -> torch.Tensor:
        """Euler integration of the flow from seeded noise, with CFG against ``Condition([])``."""
        batch = len(conditions)
        side = self.image_size // self._vae_scale
        latents = seeded_noise(
            (batch, self.transformer.config.in_channels, side, side), sampling, self.device
        )
        if batch == 0:
            return latents
        guided = sampling.guidance_scale != 1.0
        cond = self.condition_embeddings(conditions)
        if guided:
            # Condition([]) reads the same for every image: the VLM runs on it once.
            uncond = self.condition_embeddings([Condition([])])
            cond = torch.cat([cond, uncond.expand(batch, -1, -1)])
        scheduler = fresh_scheduler(self.scheduler)
        scheduler.set_timesteps(self.config.num_inference_steps, device=self.device)
        for t in scheduler.timesteps:
            x = torch.cat([latents, latents]) if guided else latents
            v = self._velocity(x, cond, t.expand(x.shape[0])).float()
            if guided:
                v_cond, v_uncond = v.chunk(2)
                v = v_uncond + sampling.guidance_scale * (v_cond - v_uncond)
            latents = scheduler.step(v, t, latents, return_dict=False)[0]
        return latents

    @torch.no_grad()
    def decode_images(self, latents: torch.Tensor) -> list[Image.Image]:
        scaled = latents.to(self.device, self.vae.dtype) / self.vae.config.scaling_factor
        pixels = self.vae.decode(scaled).sample
        return self._pixels.postprocess(pixels.float(), output_type="pil")

    def generate(self, conditions: list[Condition], sampling: SamplingConfig) -> list[Image.Image]:
        return self.decode_images(self.sample_latents(conditions, sampling))

    # --------------------------------------------------------------------------------------- saving
    def save_pretrained(self, path: Path) -> None:
        """vlm/ (transformers), transformer/ vae/ scheduler/ (diffusers), queries + connector
        (safetensors) and config.json, swapped in whole."""

        def write(root: Path) -> None:
            self.vlm.save_pretrained(root / "vlm")
            self.tokenizer.save_pretrained(root / "vlm")
            self.image_processor.save_pretrained(root / "vlm")
            self.transformer.save_pretrained(root / "transformer")
            self.vae.save_pretrained(root / "vae")
            self.scheduler.save_pretrained(root / "scheduler")
            weights = {f"queries.{k}": v for k, v in self.queries.state_dict().items()}
            weights.update({f"connector.{k}": v for k, v in self.connector.state_dict().items()})
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(root / RECA_WEIGHTS_FILE)
            )
            meta = {
                "model_type": MODEL_TYPE,
                "caption_channels": int(self.transformer.config.caption_channels),
                **self.config.to_json(),
            }
            (root / RECA_CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

        atomic_write_dir(path, write)

    @classmethod
    def from_pretrained(
        cls, path: Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
    ) -> FlowAdapter:
        path = Path(path)
        config_path = path / RECA_CONFIG_FILE
        meta = json.loads(config_path.read_text(encoding="utf-8"))
        if meta.pop("model_type", None) != MODEL_TYPE:
            raise ValueError(f"{config_path}: model_type is not {MODEL_TYPE!r}")
        caption_channels = int(meta.pop("caption_channels"))
        config = config_from_json(FlowConfig, meta, str(config_path))
        for part in ("vlm", "transformer", "vae", "scheduler"):
            if not (path / part).is_dir():
                raise FileNotFoundError(f"{path / part} is missing: {path} is not a reca flow checkpoint")
        dtype = dtype or torch.float32
        vlm = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(path / "vlm"), dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(str(path / "vlm"))
        image_processor = AutoImageProcessor.from_pretrained(str(path / "vlm"))
        transformer = SanaTransformer2DModel.from_pretrained(str(path / "transformer"), dtype=dtype)
        vae = AutoencoderDC.from_pretrained(str(path / "vae"), dtype=dtype)
        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(str(path / "scheduler"))
        weights = load_file(str(path / RECA_WEIGHTS_FILE))
        hidden = vlm.config.text_config.hidden_size
        connector = build_connector(config, hidden, caption_channels)
        connector_state = {
            k.removeprefix("connector."): v for k, v in weights.items() if k.startswith("connector.")
        }
        try:
            connector.load_state_dict(connector_state)
        except RuntimeError as exc:
            raise ValueError(
                f"{path / RECA_WEIGHTS_FILE}: connector weights do not fit {config_path} ({exc})"
            ) from exc
        if "queries.weight" not in weights:
            raise ValueError(f"{path / RECA_WEIGHTS_FILE}: no 'queries.weight'")
        adapter = cls(
            vlm=vlm,
            tokenizer=tokenizer,
            image_processor=image_processor,
            queries=weights["queries.weight"].to(dtype),  # in the dtype of the connector it feeds
            connector=connector.to(dtype),
            transformer=transformer,
            vae=vae,
            scheduler=scheduler,
            config=config,
        )
        return adapter.to(device).eval()
