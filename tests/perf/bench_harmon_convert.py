"""`reca-eval convert harmon` on a random release with the official layout at a real size: wall time, peak
memory, output size, and the converted weights checked against the source.

    python tests/perf/bench_harmon_convert.py --size 0.5b --threads 1
    python tests/perf/bench_harmon_convert.py --size 1.5b     # writes ~5 GB of source files

The release is written in a temporary folder as the official README lays it out
(``checkpoints/harmon_<size>.pth`` as a bare bfloat16 state dict with the official names and shapes,
``checkpoints/kl16.ckpt`` under ``"model"``, a ``Qwen2.5-<size>-Instruct`` folder whose config.json is the
real one and whose tokenizer is the tests' small one), then converted by the command in a subprocess,
as a user runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # the official key tables live beside the conversion tests

import torch  # noqa: E402
from transformers import Qwen2ForCausalLM  # noqa: E402

from reca_eval.models.flow.tiny import build_tiny_qwen_tokenizer  # noqa: E402
from reca_eval.models.harmon.convert import official_configs  # noqa: E402
from reca_eval.models.harmon.tiny import PROMPT_WORDS  # noqa: E402
from reca_eval.models.loading import load_unified_model  # noqa: E402
from tests.test_harmon_convert import official_harmon_shapes, official_vae_shapes  # noqa: E402


def write_release(root: Path, size: str) -> dict[str, Path]:
    llm_config, config, _ = official_configs(size)
    with torch.device("meta"):
        llm = Qwen2ForCausalLM(llm_config)
    generator = torch.Generator().manual_seed(0)
    harmon = {
        k: (0.02 * torch.randn(s, generator=generator)).to(torch.bfloat16)
        for k, s in official_harmon_shapes(llm, config).items()
    }
    harmon["llm.lm_head.weight"] = harmon["llm.model.embed_tokens.weight"]  # tied, one storage
    vae = {
        k: 0.02 * torch.randn(s, generator=generator)
        for k, s in official_vae_shapes(128, (1, 1, 2, 2, 4), 16, 2, 4).items()
    }
    paths = {
        "weights": root / "checkpoints" / f"harmon_{size}.pth",
        "vae": root / "checkpoints" / "kl16.ckpt",
        "llm": root / f"Qwen2.5-{size.upper()}-Instruct",
    }
    paths["weights"].parent.mkdir(parents=True)
    torch.save(harmon, paths["weights"])
    torch.save({"model": vae}, paths["vae"])
    build_tiny_qwen_tokenizer(PROMPT_WORDS).save_pretrained(paths["llm"])
    llm_config.save_pretrained(paths["llm"])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="0.5b", choices=["0.5b", "1.5b"])
    parser.add_argument(
        "--threads", type=int, default=0, help="Torch threads of the command (0: its default)."
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="harmon-release-") as tmp:
        root = Path(tmp)
        paths = write_release(root, args.size)
        out = root / f"harmon-{args.size}"
        env = dict(os.environ)
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        command = [str(Path(sys.executable).parent / "reca-eval"), "convert", "harmon", "--weights",
                   str(paths["weights"]), "--vae", str(paths["vae"]), "--llm", str(paths["llm"]), "--out", str(out),
                   "--no-progress"]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(command, check=True, env=env)
        wall = time.perf_counter() - start
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        model = load_unified_model(out, dtype=torch.bfloat16)
        source = torch.load(paths["weights"], map_location="cpu", weights_only=True, mmap=True)
        ours = model.state_dict()
        # The MAR and projector names are the official ones; the LLM's carry no "llm." inside the model.
        exact = all(
            torch.equal(ours[k], source[k])
            for k in ("mar.encoder_blocks.0.attn.qkv.weight", "proj_out.2.weight")
        ) and torch.equal(model.llm.model.embed_tokens.weight, source["llm.model.embed_tokens.weight"])
        print(
            json.dumps(
                {
                    "size": args.size,
                    "source_gb": round(sum(p.stat().st_size for p in paths.values() if p.is_file()) / 1e9, 2),
                    "wall_s": round(wall, 1),
                    "peak_rss_gb": round(peak_kb / 1e6, 2),
                    "out_gb": round(sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e9, 2),
                    "weights_exact": exact,
                    "size_inferred": json.loads((out / "conversion.json").read_text())["size_inferred"],
                }
            )
        )


if __name__ == "__main__":
    main()
