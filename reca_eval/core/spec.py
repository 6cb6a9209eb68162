"""A benchmark: its declared spec (``benchmarks/<name>/benchmark.yaml``) and its semantics (callables).

:class:`BenchmarkSpec` is what the registry reads without importing any implementation;
:class:`Benchmark` is what an implementation's ``build(spec)`` returns: the spec's declared fields
plus the functions that load items, score an image folder and aggregate.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reca_eval.core.records import Skip


@dataclass
class ScoreOutput:
    """What a benchmark's scorer returns for one image folder."""

    rows: pd.DataFrame  # per-image (or per-question) rows; see reca_eval.core.records
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
    spec: BenchmarkSpec | None = None  # the benchmark.yaml it was built from

    def write_sample(
        self, items: list[dict[str, Any]], index: int, k: int, image: Any, out_dir: Path
    ) -> Path:
        """Write one PIL image as sample ``k`` of item ``index`` (atomically: a file there is complete)."""
        from reca_eval.core.images import png_bytes
        from reca_eval.core.records import atomic_write_bytes

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


class SpecError(ValueError):
    """A benchmark.yaml that cannot be used; the message names the file and the key."""


class OptionError(ValueError):
    """A `-o KEY=VALUE` a benchmark does not declare, or a value outside the option's type or range."""


OPTION_TYPES = ("int", "float", "bool", "str", "path", "choice", "device")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


@dataclass(frozen=True)
class OptionSpec:
    """One declared `-o` option of a benchmark (``options:`` in its benchmark.yaml)."""

    name: str
    type: str  # one of OPTION_TYPES; "device" is auto | cpu | mps | cuda | cuda:N
    default: Any  # None: unset, the implementation decides (documented in ``help``)
    help: str
    choices: tuple[Any, ...] = ()  # type "choice"
    min: float | None = None  # int and float: inclusive bounds
    max: float | None = None
    callable: bool = False  # from Python, a callable may stand in for the value (dpg's vqa)

    def describe(self) -> str:
        """Type, range and default in a few words, for `reca-eval list NAME` and error messages."""
        if self.type == "choice":
            kind = " | ".join(str(c) for c in self.choices)
        elif self.type in ("int", "float") and (self.min is not None or self.max is not None):
            low = "-inf" if self.min is None else f"{self.min:g}"
            high = "inf" if self.max is None else f"{self.max:g}"
            kind = f"{self.type} in [{low}, {high}]"
        elif self.type == "device":
            kind = "auto | cpu | cuda | cuda:N | mps"
        else:
            kind = self.type
        return f"{kind}; default {'unset' if self.default is None else self.default}"

    def coerce(self, value: Any) -> Any:
        """``value`` (a command-line string, or a Python value from the API) as this option's type;
        OptionError naming the option, what it takes and what it got."""
        if self.callable and callable(value):
            return value
        got = f"got {value!r}"
        if value is None or isinstance(value, list | tuple | dict | set):
            raise self._error(got)
        if self.type == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE or text in _FALSE:
                return text in _TRUE
            raise self._error(got)
        if self.type in ("int", "float"):
            if isinstance(value, bool):
                raise self._error(got)
            try:
                number = float(value) if isinstance(value, str) else value
                if not isinstance(number, int | float) or not math.isfinite(number):
                    raise ValueError
                if self.type == "int":
                    if float(number) != int(number):
                        raise ValueError
                    number = int(number)
                else:
                    number = float(number)
            except (TypeError, ValueError, OverflowError):
                raise self._error(got) from None
            if (self.min is not None and number < self.min) or (self.max is not None and number > self.max):
                raise self._error(got)
            return number
        if not isinstance(value, str):
            raise self._error(got)
        if self.type == "choice" and value not in [str(c) for c in self.choices]:
            raise self._error(got)
        if self.type == "device" and not _DEVICE.match(value):
            raise self._error(got)
        return value

    def _error(self, got: str) -> OptionError:
        return OptionError(f"option {self.name} takes {self.describe()}; {got}")


# Options every benchmark accepts, declared once here rather than in every benchmark.yaml.
COMMON_OPTIONS = {
    "progress": OptionSpec("progress", "bool", True, "Progress bars on stderr while scoring."),
}


def declared_options(spec: BenchmarkSpec) -> dict[str, OptionSpec]:
    """Every `-o` option a run of ``spec`` accepts: its own and the common ones, by name."""
    return {**COMMON_OPTIONS, **spec.options}


def check_options(spec: BenchmarkSpec, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` checked against what ``spec`` declares, values in their declared types (what a
    run passes on and records). OptionError names an unknown key with the valid ones, or a bad value
    with what the option takes."""
    declared = declared_options(spec)
    checked: dict[str, Any] = {}
    for key, value in options.items():
        if key not in declared:
            raise OptionError(
                f"{spec.name} has no option {key!r}; its options: {', '.join(sorted(declared))} "
                f"(`reca-eval list {spec.name}` describes them)"
            )
        checked[key] = declared[key].coerce(value)
    return checked


def _read_options(path: Path, data: Any) -> dict[str, OptionSpec]:
    """The ``options:`` mapping of a benchmark.yaml: name -> {type, default, help, choices, min, max}."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"{path}: key 'options' must map option names to declarations")
    known = {"type", "default", "help", "choices", "min", "max", "callable"}
    declared: dict[str, OptionSpec] = {}
    for name, decl in data.items():
        where = f"{path}: option {name!r}"
        if not isinstance(decl, dict):
            raise SpecError(f"{where}: a declaration is a mapping (type, default, help)")
        unknown = sorted(set(decl) - known)
        if unknown:
            raise SpecError(
                f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        if decl.get("type") not in OPTION_TYPES:
            raise SpecError(f"{where}: 'type' must be one of {OPTION_TYPES}, got {decl.get('type')!r}")
        if not isinstance(decl.get("help"), str) or not decl["help"].strip():
            raise SpecError(f"{where}: needs a 'help' text")
        choices = decl.get("choices") or []
        if decl["type"] == "choice" and (not isinstance(choices, list) or not choices):
            raise SpecError(f"{where}: type 'choice' needs a list of 'choices'")
        bounds = [decl.get(k) for k in ("min", "max")]
        if any(b is not None and (isinstance(b, bool) or not isinstance(b, int | float)) for b in bounds):
            raise SpecError(f"{where}: 'min' and 'max' must be numbers")
        option = OptionSpec(
            name=str(name),
            type=decl["type"],
            default=decl.get("default"),
            help=decl["help"].strip(),
            choices=tuple(choices),
            min=bounds[0],
            max=bounds[1],
            callable=bool(decl.get("callable", False)),
        )
        if option.default is not None:
            try:
                option.coerce(option.default)
            except OptionError as exc:
                raise SpecError(f"{where}: its default does not fit its declaration ({exc})") from None
        declared[option.name] = option
    return declared


TASKS = ("t2i", "edit")
LAYOUTS = ("geneval", "dpg", "edit")


@dataclass(frozen=True)
class BenchmarkSpec:
    """What ``benchmarks/<name>/benchmark.yaml`` declares; read without importing the implementation."""

    name: str
    version: str
    description: str
    task: str  # "t2i" (text -> image) or "edit" (image + instruction -> image)
    layout: str  # on-disk image layout: "geneval", "dpg" or "edit"
    scorer: str  # what looks at the pixels, for `reca-eval list`
    extra: str | None  # pip extra the scorer needs (None: core install)
    images_per_prompt: int
    resolution: int
    categories: tuple[str, ...]
    implementation: str  # "module:function"; function(spec) -> Benchmark
    folder: Path  # the folder holding benchmark.yaml (and, for shipped benchmarks, the items)
    items: str | None = None  # item file in `folder` (shipped benchmarks)
    data_items: str | None = None  # item file under the data folder (official benchmarks, fetched)
    sources: tuple[dict[str, Any], ...] = ()  # what `reca-eval fetch` downloads, with sha256
    # The `-o KEY=VALUE` options a run accepts, by name (besides COMMON_OPTIONS): check_options()
    # refuses any other key and any value outside an option's type and range.
    options: dict[str, OptionSpec] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # fixed implementation settings (gedit's language)
    generation_seed: int = 0
    manifest: dict[str, Any] = field(default_factory=dict)  # generated facts (counts, sha256, seed)
    # The drop of a category score (in the benchmark's own units: 0-1, 0-100, 1-5, 0-10) that
    # `reca-eval check` allows by default; None: no tolerance declared (a drop of any size fails).
    check_tolerance: float | None = None


_REQUIRED = {
    "name": str,
    "version": str,
    "description": str,
    "task": str,
    "layout": str,
    "scorer": str,
    "images_per_prompt": int,
    "resolution": int,
    "categories": list,
    "implementation": str,
}


def read_spec(path: Path) -> BenchmarkSpec:
    """Parse and validate one benchmark.yaml; every error names the file and the key."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SpecError(f"{path}: cannot read benchmark spec ({exc})") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a benchmark spec is a mapping of keys, got {type(data).__name__}")
    for key, kind in _REQUIRED.items():
        if key not in data:
            raise SpecError(f"{path}: missing key {key!r}")
        if not isinstance(data[key], kind) or isinstance(data[key], bool):
            raise SpecError(f"{path}: key {key!r} must be a {kind.__name__}, got {data[key]!r}")
    known = set(_REQUIRED) | {
        "extra",
        "items",
        "data_items",
        "sources",
        "options",
        "settings",
        "generation_seed",
        "manifest",
        "check_tolerance",
    }
    unknown = sorted(set(data) - known)
    if unknown:
        raise SpecError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if data["task"] not in TASKS:
        raise SpecError(f"{path}: key 'task' must be one of {TASKS}, got {data['task']!r}")
    if data["layout"] not in LAYOUTS:
        raise SpecError(f"{path}: key 'layout' must be one of {LAYOUTS}, got {data['layout']!r}")
    if ":" not in data["implementation"]:
        raise SpecError(
            f"{path}: key 'implementation' must be 'module:function', got {data['implementation']!r}"
        )
    if data["name"] != path.parent.name:
        raise SpecError(f"{path}: key 'name' is {data['name']!r} but the folder is {path.parent.name!r}")
    if data["images_per_prompt"] < 1 or data["resolution"] < 1:
        raise SpecError(f"{path}: keys 'images_per_prompt' and 'resolution' must be positive")
    sources = data.get("sources") or []
    if not isinstance(sources, list) or not all(isinstance(s, dict) for s in sources):
        raise SpecError(f"{path}: key 'sources' must be a list of mappings")
    tolerance = data.get("check_tolerance")
    if tolerance is not None and (
        not isinstance(tolerance, int | float) or isinstance(tolerance, bool) or tolerance < 0
    ):
        raise SpecError(f"{path}: key 'check_tolerance' must be a number >= 0, got {tolerance!r}")
    return BenchmarkSpec(
        name=data["name"],
        version=data["version"],
        description=data["description"],
        task=data["task"],
        layout=data["layout"],
        scorer=data["scorer"],
        extra=data.get("extra"),
        images_per_prompt=data["images_per_prompt"],
        resolution=data["resolution"],
        categories=tuple(str(c) for c in data["categories"]),
        implementation=data["implementation"],
        folder=path.parent,
        items=data.get("items"),
        data_items=data.get("data_items"),
        sources=tuple(sources),
        options=_read_options(path, data.get("options")),
        settings=dict(data.get("settings") or {}),
        generation_seed=int(data.get("generation_seed", 0)),
        manifest=dict(data.get("manifest") or {}),
        check_tolerance=None if tolerance is None else float(tolerance),
    )


def from_spec(spec: BenchmarkSpec, **semantics: Any) -> Benchmark:
    """A :class:`Benchmark` with the spec's declared fields and the implementation's functions."""
    return Benchmark(
        name=spec.name,
        version=spec.version,
        description=spec.description,
        task=spec.task,
        layout=spec.layout,
        scorer_name=spec.scorer,
        extra=spec.extra,
        images_per_prompt=spec.images_per_prompt,
        resolution=spec.resolution,
        categories=spec.categories,
        generation_seed=spec.generation_seed,
        spec=spec,
        **semantics,
    )


def official_items(spec: BenchmarkSpec) -> Path:
    """The official item file under the data folder; missing, an error saying what to put where."""
    from reca_eval.core.paths import DATA_ENV, data_dir

    if spec.data_items is None:
        raise SpecError(f"{spec.folder / 'benchmark.yaml'}: no 'data_items' key (official item file)")
    path = data_dir() / spec.data_items
    if not path.exists():
        urls = [s["url"] for s in spec.sources if s.get("file") == spec.data_items and "url" in s]
        source = urls[0] if urls else f"see {spec.folder / 'benchmark.yaml'}"
        raise FileNotFoundError(
            f"{spec.name}: item file {path} not found. Run `reca-eval fetch {spec.name}`, place the official "
            f"file there (source: {source}), set ${DATA_ENV} to the folder holding {spec.data_items}, "
            "or pass --items PATH."
        )
    return path
