"""What every judge backend shares: the request content, the reply, snapshot pinning, the cached call,
and turning judge failures into counted skips.

A request is an ordered list of text parts and images (``Content``); both backends send it in that
order. A :class:`Judge` wraps a backend with the response cache and counts what happened (requests,
cache hits, refusals, unparseable replies); its :meth:`Judge.describe` goes into the run record's
``scorer`` so that a score always names the judge snapshot that produced it.
"""

from __future__ import annotations

import io
import json
import math
import re
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image

from reca_eval.core.records import Skip
from reca_eval.core.spec import ScoreOutput
from reca_eval.judges.cache import ResponseCache, cache_key, sha256_bytes, sha256_text

Content = Sequence["str | Image.Image"]

# A pinned snapshot ends in a date (gpt-4o-2024-08-06, claude-...-20241022), an OpenAI 4-digit
# version (gpt-4-0613), or an explicit revision (Qwen/Qwen2.5-VL-72B-Instruct-AWQ@c8b87d4).
_SNAPSHOT = re.compile(r"(-\d{4}-\d{2}-\d{2}|-\d{8}|-\d{4}|@[0-9A-Za-z._:-]{6,})$")

SKIP_COLUMN = "judge_skip"  # per-row reason a judge reply was not scored ("" = scored)


class JudgeError(RuntimeError):
    """The judge cannot be used at all (bad key, unknown model, server down after retries)."""


class JudgeRefusal(Exception):
    """The judge answered but gave no usable reply for this request: ``kind`` is "refusal" (the
    model's refusal message), "content_filter" (stopped by the provider's filter), "content_policy"
    (the request was rejected by the provider's policy) or "malformed" (no choice in the response).
    A :class:`Judge` turns it into a reply with ``refusal`` set, counted, cached and skipped, never scored."""

    def __init__(self, kind: str, detail: str, model_reported: str = "") -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail, self.model_reported = kind, detail, model_reported


def is_snapshot(model: str) -> bool:
    return bool(_SNAPSHOT.search(model))


def check_snapshot(model: str, allow_alias: bool = False) -> str:
    """Refuse a floating alias ("gpt-4o"): judge drift moves these scores by tenths between runs."""
    if not model:
        raise JudgeError("no judge model given (set $RECA_EVAL_JUDGE_MODEL or options['judge_model'])")
    if not is_snapshot(model) and not allow_alias:
        raise JudgeError(
            f"judge model {model!r} is a floating alias; name a dated snapshot (e.g. 'gpt-4o-2024-08-06', "
            "'gpt-4.1-2025-04-14') or 'name@revision' for a self-hosted model, or pass --allow-alias "
            "(options['allow_alias']=True) to accept scores that may drift"
        )
    return model


def png_bytes(image: Image.Image) -> bytes:
    """Deterministic PNG encoding: the bytes that are hashed for the cache are the bytes sent."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


@dataclass
class JudgeReply:
    text: str | None  # None when the judge returned no usable content (refused, empty)
    model_reported: str  # what the server reported in its response's `model` field (or the local snapshot)
    cached: bool = False
    refusal: str = ""  # non-empty: the judge declined (content filter, refusal message)


class JudgeBackend(Protocol):
    name: str  # "openai-chat" | "local-vlm"
    snapshot: str  # the exact model snapshot asked for

    def settings(self) -> dict[str, Any]: ...  # generation settings that change replies (in the cache key)

    def complete(self, content: Content) -> JudgeReply: ...


def _content_digest(content: Content) -> tuple[str, list[str], list[bytes]]:
    """(hash of the prompt's structure and text, image hashes in order, encoded images)."""
    layout: list[Any] = []
    images: list[bytes] = []
    for part in content:
        if isinstance(part, str):
            layout.append({"text": part})
        elif isinstance(part, Image.Image):
            layout.append({"image": len(images)})
            images.append(png_bytes(part))
        else:
            raise TypeError(f"judge content parts are str or PIL images, got {type(part).__name__}")
    prompt = sha256_text(json.dumps(layout, ensure_ascii=False, sort_keys=True))
    return prompt, [sha256_bytes(b) for b in images], images


@dataclass
class Judge:
    """A backend behind the response cache, with counts for the run record."""

    backend: JudgeBackend
    cache: ResponseCache | None = None
    counts: Counter = field(default_factory=Counter)
    reported_models: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def concurrency(self) -> int:
        """How many :meth:`ask` calls may usefully run at once (threads): the backend's bound, else 1."""
        return max(1, int(getattr(self.backend, "concurrency", 1)))

    def _count(self, key: str) -> None:
        with self._lock:  # ask() runs in several threads when the backend allows concurrency
            self.counts[key] += 1

    def ask(self, content: Content) -> JudgeReply:
        prompt_sha, image_shas, _ = _content_digest(content)
        key = cache_key(self.backend.snapshot, prompt_sha, image_shas, self.backend.settings())
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            self._count("cache_hits")
            reply = JudgeReply(hit.get("text"), hit.get("model_reported", ""), True, hit.get("refusal", ""))
        else:
            self._count("requests")
            try:
                reply = self.backend.complete(content)
            except JudgeRefusal as exc:
                reply = JudgeReply(None, exc.model_reported, refusal=str(exc))
            if self.cache is not None:
                self.cache.put(
                    key,
                    {
                        "text": reply.text,
                        "model_reported": reply.model_reported,
                        "refusal": reply.refusal,
                        "model": self.backend.snapshot,
                        "prompt_sha256": prompt_sha,
                        "image_sha256": image_shas,
                    },
                )
        with self._lock:
            if reply.model_reported:
                self.reported_models.add(reply.model_reported)
            if reply.refusal:
                self.counts["refused"] += 1
        return reply

    def close(self) -> None:
        """Release the backend's connections (an HTTP client's loop thread); a no-op for others."""
        if (close := getattr(self.backend, "close", None)) is not None:
            close()

    def note_unparseable(self) -> None:
        self._count("unparseable")

    def describe(self) -> dict[str, Any]:
        return {
            "judge_backend": self.backend.name,
            "judge_model": self.backend.snapshot,
            "judge_models_reported": sorted(self.reported_models),
            "judge_settings": self.backend.settings(),
            "judge_requests": int(self.counts["requests"]),
            "judge_cache_hits": int(self.counts["cache_hits"]),
            "judge_refused": int(self.counts["refused"]),
            "judge_unparseable": int(self.counts["unparseable"]),
        }


def skip_row(reason: str, **columns: Any) -> dict[str, Any]:
    """A row the judge could not score: NaN score, the reason in SKIP_COLUMN (moved to skips later)."""
    return {"score": math.nan, SKIP_COLUMN: reason, **columns}


def move_judge_skips(output: ScoreOutput) -> ScoreOutput:
    """Rows whose judge reply was refused or unparseable become counted skips with their reason.

    ``score_edit_folder`` appends one row and one scored path per image, in step, so row ``i`` is
    image ``i``. Never scored as 0, never dropped: each is a :class:`Skip` in the record.
    """
    rows = output.rows
    if SKIP_COLUMN not in rows.columns or len(rows) == 0:
        return output
    if len(rows) != len(output.images):
        raise ValueError(f"{len(rows)} rows but {len(output.images)} scored images: cannot match judge skips")
    reasons = rows[SKIP_COLUMN].fillna("").astype(str).to_numpy()
    failed = reasons != ""
    skips = list(output.skips) + [
        Skip(str(path), reason)
        for path, reason, bad in zip(output.images, reasons, failed, strict=True)
        if bad
    ]
    kept = rows.loc[~failed].reset_index(drop=True)
    images = [path for path, bad in zip(output.images, failed, strict=True) if not bad]
    return ScoreOutput(rows=kept, skips=skips, scorer=output.scorer, images=images)
