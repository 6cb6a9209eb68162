"""Training recipes: YAML files read into typed dataclasses, with dotted command-line overrides.

    recipe = load_recipe("trainers/recipes/reca.yaml", ["train.lr=1e-4", "data.sources.0.ratio=2"])

Every key is checked against the dataclasses below: an unknown key or a value of the wrong type is an
error that names the dotted key (and the file), before any model is built.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reca_eval.core.paths import RECIPES_DIR
from reca_eval.models.instructions import RECONSTRUCTION_INSTRUCTIONS

OBJECTIVES = ("recon", "t2i", "i2t")
SOURCE_KINDS = ("folder", "tar", "hf", "world")


class RecipeError(ValueError):
    """A recipe key is unknown, missing or of the wrong type; the message names the dotted key."""


@dataclass
class LoraSpec:
    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    # Module names (or name suffixes) peft wraps, e.g. ["q_proj", "v_proj"].
    target_modules: list[str] = field(default_factory=list)
    save: str = "adapter"  # "adapter": peft adapter files; "merged": LoRA folded into the base weights


@dataclass
class ModelSpec:
    # "module:function" returning a UnifiedModel, e.g. "reca_eval.models.janus.tiny:build_tiny_janus".
    builder: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    # Names from the adapter's trainable_modules() whose parameters get requires_grad=False.
    freeze: list[str] = field(default_factory=list)
    gradient_checkpointing: bool = False
    lora: LoraSpec = field(default_factory=LoraSpec)


@dataclass
class SourceSpec:
    kind: str = "folder"  # folder | tar | hf | world
    path: str = ""  # folder, tar file/dir/glob, load_from_disk dir, or "module:callable" for world
    objective: str = "recon"  # recon | t2i | i2t
    ratio: float = 1.0
    name: str = ""  # defaults to "<kind>:<path>"; names a source passed to train(..., iterables=)
    image_key: str = "image"  # hf column
    caption_key: str = "caption"  # hf column / json key in tars
    split: str = "train"  # hf DatasetDict split
    max_items: int = 0  # world/iterable sources: how many items to take (0 = all; must end)


@dataclass
class DataSpec:
    sources: list[SourceSpec] = field(default_factory=list)
    num_workers: int = 2  # threads that read and decode images
    cache_dir: str = ""  # frozen-output cache; "" = off


@dataclass
class ObjectiveSpec:
    # Information bottleneck on the *condition* image before the understanding encoder.
    bottleneck: str = "downscale"  # none | downscale | blur
    bottleneck_size: int = 0  # downscale: side length in pixels (0 = the model's image_size)
    blur_sigma: float = 0.0  # blur: gaussian radius in pixels
    # Probability of replacing a condition with the empty (unconditional) one, so CFG works at inference.
    condition_dropout: float = 0.1
    # "vq_embeddings" conditions on the generation tokenizer's own codes: the copy/collapse ablation.
    condition_on: str = "understanding"
    # Reconstruction instructions sampled beside the image embeddings: the first N of
    # reca_eval.models.instructions.RECONSTRUCTION_INSTRUCTIONS (0 = all of them; 1 = one fixed phrase).
    instructions: int = 0


@dataclass
class TrainSpec:
    output_dir: str = "results/train/run"
    steps: int = 100  # optimizer steps
    batch_size: int = 4  # per process, per micro-step
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    scheduler: str = "constant"  # constant | linear | cosine (after warmup_steps of linear warmup)
    warmup_steps: int = 0
    max_grad_norm: float = 1.0  # 0 = no clipping
    mixed_precision: str = "auto"  # auto (bf16 where the device has it) | no | bf16 | fp16
    seed: int = 0
    log_every: int = 1
    checkpoint_every: int = 50
    keep_last: int = 2
    logger: str = "tensorboard"  # tensorboard | none
    progress: bool = True


@dataclass
class Recipe:
    name: str = "recipe"
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    objective: ObjectiveSpec = field(default_factory=ObjectiveSpec)
    train: TrainSpec = field(default_factory=TrainSpec)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_recipe(path: Path | str, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe, apply ``key.sub=value`` overrides, and check every key and type.

    ``path`` is a file, or the name of a shipped recipe (``sft``, ``reca``, ``sft_reca``), which an
    installed wheel carries too (:data:`reca_eval.core.paths.RECIPES_DIR`).
    """
    path = resolve_recipe(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: the top level must be a mapping, got {type(raw).__name__}")
    try:
        return recipe_from_dict(apply_overrides(raw, overrides or []))
    except RecipeError as exc:
        raise RecipeError(f"{path}: {exc}") from None


def shipped_recipes() -> list[str]:
    """Names of the shipped training recipes (the pre-training configs beside them have no ``train``)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml") if "train:" in p.read_text())


def resolve_recipe(path: Path | str) -> Path:
    """A recipe file: the path itself, else the shipped recipe of that name; missing, a clear error."""
    path = Path(path)
    if path.exists():
        return path
    shipped = RECIPES_DIR / f"{path.name}.yaml"
    if path.suffix == "" and path.parent == Path(".") and shipped.exists():
        return shipped
    raise FileNotFoundError(
        f"recipe {path} does not exist; shipped recipes (pass the name): {', '.join(shipped_recipes())}"
    )


def recipe_from_dict(raw: dict[str, Any]) -> Recipe:
    recipe = _build(Recipe, raw, "")
    check_recipe(recipe)
    return recipe


def recipe_to_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set ``a.b.0.c=value`` in a copy of ``raw``; the value is parsed as YAML (``2``, ``[a, b]``, ``true``)."""
    import copy

    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"override {item!r} is not of the form key.sub=value")
        value = yaml.safe_load(text) if text.strip() else ""
        _set_dotted(raw, key.strip(), value)
    return raw


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node: Any = raw
    cls: Any = Recipe
    for depth, part in enumerate(parts):
        here = ".".join(parts[: depth + 1])
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise RecipeError(
                    f"override key {here!r}: index out of range (the list has {len(node)} items)"
                )
            index = int(part)
            if last:
                node[index] = value
                return
            node = node[index]
            cls = _list_item_type(cls)
            continue
        if not isinstance(node, dict):
            raise RecipeError(f"override key {here!r}: {'.'.join(parts[:depth])!r} is not a mapping")
        hints = _field_types(cls) if cls is not None else None
        if hints is not None and part not in hints:
            raise RecipeError(f"unknown key {here!r} (known: {', '.join(sorted(hints))})")
        child_cls = hints[part] if hints is not None else None
        if last:
            node[part] = value
            return
        if part not in node or node[part] is None:
            node[part] = {}
        node = node[part]
        cls = (
            child_cls if dataclasses.is_dataclass(child_cls) else (child_cls if _is_list(child_cls) else None)
        )


def _field_types(cls: Any) -> dict[str, Any] | None:
    if not dataclasses.is_dataclass(cls):
        return None
    return typing.get_type_hints(cls)


def _is_list(tp: Any) -> bool:
    return typing.get_origin(tp) is list


def _list_item_type(tp: Any) -> Any:
    if _is_list(tp):
        (item,) = typing.get_args(tp)
        return item if dataclasses.is_dataclass(item) else None
    return None


def _build(cls: Any, raw: Any, prefix: str) -> Any:
    where = prefix or "the recipe"
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: expected a mapping, got {type(raw).__name__} ({raw!r})")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(raw) - set(hints))
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise RecipeError(f"unknown key {key!r} (known: {', '.join(sorted(hints))})")
    values = {name: _convert(hints[name], raw[name], f"{prefix}.{name}" if prefix else name) for name in raw}
    return cls(**values)


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise RecipeError(f"{key}: expected a list, got {type(value).__name__} ({value!r})")
        return [_convert(item_tp, v, f"{key}.{i}") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{key}: expected a mapping, got {type(value).__name__} ({value!r})")
        return dict(value)
    if origin in (typing.Union, types.UnionType):
        raise RecipeError(f"{key}: union types are not supported in recipes")
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{key}: expected true/false, got {type(value).__name__} ({value!r})")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{key}: expected an integer, got {type(value).__name__} ({value!r})")
        return value
    if tp is float:
        # PyYAML reads "1e-4" (no dot) as a string, so numeric strings are accepted for floats.
        if isinstance(value, bool):
            raise RecipeError(f"{key}: expected a number, got bool ({value!r})")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise RecipeError(f"{key}: expected a number, got {type(value).__name__} ({value!r})")
    if tp is str:
        if not isinstance(value, str):
            raise RecipeError(f"{key}: expected a string, got {type(value).__name__} ({value!r})")
        return value
    if tp is Any:
        return value
    raise RecipeError(f"{key}: unsupported field type {tp}")


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise RecipeError(f"{key}: {value!r} is not one of {', '.join(allowed)}")


def _check_finite(value: object, key: str) -> None:
    """Every number of the recipe finite: NaN passes every `<=` check above and would train on NaN."""
    if dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            _check_finite(getattr(value, f.name), f"{key}.{f.name}" if key else f.name)
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_finite(v, f"{key}.{i}")
    elif isinstance(value, float) and not math.isfinite(value):
        raise RecipeError(f"{key}: must be a finite number, got {value}")


def check_recipe(recipe: Recipe) -> None:
    """Value checks that types alone cannot express; each names the offending key."""
    for i, src in enumerate(recipe.data.sources):
        _choice(f"data.sources.{i}.kind", src.kind, SOURCE_KINDS)
        _choice(f"data.sources.{i}.objective", src.objective, OBJECTIVES)
        if src.ratio <= 0:
            raise RecipeError(f"data.sources.{i}.ratio: must be > 0, got {src.ratio}")
        if src.max_items < 0:
            raise RecipeError(f"data.sources.{i}.max_items: must be >= 0, got {src.max_items}")
    obj = recipe.objective
    _choice("objective.bottleneck", obj.bottleneck, ("none", "downscale", "blur"))
    _choice("objective.condition_on", obj.condition_on, ("understanding", "vq_embeddings"))
    if not 0.0 <= obj.condition_dropout < 1.0:
        raise RecipeError(f"objective.condition_dropout: must be in [0, 1), got {obj.condition_dropout}")
    if obj.bottleneck == "blur" and obj.blur_sigma <= 0:
        raise RecipeError("objective.blur_sigma: must be > 0 when objective.bottleneck is blur")
    if not 0 <= obj.instructions <= len(RECONSTRUCTION_INSTRUCTIONS):
        raise RecipeError(
            f"objective.instructions: must be in [0, {len(RECONSTRUCTION_INSTRUCTIONS)}] (0 = all), got {obj.instructions}"
        )
    if obj.bottleneck_size < 0:
        raise RecipeError(f"objective.bottleneck_size: must be >= 0, got {obj.bottleneck_size}")
    tr = recipe.train
    for key in ("steps", "batch_size", "grad_accum", "log_every", "checkpoint_every", "keep_last"):
        if getattr(tr, key) < 1:
            raise RecipeError(f"train.{key}: must be >= 1, got {getattr(tr, key)}")
    if tr.lr <= 0:
        raise RecipeError(f"train.lr: must be > 0, got {tr.lr}")
    _check_finite(recipe, "")
    if len(tr.betas) != 2:
        raise RecipeError(f"train.betas: expected two numbers, got {tr.betas}")
    _choice("train.mixed_precision", tr.mixed_precision, ("auto", "no", "bf16", "fp16"))
    _choice("train.logger", tr.logger, ("tensorboard", "none"))
    _choice("train.scheduler", tr.scheduler, ("constant", "linear", "cosine"))
    _choice("model.lora.save", recipe.model.lora.save, ("adapter", "merged"))
    if recipe.model.lora.enabled and not recipe.model.lora.target_modules:
        raise RecipeError("model.lora.target_modules: must name at least one module when LoRA is enabled")
    if recipe.data.num_workers < 0:
        raise RecipeError(f"data.num_workers: must be >= 0, got {recipe.data.num_workers}")
