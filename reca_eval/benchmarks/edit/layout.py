"""The per-sample image layout ``<dir>/<item_id>_<k>.png`` (editing benchmarks; DPG without a grid).

``k`` runs over ``0 .. images_per_prompt-1``. Scoring a folder accounts for every expected and every
present file: an expected image that is missing, unreadable, truncated or of the wrong size is a
counted skip with its reason, and so is a file the layout does not expect (another item, a sample
index out of range, a duplicate in a second format, a sub-folder). Nothing is dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from reca_eval.core.images import IMAGE_SUFFIXES, load_rgb, png_bytes
from reca_eval.core.paths import check_item_id
from reca_eval.core.progress import progress_iter
from reca_eval.core.records import Skip, atomic_write_bytes
from reca_eval.core.spec import ScoreOutput

SAMPLE_NAME = re.compile(r"^(?P<item>.+)_(?P<k>\d+)$")


@dataclass
class FolderScan:
    """Which file holds each expected (item_id, sample), and what else the folder has."""

    found: dict[tuple[str, int], Path] = field(default_factory=dict)
    missing: list[tuple[str, int]] = field(default_factory=list)
    unexpected: list[Skip] = field(default_factory=list)


def sample_path(out_dir: Path, item_id: str, k: int) -> Path:
    """``<out_dir>/<item_id>_<k>.png``; an item id that would leave ``out_dir`` ("../x", "/abs", "a/b")
    is refused, whatever loaded it."""
    return Path(out_dir) / f"{check_item_id(item_id, f'item {item_id!r:.80}')}_{k}.png"


def scan_per_sample_folder(image_dir: Path, item_ids: Iterable[str], images_per_prompt: int) -> FolderScan:
    """Match ``image_dir``'s files to ``<item_id>_<k>.<image suffix>``; see the module docstring."""
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder {image_dir} does not exist")
    if images_per_prompt < 1:
        raise ValueError(f"images_per_prompt must be >= 1, got {images_per_prompt}")
    ids = list(dict.fromkeys(str(i) for i in item_ids))
    known = set(ids)
    scan = FolderScan()
    # Sorted so that of two formats for one sample, ".jpeg" < ".jpg" < ".png" < ".webp" wins
    # deterministically; prefer .png explicitly because it is the layout's own format.
    entries = sorted(image_dir.iterdir(), key=lambda p: (p.suffix.lower() != ".png", p.name))
    for path in entries:
        if path.is_dir():
            scan.unexpected.append(Skip(str(path), "unexpected sub-folder"))
            continue
        match = SAMPLE_NAME.match(path.stem)
        if path.suffix.lower() not in IMAGE_SUFFIXES or match is None:
            scan.unexpected.append(Skip(str(path), "unexpected file (not <item_id>_<k>.<image suffix>)"))
            continue
        item, k = match["item"], int(match["k"])
        if item not in known:
            scan.unexpected.append(Skip(str(path), f"unexpected file: no item {item!r} in the item list"))
        elif k >= images_per_prompt:
            scan.unexpected.append(
                Skip(str(path), f"unexpected file: sample {k} >= images_per_prompt {images_per_prompt}")
            )
        elif (item, k) in scan.found:
            scan.unexpected.append(Skip(str(path), f"duplicate of {scan.found[(item, k)].name}"))
        else:
            scan.found[(item, k)] = path
    scan.missing = [(i, k) for i in ids for k in range(images_per_prompt) if (i, k) not in scan.found]
    return scan


def _row_score(result: dict[str, Any], item_id: str) -> float:
    for key in ("score", "o", "imgedit"):
        if key in result:
            return float(result[key])
    raise ValueError(
        f"score_item for item {item_id!r} returned {sorted(result)}: needs 'score', 'o' or 'imgedit'"
    )


def score_edit_folder(
    items: list[dict],
    image_dir: Path,
    score_item: Callable[[dict, Image.Image], dict],
    *,
    images_per_prompt: int = 1,
    expected_size: tuple[int, int] | None = None,
    progress: bool = True,
    workers: int = 1,
) -> ScoreOutput:
    """Score every ``<item_id>_<k>.png`` in ``image_dir`` with ``score_item(item, edited_image)``
    (in ``workers`` threads when above 1: ``score_item`` must then be thread-safe, as a Judge is).

    ``items`` are dicts with at least ``item_id`` and ``category`` (the edit type); ``language`` is
    carried into the rows when present. ``score_item`` returns the per-image columns (e.g. from
    :func:`reca_eval.benchmarks.edit.rules.gedit_item` plus ``score``); the row's ``score`` is its ``score``,
    else ``o``, else ``imgedit``. Rows: item_id, sample, category, [language], score_item's columns.
    """
    by_id: dict[str, dict] = {}
    for n, item in enumerate(items):
        if "item_id" not in item or "category" not in item:
            raise ValueError(f"edit item #{n} lacks 'item_id' or 'category': {sorted(item)}")
        item_id = str(item["item_id"])
        if item_id in by_id:
            raise ValueError(f"edit item #{n}: duplicate item_id {item_id!r}")
        by_id[item_id] = item
    scan = scan_per_sample_folder(image_dir, by_id, images_per_prompt)
    skips = list(scan.unexpected)
    skips += [Skip(str(sample_path(image_dir, i, k)), "missing file") for i, k in scan.missing]
    rows: list[dict] = []
    scored: list[Path] = []

    def score_one(entry: tuple[tuple[str, int], Path]) -> tuple[dict | None, str]:
        (item_id, _), path = entry
        image, reason = load_rgb(path, expected_size)
        return (None, reason) if image is None else (dict(score_item(by_id[item_id], image)), "")

    entries = list(scan.found.items())
    # A judge behind a network API answers several requests at once: score_item runs in `workers`
    # threads, results come back in folder order.
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
    results = pool.map(score_one, entries) if pool else map(score_one, entries)
    try:
        outcomes = list(
            progress_iter(zip(entries, results, strict=True), len(entries), "scoring edits", progress)
        )
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    for ((item_id, k), path), (result, reason) in outcomes:
        if result is None:
            skips.append(Skip(str(path), reason))
            continue
        item = by_id[item_id]
        row = {"item_id": item_id, "sample": k, "category": str(item["category"])}
        if "language" in item:
            row["language"] = str(item["language"])
        row.update(result)
        row["score"] = _row_score(result, item_id)
        rows.append(row)
        scored.append(path)
    frame = pd.DataFrame(rows, columns=None if rows else ["item_id", "sample", "category", "score"])
    scorer = {"name": getattr(score_item, "__name__", type(score_item).__name__), "layout": "edit"}
    return ScoreOutput(rows=frame, skips=skips, scorer=scorer, images=scored)


def write_edit_folder(item_images: dict[str, list[Image.Image]], out_dir: Path) -> list[Path]:
    """Write ``<out_dir>/<item_id>_<k>.png`` for every image, each atomically; returns the paths."""
    written = []
    for item_id, images in item_images.items():
        for k, image in enumerate(images):
            path = sample_path(out_dir, str(item_id), k)
            atomic_write_bytes(path, png_bytes(image), durable=False)
            written.append(path)
    return written
