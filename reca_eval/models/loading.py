"""Open a local checkpoint directory as a UnifiedModel: the family comes from its config.json.

Only local directories: these machines cannot download weights. Users with internet fetch first, e.g.
``huggingface-cli download deepseek-community/Janus-Pro-1B --local-dir checkpoints/Janus-Pro-1B``
(the transformers-format conversion of deepseek-ai/Janus-Pro-1B).
"""

from __future__ import annotations

import json
from pathlib import Path

from reca_eval.models.protocol import UnifiedModel

FETCH_HINT = (
    "fetch a checkpoint first, e.g. `huggingface-cli download deepseek-community/Janus-Pro-1B "
    "--local-dir checkpoints/Janus-Pro-1B` (or deepseek-community/Janus-Pro-7B), then pass that directory"
)

# config.json model_type -> adapter family
FAMILIES = {"janus": "janus", "reca_flow": "flow"}
# diffusers pipeline folders (model_index.json _class_name) -> adapter family
PIPELINE_FAMILIES = {"QwenImageEditPipeline": "qwen_image_edit"}


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
    diffusers pipeline folder, ``_class_name`` in its model_index.json)."""
    index = Path(path) / "model_index.json"
    if index.is_file():
        try:
            pipeline = json.loads(index.read_text(encoding="utf-8")).get("_class_name")
        except (json.JSONDecodeError, AttributeError) as exc:
            raise ValueError(f"{index}: not a diffusers model_index.json ({exc})") from exc
        if pipeline not in PIPELINE_FAMILIES:
            raise ValueError(
                f"{index}: pipeline {pipeline!r} has no reca-eval adapter; supported: {sorted(PIPELINE_FAMILIES)}"
            )
        return PIPELINE_FAMILIES[pipeline]
    config = _config_path(path)
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{config}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    if not isinstance(data, dict) or "model_type" not in data:
        raise ValueError(f"{config}: no 'model_type' key, so the model family is unknown")
    model_type = data["model_type"]
    if model_type not in FAMILIES:
        raise ValueError(
            f"{config}: model_type {model_type!r} has no reca-eval adapter; supported: {sorted(FAMILIES)}"
        )
    return FAMILIES[model_type]


def load_unified_model(
    path: Path, device: str = "cpu", dtype=None, condition_on: str = "understanding"
) -> UnifiedModel:
    """Load a local checkpoint directory behind the UnifiedModel protocol (eval mode, on ``device``)."""
    family = detect_family(path)
    if family == "janus":
        from reca_eval.models.janus.adapter import JanusAdapter

        return JanusAdapter.from_pretrained(Path(path), device=device, dtype=dtype, condition_on=condition_on)
    if family == "flow":
        from reca_eval.models.flow.adapter import FlowAdapter

        return FlowAdapter.from_pretrained(Path(path), device=device, dtype=dtype)
    if family == "qwen_image_edit":
        from reca_eval.models.qwen_image_edit.adapter import QwenImageEditAdapter

        return QwenImageEditAdapter.from_pretrained(Path(path), device=device, dtype=dtype)
    raise AssertionError(
        f"family {family!r} is registered but has no loader"
    )  # FAMILIES and this switch disagree
