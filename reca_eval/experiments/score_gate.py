"""The project's own score gate: the shipped ShapeWorld bases, scored on fixed item subsets, checked
against baseline runs committed under ``benchmarks/baselines/`` (the use docs/ci.md describes).

    python -m reca_eval.experiments.score_gate            # generate, score, check; exit 1 on a regression
    python -m reca_eval.experiments.score_gate --record   # re-record the baselines (after a deliberate change)

A code change that lowers what a shipped base scores (generation, a scorer, a benchmark's rules)
fails the gate. A change of a benchmark's spec version makes the old baseline incomparable (exit 2):
re-record it with ``--record`` in the same commit.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from reca_eval.core.paths import PROJECT_ROOT
from reca_eval.core.records import PER_IMAGE_FILE, RECORD_FILE, atomic_write_text

BASELINES_DIR = PROJECT_ROOT / "benchmarks" / "baselines"
ASSETS_DIR = PROJECT_ROOT / "reca_eval" / "assets"
ITEMS_FILE = "items.jsonl"
LABEL = "score-gate"


@dataclass(frozen=True)
class Gate:
    benchmark: str
    asset: str  # the shipped base, a folder of reca_eval/assets
    n_items: int  # evenly spaced over the benchmark's item file, so every category is in


# The shipped bases were never trained on edits (shapes-edit scores 0 everywhere: nothing can fall),
# so the gate holds the text-to-image benchmark they do score on.
GATES = (Gate("shapes-geneval", "shapeworld-base", 30),)


def subset_lines(path: Path, n: int) -> list[str]:
    lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    step = max(1, len(lines) // n)
    return lines[::step][:n]


def _score(gate: Gate, items: Path, results: Path) -> Path:
    import functools

    from reca_eval.evaluation.generate import generate_for_benchmark
    from reca_eval.evaluation.score import generate_and_score

    outcome = generate_and_score(
        gate.benchmark,
        ASSETS_DIR / gate.asset,
        # On the CPU, as the baselines were recorded: a GPU's arithmetic may flip a sampled token.
        generate=functools.partial(generate_for_benchmark, device="cpu"),
        items_path=items,
        label=LABEL,
        results_dir=results,
    )
    assert outcome is not None  # one process
    return outcome.run_dir


def record(gates: tuple[Gate, ...] = GATES, out_dir: Path = BASELINES_DIR) -> list[Path]:
    """Score each shipped base on its subset and keep record.json and per_image.jsonl as the baseline."""
    from reca_eval import registry

    written = []
    with tempfile.TemporaryDirectory(prefix="reca-eval-gate-") as tmp:
        for gate in gates:
            folder = Path(out_dir) / gate.benchmark
            folder.mkdir(parents=True, exist_ok=True)
            lines = subset_lines(registry.get(gate.benchmark).default_items(), gate.n_items)
            atomic_write_text(folder / ITEMS_FILE, "\n".join(lines) + "\n")
            run_dir = _score(gate, folder / ITEMS_FILE, Path(tmp))
            shutil.copyfile(run_dir / PER_IMAGE_FILE, folder / PER_IMAGE_FILE)
            data = json.loads((run_dir / RECORD_FILE).read_text(encoding="utf-8"))
            data["model"] = f"reca_eval/assets/{gate.asset}"  # not this machine's path
            atomic_write_text(folder / RECORD_FILE, json.dumps(data, indent=2) + "\n")
            written.append(folder)
    return written


def check(gates: tuple[Gate, ...] = GATES, baselines: Path = BASELINES_DIR, console=None) -> int:
    """Generate and score again, check against the committed baselines; the CLI's exit code."""
    from rich.console import Console

    from reca_eval.results.leaderboard import check_regression, render_check

    console = console or Console(highlight=False)
    passed = True
    with tempfile.TemporaryDirectory(prefix="reca-eval-gate-") as tmp:
        for gate in gates:
            baseline = Path(baselines) / gate.benchmark
            if not (baseline / RECORD_FILE).exists():
                console.print(f"no baseline at {baseline}: record one with --record")
                return 2
            run_dir = _score(gate, baseline / ITEMS_FILE, Path(tmp))
            try:
                result = check_regression(run_dir, baseline)
            except ValueError as exc:
                console.print(f"{gate.benchmark}: {exc}; re-record the baseline with --record if intended")
                return 2
            render_check(result, console)
            passed &= result.passed
    return 0 if passed else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", action="store_true", help="re-record the baselines instead of checking")
    parser.add_argument("--baselines", type=Path, default=BASELINES_DIR, help="baseline folder")
    args = parser.parse_args(argv)
    if args.record:
        for folder in record(out_dir=args.baselines):
            scores = json.loads((folder / RECORD_FILE).read_text())["scores"]
            print(f"recorded {folder}: overall {scores['overall']:.4f}")
        return 0
    return check(baselines=args.baselines)


if __name__ == "__main__":
    sys.exit(main())
