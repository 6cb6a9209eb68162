"""Tokenizer ceiling: what a benchmark scores when every image is exactly right *before* the model's own
generation tokenizer (VQ codes or VAE latents) has drawn it.

A model generates through its tokenizer, so no arm trained on top of it can score above the exact
references passed once through ``generation_targets`` -> ``decode_images``. On ShapeWorld, where the
references score 1.0 by construction, this is the ceiling a base's tokenizer puts on every arm: read
an arm's score against it, not against 1.0.

The round trip copies the reference folder file by file (any layout: metadata files as they are, every
PNG replaced by its round trip at the model's resolution), so the scored folder is laid out exactly as
the references were.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

import torch
from PIL import Image

from reca_eval.core.images import load_rgb, png_bytes
from reca_eval.core.records import atomic_write_bytes
from reca_eval.evaluation import score as evaluate


@torch.no_grad()
def round_trip_folder(
    model, src: Path, dst: Path, batch_size: int = 64, memo: dict[bytes, bytes] | None = None
) -> int:
    """Copy ``src`` to ``dst``, every ``*.png`` replaced by ``decode_images(generation_targets(image))``.

    Identical files go through the tokenizer once (a benchmark's reference images repeat per sample);
    ``memo`` (file sha256 -> round-tripped PNG) carries that across calls that share it, within one
    process and one model: the caller's, never stored."""
    src, dst = Path(src), Path(dst)
    memo = {} if memo is None else memo
    pngs = sorted(p for p in src.rglob("*.png") if p.is_file())
    for path in sorted(p for p in src.rglob("*") if p.is_file() and p.suffix != ".png"):
        (dst / path.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dst / path.relative_to(src))
    keys = [hashlib.sha256(path.read_bytes()).digest() for path in pngs]
    todo = list({key: path for key, path in zip(keys, pngs, strict=True) if key not in memo}.items())
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        images: list[Image.Image] = []
        for _, path in chunk:
            image, reason = load_rgb(path)
            if image is None:
                raise ValueError(f"{path}: {reason}")
            images.append(image)
        decoded = model.decode_images(model.generation_targets(model.preprocess(images)))
        for (key, _), image in zip(chunk, decoded, strict=True):
            memo[key] = png_bytes(image)
    for path, key in zip(pngs, keys, strict=True):
        out = dst / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, memo[key], durable=False)
    return len(pngs)


def tokenizer_ceiling(
    model,
    benchmark: str,
    *,
    label: str,
    results_dir: Path,
    items_path: Path | None = None,
    model_id: str | None = None,
    memo: dict[bytes, bytes] | None = None,
) -> evaluate.RunOutcome:
    """Score ``benchmark``'s exact references after the model's tokenizer round trip (one run record);
    ``memo``: see :func:`round_trip_folder`."""
    from reca_eval.evaluation.references import write_reference_folder

    with tempfile.TemporaryDirectory(prefix="reca-eval-ceiling-") as tmp:
        refs, trip = Path(tmp) / "references", Path(tmp) / "round-trip"
        write_reference_folder(benchmark, refs, items_path=items_path)
        round_trip_folder(model, refs, trip, memo=memo)
        first = next(trip.rglob("*.png"))
        with Image.open(first) as im:
            resolution = im.size[0]
        return evaluate.score_images(
            benchmark,
            trip,
            items_path=items_path,
            label=label,
            model_id=model_id,
            options={"resolution": resolution, "progress": False},
            results_dir=results_dir,
        )


def checkpoint_ceilings(
    ckpt: Path, benchmarks: list[str] | tuple[str, ...], *, label: str = "", results_dir: Path
) -> dict[str, evaluate.RunOutcome]:
    """Load a checkpoint folder and score the tokenizer ceiling of each benchmark (one record each,
    labelled ``label`` or ``"<folder> tokenizer ceiling"``), then refresh the leaderboard files."""
    from reca_eval.models.loading import load_unified_model
    from reca_eval.results.leaderboard import write_leaderboard

    ckpt = Path(ckpt)
    label = label or f"{ckpt.resolve().name} tokenizer ceiling"
    model = load_unified_model(ckpt)
    outcomes = {
        name: tokenizer_ceiling(
            model, name, label=label, results_dir=results_dir, model_id=str(ckpt.resolve())
        )
        for name in benchmarks
    }
    write_leaderboard(results_dir)
    return outcomes
