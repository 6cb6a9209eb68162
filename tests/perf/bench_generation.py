"""Images/s of the shipped ShapeWorld bases' generation on a CPU: the Janus and Harmon bases on shapes-geneval
prompts and the flow base on shapes-edit conditions (source image + instruction), through ``model.generate``
(sampling + decoding to PIL) at several batch sizes measured in one run (best of ``--repeats``,
interleaved, so a machine's load hits every setting alike), then the whole ``run --ckpt`` generation
path (items -> PNG files in the official layout) at the main command's batch.

    python tests/perf/bench_generation.py                      # 2 threads, batches 64 and 256
    python tests/perf/bench_generation.py --threads 1 --images 256 --batches 256 --repeats 1
    python tests/perf/bench_generation.py --split-threads 1,2    # the Janus base: sampling and VQ decoding apart, at 1 and 2 threads
    python tests/perf/bench_generation.py --threads 1 --batches 256 --families harmon --images 1024
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from reca_eval import registry
from reca_eval.evaluation.generate import generate_for_benchmark, item_seed
from reca_eval.experiments.runner import ExperimentPlan
from reca_eval.models.flow.adapter import FlowAdapter
from reca_eval.models.harmon.adapter import HarmonAdapter
from reca_eval.models.janus.adapter import JanusAdapter
from reca_eval.models.protocol import Condition, ImageEmbeds, SamplingConfig

MAIN_BATCH = ExperimentPlan.__dataclass_fields__["generation_batch_size"].default


def geneval_conditions(model, count: int) -> list[Condition]:
    bench = registry.get("shapes-geneval")
    items = bench.load_items(bench.default_items())
    return [Condition.text(bench.prompt_of(items[i % len(items)])) for i in range(count)]


def flow_conditions(model, count: int) -> list[Condition]:
    bench = registry.get("shapes-edit")
    items = [bench.load_items(bench.default_items())[i % 180] for i in range(count)]
    feats = model.understanding_embeddings(model.preprocess([bench.source_image_of(it) for it in items]))
    return [Condition([ImageEmbeds(f), bench.prompt_of(it)]) for f, it in zip(feats, items, strict=True)]


def images_per_second(model, conditions, batch: int, guidance: float) -> float:
    start = time.perf_counter()
    for s in range(0, len(conditions), batch):
        chunk = conditions[s : s + batch]
        seeds = [item_seed(0, i, 0) for i in range(s, s + len(chunk))]
        model.generate(chunk, SamplingConfig(guidance_scale=guidance, seeds=seeds))
    return len(conditions) / (time.perf_counter() - start)


def layout_path(ckpt: Path, images: int) -> float:
    """`run --ckpt`'s generation (conditions, sampling, decoding, PNG writes) on the first items."""
    bench = registry.get("shapes-geneval")
    items = bench.load_items(bench.default_items())[: max(1, images // bench.images_per_prompt)]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generate_for_benchmark(bench, items, ckpt, Path(tmp) / "images", device="cpu", batch_size=MAIN_BATCH)
        return len(items) * bench.images_per_prompt / (time.perf_counter() - start)


def janus_split(threads: list[int], images: int, repeats: int) -> dict[str, dict[str, float]]:
    """Images/s of the Janus base's token sampling and of its VQ decoding apart, at each thread count
    (interleaved, best of ``repeats``), at the main command's batch."""
    model = JanusAdapter.from_pretrained(JanusAdapter.shipped_base_path()).eval()
    conditions = geneval_conditions(model, images)
    seeds = [item_seed(0, i, 0) for i in range(images)]
    best: dict[int, dict[str, float]] = {t: {"sampling": 0.0, "decoding": 0.0} for t in threads}
    with torch.no_grad():
        model.sample_image_tokens(conditions[:8], SamplingConfig(guidance_scale=5.0, seeds=seeds[:8]))
        for _ in range(repeats):
            for t in threads:
                torch.set_num_threads(t)
                tokens, started = [], time.perf_counter()
                for s in range(0, images, MAIN_BATCH):
                    sampling = SamplingConfig(guidance_scale=5.0, seeds=seeds[s : s + MAIN_BATCH])
                    tokens.append(model.sample_image_tokens(conditions[s : s + MAIN_BATCH], sampling))
                sampled = time.perf_counter()
                for chunk in tokens:
                    model.decode_images(chunk)
                decoded = time.perf_counter()
                best[t]["sampling"] = max(best[t]["sampling"], images / (sampled - started))
                best[t]["decoding"] = max(best[t]["decoding"], images / (decoded - sampled))
    return {f"{t} threads": {k: round(v, 1) for k, v in rates.items()} for t, rates in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=512, help="images per measurement")
    parser.add_argument("--batches", default="64,256", help="batch sizes compared in this run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--families", default="janus,flow,harmon", help="the shipped bases measured")
    parser.add_argument(
        "--split-threads",
        default="",
        help="only the Janus base's sampling and decoding apart, at these thread counts (e.g. 1,2)",
    )
    args = parser.parse_args()
    if args.split_threads:
        threads = [int(t) for t in args.split_threads.split(",")]
        split = {"janus split": janus_split(threads, args.images, args.repeats), "images": args.images}
        print(json.dumps(split))
        return
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    result: dict[str, object] = {"threads": args.threads, "images": args.images, "torch": torch.__version__}
    families = {
        "janus": (JanusAdapter, geneval_conditions),
        "flow": (FlowAdapter, flow_conditions),
        "harmon": (HarmonAdapter, geneval_conditions),
    }
    for family in args.families.split(","):
        cls, build = families[family]
        model = cls.from_pretrained(cls.shipped_base_path()).eval()
        with torch.no_grad():
            conditions = build(model, args.images)
            images_per_second(model, conditions[: min(8, len(conditions))], 8, cls.default_guidance_scale)
            best = dict.fromkeys(batches, 0.0)
            for _ in range(args.repeats):
                for batch in batches:
                    rate = images_per_second(model, conditions, batch, cls.default_guidance_scale)
                    best[batch] = max(best[batch], rate)
        result[family] = {f"batch {b}": round(v, 1) for b, v in best.items()}
    if "janus" in args.families.split(","):
        result["janus run --ckpt path (shapes-geneval, PNG files)"] = round(
            layout_path(JanusAdapter.shipped_base_path(), args.images), 1
        )
    line = json.dumps(result)
    print(line)
    if args.out:
        args.out.write_text(line + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
