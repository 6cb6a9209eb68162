"""The ShapeWorld flow-matching model: the OpenUni / MetaQuery composite (:mod:`reca_eval.models.flow.adapter`)
sized for 32-px ShapeWorld, the second family beside the Janus-architecture model
(:mod:`reca_eval.models.janus.shapeworld`).

    frozen Qwen2.5-VL (word tokenizer over ``shapeworld_words()``, 64 wide, 2 layers; reads images at
    32 px: 4x4 = 16 understanding tokens)  ->  16 learnable queries  ->  connector (1 layer)
    ->  Sana DiT (64 wide, 4 layers) on 8x8x8 DC-AE latents of the 32-px image

:func:`build_shapeworld_flow` builds it randomly initialised; ``trainers/pretrain_shapeworld_flow.py``
pre-trains it into the shipped base (``reca_eval/assets/shapeworld-flow-base``, see
:func:`shipped_flow_base_path`): first the DC-AE as an autoencoder of rendered scenes, then queries +
connector + DiT on text->image with the VLM frozen. The parts come from the tiny builders
(:mod:`reca_eval.models.flow.tiny`), parametrised.
"""

from __future__ import annotations

from pathlib import Path

from reca_eval.models.flow.adapter import FlowAdapter, FlowConfig
from reca_eval.models.flow.tiny import assemble_flow, build_tiny_qwen_vl, tiny_dc_ae, tiny_sana
from reca_eval.models.janus.shapeworld import RESOLUTION, shapeworld_words

# The VLM reads a condition image at the generated resolution: 16 tokens of 8x8 px. Lower (16 px, four
# tokens) cannot hold a 4-object scene, and editing has to keep what the instruction does not change.
UNDERSTANDING_SIZE = RESOLUTION
VLM_HIDDEN = 64
VLM_LAYERS = 2
NUM_QUERIES = 16
LATENT_CHANNELS = 8
VAE_CHANNELS = (32, 64, 64)  # three stages: 4x down-sampling, 32 px -> 8x8 latents
DIT_HEADS, DIT_HEAD_DIM, DIT_LAYERS = 2, 32, 4
CAPTION_CHANNELS = 64
NUM_INFERENCE_STEPS = 10


def shapeworld_flow_config(num_inference_steps: int = NUM_INFERENCE_STEPS) -> FlowConfig:
    return FlowConfig(
        image_size=RESOLUTION,
        understanding_size=UNDERSTANDING_SIZE,
        num_queries=NUM_QUERIES,
        connector_layers=1,
        connector_heads=2,
        timestep_sampling="logit_normal",
        shift=1.0,
        num_inference_steps=num_inference_steps,
    )


def build_shapeworld_flow(seed: int = 0) -> FlowAdapter:
    """The randomly initialised ShapeWorld flow model (same seed, same weights)."""
    vlm, tokenizer, image_processor = build_tiny_qwen_vl(
        seed,
        understanding_size=UNDERSTANDING_SIZE,
        hidden_size=VLM_HIDDEN,
        words=shapeworld_words(),
        num_layers=VLM_LAYERS,
    )
    latent_side = RESOLUTION // 2 ** (len(VAE_CHANNELS) - 1)
    return assemble_flow(
        seed,
        shapeworld_flow_config(),
        vlm,
        tokenizer,
        image_processor,
        vae=lambda: tiny_dc_ae(LATENT_CHANNELS, VAE_CHANNELS, scaling_factor=1.0),
        transformer=lambda: tiny_sana(
            LATENT_CHANNELS,
            latent_side,
            heads=DIT_HEADS,
            head_dim=DIT_HEAD_DIM,
            num_layers=DIT_LAYERS,
            caption_channels=CAPTION_CHANNELS,
            mlp_ratio=2.5,
        ),
    )


def shipped_flow_base_path() -> Path:
    """The pre-trained flow base shipped inside the package (``reca_eval/assets/shapeworld-flow-base``)."""
    return FlowAdapter.shipped_base_path()
