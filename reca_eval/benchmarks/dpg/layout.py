"""DPG-Bench image folders: per-sample files ``<item_id>_<k>.png`` or the official 2x2 grid ``<item_id>.png``.

The official script (ELLA ``compute_dpg_bench.py`` L109-131) opens ``<item_id>.<ext>`` and crops the
tiles ``(0,0,r,r)``, ``(r,0,2r,r)``, ``(0,r,r,2r)``, ``(r,r,2r,2r)`` (top-left, top-right,
bottom-left, bottom-right), keeping the first ``--pic-num`` of them, with ``r`` given on the command
line and never checked against the file: a wrong ``--resolution`` silently scores part-tiles or
black padding. Here the grid must be square with even sides and the tile size is half of it; with
``expected_size`` (the tile's width, height) the grid must be exactly twice that, otherwise the file
is a counted skip. Non-RGB files are converted, as PIL would feed them to the VQA model anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
from PIL import Image

from reca_eval.benchmarks.dpg.rules import (
    ANSWER_RULES,
    DroppedParentError,
    Mode,
    asked_questions,
    certain_failure,
    check_mode,
    frame_records,
    item_rows,
)
from reca_eval.benchmarks.edit.layout import (
    SAMPLE_NAME,
    sample_path,
    scan_per_sample_folder,
    write_edit_folder,
)
from reca_eval.core.images import IMAGE_SUFFIXES, load_rgb, png_bytes
from reca_eval.core.progress import progress_iter
from reca_eval.core.records import Skip, atomic_write_bytes
from reca_eval.core.spec import ScoreOutput

GRID_TILES = 4
ROW_COLUMNS = (
    "item_id",
    "sample",
    "proposition_id",
    "category",
    "category_detailed",
    "category_official",
    "raw",
    "score",
    "answer",
    "mode",
)


def split_grid(grid: Image.Image, tiles: int = GRID_TILES) -> list[Image.Image]:
    """The first ``tiles`` tiles of a square 2x2 grid, in the official order TL, TR, BL, BR."""
    width, height = grid.size
    if width != height or width % 2:
        raise ValueError(f"a DPG grid must be square with even sides, got {width}x{height}")
    if not 1 <= tiles <= GRID_TILES:
        raise ValueError(f"a 2x2 grid has 1..{GRID_TILES} tiles, asked for {tiles}")
    r = width // 2
    boxes = [(0, 0, r, r), (r, 0, 2 * r, r), (0, r, r, 2 * r), (r, r, 2 * r, 2 * r)]
    return [grid.crop(box) for box in boxes[:tiles]]


def make_grid(images: list[Image.Image]) -> Image.Image:
    """The inverse of :func:`split_grid` for four equal square images."""
    if len(images) != GRID_TILES:
        raise ValueError(f"a DPG grid needs exactly {GRID_TILES} images, got {len(images)}")
    sizes = {im.size for im in images}
    if len(sizes) != 1 or images[0].size[0] != images[0].size[1]:
        raise ValueError(f"grid images must be equal and square, got sizes {sorted(sizes)}")
    r = images[0].size[0]
    grid = Image.new("RGB", (2 * r, 2 * r))
    for image, origin in zip(images, [(0, 0), (r, 0), (0, r), (r, r)], strict=True):
        grid.paste(image.convert("RGB"), origin)
    return grid


def _grid_files(image_dir: Path, item_ids: list[str]) -> dict[str, Path]:
    known = set(item_ids)
    found: dict[str, Path] = {}
    for path in sorted(Path(image_dir).iterdir(), key=lambda p: (p.suffix.lower() != ".png", p.name)):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and path.stem in known:
            found.setdefault(path.stem, path)
    return found


def detect_grid(image_dir: Path, item_ids: list[str]) -> bool:
    """True if the folder holds ``<item_id>.png`` grids, False for ``<item_id>_<k>.png`` samples."""
    grids = _grid_files(image_dir, item_ids)
    known = set(item_ids)
    sample = next(
        (
            p
            for p in Path(image_dir).iterdir()
            if p.suffix.lower() in IMAGE_SUFFIXES
            and (m := SAMPLE_NAME.match(p.stem)) is not None
            and m["item"] in known
        ),
        None,
    )
    if grids and sample is not None:
        raise ValueError(
            f"{image_dir} has both grid files ({next(iter(grids.values())).name}) and per-sample files "
            f"({sample.name}); pass grid=True or grid=False"
        )
    return bool(grids)


def _scan_grid_folder(image_dir: Path, item_ids: list[str]) -> tuple[dict[str, Path], list[Skip]]:
    found = _grid_files(image_dir, item_ids)
    chosen = set(found.values())
    unexpected = []
    for path in sorted(Path(image_dir).iterdir()):
        if path in chosen:
            continue
        if path.is_dir():
            unexpected.append(Skip(str(path), "unexpected sub-folder"))
        elif path.suffix.lower() in IMAGE_SUFFIXES and path.stem in found:
            unexpected.append(Skip(str(path), f"duplicate of {found[path.stem].name}"))
        else:
            unexpected.append(
                Skip(str(path), "unexpected file (not <item_id>.<image suffix> of a known item)")
            )
    return found, unexpected


def _load_samples(
    path: Path, k: int | None, images_per_prompt: int, expected_size: tuple[int, int] | None
) -> tuple[list[tuple[int, Image.Image]] | None, str]:
    """The (sample, image) pairs one file holds: its tiles for a grid (k None), else itself as sample k."""
    if k is not None:
        image, reason = load_rgb(path, expected_size)
        return (None, reason) if image is None else ([(k, image)], "")
    grid_size = None if expected_size is None else (2 * expected_size[0], 2 * expected_size[1])
    image, reason = load_rgb(path, grid_size)
    if image is None:
        return None, reason
    try:
        return list(enumerate(split_grid(image, images_per_prompt))), ""
    except ValueError as exc:
        return None, str(exc)


def _ask(
    answer: Callable[[Image.Image, list[dict]], list[str]],
    image: Image.Image,
    asked: list[dict],
    where: str,
) -> dict[int, str]:
    """Every asked question of one image put to ``answer``: proposition_id -> answer."""
    answers = list(answer(image, asked))
    if len(answers) != len(asked):
        raise ValueError(f"answer() returned {len(answers)} answers for {len(asked)} questions of {where}")
    return {int(q["proposition_id"]): a for q, a in zip(asked, answers, strict=True)}


def score_dpg_folder(
    questions: pd.DataFrame,
    image_dir: Path,
    answer: Callable[[Image.Image, list[dict]], list[str]],
    *,
    mode: Mode,
    images_per_prompt: int = 4,
    grid: bool | None = None,
    expected_size: tuple[int, int] | None = None,
    progress: bool = True,
) -> ScoreOutput:
    """Ask every question of every DPG image in ``image_dir`` and return per-question rows.

    ``questions`` comes from :func:`reca_eval.benchmarks.dpg.rules.load_questions`. ``answer(image, questions)``
    answers all asked questions of one image (rows as dicts, in gating order) and returns one string per
    question. ``grid=None`` detects the layout. ``expected_size`` is one image's (width, height).
    Skips (counted, with reasons): missing, unreadable, truncated or wrongly sized files, files the
    layout does not expect, and in official mode every file of an item whose gating reads the dropped
    first CSV row on any of its images, as the official script fails that file
    (:class:`~reca_eval.benchmarks.dpg.rules.DroppedParentError`). ``scorer["mode"]`` records the
    mode and ``scorer["answer_rule"]`` how an answer counts as "yes".
    """
    mode = check_mode(mode)
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder {image_dir} does not exist")
    by_item = {str(k): v for k, v in questions.groupby("item_id", sort=False)}
    item_ids = list(by_item)
    use_grid = detect_grid(image_dir, item_ids) if grid is None else bool(grid)
    if use_grid and not 1 <= images_per_prompt <= GRID_TILES:
        raise ValueError(f"a 2x2 grid holds 1..{GRID_TILES} images, images_per_prompt={images_per_prompt}")

    skips: list[Skip] = []
    # One unit per file: (item_id, path, sample index, or None for a grid holding all samples).
    units: list[tuple[str, Path, int | None]] = []
    if use_grid:
        found, skips_unexpected = _scan_grid_folder(image_dir, item_ids)
        skips += skips_unexpected
        for item_id in item_ids:
            if item_id in found:
                units.append((item_id, found[item_id], None))
            else:
                skips.append(Skip(str(image_dir / f"{item_id}.png"), "missing file"))
    else:
        scan = scan_per_sample_folder(image_dir, item_ids, images_per_prompt)
        skips += scan.unexpected
        skips += [Skip(str(sample_path(image_dir, i, k)), "missing file") for i, k in scan.missing]
        units = [(item_id, path, k) for (item_id, k), path in scan.found.items()]

    units_by_item: dict[str, list[tuple[Path, int | None]]] = {}
    for item_id, path, k in units:
        units_by_item.setdefault(item_id, []).append((path, k))
    rows: list[dict] = []
    scored: list[Path] = []
    for item_id, item_units in progress_iter(
        list(units_by_item.items()), len(units_by_item), f"DPG ({mode})", progress
    ):
        questions_for_item = by_item[item_id]
        failure = certain_failure(questions_for_item, mode)
        if failure is not None:
            # The gating reads the dropped row on every tile, whatever the answers: no VQA call needed.
            skips += [Skip(str(path), f"official mode: {failure}") for path, _ in item_units]
            continue
        asked = frame_records(asked_questions(questions_for_item, mode))
        item_rows_, item_paths, item_skips = [], [], []
        try:
            for path, k in item_units:
                samples, why = _load_samples(path, k, images_per_prompt, expected_size)
                if samples is None:
                    item_skips.append(Skip(str(path), why))
                    continue
                for sample, tile in samples:
                    answers = _ask(answer, tile, asked, f"item {item_id!r} ({path})")
                    item_rows_ += item_rows(item_id, sample, questions_for_item, answers, mode)
                item_paths.append(path)
        except DroppedParentError as exc:
            # The official fails the whole file, all its tiles: here every sample of the item.
            skips += [Skip(str(path), f"official mode: {exc}") for path, _ in item_units]
            continue
        rows += item_rows_
        scored += item_paths
        skips += item_skips
    scorer = {
        "name": "dpg",
        "mode": mode,
        "layout": "grid" if use_grid else "per-sample",
        "answer": getattr(answer, "__name__", type(answer).__name__),
        "answer_rule": ANSWER_RULES[mode],
    }
    return ScoreOutput(
        rows=pd.DataFrame(rows, columns=list(ROW_COLUMNS)), skips=skips, scorer=scorer, images=scored
    )


def write_dpg_folder(
    item_images: dict[str, list[Image.Image]], out_dir: Path, grid: bool = False
) -> list[Path]:
    """Write DPG images atomically: ``<item_id>_<k>.png`` or, with ``grid``, the official ``<item_id>.png``."""
    if not grid:
        return write_edit_folder(item_images, out_dir)
    written = []
    for item_id, images in item_images.items():
        path = Path(out_dir) / f"{item_id}.png"
        atomic_write_bytes(path, png_bytes(make_grid(images)), durable=False)
        written.append(path)
    return written
