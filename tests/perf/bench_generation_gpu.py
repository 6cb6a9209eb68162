"""Text-to-image sampling of a Janus-Pro-1B-shaped model (random init): our batched sampler
(``JanusAdapter.sample_image_tokens``) against transformers' own ``generate(generation_mode="image")``
on the same prompts in the same batches, greedy (top-k 1) so both must give the same tokens; images/s of each and their
ratio, measured in one run.

    python tests/perf/bench_generation_gpu.py --out tests/perf/results/generation_gpu.json   # needs: a GPU
    python tests/perf/bench_generation_gpu.py --shape small --device cpu --dtype float32 --prompts 8 --batch 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from bench_janus_gpu import SHAPES, build

from reca_eval.models.protocol import Condition, SamplingConfig

WORDS = "a red green blue circle square triangle star left of right above below two three".split()


def prompts(count: int) -> list[str]:
    return [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(4 + i % 5)) for i in range(count)]


def timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    gpu = torch.cuda.is_available()
    # Without a GPU (`nox -s bench` on a CPU) the defaults are the small check that runs in seconds.
    parser.add_argument("--shape", choices=sorted(SHAPES), default="janus-pro-1b" if gpu else "small")
    parser.add_argument("--device", default="cuda" if gpu else "cpu")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16" if gpu else "float32")
    parser.add_argument("--prompts", type=int, default=64 if gpu else 8)
    parser.add_argument("--batch", type=int, default=16 if gpu else 4)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--out", type=Path, help="also write the JSON here (tests/perf/results/)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    adapter = build(SHAPES[args.shape], device)
    adapter.model.to(getattr(torch, args.dtype)).eval()
    processor = adapter.processor
    texts = prompts(args.prompts)
    greedy = SamplingConfig(guidance_scale=args.guidance, top_k=1)

    def ours() -> torch.Tensor:
        with torch.no_grad():
            return torch.cat(
                [
                    adapter.sample_image_tokens(
                        [Condition.text(t) for t in texts[s : s + args.batch]], greedy
                    )
                    for s in range(0, len(texts), args.batch)
                ]
            )

    def theirs() -> torch.Tensor:
        # The same batches, left-padded as the processor pads them; generate builds its CFG rows itself.
        processor.tokenizer.padding_side = "left"
        outs = []
        for s in range(0, len(texts), args.batch):
            chat = [
                processor.apply_chat_template(
                    [{"role": "user", "content": [{"type": "text", "text": t}]}], add_generation_prompt=True
                )
                for t in texts[s : s + args.batch]
            ]
            inputs = processor(text=chat, generation_mode="image", return_tensors="pt", padding=True)
            with torch.no_grad():
                outs.append(
                    adapter.model.generate(
                        **inputs.to(device),
                        generation_mode="image",
                        do_sample=False,
                        guidance_scale=args.guidance,
                    )
                )
        return torch.cat(outs)

    adapter.sample_image_tokens([Condition.text(texts[0])], greedy)  # warm-up (kernels, allocator)
    a, t_ours = timed(ours, device)
    b, t_theirs = timed(theirs, device)
    same = (a.cpu() == b.cpu()).all(dim=1)
    result = {
        "shape": args.shape,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": args.dtype,
        "prompts": len(texts),
        "batch": args.batch,
        "image_tokens": int(a.shape[1]),
        "ours images/s": round(len(texts) / t_ours, 3),
        "transformers generate images/s": round(len(texts) / t_theirs, 3),
        "ratio": round(t_theirs / t_ours, 2),
        "identical images": f"{int(same.sum())}/{len(same)}",
        "identical tokens": round(float((a.cpu() == b.cpu()).float().mean()), 4),
        "torch": torch.__version__,
    }
    line = json.dumps(result)
    print(line)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(line + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
