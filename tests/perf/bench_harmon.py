"""Harmon's RecA step and sampling (random init): step time, images/s, MFU, sampling images/s.

    python tests/perf/bench_harmon.py                  # Harmon-1.5B shapes at 512 px, on the GPU, bf16
    python tests/perf/bench_harmon.py --shape tiny     # the tiny Harmon of the tests, on a CPU

The model is the real architecture at the official sizes (Qwen2.5-1.5B, MAR-H 20 + 20 blocks of 1280, a
12 x 1536 diffusion MLP, the KL-16 VAE), randomly initialised: speed does not depend on the weights.
Timed through the UnifiedModel calls the trainer makes:
- "recon": RecA's reconstruction micro-batch from cached VAE latents (the condition is the image's full
  MAR encoding, 1,024 + 64 tokens; the target masked at MAR's ratio) + backward + AdamW;
- "i2t": the image->text micro-batch (the same encoding, a short caption) + backward + AdamW;
- sampling: text->image at ``image_size`` with ``num_iterations`` MAR steps, CFG 3.0, 100 diffusion steps.
MFU counts the trained matmul FLOPs of the recon step (6 x parameters x tokens for the LLM, both MAR
passes, the projectors and the diffusion MLP, plus attention) against the dense bf16 peak.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from diffusers import AutoencoderKL
from transformers import Qwen2ForCausalLM

from reca_eval.models.flow.tiny import build_tiny_qwen_tokenizer
from reca_eval.models.harmon.adapter import HarmonAdapter, HarmonConfig, latent_tokens, projectors
from reca_eval.models.harmon.convert import official_configs
from reca_eval.models.harmon.mar import MAR
from reca_eval.models.harmon.tiny import PROMPT_WORDS, tiny_kl_vae, tiny_mar_config, tiny_qwen2
from reca_eval.models.protocol import Condition, ImageEmbeds, SamplingConfig

PEAK_BF16 = {"H100": 989e12, "H200": 989e12}  # dense bf16, vendor datasheet (SXM)
CAPTION = "a red circle above a blue square on a grey background"
INSTRUCTION = "Reconstruct the picture faithfully."
MEAN_MASK_RATIO = 0.86  # mean of MAR's mask-ratio draw (Gaussian at 1, std 0.25, truncated to [0.7, 1])


def build(shape: str, device: torch.device) -> HarmonAdapter:
    tokenizer = build_tiny_qwen_tokenizer(PROMPT_WORDS + tuple(CAPTION.split()))
    if shape == "tiny":
        config = HarmonConfig(image_size=32, num_iterations=4, mar=tiny_mar_config())
        with device:
            llm = tiny_qwen2(len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
            vae = tiny_kl_vae()
            mar = MAR(config.mar)
            proj_in, proj_out = projectors(config.mar.encoder_embed_dim, 32)
    else:
        llm_config, config, vae_kwargs = official_configs("1.5b")
        llm_config.pad_token_id = tokenizer.pad_token_id
        with device:
            llm = Qwen2ForCausalLM(llm_config)
            vae = AutoencoderKL(**vae_kwargs)
            mar = MAR(config.mar)
            proj_in, proj_out = projectors(config.mar.encoder_embed_dim, llm_config.hidden_size)
    return HarmonAdapter(llm, tokenizer, mar, proj_in, proj_out, vae, config)


def count(module: torch.nn.Module, skip: str = "") -> int:
    return sum(p.numel() for n, p in module.named_parameters() if not (skip and skip in n))


def recon_flops(adapter: HarmonAdapter, batch: int, prompt_tokens: int) -> float:
    """Matmul FLOPs of one recon micro-batch, forward + backward (6 per parameter per token), plus
    attention (12 x layers x width x tokens^2 per sequence)."""
    cfg, mar = adapter.config.mar, adapter.mar
    n = adapter.grid[0] * adapter.grid[1]
    buffers = cfg.buffer_size
    masked = MEAN_MASK_RATIO * n
    cond = n + buffers  # the condition: every token encoded
    target = n - masked + buffers  # the target: visible tokens + buffers
    llm_tokens = prompt_tokens + cond + target
    enc, dec = count(mar.encoder_blocks), count(mar.decoder_blocks)
    llm = count(adapter.llm.model, skip="embed_tokens")
    proj = count(adapter.proj_in) * (cond + target) + count(adapter.proj_out) * target
    head = count(mar.diffloss.net) * masked * cfg.diffusion_batch_mul
    dense = llm * llm_tokens + enc * (cond + target) + dec * (n + buffers) + proj + head
    llm_cfg = adapter.llm.config
    attention = (
        12 * llm_cfg.num_hidden_layers * llm_cfg.hidden_size * llm_tokens**2
        + 12 * cfg.encoder_depth * cfg.encoder_embed_dim * (cond**2 + target**2)
        + 12 * cfg.decoder_depth * cfg.decoder_embed_dim * (n + buffers) ** 2
    )
    return batch * (6 * dense + attention)


def timed(fn, n: int, device: torch.device, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=("harmon-1.5b", "tiny"), default="harmon-1.5b")
    parser.add_argument("--batch", type=int, default=8, help="images per training micro-batch")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per kind")
    parser.add_argument("--sample-batch", type=int, default=8, help="images per sampling call")
    parser.add_argument("--samples", type=int, default=1, help="timed sampling calls")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    adapter = build(args.shape, device)
    adapter.requires_grad_(True)
    adapter.vae.requires_grad_(False)
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    params = [p for p in adapter.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.95), fused=device.type == "cuda")
    side = adapter.image_size
    pixels = torch.rand(args.batch, 3, side, side, device=device) * 2 - 1
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        latents = adapter.generation_targets(pixels).float()  # what the frozen-output cache holds
    tokens = latent_tokens(latents)

    def step(loss_fn) -> None:
        adapter.train()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def recon() -> None:
        conditions = [Condition([ImageEmbeds(t), INSTRUCTION]) for t in tokens]
        step(lambda: adapter.generation_loss(conditions, latents))

    def i2t() -> None:
        step(lambda: adapter.understanding_loss(pixels, [CAPTION] * args.batch))

    t_recon = timed(recon, args.steps, device)
    t_i2t = timed(i2t, args.steps, device)
    adapter.eval()
    prompts = [Condition.text(CAPTION)] * args.sample_batch

    def sample() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            adapter.generate(prompts, SamplingConfig(guidance_scale=3.0, temperature=1.0, seed=0))

    t_sample = timed(sample, args.samples, device, warmup=1 if args.shape != "tiny" else 1)
    prompt_tokens = len(adapter._row(Condition([ImageEmbeds(tokens[0]), INSTRUCTION]), "p").ids) - (
        tokens.shape[1] + adapter.buffer_size
    )
    flops = recon_flops(adapter, args.batch, prompt_tokens)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    result = {
        "device": name,
        "shape": args.shape,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "total_params": count(adapter),
        "trainable_params": sum(p.numel() for p in params),
        "image_size": side,
        "latent_tokens": tokens.shape[1],
        "bf16": bf16,
        "batch": args.batch,
        "recon_step_s": round(t_recon, 4),
        "recon_images_per_s": round(args.batch / t_recon, 2),
        "i2t_step_s": round(t_i2t, 4),
        "i2t_images_per_s": round(args.batch / t_i2t, 2),
        "recon_model_tflops_per_step": round(flops / 1e12, 3),
        "mfu_recon": round(flops / t_recon / peak, 4) if peak else None,
        "sampling": {
            "batch": args.sample_batch,
            "iterations": adapter.config.num_iterations,
            "diffusion_steps": adapter.mar.diffloss.gen_diffusion.num_timesteps,
            "guidance_scale": 3.0,
            "seconds_per_call": round(t_sample, 3),
            "images_per_s": round(args.sample_batch / t_sample, 3),
        },
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        if device.type == "cuda"
        else None,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
