"""Diff GenEval's official per-image results against one of our runs on the same image folder.

For a user with the real weights (Mask2Former, CLIP ViT-L/14), who ran both scorers on one folder::

    python evaluation/evaluate_images.py DIR --outfile official.jsonl --model-path WEIGHTS  # geneval
    reca-eval run geneval --images DIR -o device=cuda --results ours                          # here
    python -m reca_eval.benchmarks.geneval.parity official.jsonl ours/runs/<run_id>

Images are matched by folder and sample number (``00012/samples/0003.png`` is item ``00012``,
sample 3). The report lists every image whose verdict differs (with both reasons), images only one
side scored, and both sides' task and overall scores; the exit status is 1 when any verdict differs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pandas as pd

from reca_eval.benchmarks.geneval.rules import aggregate
from reca_eval.core.records import read_run

_SAMPLE_PATH = re.compile(r"(\d+)[/\\]samples[/\\](\d+)\.png")


def read_official_results(path: Path) -> pd.DataFrame:
    """The official ``results.jsonl`` as rows (item_id, sample, category, score, reason, filename)."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            match = _SAMPLE_PATH.search(str(record["filename"]))
            if match is None:
                raise ValueError(f"{path}:{number}: cannot read item and sample from {record['filename']!r}")
            rows.append(
                {
                    "item_id": f"{int(match.group(1)):05d}",
                    "sample": int(match.group(2)),
                    "category": record["tag"],
                    "score": 1.0 if record["correct"] else 0.0,
                    "reason": record.get("reason", ""),
                    "filename": record["filename"],
                }
            )
    return pd.DataFrame(rows, columns=["item_id", "sample", "category", "score", "reason", "filename"])


def diff_results(official: pd.DataFrame, ours: pd.DataFrame) -> dict:
    """Per-image comparison: verdicts that differ, images one side lacks, both sides' scores."""
    key = ["item_id", "sample"]
    ours = ours.assign(item_id=ours["item_id"].astype(str), sample=ours["sample"].astype(int))
    both = official.merge(ours, on=key, how="outer", suffixes=("_official", "_ours"), indicator=True)
    matched = both[both["_merge"] == "both"]
    differ = matched[matched["score_official"] != matched["score_ours"]]
    return {
        "images_compared": int(len(matched)),
        "verdicts_differ": int(len(differ)),
        "differences": differ[
            [*key, "category_official", "score_official", "score_ours", "reason_official", "reason_ours"]
        ].to_dict("records"),
        "only_official": both.loc[both["_merge"] == "left_only", key].to_dict("records"),
        "only_ours": both.loc[both["_merge"] == "right_only", key].to_dict("records"),
        "scores_official": aggregate(official) if len(official) else {},
        "scores_ours": aggregate(ours) if len(ours) else {},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("official", type=Path, help="the official evaluate_images.py --outfile (JSONL)")
    parser.add_argument("run", type=Path, help="our run folder (results/runs/<run_id>)")
    args = parser.parse_args(argv)
    _, ours = read_run(args.run)
    report = diff_results(read_official_results(args.official), ours)
    print(json.dumps(report, indent=2, default=str))
    return 1 if report["verdicts_differ"] else 0


if __name__ == "__main__":
    sys.exit(main())
