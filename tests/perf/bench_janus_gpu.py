"""RecA training step of a Janus-Pro-1B-shaped model (random init): step time, images/s and MFU.

    python tests/perf/bench_janus_gpu.py                 # Janus-Pro-1B shapes, on the GPU, bf16
    python tests/perf/bench_janus_gpu.py --shape small   # a scaled-down check that runs on a CPU (the default without a GPU)

Two steps are timed, both through the same UnifiedModel calls the trainer makes:
- "cached": understanding embeddings and VQ targets come from the frozen-output cache (precomputed),
  so a step is the LLM's generation loss + backward + AdamW;
- "uncached": the frozen SigLIP encoder + aligner and the VQ encoder run on the pixels every step.
MFU counts the trainable trunk's matmul FLOPs (6·N per token + attention) against the dense bf16 peak.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import (
    JanusConfig,
    JanusForConditionalGeneration,
    JanusVisionConfig,
    JanusVQVAEConfig,
    LlamaConfig,
)

from reca_eval.models.janus.adapter import JanusAdapter
from reca_eval.models.janus.tiny import IMAGE_TOKEN, build_tiny_processor, configure_generation
from reca_eval.models.protocol import Condition, ImageEmbeds

# Janus-Pro-1B (deepseek-community/Janus-Pro-1B config.json): DeepSeek-LLM 1.5B trunk, SigLIP-L/16 at
# 384 px (576 understanding tokens), VQ-16 tokenizer (16,384 codes, 24x24 = 576 image tokens).
SHAPES = {
    "janus-pro-1b": dict(
        hidden=2048,
        inter=5632,
        layers=24,
        heads=16,
        vocab=102400,
        v_hidden=1024,
        v_layers=24,
        v_heads=16,
        image=384,
        patch=16,
        codebook=16384,
        vq_mult=[1, 1, 2, 2, 4],
        vq_base=128,
    ),
    "small": dict(
        hidden=128,
        inter=256,
        layers=2,
        heads=4,
        vocab=1000,
        v_hidden=64,
        v_layers=1,
        v_heads=2,
        image=64,
        patch=16,
        codebook=512,
        vq_mult=[1, 1, 1, 1, 1],
        vq_base=32,
    ),
}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12}  # dense bf16, vendor datasheet (SXM)


def build(shape: dict, device: torch.device) -> JanusAdapter:
    grid = shape["image"] // shape["patch"]
    processor = build_tiny_processor(image_size=shape["image"], num_image_tokens=grid * grid)
    tok = processor.tokenizer
    text = LlamaConfig(
        vocab_size=shape["vocab"],
        hidden_size=shape["hidden"],
        intermediate_size=shape["inter"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["heads"],
        max_position_embeddings=16384,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    vision = JanusVisionConfig(
        hidden_size=shape["v_hidden"],
        num_hidden_layers=shape["v_layers"],
        num_attention_heads=shape["v_heads"],
        image_size=shape["image"],
        patch_size=shape["patch"],
        projection_dim=shape["hidden"],
        depth=2,
        num_image_tokens=grid * grid,
    )
    vq = JanusVQVAEConfig(
        embed_dim=8,
        num_embeddings=shape["codebook"],
        base_channels=shape["vq_base"],
        channel_multiplier=shape["vq_mult"],
        projection_dim=shape["hidden"],
        image_token_embed_dim=shape["hidden"],
    )
    config = JanusConfig(
        text_config=text,
        vision_config=vision,
        vq_config=vq,
        image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN),
        tie_word_embeddings=False,
    )
    with device:
        model = JanusForConditionalGeneration(config)
    configure_generation(model, tok)
    adapter = JanusAdapter(model, processor)
    for name in ("vision", "aligner", "vqmodel"):
        adapter.trainable_modules()[name].requires_grad_(False)
    return adapter


def trunk_flops_per_step(adapter: JanusAdapter, batch: int, seq: int) -> float:
    lm = adapter.trainable_modules()["language_model"]
    cfg = adapter.model.config.text_config
    n = sum(p.numel() for name, p in lm.named_parameters() if "embed_tokens" not in name)
    n += sum(p.numel() for p in adapter.trainable_modules()["generation_head"].parameters())
    attention = 12 * cfg.num_hidden_layers * cfg.hidden_size * seq  # QK^T and AV, forward + backward
    return (6 * n + attention) * batch * seq


def timed_steps(step, n: int, device: torch.device) -> float:
    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Without a GPU (`nox -s bench` on a CPU) the default is the small check that runs in seconds.
    parser.add_argument(
        "--shape", choices=sorted(SHAPES), default="janus-pro-1b" if torch.cuda.is_available() else "small"
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    shape = SHAPES[args.shape]
    torch.manual_seed(0)
    adapter = build(shape, device)
    adapter.train()
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    params = [p for p in adapter.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=device.type == "cuda")
    grid = shape["image"] // shape["patch"]
    pixels = torch.randn(args.batch, 3, shape["image"], shape["image"], device=device)
    instruction = "describe the image in detail"

    def step_from(feats: torch.Tensor, targets: torch.Tensor) -> None:
        conditions = [Condition([instruction, ImageEmbeds(f)]) for f in feats]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = adapter.generation_loss(conditions, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        cached_feats = adapter.understanding_embeddings(pixels)
        cached_targets = adapter.generation_targets(pixels)

    def cached() -> None:
        step_from(cached_feats, cached_targets)

    def uncached() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            feats = adapter.understanding_embeddings(pixels)
            targets = adapter.generation_targets(pixels)
        step_from(feats, targets)

    t_cached = timed_steps(cached, args.steps, device)
    t_uncached = timed_steps(uncached, args.steps, device)
    seq = cached_feats.shape[1] + grid * grid + 24  # image embeds + image tokens + template/instruction
    flops = trunk_flops_per_step(adapter, args.batch, seq)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    result = {
        "device": name,
        "shape": args.shape,
        "trainable_params": sum(p.numel() for p in params),
        "total_params": sum(p.numel() for p in adapter.parameters()),
        "batch": args.batch,
        "seq_len_approx": seq,
        "bf16": bf16,
        "step_s_cached": round(t_cached, 4),
        "images_per_s_cached": round(args.batch / t_cached, 2),
        "step_s_uncached": round(t_uncached, 4),
        "images_per_s_uncached": round(args.batch / t_uncached, 2),
        "cache_speedup": round(t_uncached / t_cached, 3),
        "model_tflops_per_step": round(flops / 1e12, 2),
        "mfu_cached": round(flops / t_cached / peak, 4) if peak else None,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        if device.type == "cuda"
        else None,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
