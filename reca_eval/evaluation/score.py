"""One scoring run, end to end: items → (generation) → images on disk → scorer → protocol → record.

This is the path `reca-eval run` takes and the trainer's closing evaluation reuses. Generation from a
checkpoint (``--ckpt``) writes the benchmark's official layout first and then scores that folder, so
`--ckpt` and `--images` share every line of scoring code.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import re
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

import reca_eval
from reca_eval import registry
from reca_eval.core.records import (
    RunRecord,
    atomic_write_text,
    git_commit,
    now_iso,
    package_versions,
    printable,
    sha256_file,
    sha256_of_files,
    write_run,
)
from reca_eval.core.spec import Benchmark

DEFAULT_RESULTS_DIR = Path("results")


@dataclass
class RunOutcome:
    record: RunRecord
    rows: pd.DataFrame
    run_dir: Path


def record_options(options: dict[str, Any]) -> dict[str, Any]:
    """Options as the record keeps them: JSON values as given; a callable (a VQA function passed from
    Python) by its name, so the record still says what answered."""
    kept: dict[str, Any] = {}
    for key, value in options.items():
        if callable(value):
            kept[key] = getattr(value, "name", getattr(value, "__name__", repr(value)))
        elif isinstance(value, (str, int, float, bool, type(None), list, dict)):
            kept[key] = value
        else:
            kept[key] = repr(value)
    return kept


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:60] or "run"


def new_run_dir(results_dir: Path, benchmark: str, label: str) -> Path:
    stamp = now_iso().replace(":", "").replace("-", "").replace("+0000", "Z")
    return Path(results_dir) / "runs" / f"{stamp}-{_slug(benchmark)}-{_slug(label)}-{uuid.uuid4().hex[:6]}"


def check_results_writable(runs_dir: Path) -> None:
    """Refuse, before any image is scored, a results folder a record cannot be written into (read-only,
    a file in the way, no space for a file): raises OSError naming the folder. Nothing is left behind:
    the probe goes into the nearest folder that exists."""
    runs_dir = Path(runs_dir)
    existing = runs_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(
            errno.ENOTDIR,
            "not a folder, so no results can be written under it (nothing was scored)",
            str(existing),
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OSError(
            exc.errno, f"results cannot be written here ({exc.strerror}); nothing was scored", str(existing)
        ) from None


def refuse_empty_folder(bench, items: list[dict[str, Any]], image_dir: Path, skips: list) -> None:
    """A folder in which the benchmark found no image to score is not laid out for it (GenEval images
    given to a DPG benchmark, one GenEval item folder instead of the whole run): refuse it before any
    record is written, rather than record a NaN score."""
    reasons: dict[str, int] = {}
    for skip in skips:
        reasons[skip.reason] = reasons.get(skip.reason, 0) + 1
    common = "; ".join(f"{n}× {r}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
    expected = bench.sample_path(items, 0, 0, image_dir) if items else image_dir
    raise ValueError(
        f"no image in {image_dir} could be scored for {bench.name}: the folder is not laid out as "
        f"{bench.layout} (the first sample is expected at {expected})" + (f"; {common}" if common else "")
    )


def evenly_spaced(values: list, count: int) -> list:
    """``count`` values spread evenly over ``values`` (all of them when ``count`` is not below the length)."""
    if count <= 0 or count >= len(values):
        return list(values)
    return [values[i * len(values) // count] for i in range(count)]


def twin_groups(items: list[dict[str, Any]]) -> list[list[int]]:
    """Positions of the items, grouped by ``pair_id`` (counterfactual twins), each item alone otherwise."""
    groups: dict[str, list[int]] = {}
    for n, item in enumerate(items):
        groups.setdefault(str(item.get("pair_id", f"item {n}")), []).append(n)
    return list(groups.values())


def evenly_spaced_items(items: list[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    """``limit`` items spread evenly over the item file (files are ordered by category, so every
    category keeps its share); items sharing a ``pair_id`` (counterfactual twins) are kept or dropped
    together. ``None`` or a limit at least the file's length: every item."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    groups = twin_groups(items)
    count = max(1, limit // max(len(g) for g in groups))
    if count >= len(groups):
        return list(items)
    return [items[n] for group in evenly_spaced(groups, count) for n in group]


def subset_sha256(items_sha256: str, limit: int | None, n_items: int, n_total: int) -> str:
    """The item identity of a run on a subset: the file's hash with the subset's rule, so that runs on
    the same subset compare with each other and never with full-file runs."""
    if limit is None or n_items == n_total:
        return items_sha256
    return hashlib.sha256(f"{items_sha256}:evenly spaced {n_items} of {n_total}".encode()).hexdigest()


def unfinished_run_dir(results_dir: Path, benchmark: str, label: str) -> Path | None:
    """The newest run folder of (benchmark, label) under ``results_dir/runs`` that holds no record
    yet: a `run --ckpt` that was killed while generating or scoring. None when there is none."""
    from reca_eval.core.records import RECORD_FILE

    pattern = re.compile(
        rf"^\d{{8}}T\d{{6}}Z-{re.escape(_slug(benchmark))}-{re.escape(_slug(label))}-[0-9a-f]{{6}}$"
    )
    runs = Path(results_dir) / "runs"
    if not runs.is_dir():
        return None
    found = [
        p for p in runs.iterdir() if p.is_dir() and pattern.match(p.name) and not (p / RECORD_FILE).exists()
    ]
    return max(found, key=lambda p: p.name) if found else None


def score_images(
    benchmark_name: str,
    image_dir: Path,
    *,
    items_path: Path | None = None,
    label: str = "",
    model_id: str | None = None,
    options: dict[str, Any] | None = None,
    results_dir: Path = DEFAULT_RESULTS_DIR,
    run_dir: Path | None = None,
    seeds: list[int] | None = None,
    limit: int | None = None,
    generation: dict[str, Any] | None = None,
) -> RunOutcome:
    """Score a folder of images in the benchmark's official layout and write the run's record.

    ``limit`` scores an evenly spaced subset of the items (:func:`evenly_spaced_items`; the record's
    ``options.limit`` and item hash say so); ``generation`` is what the record keeps of how the images
    were generated."""
    bench = registry.get(benchmark_name)
    options = dict(options or {})
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder {image_dir} does not exist")
    items_path = Path(items_path) if items_path else bench.default_items()
    all_items = bench.load_items(items_path)
    items = evenly_spaced_items(all_items, limit)
    if len(items) < len(all_items):
        options["limit"] = limit
    check_results_writable(run_dir.parent if run_dir else Path(results_dir) / "runs")
    output = bench.score(items, image_dir, {k: v for k, v in options.items() if k != "limit"})
    if not len(output.rows):
        refuse_empty_folder(bench, items, image_dir, output.skips)
    scores = bench.aggregate(output.rows, None)
    scorer = dict(output.scorer)
    scorer.setdefault("versions", package_versions(("numpy", "pillow", "pandas", "torch", "transformers")))
    model = printable(model_id or str(image_dir.resolve()))  # a Latin-1 folder name: escaped, not a crash
    record = RunRecord(
        benchmark=bench.name,
        spec_version=bench.version,
        items_sha256=subset_sha256(sha256_file(items_path), limit, len(items), len(all_items)),
        model=model,
        label=printable(label or Path(model).name),
        scores={k: float(v) for k, v in scores.items()},
        images_scored=len(output.images),
        images_skipped=len(output.skips),
        skips=output.skips,
        images_sha256=sha256_of_files(output.images, image_dir) if output.images else "",
        seeds=list(seeds or []),
        scorer=scorer,
        options={**record_options(options), **({"mode": scorer["mode"]} if "mode" in scorer else {})},
        generation=dict(generation or {}),
        git_commit=git_commit(),
        created=now_iso(),
        reca_eval_version=reca_eval.__version__,
    )
    run_dir = run_dir or new_run_dir(results_dir, bench.name, record.label)
    record.run_id = Path(run_dir).name
    write_run(run_dir, record, output.rows)
    return RunOutcome(record=record, rows=output.rows, run_dir=Path(run_dir))


def process_position() -> tuple[int, int]:
    """(index, count) of this process under `accelerate launch` or torchrun; (0, 1) when run plainly."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    import torch
    from accelerate import PartialState

    # Without CUDA, accelerate forms the (gloo) process group only when told it runs on CPU.
    state = PartialState(cpu=not torch.cuda.is_available())
    return state.process_index, state.num_processes


GENERATION_FILE = "generation.json"  # what made a run folder's images, checked when the folder is reused


def generation_identity(
    bench: Benchmark,
    items: list[dict[str, Any]],
    model_id: str,
    limit: int | None,
    generation: dict[str, Any] | None,
) -> dict[str, Any]:
    """Everything that decides a run folder's images (not the batch size or device, which only
    schedule the work): checkpoint, revision, items, seed, samples per item, sampling and dtype."""
    generation = generation or {}
    # Items may carry frames (DPG's question graphs): those hash by their JSON form.
    items_text = json.dumps(items, sort_keys=True, ensure_ascii=False, default=_json_form)
    return {
        "checkpoint": str(model_id),
        "revision": generation.get("revision"),
        "items_sha256": hashlib.sha256(items_text.encode("utf-8")).hexdigest(),
        "limit": limit,
        "seed": bench.generation_seed,
        "images_per_prompt": bench.images_per_prompt,
        "sampling": generation.get("sampling"),
        "dtype": generation.get("dtype"),
    }


def _json_form(value: Any) -> Any:
    return value.to_json() if hasattr(value, "to_json") else str(value)


def claim_generation(run_dir: Path, identity: dict[str, Any]) -> None:
    """Write ``identity`` into a new run folder, or check it against the folder's: images kept from a
    killed run must come from the same checkpoint, items and settings, or they would be scored as
    answers to other prompts. ValueError names the settings that differ."""
    path = Path(run_dir) / GENERATION_FILE
    if path.is_file():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ValueError(
                f"{path}: unreadable ({exc}); start a new run instead of reusing {run_dir}"
            ) from exc
        differ = (
            sorted(k for k in identity if before.get(k) != identity[k])
            if isinstance(before, dict)
            else ["all"]
        )
        if differ:
            raise ValueError(
                f"{run_dir} holds images made with other settings ({', '.join(differ)} differ: see {path}); "
                "continue it with the same checkpoint, items and settings, or start a new run"
            )
        return
    if path.parent.exists() and any((path.parent / "images").glob("*")):
        raise ValueError(
            f"{run_dir} holds images but no {GENERATION_FILE} saying what made them; start a new run"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(identity, indent=2) + "\n")


def generate_and_score(
    benchmark_name: str,
    ckpt: Path,
    *,
    generate: Callable[..., list[int]],
    items_path: Path | None = None,
    label: str = "",
    options: dict[str, Any] | None = None,
    results_dir: Path = DEFAULT_RESULTS_DIR,
    run_dir: Path | None = None,
    model_id: str | None = None,
    seed: int | None = None,
    images_per_prompt: int | None = None,
    limit: int | None = None,
    generation: dict[str, Any] | None = None,
) -> RunOutcome | None:
    """Generate the benchmark's images from a checkpoint into the run folder, then score them.

    ``generate(bench, items, ckpt, out_dir)`` writes the official layout and returns the seeds used;
    the generated images' resolution becomes the expected size when the benchmark has that option
    and the options name none. ``seed`` replaces the benchmark's base generation seed,
    ``images_per_prompt`` its samples per item, ``limit`` keeps an evenly spaced subset of the items;
    all three, and ``generation`` (the sampling settings the caller resolved), go into the record.
    Under ``accelerate launch`` every process generates its shard into the main process's run folder
    and only the main process scores (the others return None). ``run_dir`` continues (or starts) that
    run folder: images already there are kept, so a killed run restarts where it stopped.
    """
    bench = registry.get(benchmark_name)
    if seed is not None or images_per_prompt is not None:
        bench = dataclasses.replace(
            bench,
            generation_seed=bench.generation_seed if seed is None else int(seed),
            images_per_prompt=bench.images_per_prompt
            if images_per_prompt is None
            else int(images_per_prompt),
        )
    items_path = Path(items_path) if items_path else bench.default_items()
    items = evenly_spaced_items(bench.load_items(items_path), limit)
    model_id = model_id or str(ckpt)
    run_dir = Path(run_dir) if run_dir else new_run_dir(results_dir, bench.name, label or Path(model_id).name)
    process_index, process_count = process_position()
    if process_count > 1:
        from accelerate.utils import broadcast_object_list

        shared = [str(run_dir)]
        broadcast_object_list(shared, from_process=0)  # one run folder for every shard
        run_dir = Path(shared[0])
    image_dir = run_dir / "images"
    if process_index == 0:
        claim_generation(run_dir, generation_identity(bench, items, model_id, limit, generation))
    seeds = generate(bench, items, Path(ckpt), image_dir)
    if process_index != 0:
        return None
    options = dict(options or {})
    declared = bench.spec.options if bench.spec is not None else {}
    first = bench.sample_path(items, 0, 0, image_dir)
    if "resolution" in declared and "resolution" not in options and first.exists():
        with Image.open(first) as im:
            options["resolution"] = im.size[0]
    if images_per_prompt is not None:
        options["images_per_prompt"] = int(images_per_prompt)
    generation = {
        **(generation or {}),
        "seed": bench.generation_seed,
        "images_per_prompt": bench.images_per_prompt,
        "limit": limit,
    }
    return score_images(
        benchmark_name,
        image_dir,
        items_path=items_path,
        label=label or Path(model_id).name,
        model_id=model_id,
        options=options,
        results_dir=results_dir,
        run_dir=run_dir,
        seeds=seeds,
        limit=limit,
        generation=generation,
    )
