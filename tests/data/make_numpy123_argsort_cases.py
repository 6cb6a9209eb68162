"""Regenerate numpy123_argsort_cases.json.gz: numpy 1.23.1's own ``np.argsort`` on tie-heavy arrays.

Run with a Python whose numpy is 1.23.1 (GenEval's pinned version), from the repository root::

    python3.9 -m venv /tmp/np123 && /tmp/np123/bin/pip install numpy==1.23.1
    /tmp/np123/bin/python tests/data/make_numpy123_argsort_cases.py

Cases: random float32 arrays of 1..120 elements drawn from few distinct values (many ties), some
with NaN, and adversarial arrays (McIlroy's "killer adversary for quicksort", driven through our
transcription) that push numpy's introsort past its depth limit into heapsort. The test compares
reca_eval's transcription with these outputs; it needs no numpy 1.23 itself.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).with_name("numpy123_argsort_cases.json.gz")

assert np.__version__ == "1.23.1", f"needs numpy 1.23.1, this is {np.__version__}"

spec = importlib.util.spec_from_file_location(
    "tie_order", ROOT / "reca_eval" / "benchmarks" / "geneval" / "tie_order.py"
)
tie_order = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tie_order)


def adversarial(n: int) -> list[float]:
    """McIlroy's adversary: values fixed lazily so that every partition is as bad as possible."""
    gas = float(n)
    val = [gas] * n
    state = {"solid": 0, "candidate": 0}

    def freeze(i: int) -> None:
        val[i] = float(state["solid"])
        state["solid"] += 1

    class Key:
        def __init__(self, i: int):
            self.i = i

        def __lt__(self, other: Key) -> bool:
            x, y = self.i, other.i
            if val[x] == gas and val[y] == gas:
                freeze(x if x == state["candidate"] else y)
            if val[x] == gas:
                state["candidate"] = x
            elif val[y] == gas:
                state["candidate"] = y
            return val[x] < val[y]

        def __ne__(self, other: object) -> bool:  # never NaN
            return self is not other

        def __eq__(self, other: object) -> bool:
            return self is other

    tie_order.numpy123_argsort([Key(i) for i in range(n)])
    return val


def main() -> None:
    rng = random.Random(20240615)
    arrays: list[list[float]] = []
    for _ in range(1200):
        n = rng.choice([rng.randint(1, 20), rng.randint(1, 40), rng.randint(17, 120)])
        levels = rng.randint(1, max(1, n // rng.choice([1, 2, 4, 8])))
        arrays.append([float(rng.randint(0, levels - 1)) / 8 for _ in range(n)])
    for _ in range(100):
        n = rng.randint(17, 60)
        a = [float(rng.randint(0, 4)) for _ in range(n)]
        for i in rng.sample(range(n), rng.randint(1, 3)):
            a[i] = float("nan")
        arrays.append(a)
    heapsorted = 0
    calls = []
    real_heap_sort = tie_order._heap_sort
    tie_order._heap_sort = lambda *args: (calls.append(1), real_heap_sort(*args))
    for n in range(17, 121):
        a = adversarial(n)
        calls.clear()
        tie_order.numpy123_argsort(a)
        heapsorted += bool(calls)
        arrays.append(a)
    cases = []
    for a in arrays:
        order = np.argsort(np.asarray(a, dtype=np.float32)).tolist()
        cases.append([["nan" if x != x else x for x in a], order])
    with gzip.open(OUT, "wt") as fh:
        json.dump({"numpy": np.__version__, "cases": cases}, fh, separators=(",", ":"))
    print(f"{len(cases)} cases ({heapsorted} adversarial reach heapsort) -> {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
