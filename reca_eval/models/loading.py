"""Open a local checkpoint directory as a UnifiedModel: the family comes from its config.json.

Only local directories: these machines cannot download weights. Users with internet fetch first, e.g.
``huggingface-cli download deepseek-community/Janus-Pro-1B --local-dir checkpoints/Janus-Pro-1B``
(the transformers-format conversion of deepseek-ai/Janus-Pro-1B).
"""

from __future__ import annotations

import json
from pathlib import Path

from reca_eval.models import FAMILIES, family_class
from reca_eval.models.protocol import UnifiedModel

FETCH_HINT = (
    "fetch a checkpoint first, e.g. `huggingface-cli download deepseek-community/Janus-Pro-1B "
    "--local-dir checkpoints/Janus-Pro-1B` (or deepseek-community/Janus-Pro-7B), then pass that directory"
)


def _family_declaring(attribute: str, value: str) -> str | None:
    """The first family (table order) whose adapter class lists ``value`` in ``attribute``
    (``model_types`` or ``pipeline_classes``); imports adapters only until one matches."""
    for name in FAMILIES:
        if value in getattr(family_class(name), attribute):
            return name
    return None


def _declared(attribute: str) -> list[str]:
    return sorted(v for name in FAMILIES for v in getattr(family_class(name), attribute))


def _config_path(path: Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint directory {path} does not exist; {FETCH_HINT}")
    if not path.is_dir():
        raise NotADirectoryError(
            f"checkpoint {path} is not a directory (expected a Hugging Face model folder)"
        )
    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(
            f"{config} is missing: {path} is not a Hugging Face model folder; {FETCH_HINT}"
        )
    return config


def detect_family(path: Path) -> str:
    """The adapter family of a checkpoint directory, from ``model_type`` in its config.json (or, for a
    diffusers pipeline folder, ``_class_name`` in its model_index.json), matched against the adapter
    classes' ``model_types`` / ``pipeline_classes``."""
    index = Path(path) / "model_index.json"
    if index.is_file():
        try:
            pipeline = json.loads(index.read_text(encoding="utf-8")).get("_class_name")
        except (json.JSONDecodeError, AttributeError) as exc:
            raise ValueError(f"{index}: not a diffusers model_index.json ({exc})") from exc
        family = _family_declaring("pipeline_classes", pipeline) if isinstance(pipeline, str) else None
        if family is None:
            raise ValueError(
                f"{index}: pipeline {pipeline!r} has no reca-eval adapter; supported: {_declared('pipeline_classes')}"
            )
        return family
    config = _config_path(path)
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{config}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    if not isinstance(data, dict) or "model_type" not in data:
        raise ValueError(f"{config}: no 'model_type' key, so the model family is unknown")
    model_type = data["model_type"]
    family = _family_declaring("model_types", model_type) if isinstance(model_type, str) else None
    if family is None:
        raise ValueError(
            f"{config}: model_type {model_type!r} has no reca-eval adapter; supported: {_declared('model_types')}"
        )
    return family


def load_unified_model(
    path: Path, device: str = "cpu", dtype=None, condition_on: str = "understanding"
) -> UnifiedModel:
    """Load a local checkpoint directory behind the UnifiedModel protocol (eval mode, on ``device``)."""
    cls = family_class(detect_family(path))
    # condition_on is the Janus family's RecA-VQ ablation switch; every family conditions on understanding
    # features by default, so only a non-default value is passed (a family without it refuses).
    kwargs = {} if condition_on == "understanding" else {"condition_on": condition_on}
    return cls.from_pretrained(Path(path), device=device, dtype=dtype, **kwargs)
