"""Open a checkpoint as a UnifiedModel: the family comes from its config.json.

A checkpoint is a local folder, or a Hugging Face model id (``deepseek-community/Janus-Pro-1B``, the
transformers-format conversion of deepseek-ai/Janus-Pro-1B) found through ``huggingface_hub``'s cache:
:func:`resolve_checkpoint` turns either into a local folder and says which Hub revision it is. A Hub
id is fetched into that cache when the Hub is reachable; with ``HF_HUB_OFFLINE=1`` only the cache is read.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from reca_eval.models import FAMILIES, family_class
from reca_eval.models.protocol import UnifiedModel

FETCH_HINT = (
    "fetch a checkpoint first, e.g. `hf download deepseek-community/Janus-Pro-1B` (then pass the id) "
    "or `hf download deepseek-community/Janus-Pro-1B --local-dir checkpoints/Janus-Pro-1B` (then pass "
    "that folder)"
)
# ORG/NAME as the Hub spells repository ids (a path that exists locally wins over an id).
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class CheckpointRef:
    """A checkpoint as a run records it: what the user named, where it is, and its Hub revision."""

    id: str  # the local folder or the Hub id, as given
    path: Path  # the local folder holding config.json (a Hub id: its snapshot in the cache)
    revision: str | None = None  # the Hub commit a Hub id resolved to; None for a local folder


def _hub_offline() -> bool:
    # Read at call time (huggingface_hub reads HF_HUB_OFFLINE once, when it is imported).
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache")), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def resolve_checkpoint(ref: str | Path, revision: str | None = None) -> CheckpointRef:
    """A local folder as it is; a Hugging Face model id (``ORG/NAME``) through huggingface_hub's
    ``snapshot_download``: the cached snapshot of ``revision`` (default: main), fetched first when
    the Hub can be reached and ``HF_HUB_OFFLINE`` is not set. Errors say what to run."""
    text = str(ref)
    path = Path(text).expanduser()
    if path.exists():
        if revision is not None:
            raise ValueError(
                f"--revision {revision} applies to a Hugging Face model id, not to the folder {path}"
            )
        return CheckpointRef(id=text, path=path, revision=None)
    if not HUB_ID.match(text):
        raise FileNotFoundError(
            f"checkpoint {text}: no such folder, and not a Hugging Face model id (ORG/NAME); {FETCH_HINT}"
        )
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:
        raise ValueError(
            f"checkpoint {text}: no such folder; reading a Hugging Face model id needs huggingface_hub "
            "(pip install 'reca-eval[models]')"
        ) from None
    cache = _hub_cache()
    download = f"hf download {text}" + (f" --revision {revision}" if revision else "")
    try:
        folder = snapshot_download(
            text, revision=revision, cache_dir=str(cache), local_files_only=_hub_offline()
        )
    except LocalEntryNotFoundError:
        raise FileNotFoundError(
            f"checkpoint {text}"
            + (f" (revision {revision})" if revision else "")
            + f" is not in the Hugging Face cache ({cache}) and the Hub cannot be reached"
            + (" (HF_HUB_OFFLINE is set)" if _hub_offline() else "")
            + f". On a machine with network run `{download}` (into the same cache, or copy the cache / set "
            "HF_HOME), or pass a local folder."
        ) from None
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise FileNotFoundError(
            f"checkpoint {text}: the Hub refuses the repository ({type(exc).__name__}); {FETCH_HINT}"
        ) from None
    except RevisionNotFoundError:
        raise FileNotFoundError(f"checkpoint {text}: the Hub has no revision {revision!r}") from None
    except (HfHubHTTPError, OSError) as exc:
        raise FileNotFoundError(
            f"checkpoint {text}: cannot fetch from the Hub ({exc}); run `{download}` first"
        ) from None
    folder = Path(folder)
    # The snapshot folder is named by the commit it holds: the revision the run used.
    return CheckpointRef(id=text, path=folder, revision=folder.name)


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


def check_weight_files(path: Path) -> None:
    """Every ``*.safetensors`` under ``path`` readable: a truncated or corrupt file (a copy cut short, a
    disk that filled) raises ValueError naming it, instead of a library error naming nothing."""
    from safetensors import safe_open

    for weights in sorted(Path(path).rglob("*.safetensors")):
        try:
            with safe_open(str(weights), framework="numpy"):
                pass
        except Exception as exc:  # safetensors raises its own SafetensorError (and OSError) here
            raise ValueError(f"{weights}: not a complete safetensors file ({exc})") from None


def load_unified_model(
    path: Path, device: str = "cpu", dtype=None, condition_on: str = "understanding"
) -> UnifiedModel:
    """Load a local checkpoint directory behind the UnifiedModel protocol (eval mode, on ``device``)."""
    check_weight_files(path)
    cls = family_class(detect_family(path))
    # condition_on is the Janus family's RecA-VQ ablation switch; every family conditions on understanding
    # features by default, so only a non-default value is passed (a family without it refuses).
    kwargs = {} if condition_on == "understanding" else {"condition_on": condition_on}
    return cls.from_pretrained(Path(path), device=device, dtype=dtype, **kwargs)
