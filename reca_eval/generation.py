"""Generation from a checkpoint into a benchmark's official layout (`reca-eval run NAME --ckpt PATH`).

Seeds are per image: ``item_seed(base, item_index, sample)``, so any sharding of the items over
processes produces the same images, and a re-run reproduces them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from reca_eval.progress import progress_bar
from reca_eval.registry import Benchmark


def item_seed(base: int, item_index: int, sample: int) -> int:
    digest = hashlib.sha256(f"{base}:{item_index}:{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def generate_for_benchmark(
    bench: Benchmark,
    items: list[dict[str, Any]],
    ckpt: Path,
    out_dir: Path,
    *,
    guidance_scale: float = 5.0,
    temperature: float = 1.0,
    device: str = "cpu",
) -> list[int]:
    """Load ``ckpt`` through its family adapter, sample every item's images and write the layout."""
    import torch

    from reca_eval.models.loading import load_unified_model
    from reca_eval.models.protocol import Condition, ImageEmbeds, SamplingConfig

    model = load_unified_model(Path(ckpt), device=device)
    model.eval()
    images: dict[int, list[Any]] = {}
    seeds: list[int] = []
    with progress_bar() as progress, torch.no_grad():
        task = progress.add_task(f"generating {bench.name}", total=len(items) * bench.images_per_prompt)
        for index, item in enumerate(items):
            text = bench.prompt_of(item)
            if bench.source_image_of is not None:
                pixels = model.preprocess([bench.source_image_of(item)])
                condition = Condition([ImageEmbeds(model.understanding_embeddings(pixels)[0]), text])
            else:
                condition = Condition.text(text)
            images[index] = []
            for sample in range(bench.images_per_prompt):
                seed = item_seed(bench.generation_seed, index, sample)
                seeds.append(seed)
                sampling = SamplingConfig(guidance_scale=guidance_scale, temperature=temperature, seed=seed)
                images[index].append(model.generate([condition], sampling)[0])
                progress.advance(task)
    bench.write_images(items, images, Path(out_dir))
    return seeds
