"""Where things are: the benchmark definitions, the training recipes, the user's data folder.

A source checkout reads ``benchmarks/`` and ``trainers/recipes/`` at the repository root; an installed
wheel carries the same files as package data under ``reca_eval/_data/`` (see pyproject.toml).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
# Repository root of a source checkout (in a wheel install: site-packages, which holds neither folder).
PROJECT_ROOT = PACKAGE_DIR.parent
PACKAGED_DATA = PACKAGE_DIR / "_data"
DATA_ENV = "RECA_EVAL_DATA"


def _checkout_or_packaged(checkout: Path, marker: str, packaged: Path) -> Path:
    return checkout if (checkout / marker).exists() else packaged


BENCHMARKS_DIR = _checkout_or_packaged(
    PROJECT_ROOT / "benchmarks", "shapes-geneval/benchmark.yaml", PACKAGED_DATA / "benchmarks"
)
RECIPES_DIR = _checkout_or_packaged(
    PROJECT_ROOT / "trainers" / "recipes", "sft.yaml", PACKAGED_DATA / "recipes"
)


def data_dir() -> Path:
    """The folder that holds official benchmark files a user placed or fetched."""
    override = os.environ.get(DATA_ENV)
    return Path(override).expanduser() if override else Path.home() / ".cache" / "reca-eval" / "data"


def read_input_text(path: Path, what: str = "item file") -> str:
    """The UTF-8 text of an input file the user named; every failure a ValueError naming the file (and
    the line of a byte that is not UTF-8). Only a regular file is opened: a named pipe would block and
    a folder is not a file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file (the {what} must be a file)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValueError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            f"the {what} must be UTF-8"
        ) from None
    if "\0" in text:
        line = text[: text.index("\0")].count("\n") + 1
        raise ValueError(f"{path}:{line}: a NUL byte: binary data, not a text {what}")
    return text


def check_item_id(item_id: object, where: str) -> str:
    """An item id that names files (``<item_id>_<k>.png``) as a string that stays inside its folder:
    no path separator, no NUL, not empty, not "." or "..", no leading dot (a hidden file). Errors
    name ``where`` (the file and line) and the id."""
    if isinstance(item_id, bool) or not isinstance(item_id, str | int):
        raise ValueError(f"{where}: item_id must be a string, got {item_id!r:.60}")
    text = str(item_id)
    if not text or text.strip() != text or text.startswith(".") or any(c in text for c in "/\\\0"):
        raise ValueError(
            f"{where}: item_id {text!r:.80} cannot name a file inside the image folder (it must be "
            "non-empty, without '/', '\\', NUL, surrounding spaces or a leading dot)"
        )
    return text
