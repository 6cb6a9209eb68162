"""The order in which GenEval ranks one class's detections, equal scores included.

The official script ranks a class's detections with ``np.argsort(scores)[::-1]``: numpy's default
``kind="quicksort"`` on the detector's float32 scores, reversed. GenEval pins numpy 1.23 (1.23.1 in
its ``environment.yml``), whose ``argsort`` for float32 is a plain introsort with no SIMD dispatch
(``numpy/core/src/npysort/quicksort.cpp``, ``aquicksort_``; ``heapsort.cpp``, ``aheapsort_``):

- an array of at most 16 elements (``SMALL_QUICKSORT = 15``: ``pr - pl <= 15``) is insertion-sorted,
  which is *stable*; reversed, equal scores therefore come latest-first: score descending, and among
  equal scores the detection the detector listed later comes first;
- a longer array is partitioned around a median-of-three pivot first, and the order of equal scores
  then depends on every score of the class (below-threshold detections included, since the official
  sorts before it thresholds); past a depth of 2 x floor(log2 n) partitions a segment is heap-sorted.

:func:`numpy123_argsort` transcribes that algorithm, so the order is numpy 1.23's for any length,
whatever numpy is installed here (numpy >= 1.25 dispatches ``argsort`` to x86-simd-sort on AVX-512
and, from 2.x, AVX2 machines, whose order of equal keys differs: a newer numpy under the official
script would not reproduce its own published numbers). ``tests/test_geneval_parity.py`` checks the
transcription against numpy 1.23.1's own output (``tests/data/numpy123_argsort_cases.json.gz``).
Past 16 detections the official order also depends on the order the detector lists them in, which
mmdet's unsorted ``topk`` leaves to the GPU; see docs/parity.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SMALL_QUICKSORT = 15  # numpy 1.23 quicksort.cpp: segments with pr - pl <= 15 are insertion-sorted


def _less(a: float, b: float) -> bool:
    """numpy's float ``Tag::less``: NaN sorts after every number."""
    return a < b or (b != b and a == a)


def _insertion_sort(v: Sequence[float], order: list[int], lo: int, hi: int) -> None:
    for i in range(lo + 1, hi + 1):
        moving = order[i]
        key = v[moving]
        j = i
        while j > lo and _less(key, v[order[j - 1]]):
            order[j] = order[j - 1]
            j -= 1
        order[j] = moving


def _sift_down(v: Sequence[float], order: list[int], base: int, i: int, n: int, moving: int) -> None:
    # Heap positions are 1-based, as in numpy's heapsort: position k is order[base + k].
    j = 2 * i
    while j <= n:
        if j < n and _less(v[order[base + j]], v[order[base + j + 1]]):
            j += 1
        if not _less(v[moving], v[order[base + j]]):
            break
        order[base + i] = order[base + j]
        i = j
        j += j
    order[base + i] = moving


def _heap_sort(v: Sequence[float], order: list[int], lo: int, n: int) -> None:
    base = lo - 1
    for start in range(n >> 1, 0, -1):
        _sift_down(v, order, base, start, n, order[base + start])
    while n > 1:
        moving = order[base + n]
        order[base + n] = order[base + 1]
        n -= 1
        _sift_down(v, order, base, 1, n, moving)


def _partition(v: Sequence[float], order: list[int], lo: int, hi: int) -> int:
    """One median-of-three partition step of numpy 1.23's ``aquicksort_``; returns the pivot's place."""
    mid = lo + ((hi - lo) >> 1)
    if _less(v[order[mid]], v[order[lo]]):
        order[mid], order[lo] = order[lo], order[mid]
    if _less(v[order[hi]], v[order[mid]]):
        order[hi], order[mid] = order[mid], order[hi]
    if _less(v[order[mid]], v[order[lo]]):
        order[mid], order[lo] = order[lo], order[mid]
    pivot = v[order[mid]]
    i, j = lo, hi - 1
    order[mid], order[j] = order[j], order[mid]
    while True:
        i += 1
        while _less(v[order[i]], pivot):
            i += 1
        j -= 1
        while _less(pivot, v[order[j]]):
            j -= 1
        if i >= j:
            break
        order[i], order[j] = order[j], order[i]
    order[i], order[hi - 1] = order[hi - 1], order[i]
    return i


def numpy123_argsort(values: Sequence[float]) -> list[int]:
    """``np.argsort(values)`` (default kind) exactly as numpy 1.23 returns it for float32 ``values``.

    ``values`` must already be float32 numbers (Python floats holding float32 values compare exactly
    as float32 does); rounding to float32 is the caller's job (:func:`official_order` does it).
    """
    v = list(values)
    n = len(v)
    order = list(range(n))
    if n <= SMALL_QUICKSORT + 1:
        # Insertion sort is stable: the same as a stable sort with NaN last.
        return sorted(order, key=lambda i: (v[i] != v[i], v[i]))
    lo, hi = 0, n - 1
    depth = (n.bit_length() - 1) * 2  # npy_get_msb(n) * 2
    pending: list[tuple[int, int, int]] = []
    while True:
        if depth < 0:
            _heap_sort(v, order, lo, hi - lo + 1)
        else:
            # As in numpy, the depth limit is only looked at when a segment is taken up, not while
            # the current one is being partitioned.
            while hi - lo > SMALL_QUICKSORT:
                p = _partition(v, order, lo, hi)
                depth -= 1
                if p - lo < hi - p:  # continue with the smaller side, keep the larger for later
                    pending.append((p + 1, hi, depth))
                    hi = p - 1
                else:
                    pending.append((lo, p - 1, depth))
                    lo = p + 1
            _insertion_sort(v, order, lo, hi)
        if not pending:
            return order
        lo, hi, depth = pending.pop()


def official_order(scores: Sequence[float]) -> list[int]:
    """Indices of ``scores`` most confident first, as GenEval's ``np.argsort(scores)[::-1]`` ranks them.

    Scores are rounded to float32 first (the detector's arrays are float32, so two scores equal in
    float32 tie there). Among equal scores the later index comes first (for up to 16 scores; past 16
    see the module docstring).
    """
    as_float32 = np.asarray(scores, dtype=np.float32).tolist() if len(scores) else []
    return numpy123_argsort(as_float32)[::-1]
