"""The corpus's figures: `python -m tests.reliability.report` (add -v to list every failing case)."""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.reliability.corpus import BASE, all_cases, build_base
from tests.reliability.harness import run_case


def main(argv: list[str]) -> int:
    verbose = "-v" in argv
    only = [a for a in argv if not a.startswith("-")]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        build_base(Path(tmp) / "base")
        cases = [c for c in all_cases() if not only or any(o in c.name for o in only)]
        counts: Counter[str] = Counter()
        failing = []
        for n, case in enumerate(cases):
            root = Path(tmp) / f"case{n}"
            root.mkdir()
            mp = pytest.MonkeyPatch()
            try:
                outcome = run_case(case, root, mp)
            finally:
                mp.undo()
            counts["tracebacks"] += bool(outcome.traceback)
            counts["hangs"] += outcome.hang
            counts["wrong exit codes"] += outcome.wrong_code
            counts["writes outside"] += bool(outcome.outside_writes)
            counts["NaN records"] += bool(outcome.nan_files)
            counts["unnamed messages"] += outcome.unnamed
            counts["silent drops"] += bool(outcome.drops)
            counts["leftovers"] += bool(outcome.leftovers)
            counts["other"] += bool(outcome.other)
            if outcome.problems:
                failing.append(outcome)
                if verbose:
                    first = outcome.problems[0].splitlines()
                    detail = first[-1] if first[0].startswith("traceback") else first[0]
                    print(f"- {outcome.name} (exit {outcome.code}): {detail[:300]}", flush=True)
    print(f"{len(cases)} cases in {time.perf_counter() - start:.0f} s; failing: {len(failing)}")
    for key in (
        "tracebacks",
        "hangs",
        "wrong exit codes",
        "writes outside",
        "NaN records",
        "unnamed messages",
        "silent drops",
        "leftovers",
        "other",
    ):
        print(f"  {key}: {counts[key]}")
    return 1 if failing else 0


if __name__ == "__main__":
    BASE.clear()
    sys.exit(main(sys.argv[1:]))
