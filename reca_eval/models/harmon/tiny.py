"""A tiny, randomly initialised Harmon built in code (no downloads): for tests, benchmarks and the ShapeWorld
model. Its parts are the real ones at small sizes: transformers' Qwen2, our MAR, diffusers' AutoencoderKL
(the KL-16 layout: plain down blocks, attention in the last one, 4x down-sampling here instead of 16x).
The same seed gives the same weights.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL
from transformers import Qwen2Config, Qwen2ForCausalLM

from reca_eval.models.flow.tiny import build_tiny_qwen_tokenizer
from reca_eval.models.harmon.adapter import HarmonAdapter, HarmonConfig, projectors
from reca_eval.models.harmon.mar import MAR, MARConfig
from reca_eval.models.janus.tiny import DEFAULT_WORDS

# The words of Harmon's prompts, so the tiny tokenizer renders them (not as <unk>).
PROMPT_WORDS = ("generate", "an", "image", ":")


def tiny_qwen2(
    vocab_size: int, pad_id: int, eos_id: int, hidden: int = 32, layers: int = 2
) -> Qwen2ForCausalLM:
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        pad_token_id=pad_id,
        bos_token_id=None,
        eos_token_id=eos_id,
    )
    return Qwen2ForCausalLM(config)


def tiny_kl_vae(
    latent_channels: int = 4,
    block_out_channels: tuple[int, ...] = (16, 16, 32),
    groups: int = 8,
    scaling_factor: float = 0.2325,
) -> AutoencoderKL:
    """The KL-16 layout at small width: ``len(block_out_channels)`` levels down-sample
    ``2 ** (levels - 1)`` x; self-attention after each ResNet of the last encoder level and in the middle."""
    levels = len(block_out_channels)
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * (levels - 1) + ("AttnDownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=groups,
        scaling_factor=scaling_factor,
    )


def tiny_mar_config(
    latent_channels: int = 4, grid: int = 8, width: int = 32, depth: int = 1, **overrides
) -> MARConfig:
    fields = dict(
        token_embed_dim=latent_channels,
        grid=grid,
        encoder_embed_dim=width,
        encoder_depth=depth,
        encoder_num_heads=2,
        decoder_embed_dim=width,
        decoder_depth=depth,
        decoder_num_heads=2,
        buffer_size=4,
        attn_dropout=0.0,
        proj_dropout=0.0,
        diffloss_d=2,
        diffloss_w=32,
        num_sampling_steps=10,
    )
    fields.update(overrides)
    return MARConfig(**fields)


def assemble_harmon(
    seed: int,
    config: HarmonConfig,
    words: tuple[str, ...] = DEFAULT_WORDS,
    llm_hidden: int = 32,
    llm_layers: int = 2,
    vae_channels: tuple[int, ...] = (16, 16, 32),
    vae_groups: int = 8,
    vae: torch.nn.Module | None = None,
) -> HarmonAdapter:
    """A HarmonAdapter of random parts: the LLM under ``seed``, VAE, MAR and projectors under ``seed + 1``
    (``vae``: a trained autoencoder in place of the random KL one)."""
    tokenizer = build_tiny_qwen_tokenizer(tuple(dict.fromkeys((*words, *PROMPT_WORDS))))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        llm = tiny_qwen2(
            len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id, llm_hidden, llm_layers
        )
        torch.manual_seed(seed + 1)
        # Drawn even when ``vae`` is given, so that the MAR and projectors after it get the same random
        # stream either way (the ShapeWorld base's pre-training starts from these draws).
        random_vae = tiny_kl_vae(config.mar.token_embed_dim, vae_channels, vae_groups, config.vae_scale)
        mar = MAR(config.mar)
        proj_in, proj_out = projectors(config.mar.encoder_embed_dim, llm_hidden)
    chosen = random_vae if vae is None else vae
    return HarmonAdapter(llm, tokenizer, mar, proj_in, proj_out, chosen, config).eval()


def build_tiny_harmon(
    seed: int = 0,
    image_size: int = 32,
    grid: int | None = None,
    num_iterations: int = 4,
    **mar_overrides,
) -> HarmonAdapter:
    """A 32-px Harmon: 4x VAE (8x8 latents of 4 channels), MAR 32 wide with 4 buffers, Qwen2 32 wide.
    ``grid`` is the side the MAR position embeddings are learned for (default: the latent side)."""
    side = image_size // 4
    config = HarmonConfig(
        image_size=image_size,
        num_iterations=num_iterations,
        mar=tiny_mar_config(grid=grid or side, **mar_overrides),
    )
    return assemble_harmon(seed, config)
