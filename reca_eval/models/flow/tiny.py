"""Tiny, randomly initialised flow-matching models built in code (no downloads): for tests and benchmarks.

Two families share one tiny Qwen2.5-VL (word-level tokenizer with Qwen's special tokens, Qwen2-VL image
processor with a 4-pixel patch):

- the composite (OpenUni / MetaQuery pattern): Qwen2.5-VL + learnable queries + connector +
  ``SanaTransformer2DModel`` + ``AutoencoderDC`` (:func:`build_tiny_flow`);
- Qwen-Image-Edit: Qwen2.5-VL + ``QwenImageTransformer2DModel`` + ``AutoencoderKLQwenImage``
  (:func:`build_tiny_qwen_image_edit`).

The same seed gives the same weights.
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderDC,
    AutoencoderKLQwenImage,
    FlowMatchEulerDiscreteScheduler,
    QwenImageTransformer2DModel,
    SanaTransformer2DModel,
)
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
)

from reca_eval.models.janus.tiny import DEFAULT_WORDS

# Qwen2.5-VL's special tokens, so prompts render as for the real checkpoints.
PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD, UNK_TOKEN)
# Words of the two templates (the composite's and Qwen-Image-Edit's system prompt) besides caption words.
TEMPLATE_WORDS = tuple(
    """
    system user assistant you are a helpful describe key features input color shape size texture objects
    background then explain how user's text instruction should alter modify generate new meets
    requirements while maintaining consistency original where appropriate ( ) , . \\n
    """.split()
)

VISION_PATCH = 4  # pixels per ViT patch side
VISION_MERGE = 2  # patches merged per side into one LLM token


def build_tiny_qwen_tokenizer(words: tuple[str, ...] = DEFAULT_WORDS) -> PreTrainedTokenizerFast:
    """A word-level tokenizer carrying Qwen2.5-VL's special tokens (no BOS, like Qwen's tokenizer)."""
    vocab: dict[str, int] = {}
    for token in (*SPECIAL_TOKENS, *words, *TEMPLATE_WORDS):
        vocab.setdefault(token, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        padding_side="left",
        model_max_length=1024,
    )


def build_tiny_qwen_image_processor(understanding_size: int = 16) -> Qwen2VLImageProcessor:
    """Qwen2-VL's image processor with a tiny patch; ``understanding_size`` pixels give
    ``(understanding_size / (patch * merge))**2`` LLM tokens."""
    side = understanding_size
    return Qwen2VLImageProcessor(
        patch_size=VISION_PATCH,
        merge_size=VISION_MERGE,
        temporal_patch_size=2,
        min_pixels=side * side,
        max_pixels=side * side,
        size={"shortest_edge": side * side, "longest_edge": side * side},
    )


def tiny_qwen_vl_config(
    tokenizer: PreTrainedTokenizerFast, hidden_size: int = 32, num_layers: int = 2, vision_depth: int = 1
):
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (IMAGE_PAD, VIDEO_PAD, VISION_START, VISION_END)}
    head_dim = hidden_size // 4
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": num_layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 1024,
            # mrope sections (temporal, height, width) sum to half the head dim
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [head_dim // 4, head_dim // 8, head_dim // 8],
            },
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": None,
            "eos_token_id": tokenizer.eos_token_id,
        },
        vision_config={
            "depth": vision_depth,
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_heads": 2,
            "patch_size": VISION_PATCH,
            "spatial_merge_size": VISION_MERGE,
            "temporal_patch_size": 2,
            "window_size": VISION_PATCH * VISION_MERGE * 2,
            "out_hidden_size": hidden_size,
            "fullatt_block_indexes": list(range(vision_depth)),
        },
        image_token_id=ids[IMAGE_PAD],
        video_token_id=ids[VIDEO_PAD],
        vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END],
    )


def build_tiny_qwen_vl(
    seed: int = 0,
    understanding_size: int = 16,
    hidden_size: int = 32,
    words: tuple[str, ...] = DEFAULT_WORDS,
    num_layers: int = 2,
    vision_depth: int = 1,
):
    """(Qwen2.5-VL model, tokenizer, image processor), randomly initialised; ``words`` is the vocabulary."""
    tokenizer = build_tiny_qwen_tokenizer(words)
    image_processor = build_tiny_qwen_image_processor(understanding_size)
    config = tiny_qwen_vl_config(tokenizer, hidden_size, num_layers, vision_depth)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vlm = Qwen2_5_VLForConditionalGeneration(config)
    return vlm.eval(), tokenizer, image_processor


def tiny_flow_scheduler() -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)


def tiny_dc_ae(
    latent_channels: int = 8,
    block_out_channels: tuple[int, ...] = (16, 16, 32),
    layers_per_block: int = 1,
    scaling_factor: float = 0.5,
) -> AutoencoderDC:
    """A ResBlock-only DC-AE; ``len(block_out_channels)`` stages down-sample ``2 ** (stages - 1)`` x."""
    stages = len(block_out_channels)
    return AutoencoderDC(
        in_channels=3,
        latent_channels=latent_channels,
        attention_head_dim=8,
        encoder_block_types="ResBlock",
        decoder_block_types="ResBlock",
        encoder_block_out_channels=tuple(block_out_channels),
        decoder_block_out_channels=tuple(block_out_channels),
        encoder_layers_per_block=(layers_per_block,) * stages,
        decoder_layers_per_block=(layers_per_block,) * stages,
        encoder_qkv_multiscales=((),) * stages,
        decoder_qkv_multiscales=((),) * stages,
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=scaling_factor,
    )


def tiny_sana(
    latent_channels: int = 8,
    latent_size: int = 8,
    heads: int = 2,
    head_dim: int = 16,
    num_layers: int = 2,
    caption_channels: int = 32,
    mlp_ratio: float = 2.0,
) -> SanaTransformer2DModel:
    """A small Sana DiT over ``latent_size`` x ``latent_size`` latents (patch 1), width ``heads * head_dim``."""
    return SanaTransformer2DModel(
        in_channels=latent_channels,
        out_channels=latent_channels,
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        num_layers=num_layers,
        num_cross_attention_heads=heads,
        cross_attention_head_dim=head_dim,
        cross_attention_dim=heads * head_dim,
        caption_channels=caption_channels,
        mlp_ratio=mlp_ratio,
        sample_size=latent_size,
        patch_size=1,
    )


def build_tiny_flow(
    seed: int = 0,
    image_size: int = 32,
    understanding_size: int = 16,
    num_queries: int = 8,
    latent_channels: int = 8,
    timestep_sampling: str = "logit_normal",
    shift: float = 1.0,
):
    """The composite flow model (Qwen2.5-VL + queries + connector + Sana DiT + DC-AE), tiny and random.

    The DC-AE down-samples 4x (three stages), so a 32-px image is an 8x8 latent.
    """
    from reca_eval.models.flow.adapter import FlowConfig

    config = FlowConfig(
        image_size=image_size,
        understanding_size=understanding_size,
        num_queries=num_queries,
        connector_layers=1,
        connector_heads=2,
        timestep_sampling=timestep_sampling,
        shift=shift,
        num_inference_steps=4,
    )
    vlm, tokenizer, image_processor = build_tiny_qwen_vl(seed, understanding_size)
    return assemble_flow(
        seed,
        config,
        vlm,
        tokenizer,
        image_processor,
        vae=lambda: tiny_dc_ae(latent_channels),
        transformer=lambda: tiny_sana(latent_channels, image_size // 4),
    )


def assemble_flow(seed: int, config, vlm, tokenizer, image_processor, vae, transformer):
    """The FlowAdapter around a built VLM: ``vae()`` and ``transformer()`` build the other parts, then the
    queries and connector are drawn, all under ``seed + 1`` (the VLM is built under ``seed``)."""
    from reca_eval.models.flow.adapter import FlowAdapter, build_connector

    hidden = vlm.config.text_config.hidden_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        vae_model = vae()
        dit = transformer()
        queries = torch.randn(config.num_queries, hidden) * 0.02
        connector = build_connector(config, hidden, dit.config.caption_channels)
    return FlowAdapter(
        vlm=vlm,
        tokenizer=tokenizer,
        image_processor=image_processor,
        queries=queries,
        connector=connector,
        transformer=dit,
        vae=vae_model,
        scheduler=tiny_flow_scheduler(),
        config=config,
    )


def build_tiny_qwen_image_edit(
    seed: int = 0,
    image_size: int = 32,
    understanding_size: int = 16,
    timestep_sampling: str = "logit_normal",
    shift: float = 1.0,
):
    """Qwen-Image-Edit's parts, tiny and random: Qwen2.5-VL, QwenImage DiT and VAE (4x down-sampling)."""
    from reca_eval.models.qwen_image_edit.adapter import QwenImageEditAdapter, QwenImageEditConfig

    vlm, tokenizer, image_processor = build_tiny_qwen_vl(seed, understanding_size)
    z_dim = 4
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        vae = AutoencoderKLQwenImage(
            base_dim=16,
            z_dim=z_dim,
            dim_mult=[1, 1, 1],
            num_res_blocks=1,
            attn_scales=[],
            temperal_downsample=[False, False],
            latents_mean=[0.1, -0.2, 0.0, 0.3],
            latents_std=[1.5, 0.8, 1.0, 2.0],
        )
        transformer = QwenImageTransformer2DModel(
            patch_size=2,
            in_channels=z_dim * 4,
            out_channels=z_dim,
            num_layers=2,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=vlm.config.text_config.hidden_size,
            axes_dims_rope=(4, 6, 6),
        )
    side = understanding_size
    # Imported here: transformers' Qwen2-VL video processor needs torchvision, which the composite
    # family (and so the main command's `models` install) does not.
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    video_processor = Qwen2VLVideoProcessor(
        patch_size=VISION_PATCH,
        merge_size=VISION_MERGE,
        temporal_patch_size=2,
        min_pixels=side * side,
        max_pixels=side * side,
    )
    processor = Qwen2VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor
    )
    config = QwenImageEditConfig(
        image_size=image_size,
        understanding_size=understanding_size,
        timestep_sampling=timestep_sampling,
        shift=shift,
        num_inference_steps=4,
    )
    return QwenImageEditAdapter(
        vlm=vlm,
        tokenizer=tokenizer,
        processor=processor,
        transformer=transformer,
        vae=vae,
        scheduler=tiny_flow_scheduler(),
        config=config,
    )
