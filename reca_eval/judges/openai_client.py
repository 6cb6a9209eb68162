"""An OpenAI-compatible chat-completions judge on the ``openai`` SDK (OpenAI, Azure OpenAI deployments,
vLLM, SGLang, other gateways).

Configuration comes from arguments, else the environment, never from the record:
``$RECA_EVAL_JUDGE_MODEL`` (a pinned snapshot), ``$OPENAI_BASE_URL`` (default
``https://api.openai.com/v1``) and ``$OPENAI_API_KEY`` (optional for self-hosted servers). An Azure
deployment goes through the SDK's ``AsyncAzureOpenAI``: ``azure_deployment`` (or
``$AZURE_OPENAI_DEPLOYMENT``), the resource's endpoint as the base URL (or ``$AZURE_OPENAI_ENDPOINT``),
``api_version`` (or ``$OPENAI_API_VERSION``) and ``$AZURE_OPENAI_API_KEY``.

Requests run on one ``AsyncOpenAI`` client in a background event loop, at most ``concurrency`` at a
time (callers in several threads share it) and spaced to at most ``max_requests_per_s``. 408, 409,
429, 5xx and dropped connections are retried ``retries`` times: after the server's Retry-After
(``retry-after-ms`` or ``retry-after``) when it sends one, else ``backoff * 2**attempt`` seconds; the
SDK's own retry is off so that this rule is the only one. A refusal (``message.refusal``,
``finish_reason == "content_filter"``, a content-policy 400) raises :class:`JudgeRefusal`, which the
:class:`~reca_eval.judges.backend.Judge` counts; any other 4xx is a configuration error
(:class:`JudgeError`) and stops the run. The server's reported ``model`` is kept with every reply.
"""

from __future__ import annotations

import asyncio
import base64
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from reca_eval.judges.backend import Content, JudgeError, JudgeRefusal, JudgeReply, check_snapshot, png_bytes

MODEL_ENV = "RECA_EVAL_JUDGE_MODEL"
BASE_URL_ENV = "OPENAI_BASE_URL"
API_KEY_ENV = "OPENAI_API_KEY"
AZURE_DEPLOYMENT_ENV = "AZURE_OPENAI_DEPLOYMENT"
AZURE_ENDPOINT_ENV = "AZURE_OPENAI_ENDPOINT"
AZURE_KEY_ENV = "AZURE_OPENAI_API_KEY"
API_VERSION_ENV = "OPENAI_API_VERSION"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_AZURE_API_VERSION = "2024-10-21"
RETRY_STATUS = (408, 409, 429, 500, 502, 503, 504)
MAX_RETRY_AFTER = 600.0  # seconds: a longer Retry-After is capped, not obeyed for hours
NO_KEY = "no-key"  # self-hosted servers take any key; the SDK needs one


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


def retry_after(headers: Any) -> float | None:
    """The server's requested wait in seconds (``retry-after-ms``, else ``retry-after`` in seconds)."""
    if headers is None:
        return None
    for key, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(key)
        if value is None:
            continue
        try:
            return min(MAX_RETRY_AFTER, max(0.0, float(value) * scale))
        except ValueError:
            continue  # an HTTP date: fall back to the backoff
    return None


class _Loop:
    """A daemon thread running one asyncio loop: synchronous callers in any thread submit to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="reca-eval-judge", daemon=True)
        self.thread.start()

    def run(self, coroutine) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()


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
    concurrency: int = 8  # requests in flight at once
    azure_deployment: str | None = None  # set: an Azure OpenAI deployment at base_url (the resource endpoint)
    api_version: str | None = None  # Azure's api-version
    name: str = "openai-chat"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _runner: _Loop | None = field(default=None, repr=False)
    _client: Any = field(default=None, repr=False)
    _gate: asyncio.Semaphore | None = field(default=None, repr=False)
    _next_slot: float = 0.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"judge concurrency must be >= 1, got {self.concurrency}")

    def settings(self) -> dict[str, Any]:
        # Exactly what decides a reply, and is in the cache key: these keys, so cached replies keep hitting.
        return {"max_tokens": self.max_tokens, "temperature": self.temperature, "api": "chat.completions"}

    def _make_client(self):
        try:
            from openai import AsyncAzureOpenAI, AsyncOpenAI
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise JudgeError(
                "the OpenAI-compatible judge needs the openai package: pip install 'reca-eval[edit]'"
            ) from exc

        if self.azure_deployment:
            return AsyncAzureOpenAI(
                azure_endpoint=self.base_url,
                azure_deployment=self.azure_deployment,
                api_version=self.api_version or DEFAULT_AZURE_API_VERSION,
                api_key=self.api_key or NO_KEY,
                max_retries=0,
                timeout=self.timeout,
            )
        return AsyncOpenAI(
            base_url=self.base_url, api_key=self.api_key or NO_KEY, max_retries=0, timeout=self.timeout
        )

    def _started(self) -> _Loop:
        with self._lock:
            if self._runner is None:
                self._client = self._make_client()
                self._gate = asyncio.Semaphore(self.concurrency)
                self._runner = _Loop()
            return self._runner

    async def _wait_for_slot(self) -> None:
        if self.max_requests_per_s <= 0:
            return
        now = time.monotonic()
        start = max(now, self._next_slot)  # the loop runs one coroutine at a time: no lock needed
        self._next_slot = start + 1.0 / self.max_requests_per_s
        if start > now:
            await asyncio.sleep(start - now)

    def _where(self) -> str:
        if self.azure_deployment:
            return f"{self.base_url} (Azure deployment {self.azure_deployment!r})"
        return self.base_url

    async def acomplete(self, content: Content) -> JudgeReply:
        """One chat completion, retried as the module says; at most ``concurrency`` run at once."""
        import openai

        messages = chat_messages(content)
        problems: list[str] = []
        assert self._gate is not None
        for attempt in range(self.retries + 1):
            delay = self.backoff * 2**attempt
            async with self._gate:
                await self._wait_for_slot()
                try:
                    response = await self._client.chat.completions.create(
                        model=self.snapshot,
                        messages=messages,
                        max_tokens=self.max_tokens,
                        temperature=self.temperature,
                    )
                    return _reply(response)
                except openai.APIStatusError as exc:
                    detail = str(exc)[:500]
                    if exc.status_code in RETRY_STATUS:
                        problems.append(f"HTTP {exc.status_code}")
                        delay = retry_after(exc.response.headers) if exc.response is not None else None
                        delay = self.backoff * 2**attempt if delay is None else delay
                    elif (
                        exc.status_code == 400 and "content_policy" in f"{getattr(exc, 'code', '')} {detail}"
                    ):
                        raise JudgeRefusal("content_policy", f"HTTP 400: {detail[:200]}") from exc
                    else:
                        raise JudgeError(
                            f"{self._where()}: HTTP {exc.status_code} for model {self.snapshot!r}: {detail}"
                        ) from exc
                except openai.APIConnectionError as exc:  # includes timeouts
                    problems.append(f"connection failed ({type(exc).__name__}: {exc})")
            if attempt < self.retries:
                await asyncio.sleep(delay)
        raise JudgeError(
            f"{self._where()}: judge unavailable after {self.retries + 1} tries: {'; '.join(problems[-3:])}"
        )

    def complete(self, content: Content) -> JudgeReply:
        """:meth:`acomplete` from synchronous code; safe to call from several threads at once."""
        runner = self._started()
        return runner.run(self.acomplete(content))

    def close(self) -> None:
        """Close the client's connections and stop its loop thread (a later call starts them again)."""
        with self._lock:
            runner, client = self._runner, self._client
            self._runner = self._client = self._gate = None
        if runner is not None:
            runner.run(client.close())
            runner.loop.call_soon_threadsafe(runner.loop.stop)
            runner.thread.join(timeout=10)
            runner.loop.close()


def _reply(response: Any) -> JudgeReply:
    reported = str(getattr(response, "model", "") or "")
    choices = getattr(response, "choices", None) or []
    if not choices or getattr(choices[0], "message", None) is None:
        raise JudgeRefusal("malformed", f"no choice in the response of {reported or 'the server'}", reported)
    choice = choices[0]
    message = choice.message
    if getattr(message, "refusal", None):
        raise JudgeRefusal("refusal", str(message.refusal), reported)
    if choice.finish_reason == "content_filter":
        raise JudgeRefusal("content_filter", "finish_reason content_filter", reported)
    text = message.content
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
    concurrency: int = 8,
    azure_deployment: str | None = None,
    api_version: str | None = None,
) -> OpenAIChatBackend:
    """The chat backend from arguments, else the environment; refuses floating aliases unless allowed."""
    snapshot = check_snapshot(model or os.environ.get(MODEL_ENV, ""), allow_alias)
    deployment = azure_deployment or os.environ.get(AZURE_DEPLOYMENT_ENV) or None
    if deployment:
        endpoint = base_url or os.environ.get(AZURE_ENDPOINT_ENV) or os.environ.get(BASE_URL_ENV)
        if not endpoint:
            raise JudgeError(
                f"Azure deployment {deployment!r} needs its resource endpoint: judge_base_url or ${AZURE_ENDPOINT_ENV}"
            )
        key = os.environ.get(AZURE_KEY_ENV) or os.environ.get(API_KEY_ENV) or None
        version = api_version or os.environ.get(API_VERSION_ENV) or DEFAULT_AZURE_API_VERSION
    else:
        endpoint = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        key, version = os.environ.get(API_KEY_ENV) or None, None
    return OpenAIChatBackend(
        snapshot=snapshot,
        base_url=endpoint,
        api_key=key,
        max_requests_per_s=max_requests_per_s,
        retries=retries,
        backoff=backoff,
        timeout=timeout,
        concurrency=concurrency,
        azure_deployment=deployment,
        api_version=version,
    )
