"""The ShapeWorld Harmon model: the Harmon architecture (:mod:`reca_eval.models.harmon.adapter`) sized for
32-px ShapeWorld, beside the Janus-architecture and flow models.

    KL VAE (32, 64, 64 channels: 4x down-sampling, 8x8x8 latents of a 32-px scene)
    MAR encoder / decoder (64 wide, 2 + 2 blocks, 4 buffer tokens) around a Qwen2 LLM (64 wide, 2 layers,
    word tokenizer over ``shapeworld_words()``), a 3 x 64 diffusion MLP per latent token

:func:`build_shapeworld_harmon` builds it randomly initialised; ``trainers/pretrain_shapeworld_harmon.py``
pre-trains it (the VAE as an autoencoder of rendered scenes, then everything else on text->image with
image->text alongside).
"""

from __future__ import annotations

from reca_eval.models.harmon.adapter import HarmonAdapter, HarmonConfig
from reca_eval.models.harmon.tiny import assemble_harmon, tiny_mar_config
from reca_eval.models.janus.shapeworld import RESOLUTION, shapeworld_words

LATENT_CHANNELS = 8
VAE_CHANNELS = (32, 64, 64)  # three levels: 4x down-sampling, 32 px -> 8x8 latents
LLM_HIDDEN, LLM_LAYERS = 64, 2
MAR_WIDTH, MAR_DEPTH = 64, 2
NUM_ITERATIONS = 8
NUM_SAMPLING_STEPS = 25


def shapeworld_harmon_config() -> HarmonConfig:
    side = RESOLUTION // 2 ** (len(VAE_CHANNELS) - 1)
    mar = tiny_mar_config(
        latent_channels=LATENT_CHANNELS,
        grid=side,
        width=MAR_WIDTH,
        depth=MAR_DEPTH,
        encoder_num_heads=4,
        decoder_num_heads=4,
        diffloss_d=3,
        diffloss_w=64,
        num_sampling_steps=NUM_SAMPLING_STEPS,
    )
    return HarmonConfig(image_size=RESOLUTION, vae_scale=1.0, num_iterations=NUM_ITERATIONS, mar=mar)


def build_shapeworld_harmon(seed: int = 0) -> HarmonAdapter:
    """The randomly initialised ShapeWorld Harmon model (same seed, same weights)."""
    return assemble_harmon(
        seed,
        shapeworld_harmon_config(),
        words=shapeworld_words(),
        llm_hidden=LLM_HIDDEN,
        llm_layers=LLM_LAYERS,
        vae_channels=VAE_CHANNELS,
        vae_groups=16,
    )
