"""GEdit-Bench's judge (VIEScore, image-editing task): two requests per edited image.

SC: the SC prompt with the instruction, the source image and the edited image (resized to the
source's size, as ``test_gedit_score.py`` does) -> ``[editing success, over-editing]`` on 0-10.
PQ: the PQ prompt and the edited image -> ``[naturalness, artifacts]`` on 0-10.
:func:`reca_eval.benchmarks.edit.rules.gedit_item` then takes the minima and O = sqrt(SC * PQ).

Parsing follows VIEScore's ``mllm_output_to_dict``: the JSON between ``||V^=^V||`` delimiters, else
the outermost ``{...}``, else a bare ``[a, b]`` list, else a bare number. Where VIEScore retries and
then *guesses a random score*, we record the reply as unparseable: a counted skip, never a number.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from reca_eval.benchmarks.edit.rules import GEDIT_RANGE, gedit_item
from reca_eval.core.images import load_rgb
from reca_eval.judges.backend import Judge, skip_row
from reca_eval.judges.rubrics import VIEScorePrompts

DELIMITER = "||V^=^V||"
SCORES_PER_REQUEST = 2


def _json_object(text: str) -> dict | None:
    if text.count(DELIMITER) == 2:
        body = text[text.find(DELIMITER) + len(DELIMITER) : text.rfind(DELIMITER)]
    else:
        start, end = text.find("{"), text.rfind("}") + 1
        if start == -1 or end == 0:
            return None
        body = text[start:end]
    body = body.strip().replace("\n", "")
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        # Judges often write Python-style literals (single quotes); a literal parse is safe.
        try:
            data = ast.literal_eval(body)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
    return data if isinstance(data, dict) else None


def parse_viescore_reply(
    text: str | None, expected: int = SCORES_PER_REQUEST
) -> tuple[list[float] | None, str]:
    """(the ``expected`` scores, "") or (None, why it is unparseable)."""
    if not text or not text.strip():
        return None, "empty reply"
    data = _json_object(text)
    if data is not None:
        if "score" not in data:
            return None, "JSON without a 'score' key"
        raw = data["score"] if isinstance(data["score"], list) else [data["score"]]
    else:
        bare = text.strip()
        match = re.fullmatch(r"\[\s*(\d+(?:\.\d+)?)\s*(?:,\s*(\d+(?:\.\d+)?)\s*)*\]", bare)
        if match:
            raw = json.loads(bare)
        elif re.fullmatch(r"\d+(?:\.\d+)?", bare):
            raw = [float(bare)]
        else:
            return None, "no JSON object, score list or number found"
    try:
        scores = [float(s) for s in raw]
    except (TypeError, ValueError):
        return None, f"non-numeric scores {raw!r}"
    if len(scores) != expected:
        return None, f"{len(scores)} score(s) {scores}, expected {expected}"
    low, high = GEDIT_RANGE
    if not all(low <= s <= high for s in scores):
        return None, f"scores {scores} outside {low:g}-{high:g}"
    return scores, ""


def make_gedit_scorer(
    judge: Judge, prompts: VIEScorePrompts, *, images_first: bool = False
) -> Callable[[dict, Image.Image], dict[str, Any]]:
    """``score_item(item, edited)``; ``images_first``: images before text (GEdit's Qwen2.5-VL judge does)."""

    def ordered(text: str, images: list[Image.Image]) -> list:
        return [*images, text] if images_first else [text, *images]

    def score_gedit_item(item: dict, edited: Image.Image) -> dict[str, Any]:
        source, reason = load_rgb(Path(item["source_path"]))
        if source is None:
            return skip_row(f"source image {item['source_path']}: {reason}")
        edited = edited.resize(source.size) if edited.size != source.size else edited
        results: dict[str, list[float]] = {}
        for aspect, content in (
            ("sc", ordered(prompts.sc(item["instruction"]), [source, edited])),
            ("pq", ordered(prompts.pq, [edited])),
        ):
            reply = judge.ask(content)
            if reply.refusal:
                return skip_row(f"judge refused ({aspect.upper()}): {reply.refusal}")
            scores, why = parse_viescore_reply(reply.text)
            if scores is None:
                judge.note_unparseable()
                return skip_row(
                    f"unparseable judge reply ({aspect.upper()}: {why}): {(reply.text or '')[:80]!r}"
                )
            results[aspect] = scores
        row = gedit_item(results["sc"], results["pq"])
        row.update(
            {
                "sc_success": results["sc"][0],
                "sc_overediting": results["sc"][1],
                "pq_naturalness": results["pq"][0],
                "pq_artifacts": results["pq"][1],
                "judge_model": reply.model_reported,
                "judge_skip": "",
            }
        )
        return row

    return score_gedit_item
