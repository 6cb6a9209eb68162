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
