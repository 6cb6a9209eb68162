"""The benchmark registry: every benchmark is one named, versioned :class:`Benchmark` spec.

A spec says what the benchmark's items are, how images are generated for it (images per prompt,
resolution, seeds), how they are laid out on disk (the official layout), what scores them and how
scores aggregate. ``reca-eval list`` prints this registry; ``reca-eval run NAME`` looks a name up here.

The specs themselves live beside their semantics (``reca_eval/benchmarks_*.py`` modules register
them at import); this module holds only the record type and the lookup, so importing it is cheap and
needs no neural package.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reca_eval.records import Skip

# Repository root of a source checkout: item files live in benchmarks/<name>/.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_DIR = PROJECT_ROOT / "benchmarks"


@dataclass
class ScoreOutput:
    """What a benchmark's scorer returns for one image folder."""

    rows: pd.DataFrame  # per-image (or per-question) rows; see reca_eval.records
    skips: list[Skip]
    scorer: dict[str, Any]  # backend name and versions, recorded in the result
    images: list[Path] = field(default_factory=list)  # files that were scored (hashed into the record)


@dataclass(frozen=True)
class Benchmark:
    name: str
    version: str
    description: str
    task: str  # "t2i" (text -> image) or "edit" (image + instruction -> image)
    layout: str  # on-disk image layout: "geneval", "dpg" or "edit"
    scorer_name: str  # what looks at the pixels, for `reca-eval list`
    extra: str | None  # pip extra the scorer needs (None: core install)
    images_per_prompt: int
    resolution: int
    categories: tuple[str, ...]
    default_items: Callable[[], Path]  # where the item file is when no --items is given
    load_items: Callable[[Path], list[dict[str, Any]]]  # validates; errors name file and line
    score: Callable[[list[dict[str, Any]], Path, dict[str, Any]], ScoreOutput]  # items, image dir, options
    aggregate: Callable[[pd.DataFrame, np.ndarray | None], dict[str, float]]  # rows, row weights
    # Generation side (`run --ckpt`, reference renders): the text of an item (prompt, or edit
    # instruction), where sample k of item i goes in the official layout, what the layout needs
    # before any image (GenEval's per-item metadata.jsonl), and the source image of an edit item.
    prompt_of: Callable[[dict[str, Any]], str]
    sample_path: Callable[[list[dict[str, Any]], int, int, Path], Path]  # items, item index, k, out dir
    prepare_layout: Callable[[list[dict[str, Any]], Path], None] = lambda items, out_dir: None
    source_image_of: Callable[[dict[str, Any]], Any] | None = None
    generation_seed: int = 0  # base seed; per-item seeds derive from it, the item index and the sample

    def write_sample(
        self, items: list[dict[str, Any]], index: int, k: int, image: Any, out_dir: Path
    ) -> Path:
        """Write one PIL image as sample ``k`` of item ``index`` (atomically: a file there is complete)."""
        from reca_eval.images import png_bytes
        from reca_eval.records import atomic_write_bytes

        path = self.sample_path(items, index, k, Path(out_dir))
        atomic_write_bytes(path, png_bytes(image), durable=False)
        return path

    def write_images(
        self, items: list[dict[str, Any]], images: dict[int, list[Any]], out_dir: Path
    ) -> list[Path]:
        """Write {item index: PIL images} into the official layout under ``out_dir``."""
        self.prepare_layout(items, Path(out_dir))
        return [
            self.write_sample(items, index, k, image, out_dir)
            for index, item_images in images.items()
            for k, image in enumerate(item_images)
        ]


_REGISTRY: dict[str, Benchmark] = {}


def register(benchmark: Benchmark) -> Benchmark:
    if benchmark.name in _REGISTRY:
        raise ValueError(f"benchmark {benchmark.name!r} registered twice")
    _REGISTRY[benchmark.name] = benchmark
    return benchmark


def _load_builtin() -> None:
    # Imported for their side effect of registering; kept lazy so `import reca_eval` stays cheap.
    from reca_eval import benchmarks_edit_official, benchmarks_official, benchmarks_shapes  # noqa: F401


def all_benchmarks() -> list[Benchmark]:
    _load_builtin()
    return sorted(_REGISTRY.values(), key=lambda b: b.name)


def get(name: str) -> Benchmark:
    _load_builtin()
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise KeyError(f"unknown benchmark {name!r}; known: {known}")
    return _REGISTRY[name]
