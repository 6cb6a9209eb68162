"""Generation from a checkpoint into a benchmark's official layout (`reca-eval run NAME --ckpt PATH`).

- Seeds are per image, ``item_seed(base, item_index, sample)``: any sharding of the items over
  processes produces the same images, and a re-run reproduces them.
- Under ``accelerate launch`` each process takes every N-th item (its shard); the main process then
  scores once, after every shard is done.
- A killed run restarts where it stopped: every image is written atomically (temp file + rename) as
  soon as it exists, so a file at a sample's path is complete; valid ones are kept, unreadable ones
  and stale temp files are removed and regenerated.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reca_eval.core.images import load_rgb
from reca_eval.core.progress import progress_bar
from reca_eval.core.spec import Benchmark


def item_seed(base: int, item_index: int, sample: int) -> int:
    digest = hashlib.sha256(f"{base}:{item_index}:{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    def owns(self, item_index: int) -> bool:
        return item_index % self.count == self.index


def current_shard() -> Shard:
    """This process's shard under `accelerate launch` (one shard when run plainly)."""
    from reca_eval.evaluation.score import process_position

    return Shard(*process_position())


def _remove_stale_temp_files(out_dir: Path) -> int:
    """Temp files of writes a killed run never renamed (records.atomic_write_* name them ``.<name>.*``)."""
    removed = 0
    for path in Path(out_dir).rglob(".*.png.*"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def pending_samples(
    bench: Benchmark, items: list[dict[str, Any]], out_dir: Path, shard: Shard
) -> list[tuple[int, int]]:
    """(item index, sample) pairs of this shard that have no valid image on disk yet."""
    pending = []
    for index in range(len(items)):
        if not shard.owns(index):
            continue
        for k in range(bench.images_per_prompt):
            path = bench.sample_path(items, index, k, out_dir)
            if path.exists():
                image, _ = load_rgb(path)
                if image is not None:
                    continue
                path.unlink()
            pending.append((index, k))
    return pending


def generate_for_benchmark(
    bench: Benchmark,
    items: list[dict[str, Any]],
    ckpt: Path,
    out_dir: Path,
    *,
    guidance_scale: float = 5.0,
    temperature: float = 1.0,
    device: str | None = None,
    shard: Shard | None = None,
    batch_size: int = 32,
) -> list[int]:
    """Load ``ckpt`` through its family adapter, sample this shard's missing images, write the layout.

    Returns the seeds of every image of the benchmark (all shards), for the result record.
    """
    import torch

    from reca_eval.models.loading import load_unified_model
    from reca_eval.models.protocol import SamplingConfig

    out_dir = Path(out_dir)
    shard = shard or current_shard()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if shard.index == 0:
        bench.prepare_layout(items, out_dir)
    _remove_stale_temp_files(out_dir)
    todo = pending_samples(bench, items, out_dir, shard)
    if todo:
        model = load_unified_model(Path(ckpt), device=device)
        model.eval()
        with progress_bar() as progress, torch.no_grad():
            task = progress.add_task(f"{bench.name} shard {shard.index + 1}/{shard.count}", total=len(todo))
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                conditions = [_condition(bench, items[index], model, device) for index, _ in batch]
                sampling = SamplingConfig(
                    guidance_scale=guidance_scale,
                    temperature=temperature,
                    seeds=[item_seed(bench.generation_seed, index, k) for index, k in batch],
                )
                for (index, k), image in zip(batch, model.generate(conditions, sampling), strict=True):
                    bench.write_sample(items, index, k, image, out_dir)
                progress.advance(task, len(batch))
    if shard.count > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()  # the state current_shard() formed: every shard is on disk
    return [
        item_seed(bench.generation_seed, i, k)
        for i in range(len(items))
        for k in range(bench.images_per_prompt)
    ]


def _condition(bench: Benchmark, item: dict[str, Any], model: Any, device: str) -> Any:
    """Text prompt for generation; source-image understanding embeddings + instruction for editing."""
    from reca_eval.models.protocol import Condition, ImageEmbeds

    text = bench.prompt_of(item)
    if bench.source_image_of is None:
        return Condition.text(text)
    pixels = model.preprocess([bench.source_image_of(item)]).to(device)
    return Condition([ImageEmbeds(model.understanding_embeddings(pixels)[0]), text])
