"""A judge response cache: re-running a scoring pass over the same images costs nothing.

The key is what decides a reply: the judge's exact model snapshot, the hash of the prompt text, the
hashes of the images in order, and the generation settings. A different snapshot, prompt wording or
image is a different key, so a cache can never mix judges. Entries are small JSON files written
atomically, one per key, under ``<folder>/<key[:2]>/<key>.json``; concurrent runs can share a folder.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reca_eval.core.records import atomic_write_text


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cache_key(
    model_snapshot: str, prompt_sha256: str, image_sha256s: list[str], settings: dict[str, Any]
) -> str:
    """One hex key over everything that decides the judge's reply."""
    payload = {
        "model": model_snapshot,
        "prompt": prompt_sha256,
        "images": list(image_sha256s),
        "settings": settings,
    }
    return sha256_text(json.dumps(payload, sort_keys=True, separators=(",", ":")))


@dataclass
class ResponseCache:
    folder: Path

    def _path(self, key: str) -> Path:
        return Path(self.folder) / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None  # a damaged entry is a miss; the fresh reply overwrites it

    def put(self, key: str, entry: dict[str, Any]) -> None:
        atomic_write_text(self._path(key), json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")
