r"""GenEval's official image-folder layout: writing it, and scoring a folder someone else wrote.

The layout (djghosh13/geneval ``generation/diffusers_generate.py``)::

    <dir>/00000/metadata.jsonl        the item's metadata, one JSON object
    <dir>/00000/samples/00000.png     sample k as <k:05>.png
    <dir>/00000/grid.png              optional preview grid (ignored)

Folder i holds item i of the metadata file. Plain integer names (``0``, ``0.png``) are accepted as
well as padded ones. A folder whose metadata differs from the item is an error (wrong prompt set or
order); a missing or unreadable sample, and anything unexpected in the tree, is a counted skip.

As the official ``evaluate_images.py`` does, every file of ``samples/`` whose name starts with
``<digits>.png`` (its ``re.match(r"\d+\.png", name)``) is scored, however many there are: a
prompt's share of its task is its number of samples, which ``scorer["samples_per_prompt"]`` records;
samples ``0..images_per_prompt-1`` that are missing are reported as skips. Each image is turned
upright by its EXIF orientation (``ImageOps.exif_transpose``) before anything looks at it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from PIL import Image

from reca_eval.benchmarks.geneval import rules as geneval
from reca_eval.core.detections import Detection
from reca_eval.core.images import load_rgb, png_bytes
from reca_eval.core.progress import progress_bar
from reca_eval.core.records import Skip, atomic_write_bytes
from reca_eval.core.spec import ScoreOutput

METADATA_FILE = "metadata.jsonl"
SAMPLES_DIR = "samples"
GRID_FILE = "grid.png"  # the official generator's preview; not a sample
ROW_COLUMNS = ("item_id", "sample", "category", "score", "reason", "prompt")
# The official test, re.match(r"\d+\.png", name): a prefix match, so "00001.png.bak" is a sample too.
# ASCII digits only: "²" and "٣" are str.isdigit() and \d in Python, but no tool numbers folders so.
_SAMPLE_NAME = re.compile(r"([0-9]+)\.png")
_FOLDER_NAME = re.compile(r"[0-9]+")

Detect = Callable[[Image.Image], dict[str, list[Detection]]]
DetectMany = Callable[[list[Image.Image]], list[dict[str, list[Detection]]]]
ColourOfImage = Callable[[Image.Image, str, list[Detection]], list[str]]


def item_folder_name(index: int) -> str:
    return f"{index:05d}"


def sample_file_name(k: int) -> str:
    return f"{k:05d}.png"


def sample_path(items: Sequence[dict], index: int, k: int, out_dir: Path) -> Path:
    """Where sample ``k`` of item ``index`` goes: ``<out>/<00000>/samples/<00000>.png``."""
    return Path(out_dir) / item_folder_name(index) / SAMPLES_DIR / sample_file_name(k)


def prepare_geneval_folder(items: Sequence[dict], out_dir: Path) -> None:
    """Every item's folder with its ``metadata.jsonl`` (written only where missing or different)."""
    for index, item in enumerate(items):
        path = Path(out_dir) / item_folder_name(index) / METADATA_FILE
        text = json.dumps(item) + "\n"
        if not path.exists() or path.read_text() != text:
            # Not fsynced, as the images beside it are not: a run writes one per item (thousands in the
            # main command) and an fsync costs milliseconds; a rerun rewrites a file that does not match.
            atomic_write_bytes(path, text.encode("utf-8"), durable=False)


def write_geneval_folder(
    items: Sequence[dict], images_per_item: Mapping[int, Sequence[Image.Image]], out_dir: Path
) -> list[Path]:
    """Write every item's folder and metadata, and the given images as its samples (atomically, per file).

    ``images_per_item`` maps an item's index in ``items`` to its images; items absent from it get a
    folder with metadata only. Returns the written sample paths.
    """
    out_dir = Path(out_dir)
    unknown = sorted(set(images_per_item) - set(range(len(items))))
    if unknown:
        raise ValueError(f"images given for item indices {unknown}, but there are only {len(items)} items")
    prepare_geneval_folder(items, out_dir)
    written: list[Path] = []
    for index, images in images_per_item.items():
        for k, image in enumerate(images):
            path = sample_path(items, index, k, out_dir)
            atomic_write_bytes(path, png_bytes(image), durable=False)
            written.append(path)
    return written


def _folder_index(name: str) -> int | None:
    return int(name) if _FOLDER_NAME.fullmatch(name) else None


def _sample_index(name: str) -> int | None:
    match = _SAMPLE_NAME.match(name)
    return int(match.group(1)) if match else None


def _index_entries(
    folder: Path, index_of: Callable[[str], int | None], is_wanted: Callable[[os.DirEntry], bool]
) -> tuple[dict[int, Path], list[Path]]:
    """Split ``folder``'s entries into {integer index: path} and the rest; two names for one index is an error."""
    indexed: dict[int, Path] = {}
    others: list[Path] = []
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            index = index_of(entry.name)
            try:
                wanted = index is not None and is_wanted(entry)
            except OSError:  # a symlink loop: DirEntry.is_dir raises ELOOP where Path.is_dir says False
                wanted = False
            if not wanted:
                others.append(Path(entry.path))
                continue
            if index in indexed:
                raise ValueError(
                    f"{folder}: both {indexed[index].name!r} and {entry.name!r} name index {index}"
                )
            indexed[index] = Path(entry.path)
    return indexed, others


def _read_folder_metadata(path: Path) -> dict:
    if not path.is_file():
        what = "not a regular file" if path.exists() or path.is_symlink() else "missing"
        raise ValueError(f"{path}: {what}; every item folder needs the item's metadata (official layout)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not one JSON object ({exc})") from exc
    except OSError as exc:
        raise ValueError(f"{path}: unreadable ({exc.strerror or exc})") from exc


@contextmanager
def _progress_bar(total: int, enabled: bool) -> Iterator[Callable[[], None]]:
    if not enabled:
        yield lambda: None
        return
    with progress_bar() as progress:
        task = progress.add_task("scoring geneval", total=total)
        yield lambda: progress.advance(task)


def _load_upright(path: Path, expected_size: tuple[int, int] | None) -> tuple[Image.Image | None, str]:
    """The sample as RGB, rotated by its EXIF orientation (as the official does), then size-checked."""
    return load_rgb(path, expected_size, upright=True)


def samples_per_prompt(rows: pd.DataFrame, n_items: int) -> dict[str, int]:
    """How many prompts had how many samples scored: {"4": 553} when every prompt had 4.

    The official task score is a mean over images, so a prompt with more samples weighs more; this
    makes an uneven folder visible in the record.
    """
    per_item = rows.groupby("item_id").size() if len(rows) else pd.Series(dtype=int)
    counts = per_item.value_counts().to_dict()
    unscored = n_items - len(per_item)
    if unscored:
        counts[0] = counts.get(0, 0) + unscored
    return {str(n): int(counts[n]) for n in sorted(counts)}


def score_geneval_folder(
    items: list[dict],
    image_dir: Path,
    detect: Detect,
    colour_of_image: ColourOfImage,
    *,
    images_per_prompt: int,
    expected_size: tuple[int, int] | None,
    progress: bool = True,
    detect_many: DetectMany | None = None,
    batch_size: int = 1,
) -> ScoreOutput:
    """Score every sample under ``image_dir`` (official layout) against ``items`` (in metadata order).

    For each image: ``detect(image)`` gives raw detections per class name, the protocol selects and
    judges them, and ``colour_of_image(image, class, objects)`` names each object's colour when a
    rule needs it. Rows: item_id (5-digit folder name), sample, category (the tag), score (1.0/0.0),
    reason, prompt. Every sample file present is scored; ``images_per_prompt`` only names the samples
    whose absence is reported as a skip. ScoreOutput.scorer holds the rule constants and
    ``samples_per_prompt``; the caller adds its backend's versions. With ``detect_many``, images are
    read ``batch_size`` at a time and detected together (one forward pass on a GPU); otherwise one by
    one, as GenEval's script does.
    """
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder {image_dir} does not exist")
    if images_per_prompt < 1:
        raise ValueError(f"images_per_prompt must be >= 1, got {images_per_prompt}")

    skips: list[Skip] = []
    folders, others = _index_entries(image_dir, _folder_index, lambda e: e.is_dir())
    skips += [Skip(str(p), "unexpected entry (not an item folder)") for p in others]
    for index in sorted(i for i in folders if i >= len(items)):
        skips.append(Skip(str(folders.pop(index)), f"unexpected folder (only {len(items)} items)"))

    # Plan first (cheap: directory listings and metadata), so layout errors surface before any scoring.
    planned: list[tuple[int, int, Path]] = []  # (item index, sample, path)
    for index, item in enumerate(items):
        folder = folders.get(index, image_dir / item_folder_name(index))
        samples_dir = folder / SAMPLES_DIR
        if index not in folders:
            reason = "missing sample (no item folder)"
        elif not samples_dir.is_dir():
            reason = "missing sample (no samples folder)"
        else:
            reason = "missing sample"
        if index in folders:
            metadata_path = folder / METADATA_FILE
            if _read_folder_metadata(metadata_path) != item:
                raise ValueError(
                    f"{metadata_path}: metadata differs from item {index} of the metadata file "
                    f"(prompt {item.get('prompt')!r}); wrong prompt set or order"
                )
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name not in (METADATA_FILE, SAMPLES_DIR, GRID_FILE):
                        skips.append(Skip(entry.path, "unexpected entry in item folder"))
        samples: dict[int, Path] = {}
        if (
            index in folders
            and not samples_dir.is_dir()
            and (samples_dir.exists() or samples_dir.is_symlink())
        ):
            skips.append(Skip(str(samples_dir), "samples is not a folder (a file, a broken or looping link)"))
        if samples_dir.is_dir():
            # Every <k>.png entry is a sample, whatever it is: a folder, a pipe or a broken link named
            # so is a skip with its reason from load_rgb, not a stray.
            samples, stray = _index_entries(samples_dir, _sample_index, lambda e: True)
            skips += [Skip(str(p), "unexpected file (samples are <k>.png)") for p in stray]
        planned += [(index, k, samples[k]) for k in sorted(samples)]
        for k in range(images_per_prompt):
            if k not in samples:
                skips.append(Skip(str(samples_dir / sample_file_name(k)), reason))

    records: list[tuple[str, int, str, float, str, str]] = []
    scored: list[Path] = []
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batch = batch_size if detect_many is not None else 1
    detect_all = detect_many or (lambda images: [detect(image) for image in images])
    with _progress_bar(len(planned), progress) as advance:
        for start in range(0, len(planned), batch):
            loaded = []
            for index, k, path in planned[start : start + batch]:
                image, why = _load_upright(path, expected_size)
                if image is None:
                    skips.append(Skip(str(path), why))
                    advance()
                    continue
                loaded.append((index, k, path, image))
            found = detect_all([image for *_, image in loaded])
            if len(found) != len(loaded):
                raise ValueError(f"the detector returned {len(found)} results for {len(loaded)} images")
            for (index, k, path, image), detections in zip(loaded, found, strict=True):
                item = items[index]
                selected = geneval.select_detections(detections, item["tag"])
                correct, reason = geneval.evaluate_image(
                    item,
                    selected,
                    lambda classname, objects, image=image: colour_of_image(image, classname, objects),
                )
                records.append(
                    (item_folder_name(index), k, item["tag"], 1.0 if correct else 0.0, reason, item["prompt"])
                )
                scored.append(path)
                advance()

    rows = pd.DataFrame.from_records(records, columns=list(ROW_COLUMNS))
    rows["sample"] = rows["sample"].astype(int)
    rows["score"] = rows["score"].astype(float)
    scorer = {
        "samples_per_prompt": samples_per_prompt(rows, len(items)),
        "layout": "geneval",
        "protocol": "geneval",
        "threshold": geneval.THRESHOLD,
        "counting_threshold": geneval.COUNTING_THRESHOLD,
        "max_objects": geneval.MAX_OBJECTS,
        "position_threshold": geneval.POSITION_THRESHOLD,
    }
    return ScoreOutput(rows=rows, skips=skips, scorer=scorer, images=scored)
