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
import math
import re
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


DTYPES = ("bfloat16", "float16", "float32")
SAMPLING_KEYS = ("guidance_scale", "temperature", "top_k", "top_p")  # what -s KEY=VALUE may set


def generation_device(device: str | None) -> str:
    """CUDA when available, else the CPU; a device asked for by name must exist."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        # mps is left out: the samplers draw their uniforms in float64, which MPS lacks.
        raise ValueError(f"--device takes auto, cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: torch sees no CUDA device here (use --device cpu or auto)")
    index = int(device.partition(":")[2] or 0)
    if device.startswith("cuda") and index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: torch sees {torch.cuda.device_count()} CUDA device(s) here")
    return device


def _sampling_value(family: str, key: str, value: Any) -> float | int | None:
    """A sampling setting from the command line (text) or Python, typed as SamplingConfig's field."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "off")):
        if key in ("top_k", "top_p"):
            return None
        raise ValueError(f"sampling {key} of the {family} family needs a number, got {value!r}")
    try:
        number = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        number = float("nan")
    if not math.isfinite(number) or (key == "top_k" and number != int(number)):
        raise ValueError(f"sampling {key} of the {family} family needs a finite number, got {value!r}")
    if key == "guidance_scale" and number < 0:
        raise ValueError(f"sampling guidance_scale must be >= 0, got {value!r}")
    return int(number) if key == "top_k" else number


def resolve_generation(
    ckpt: Path,
    *,
    device: str | None = None,
    dtype: str | None = None,
    sampling: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """How a checkpoint generates: its family, the device (CUDA when available), the dtype (bfloat16
    on CUDA, float32 on the CPU) and the sampling settings (the family adapter's published defaults,
    then ``sampling``'s overrides). What the run record keeps under ``generation``; ValueError names a
    setting the family does not have, or a bad value."""
    from reca_eval.models import family_class
    from reca_eval.models.loading import detect_family
    from reca_eval.models.protocol import SamplingConfig
    from reca_eval.models.sampling import check_sampling

    family = detect_family(Path(ckpt))
    values: dict[str, Any] = dict(family_class(family).sampling_defaults())
    for key, value in (sampling or {}).items():
        if key not in values:
            raise ValueError(
                f"the {family} family has no sampling setting {key!r}; it samples with {', '.join(sorted(values))}"
            )
        values[key] = _sampling_value(family, key, value)
    check_sampling(SamplingConfig(**values))
    device = generation_device(device)
    dtype = dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    if dtype not in DTYPES:
        raise ValueError(f"--dtype takes one of {', '.join(DTYPES)}, got {dtype!r}")
    return {"family": family, "device": device, "dtype": dtype, "sampling": values}


def generate_for_benchmark(
    bench: Benchmark,
    items: list[dict[str, Any]],
    ckpt: Path,
    out_dir: Path,
    *,
    guidance_scale: float | None = None,
    temperature: float | None = None,
    sampling: dict[str, Any] | None = None,
    device: str | None = None,
    dtype: str | None = None,
    shard: Shard | None = None,
    batch_size: int = 32,
) -> list[int]:
    """Load ``ckpt`` through its family adapter, sample this shard's missing images, write the layout.

    Sampling settings are the family's defaults (:func:`resolve_generation`) overridden by
    ``sampling`` and by ``guidance_scale`` / ``temperature`` where given. Returns the seeds of every
    image of the benchmark (all shards), for the result record.
    """
    import torch

    from reca_eval.models.loading import load_unified_model
    from reca_eval.models.protocol import SamplingConfig

    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    overrides = dict(sampling or {})
    for key, value in (("guidance_scale", guidance_scale), ("temperature", temperature)):
        if value is not None:
            overrides[key] = value
    out_dir = Path(out_dir)
    shard = shard or current_shard()
    if shard.index == 0:
        bench.prepare_layout(items, out_dir)
    _remove_stale_temp_files(out_dir)
    todo = pending_samples(bench, items, out_dir, shard)
    if todo:
        settings = resolve_generation(Path(ckpt), device=device, dtype=dtype, sampling=overrides)
        device = settings["device"]
        model = load_unified_model(Path(ckpt), device=device, dtype=getattr(torch, settings["dtype"]))
        model.eval()
        with progress_bar() as progress, torch.no_grad():
            task = progress.add_task(f"{bench.name} shard {shard.index + 1}/{shard.count}", total=len(todo))
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                conditions = _conditions(bench, [items[index] for index, _ in batch], model, device)
                sampling_config = SamplingConfig(
                    **settings["sampling"],
                    seeds=[item_seed(bench.generation_seed, index, k) for index, k in batch],
                )
                images = model.generate(conditions, sampling_config)
                for (index, k), image in zip(batch, images, strict=True):
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


def _conditions(bench: Benchmark, items: list[dict[str, Any]], model: Any, device: str) -> list[Any]:
    """Text prompts for generation; source-image understanding embeddings + instruction for editing
    (the batch's source images read in one pass of the understanding encoder)."""
    from reca_eval.models.protocol import Condition, ImageEmbeds

    texts = [bench.prompt_of(item) for item in items]
    if bench.source_image_of is None:
        return [Condition.text(text) for text in texts]
    pixels = model.preprocess([bench.source_image_of(item) for item in items]).to(device)
    features = model.understanding_embeddings(pixels)
    return [Condition([ImageEmbeds(f), text]) for f, text in zip(features, texts, strict=True)]
