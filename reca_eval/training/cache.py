"""On-disk cache of frozen outputs (understanding embeddings, VQ ids / latents), so later epochs skip
the frozen encoders.

An entry is keyed by the image's content hash and the *encoder fingerprint*: a hash of the frozen
module's weights and config. Changing the encoder's weights (another checkpoint, a different
bottleneck) therefore changes the key and misses; nothing is ever served stale. Files are written
atomically, so concurrent processes and killed runs leave only whole entries.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from reca_eval.core.records import atomic_write_bytes


def module_fingerprint(module: torch.nn.Module, extra: str = "") -> str:
    """sha256 over the module's parameters and buffers (names, dtypes, shapes, values) and its config."""
    h = hashlib.sha256()
    config = getattr(module, "config", None)
    if config is not None and hasattr(config, "to_json_string"):
        h.update(config.to_json_string().encode())
    else:
        h.update(repr(module).encode())  # the architecture, for plain torch modules
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    h.update(extra.encode())
    return h.hexdigest()


@dataclass
class FrozenOutputCache:
    root: Path
    hits: int = 0
    misses: int = 0

    def path(self, kind: str, fingerprint: str, content_hash: str) -> Path:
        return Path(self.root) / kind / fingerprint[:24] / content_hash[:2] / f"{content_hash}.pt"

    def get(self, kind: str, fingerprint: str, content_hash: str) -> torch.Tensor | None:
        path = self.path(kind, fingerprint, content_hash)
        if not path.exists():
            self.misses += 1
            return None
        try:
            tensor = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError):
            self.misses += 1  # an unreadable entry is recomputed and overwritten
            return None
        self.hits += 1
        return tensor

    def contains(self, kind: str, fingerprint: str, content_hash: str) -> bool:
        return self.path(kind, fingerprint, content_hash).exists()

    def put(self, kind: str, fingerprint: str, content_hash: str, tensor: torch.Tensor) -> None:
        buffer = io.BytesIO()
        # clone: saving a view would store the whole batch's storage
        torch.save(tensor.detach().cpu().clone(), buffer)
        atomic_write_bytes(self.path(kind, fingerprint, content_hash), buffer.getvalue())

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses}


def describe(**settings: object) -> str:
    """A stable string of the settings that shape a cached output (e.g. the bottleneck), for fingerprints."""
    return json.dumps(settings, sort_keys=True)
