"""From the official Harmon release to this package's layout.

The official release is two PyTorch files: the Harmon weights (``harmon_0.5b.pth`` / ``harmon_1.5b.pth``:
``llm.*`` = a Qwen2.5-Instruct ``Qwen2ForCausalLM``, ``mar.*`` = MAR, ``proj_in.*``, ``proj_out.*``, the
VAE left out) and MAR's KL-16 VAE (``kl16.ckpt``, LDM's ``AutoencoderKL`` names under ``"model"``).
Our LLM is transformers' Qwen2 and our MAR keeps the official names, so those map one to one (MAR's
unused ``class_emb`` is dropped); the VAE is diffusers' ``AutoencoderKL`` and its names are rewritten
(:func:`convert_ldm_vae`): LDM's numbered ``down``/``up`` levels become diffusers' blocks (the decoder's in
reverse order), ``nin_shortcut`` becomes ``conv_shortcut``, and the 1x1-convolution attention becomes
linear ``to_q``/``to_k``/``to_v``/``to_out.0``.

    convert_official_checkpoint("harmon_1.5b.pth", "kl16.ckpt", "Qwen2.5-1.5B-Instruct/", "harmon-1.5b/", "1.5b")
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from reca_eval.models.harmon.adapter import HarmonAdapter, HarmonConfig, projectors
from reca_eval.models.harmon.mar import MAR, MARConfig

# The LLM configurations of Qwen2.5-0.5B-Instruct and Qwen2.5-1.5B-Instruct, and the MAR each Harmon uses
# (official configs: mar_base with a 6 x 1024 diffusion head, mar_huge with 12 x 1536).
QWEN = {
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12),
}
MAR_SIZES = {
    "0.5b": dict(encoder_embed_dim=768, encoder_depth=12, encoder_num_heads=12, decoder_embed_dim=768,
                 decoder_depth=12, decoder_num_heads=12, diffloss_d=6, diffloss_w=1024),
    "1.5b": dict(encoder_embed_dim=1280, encoder_depth=20, encoder_num_heads=16, decoder_embed_dim=1280,
                 decoder_depth=20, decoder_num_heads=16, diffloss_d=12, diffloss_w=1536),
}  # fmt: skip
KL16 = dict(
    down_block_types=("DownEncoderBlock2D",) * 4 + ("AttnDownEncoderBlock2D",),
    up_block_types=("UpDecoderBlock2D",) * 5,
    block_out_channels=(128, 128, 256, 256, 512),
    layers_per_block=2,
    latent_channels=16,
    norm_num_groups=32,
    scaling_factor=0.2325,
)
DROPPED = ("mar.class_emb.weight",)  # MAR's ImageNet class table: Harmon conditions through the LLM


def official_configs(variant: str) -> tuple[Qwen2Config, HarmonConfig, dict]:
    """(LLM config, Harmon config, VAE kwargs) of an official variant, ``"0.5b"`` or ``"1.5b"``."""
    if variant not in QWEN:
        raise ValueError(f"unknown Harmon variant {variant!r}; known: {sorted(QWEN)}")
    llm = Qwen2Config(
        vocab_size=151936,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=151643,
        eos_token_id=151645,
        **QWEN[variant],
    )
    return llm, HarmonConfig(image_size=512, mar=MARConfig(**MAR_SIZES[variant])), dict(KL16)


# ---------------------------------------------------------------------------------------------- VAE
_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_MID = {"block_1": "resnets.0", "block_2": "resnets.1", "attn_1": "attentions.0"}


def _vae_key(key: str, levels: int) -> str | None:
    """LDM name -> diffusers name (None: not part of the autoencoder, e.g. the GAN loss's weights)."""
    if key.startswith(("quant_conv.", "post_quant_conv.")):
        return key
    m = re.fullmatch(r"(encoder|decoder)\.(.+)", key)
    if m is None:
        return None
    part, rest = m.groups()
    rest = rest.replace("nin_shortcut", "conv_shortcut")
    rest = re.sub(r"^norm_out\.", "conv_norm_out.", rest)
    if (mm := re.fullmatch(r"mid\.(block_1|block_2|attn_1)\.(.+)", rest)) is not None:
        name, tail = mm.groups()
        rest = f"mid_block.{_MID[name]}.{_attn_tail(tail) if name == 'attn_1' else tail}"
    elif (mm := re.fullmatch(r"down\.(\d+)\.(block|attn|downsample)\.(.+)", rest)) is not None:
        level, kind, tail = mm.groups()
        rest = f"down_blocks.{level}." + _level_tail(kind, tail, "downsamplers")
    elif (mm := re.fullmatch(r"up\.(\d+)\.(block|attn|upsample)\.(.+)", rest)) is not None:
        level, kind, tail = mm.groups()
        # LDM numbers the decoder's levels from the finest; diffusers runs its up blocks from the coarsest.
        rest = f"up_blocks.{levels - 1 - int(level)}." + _level_tail(kind, tail, "upsamplers")
    return f"{part}.{rest}"


def _level_tail(kind: str, tail: str, sampler: str) -> str:
    if kind == "block":
        return "resnets." + tail
    if kind == "attn":
        index, rest = tail.split(".", 1)
        return f"attentions.{index}.{_attn_tail(rest)}"
    return f"{sampler}.0.{tail}"  # downsample.conv / upsample.conv


def _attn_tail(tail: str) -> str:
    name, param = tail.rsplit(".", 1)
    return f"{_ATTN[name]}.{param}"


def convert_ldm_vae(state: Mapping[str, torch.Tensor], levels: int = 5) -> dict[str, torch.Tensor]:
    """An LDM/MAR KL autoencoder state dict -> diffusers ``AutoencoderKL`` names (attention 1x1 convs
    become linear weights); keys outside the autoencoder (``loss.*``) are left out."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = _vae_key(key, levels)
        if new is None:
            continue
        if re.search(r"\.(to_q|to_k|to_v|to_out\.0)\.weight$", new) and value.ndim == 4:
            value = value.reshape(value.shape[0], value.shape[1])
        out[new] = value
    return out


# ---------------------------------------------------------------------------------------- the rest
def convert_official_state_dict(
    harmon: Mapping[str, torch.Tensor], vae: Mapping[str, torch.Tensor] | None = None, vae_levels: int = 5
) -> dict[str, dict[str, torch.Tensor]]:
    """Split an official Harmon state dict (and the KL VAE's) into this package's parts:
    ``{"llm", "mar", "proj_in", "proj_out", "vae"}`` -> state dicts. ``vae`` may also come as ``vae.*``
    keys of ``harmon``. ValueError naming any key that belongs to no part."""
    parts: dict[str, dict[str, torch.Tensor]] = {k: {} for k in ("llm", "mar", "proj_in", "proj_out")}
    vae_state = dict(vae or {})
    unknown = []
    for key, value in harmon.items():
        head, _, rest = key.partition(".")
        if key in DROPPED:
            continue
        if head in parts and rest:
            parts[head][rest] = value
        elif head == "vae" and rest:
            vae_state.setdefault(rest, value)
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"official Harmon state dict: {len(unknown)} unexpected key(s), e.g. {unknown[:5]}")
    parts["vae"] = convert_ldm_vae(vae_state, vae_levels)
    return parts


def build_from_parts(
    parts: Mapping[str, Mapping[str, torch.Tensor]],
    tokenizer,
    llm_config: Qwen2Config,
    config: HarmonConfig,
    vae_kwargs: Mapping,
    dtype: torch.dtype = torch.float32,
) -> HarmonAdapter:
    """A HarmonAdapter holding converted weights (every part loaded strictly, the LLM's tied head allowed
    to be missing); ValueError naming the part whose weights do not fit."""
    llm = Qwen2ForCausalLM(llm_config)
    mar = MAR(config.mar)
    proj_in, proj_out = projectors(config.mar.encoder_embed_dim, int(llm_config.hidden_size))
    vae = AutoencoderKL(**vae_kwargs)
    for name, module in (
        ("llm", llm),
        ("mar", mar),
        ("proj_in", proj_in),
        ("proj_out", proj_out),
        ("vae", vae),
    ):
        state = dict(parts.get(name, {}))
        if name == "llm" and "lm_head.weight" not in state and llm_config.tie_word_embeddings:
            state["lm_head.weight"] = state.get("model.embed_tokens.weight")
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"official Harmon weights: the {name} part does not fit ({exc})") from exc
    adapter = HarmonAdapter(llm, tokenizer, mar, proj_in, proj_out, vae, config)
    return adapter.to(dtype).eval()


def convert_official_checkpoint(
    harmon_path: Path, vae_path: Path, qwen_dir: Path, out_dir: Path, variant: str
) -> Path:
    """Read the official files (``harmon_<variant>.pth``, ``kl16.ckpt``), take the tokenizer from a local
    Qwen2.5-Instruct folder, and save this package's checkpoint in ``out_dir``."""
    llm_config, config, vae_kwargs = official_configs(variant)
    harmon = torch.load(str(harmon_path), map_location="cpu", weights_only=True)
    vae = torch.load(str(vae_path), map_location="cpu", weights_only=True)
    vae = vae.get("model", vae)
    parts = convert_official_state_dict(harmon, vae)
    tokenizer = AutoTokenizer.from_pretrained(str(qwen_dir))
    adapter = build_from_parts(parts, tokenizer, llm_config, config, vae_kwargs)
    adapter.save_pretrained(Path(out_dir))
    return Path(out_dir)
