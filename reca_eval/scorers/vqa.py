"""DPG-Bench's VQA backends: a yes/no answerer ``answer(image, question_rows) -> answers`` for
:func:`reca_eval.benchmarks.dpg.layout.score_dpg_folder`, built from plain options so the CLI can choose one.

The official script asks mPLUG-large (a VQA model with a closed answer head). Here any
vision-language model stands in, through the judges' two backends and their response cache:

- ``vqa="local"``: a local transformers VLM (Qwen2.5-VL class) from ``vqa_model_path``
  (:func:`reca_eval.judges.local_vlm.load_local_vlm`; ``device``, ``dtype``, ``min_pixels``,
  ``max_pixels``);
- ``vqa="openai"``: an OpenAI-compatible chat-completions server, ``vqa_model`` a pinned snapshot
  (``vqa_base_url``, ``allow_alias``, ``max_rps``, ``vqa_retries``, ``vqa_backoff``; the judge's
  environment variables are the fallbacks).

Each question is asked alone, image first, as ``"<question> Answer yes or no."``. A chat model
answers in sentences ("Yes, there is a cat."), so the reply is reduced to its first word, lower-cased
and stripped of punctuation: what mPLUG's one-word answers look like, and what DPG's ``== "yes"`` rule
expects. A refused or empty reply becomes the answer ``"<refused>"`` (not "yes", so the question
scores 0, as a non-answer would in the official script); it stays visible in the per-question rows
and is counted in the scorer's ``judge_refused``. ``vqa_cache`` names the cache folder
(default ``<data>/vqa-cache``; ``""`` turns it off).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from reca_eval.judges.backend import Judge
from reca_eval.judges.cache import ResponseCache

VQA_BACKENDS = ("local", "openai")
# Published DPG-Bench numbers come from mPLUG-large through ModelScope (docs/parity.md says why it is
# not offered yet); every record made with another answerer says so.
PUBLISHED_ANSWERER = "damo/mplug_visual-question-answering_coco_large_en"
NOT_COMPARABLE = f"not comparable to published DPG-Bench scores (they use {PUBLISHED_ANSWERER})"
QUESTION_SUFFIX = "Answer yes or no."
REFUSED_ANSWER = "<refused>"
MAX_ANSWER_TOKENS = 16  # "yes"/"no" plus the sentence a chat model may wrap it in
_FIRST_WORD = re.compile(r"[a-z0-9]+")

Answer = Callable[[Image.Image, list[dict]], list[str]]


def vqa_prompt(question: str) -> str:
    return f"{question.strip()} {QUESTION_SUFFIX}"


def normalise_answer(text: str | None) -> str:
    """The reply's first word, lower-case, without punctuation ("Yes, it is." -> "yes")."""
    if text is None:
        return REFUSED_ANSWER
    words = text.lower().split(maxsplit=1)
    match = _FIRST_WORD.search(words[0]) if words else None
    return match.group(0) if match else ""


def _backend(kind: str, options: dict[str, Any], calls: int = 0):
    if kind == "local":
        from reca_eval.core.devices import LOCAL_VLM_CPU_SECONDS_PER_CALL, scoring_device
        from reca_eval.judges.local_vlm import load_local_vlm

        if not options.get("vqa_model_path"):
            raise ValueError("dpg: vqa=local needs -o vqa_model_path=DIR (a local transformers VLM folder)")
        device = scoring_device(
            options.get("device"),
            what="DPG VQA (local VLM)",
            count=calls,
            cpu_seconds_each=LOCAL_VLM_CPU_SECONDS_PER_CALL,
            unit="question",
        )
        return load_local_vlm(
            Path(options["vqa_model_path"]),
            device=device,
            dtype=str(options.get("dtype", "bfloat16")),
            min_pixels=options.get("min_pixels"),
            max_pixels=options.get("max_pixels"),
            max_new_tokens=int(options.get("max_new_tokens", MAX_ANSWER_TOKENS)),
        )
    from reca_eval.judges.openai_client import openai_backend_from_env

    backend = openai_backend_from_env(
        options.get("vqa_model"),
        options.get("vqa_base_url"),
        allow_alias=bool(options.get("allow_alias", False)),
        max_requests_per_s=float(options.get("max_rps", 2.0)),
        retries=int(options.get("vqa_retries", 6)),
        backoff=float(options.get("vqa_backoff", 1.0)),
    )
    backend.max_tokens = int(options.get("max_new_tokens", MAX_ANSWER_TOKENS))
    return backend


def make_vqa(options: dict[str, Any], calls: int = 0) -> tuple[Answer, Callable[[], dict[str, Any]]]:
    """The answerer named by ``options["vqa"]`` and a function describing it for the run record.

    ``options["vqa"]`` may also be a callable ``(image, question rows) -> answers`` (library use); it
    is used as it is and recorded by its ``name`` attribute (else "custom-vqa").
    """
    from reca_eval.core.paths import data_dir

    kind = options.get("vqa")
    if callable(kind):
        name = str(getattr(kind, "name", "custom-vqa"))
        return kind, lambda: {"backend": name, "vqa_backend": name, "comparability": NOT_COMPARABLE}
    if kind not in VQA_BACKENDS:
        raise ValueError(
            f"dpg needs a VQA backend, got vqa={kind!r}: choose -o vqa=local -o vqa_model_path=DIR "
            "(a local transformers VLM, Qwen2.5-VL class) or -o vqa=openai -o vqa_model=<dated snapshot> "
            "(an OpenAI-compatible server); in Python options['vqa'] may also be a callable "
            "(image, question rows) -> answers. The official script uses mPLUG-large."
        )
    backend = _backend(kind, options, calls)  # calls: questions x images, for the CPU estimate
    cache_dir = options.get("vqa_cache", str(data_dir() / "vqa-cache"))
    judge = Judge(backend, ResponseCache(Path(cache_dir)) if cache_dir else None)

    def answer(image: Image.Image, questions: list[dict]) -> list[str]:
        replies = [judge.ask([image, vqa_prompt(str(q["question_natural_language"]))]) for q in questions]
        return [normalise_answer(reply.text) for reply in replies]

    answer.__name__ = f"vqa_{kind}"

    def describe() -> dict[str, Any]:
        return {
            **judge.describe(),
            "backend": f"vqa:{backend.name}:{backend.snapshot}",
            "vqa_backend": kind,
            "vqa_model": backend.snapshot,
            "vqa_prompt": vqa_prompt("{question}"),
            "vqa_answer_rule": "first word of the reply, lower-case, punctuation stripped",
            "comparability": NOT_COMPARABLE,
        }

    return answer, describe
