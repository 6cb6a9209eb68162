"""DPG-style items: one per prompt with its question rows, and the per-sample file layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from reca_eval.benchmarks.dpg import rules as dpg
from reca_eval.benchmarks.edit import layout as layouts_edit


def load_dpg_items(csv_path: Path) -> list[dict[str, Any]]:
    """DPG-style items: one per prompt, with its question rows (from the question-graph CSV)."""
    questions = dpg.load_questions(csv_path)
    items = []
    for item_id, group in questions.groupby("item_id", sort=False):
        items.append({"item_id": str(item_id), "prompt": str(group["text"].iloc[0]), "questions": group})
    return items


def questions_frame(items: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.concat([item["questions"] for item in items], ignore_index=True)


def per_sample_path(items: list[dict], index: int, k: int, out_dir: Path) -> Path:
    """DPG's and our edit benchmarks' layout: ``<item_id>_<k>.png``."""
    return layouts_edit.sample_path(out_dir, items[index]["item_id"], k)
