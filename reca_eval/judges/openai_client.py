"""An OpenAI-compatible chat-completions judge (OpenAI, Azure-style gateways, vLLM, SGLang, ...).

Configuration comes from the environment, never from the record: ``$RECA_EVAL_JUDGE_MODEL`` (a pinned
snapshot), ``$OPENAI_BASE_URL`` (default ``https://api.openai.com/v1``) and ``$OPENAI_API_KEY``
(optional for self-hosted servers). Requests are spaced to at most ``max_requests_per_s``; 429, 5xx
and dropped connections are retried with exponential backoff (the server's Retry-After wins). A
refusal (``message.refusal``, ``finish_reason == "content_filter"``, a content-policy 400) is a reply
with ``refusal`` set, counted by the caller; any other 4xx is a configuration error and stops the run.
The server's reported ``model`` is kept with every reply.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from reca_eval.judges.backend import Content, JudgeError, JudgeReply, check_snapshot, png_bytes

MODEL_ENV = "RECA_EVAL_JUDGE_MODEL"
BASE_URL_ENV = "OPENAI_BASE_URL"
API_KEY_ENV = "OPENAI_API_KEY"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUS = (408, 409, 429, 500, 502, 503, 504)


def chat_messages(content: Content) -> list[dict[str, Any]]:
    """One user message with the parts in order: text parts and PNG data-URL images."""
    parts: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, str):
            parts.append({"type": "text", "text": part})
        elif isinstance(part, Image.Image):
            data = base64.b64encode(png_bytes(part)).decode("ascii")
            parts.append({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}})
        else:
            raise TypeError(f"judge content parts are str or PIL images, got {type(part).__name__}")
    return [{"role": "user", "content": parts}]


@dataclass
class OpenAIChatBackend:
    snapshot: str
    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = field(default=None, repr=False)
    max_requests_per_s: float = 2.0
    retries: int = 6
    backoff: float = 1.0
    timeout: float = 120.0
    max_tokens: int = 1024
    temperature: float = 0.0
    name: str = "openai-chat"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _next_slot: float = 0.0

    def settings(self) -> dict[str, Any]:
        return {"max_tokens": self.max_tokens, "temperature": self.temperature, "api": "chat.completions"}

    def _wait_for_slot(self) -> None:
        if self.max_requests_per_s <= 0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_slot)
            self._next_slot = start + 1.0 / self.max_requests_per_s
        if start > now:
            time.sleep(start - now)

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        url = self.base_url.rstrip("/") + "/chat/completions"
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        body = json.dumps(payload).encode("utf-8")
        problems: list[str] = []
        for attempt in range(self.retries + 1):
            self._wait_for_slot()
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read().decode("utf-8"))
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")[:500]
                if exc.code in RETRY_STATUS:
                    problems.append(f"HTTP {exc.code}")
                    delay = self.backoff * 2**attempt
                    retry_after = exc.headers.get("Retry-After") if exc.headers else None
                    if retry_after is not None:
                        try:
                            delay = float(retry_after)
                        except ValueError:
                            pass
                    time.sleep(delay)
                    continue
                if exc.code == 400 and "content_policy" in detail:
                    return {"_refusal": f"HTTP 400 content policy: {detail[:200]}"}
                raise JudgeError(f"{url}: HTTP {exc.code} for model {self.snapshot!r}: {detail}") from exc
            except (TimeoutError, urllib.error.URLError, ConnectionError) as exc:
                problems.append(f"connection failed ({getattr(exc, 'reason', exc)})")
                time.sleep(self.backoff * 2**attempt)
            except json.JSONDecodeError as exc:
                problems.append(f"non-JSON response ({exc.msg})")
                time.sleep(self.backoff * 2**attempt)
        raise JudgeError(
            f"{url}: judge unavailable after {self.retries + 1} tries: {'; '.join(problems[-3:])}"
        )

    def complete(self, content: Content) -> JudgeReply:
        payload = {
            "model": self.snapshot,
            "messages": chat_messages(content),
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        data = self._post(payload)
        if "_refusal" in data:
            return JudgeReply(None, "", refusal=data["_refusal"])
        reported = str(data.get("model", ""))
        try:
            choice = data["choices"][0]
            message = choice.get("message") or {}
        except (KeyError, IndexError, TypeError, AttributeError):
            return JudgeReply(None, reported, refusal=f"malformed response: {json.dumps(data)[:200]}")
        if message.get("refusal"):
            return JudgeReply(None, reported, refusal=f"refusal: {message['refusal']}")
        if choice.get("finish_reason") == "content_filter":
            return JudgeReply(None, reported, refusal="finish_reason content_filter")
        text = message.get("content")
        if isinstance(text, list):  # some servers return content parts
            text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
        return JudgeReply(text if isinstance(text, str) else None, reported)


def openai_backend_from_env(
    model: str | None = None,
    base_url: str | None = None,
    *,
    allow_alias: bool = False,
    max_requests_per_s: float = 2.0,
    retries: int = 6,
    backoff: float = 1.0,
    timeout: float = 120.0,
) -> OpenAIChatBackend:
    """The chat backend from arguments, else the environment; refuses floating aliases unless allowed."""
    snapshot = check_snapshot(model or os.environ.get(MODEL_ENV, ""), allow_alias)
    return OpenAIChatBackend(
        snapshot=snapshot,
        base_url=base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL,
        api_key=os.environ.get(API_KEY_ENV) or None,
        max_requests_per_s=max_requests_per_s,
        retries=retries,
        backoff=backoff,
        timeout=timeout,
    )
