"""Scoring speed of shapes-geneval: 2,000 images at 64x64 through the full `run --images` path.

    python tests/perf/bench_scoring.py [--images 2000] [--repeats 3]

Prints images/s for the whole scoring run (PNG decode, layout checks, exact parser, GenEval rules,
aggregation, record writing). The target in the design is >= 400 images/s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from reca_eval import registry
from reca_eval.benchmarks.geneval.layout import write_geneval_folder
from reca_eval.benchmarks.geneval.rules import load_metadata
from reca_eval.evaluation import score as evaluate
from reca_eval.scorers.shapes import render_reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bench = registry.get("shapes-geneval")
    all_items = load_metadata(bench.default_items())
    per = bench.images_per_prompt
    n_items = -(-args.images // per)
    # Repeat the item list when asked for more images than the benchmark has.
    items = [all_items[i % len(all_items)] for i in range(n_items)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        items_path = tmp / "items.jsonl"
        items_path.write_text("".join(__import__("json").dumps(it) + "\n" for it in items))
        images = {i: [render_reference(it, k) for k in range(per)] for i, it in enumerate(items)}
        write_geneval_folder(items, images, tmp / "images")
        times = []
        for r in range(args.repeats):
            start = time.perf_counter()
            out = evaluate.score_images(
                "shapes-geneval",
                tmp / "images",
                items_path=items_path,
                results_dir=tmp / f"results{r}",
                options={"progress": False},
            )
            times.append(time.perf_counter() - start)
        n = out.record.images_scored
        best, median = min(times), statistics.median(times)
        print(
            f"shapes-geneval scoring: {n} images at 64x64; median {median:.2f} s ({n / median:.0f} images/s), "
            f"best {best:.2f} s ({n / best:.0f} images/s) over {args.repeats} runs; overall={out.record.scores['overall']:.3f}"
        )


if __name__ == "__main__":
    main()
