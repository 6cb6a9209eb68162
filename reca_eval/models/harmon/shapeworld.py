"""The ShapeWorld Harmon model: the Harmon architecture (:mod:`reca_eval.models.harmon.adapter`) sized for
32-px ShapeWorld, beside the Janus-architecture and flow models.

    the flow base's frozen DC-AE (8x8x8 latents of a 32-px scene, ``reca_eval/assets/shapeworld-flow-base/vae``)
    MAR encoder / decoder (64 wide, 2 + 2 blocks, 4 buffer tokens) around a Qwen2 LLM (64 wide, 2 layers,
    word tokenizer over ``shapeworld_words()``), a 3 x 64 diffusion MLP per latent token

Harmon's own VAE is a frozen KL-16 autoencoder; here the frozen autoencoder is the one the flow base
already trained on rendered scenes, so the two latent-space families read the same latents and this
base's pre-training goes entirely into what RecA trains. :func:`build_shapeworld_harmon` builds it with
everything but the autoencoder randomly initialised; ``trainers/pretrain_shapeworld_harmon.py``
pre-trains it on text->image with image->text alongside.
"""

from __future__ import annotations

from pathlib import Path

import torch

from reca_eval.models.harmon.adapter import HarmonAdapter, HarmonConfig, load_vae
from reca_eval.models.harmon.tiny import assemble_harmon, tiny_mar_config
from reca_eval.models.janus.shapeworld import RESOLUTION, shapeworld_words

LATENT_CHANNELS = 8
LATENT_SIDE = 8  # the DC-AE down-samples 4x: 32 px -> 8x8 latents
LLM_HIDDEN, LLM_LAYERS = 64, 2
MAR_WIDTH, MAR_DEPTH = 64, 2
NUM_ITERATIONS = 8
NUM_SAMPLING_STEPS = 25


def shared_autoencoder_path() -> Path:
    """The frozen autoencoder the ShapeWorld Harmon model shares: the shipped flow base's ``vae/``."""
    from reca_eval.models.flow.adapter import FlowAdapter

    base = FlowAdapter.shipped_base_path()
    if base is None:
        raise FileNotFoundError(
            "the flow family ships no ShapeWorld base, so there is no autoencoder to share"
        )
    return base / "vae"


def shapeworld_harmon_config(vae_scale: float = 1.0) -> HarmonConfig:
    mar = tiny_mar_config(
        latent_channels=LATENT_CHANNELS,
        grid=LATENT_SIDE,
        width=MAR_WIDTH,
        depth=MAR_DEPTH,
        encoder_num_heads=4,
        decoder_num_heads=4,
        diffloss_d=3,
        diffloss_w=64,
        num_sampling_steps=NUM_SAMPLING_STEPS,
        skip_capped_step=True,  # its small diffusion head's first epsilon is not exact enough (mar.py)
    )
    return HarmonConfig(image_size=RESOLUTION, vae_scale=vae_scale, num_iterations=NUM_ITERATIONS, mar=mar)


def build_shapeworld_harmon(seed: int = 0, autoencoder: Path | None = None) -> HarmonAdapter:
    """The ShapeWorld Harmon model before pre-training (same seed, same weights): ``autoencoder`` (default:
    :func:`shared_autoencoder_path`) frozen, at its own latent scale; the rest random."""
    vae = load_vae(autoencoder or shared_autoencoder_path(), torch.float32)
    return assemble_harmon(
        seed,
        shapeworld_harmon_config(float(vae.config.scaling_factor)),
        words=shapeworld_words(),
        llm_hidden=LLM_HIDDEN,
        llm_layers=LLM_LAYERS,
        vae=vae,
    )
