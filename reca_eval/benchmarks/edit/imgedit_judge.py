"""ImgEdit's judge: the edit type's rubric + the source and edited images -> three 1-5 scores.

Parsing follows ImgEdit's ``step1_get_avgscore.py``: every line ``<label>: <integer>`` is a score.
Where the official script averages whatever it found, we require exactly three scores in 1..5; any
other reply is unparseable and becomes a counted skip with the reply's opening words, never a 0.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from reca_eval.benchmarks.edit.rules import IMGEDIT_RANGE, IMGEDIT_SCORES_PER_ITEM, imgedit_item
from reca_eval.core.images import load_rgb
from reca_eval.judges.backend import Judge, skip_row
from reca_eval.judges.rubrics import ImgEditRubrics


def parse_imgedit_reply(text: str | None) -> tuple[list[int] | None, str]:
    """(the three scores, "") or (None, why it is unparseable)."""
    if not text or not text.strip():
        return None, "empty reply"
    scores = []
    for line in text.splitlines():
        parts = line.strip().split(": ")
        if len(parts) == 2 and parts[1].strip().isdigit():
            scores.append(int(parts[1].strip()))
    if len(scores) != IMGEDIT_SCORES_PER_ITEM:
        return None, f"found {len(scores)} '<label>: <integer>' lines, expected {IMGEDIT_SCORES_PER_ITEM}"
    low, high = IMGEDIT_RANGE
    if not all(low <= s <= high for s in scores):
        return None, f"scores {scores} outside {low:g}-{high:g}"
    return scores, ""


def _excerpt(text: str | None) -> str:
    return repr((text or "")[:80])


def make_imgedit_scorer(
    judge: Judge, rubrics: ImgEditRubrics
) -> Callable[[dict, Image.Image], dict[str, Any]]:
    """``score_item(item, edited)`` for ``score_edit_folder``; items carry ``source_path``, ``category``, ``instruction``."""

    def score_imgedit_item(item: dict, edited: Image.Image) -> dict[str, Any]:
        source, reason = load_rgb(Path(item["source_path"]))
        if source is None:
            return skip_row(f"source image {item['source_path']}: {reason}")
        # Official order (basic_bench.py): rubric text, then the original, then the edited image.
        content = [rubrics.prompt(item["category"], item["instruction"]), source, edited]
        reply = judge.ask(content)
        if reply.refusal:
            return skip_row(f"judge refused: {reply.refusal}", judge_reply=reply.refusal)
        scores, why = parse_imgedit_reply(reply.text)
        if scores is None:
            judge.note_unparseable()
            return skip_row(
                f"unparseable judge reply ({why}): {_excerpt(reply.text)}", judge_reply=reply.text or ""
            )
        return {
            "imgedit": imgedit_item(scores),
            "score_1": scores[0],
            "score_2": scores[1],
            "score_3": scores[2],
            "judge_model": reply.model_reported,
            "judge_skip": "",
        }

    return score_imgedit_item
