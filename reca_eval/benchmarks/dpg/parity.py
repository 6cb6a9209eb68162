"""Diff DPG-Bench's official per-image results against one of our runs on the same grid folder.

For a user with the answerer's weights, who ran both scorers on one folder of ``<item_id>.png``
2x2 grids (the official layout)::

    python dpg_bench/compute_dpg_bench.py --image-root-path DIR --resolution 512 --pic-num 4 \\
        --res-path official.txt                                                          # ELLA
    reca-eval run dpg --images DIR --mode official -o vqa=... --results ours              # here
    python -m reca_eval.benchmarks.dpg.parity official.txt ours/runs/<run_id>

The official results file has one line per scored file (``path, tile scores..., average``) and a
closing summary (L1, L2 and DPG-Bench scores). Both sides are compared tile by tile (our rows'
per-image gated mean), file by file (which files either side left out) and on the summary; the exit
status is 1 when any tile score differs. Same answerer on both sides (mPLUG-large) or the check
measures the answerers, not the scorers.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pandas as pd

from reca_eval.benchmarks.dpg.rules import aggregate
from reca_eval.core.records import read_run

_NUMBER = re.compile(r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$")
_SUMMARY = re.compile(r"^\t(.+): (-?[\d.eE+-]+|nan)$")


def read_official_results(path: Path) -> tuple[pd.DataFrame, dict[str, float]]:
    """(per-tile rows: item_id, sample, score; summary {"overall", L1 names, "L1/L2 name"})."""
    rows, summary, section = [], {}, None
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith("DPG-Bench score: "):
            summary["overall"] = float(line.split(": ", 1)[1])
            continue
        if line in ("L1 category scores:", "L2 category scores:"):
            section = line[:2]
            continue
        match = _SUMMARY.match(line)
        if section and match:
            name = match.group(1)
            key = name if section == "L1" else f"{name.split('-')[0].strip()}/{name}"
            summary[key] = float(match.group(2))
            continue
        parts = line.split(", ")
        numbers = 0
        while numbers < len(parts) - 1 and _NUMBER.match(parts[-1 - numbers]):
            numbers += 1
        if numbers < 2:  # a file line has at least one tile score and the average
            continue
        item_id = Path(", ".join(parts[: len(parts) - numbers])).name.split(".")[0]
        tiles = [float(p) for p in parts[len(parts) - numbers : -1]]
        rows += [{"item_id": item_id, "sample": k, "score": s} for k, s in enumerate(tiles)]
    return pd.DataFrame(rows, columns=["item_id", "sample", "score"]), summary


def diff_results(official: pd.DataFrame, summary: dict[str, float], ours: pd.DataFrame) -> dict:
    key = ["item_id", "sample"]
    ours = ours.assign(item_id=ours["item_id"].astype(str), sample=ours["sample"].astype(int))
    ours_tiles = ours.groupby(key, as_index=False)["score"].mean()
    both = official.merge(ours_tiles, on=key, how="outer", suffixes=("_official", "_ours"), indicator=True)
    matched = both[both["_merge"] == "both"]
    differ = matched[(matched["score_official"] - matched["score_ours"]).abs() > 1e-9]
    our_scores = aggregate(ours) if len(ours) else {}
    return {
        "tiles_compared": int(len(matched)),
        "tile_scores_differ": int(len(differ)),
        "differences": differ[[*key, "score_official", "score_ours"]].to_dict("records"),
        "items_only_official": sorted(set(both.loc[both["_merge"] == "left_only", "item_id"])),
        "items_only_ours": sorted(set(both.loc[both["_merge"] == "right_only", "item_id"])),
        "summary": {
            name: {"official": value, "ours": our_scores.get(name)} for name, value in summary.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("official", type=Path, help="compute_dpg_bench.py's --res-path file")
    parser.add_argument("run", type=Path, help="our run folder (results/runs/<run_id>)")
    args = parser.parse_args(argv)
    _, ours = read_run(args.run)
    official, summary = read_official_results(args.official)
    report = diff_results(official, summary, ours)
    print(json.dumps(report, indent=2, default=str))
    return 1 if report["tile_scores_differ"] else 0


if __name__ == "__main__":
    sys.exit(main())
