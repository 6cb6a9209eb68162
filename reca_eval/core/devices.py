"""Where a neural scorer runs: one rule for all of them (GenEval's detector and CLIP, DPG's local VQA
model, the local judge of the editing benchmarks).

``-o device=auto`` (the default) is CUDA when torch sees a GPU, else the CPU, with a warning that
states what the CPU will cost: the images (or model calls) to score times a per-item CPU estimate.
A device named explicitly (``cpu``, ``cuda``, ``cuda:1``, ``mps``) is used as given; ``cuda``
without a GPU is an error rather than a silent CPU run.
"""

from __future__ import annotations

import os
import warnings

AUTO = "auto"
# A local 3-7B vision-language model answering one question about a 512 px image on a CPU: about a
# thousand image tokens of prefill and a few answer tokens, tens of seconds on a few cores. An order
# of magnitude for the CPU warning, not a measurement (no such weights on the machines that test this).
LOCAL_VLM_CPU_SECONDS_PER_CALL = 30.0


def duration(seconds: float) -> str:
    """12 s, 4.5 min, 17.2 h: the unit a reader plans with."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def scoring_device(
    requested: str | None, *, what: str, count: int, cpu_seconds_each: float, unit: str = "image"
) -> str:
    """The device a scorer loads on: ``requested`` unless it is ``auto``/unset, then CUDA when
    available, else the CPU with a warning of the expected time (``count`` x ``cpu_seconds_each``)."""
    import torch

    if requested in (None, "", AUTO):
        if torch.cuda.is_available():
            return "cuda"
        warnings.warn(
            f"{what}: no CUDA device, scoring on the CPU: {count} {unit}(s) x about {cpu_seconds_each:.1f} s "
            f"= about {duration(count * cpu_seconds_each)} on {cpu_cores()} core(s); on a GPU machine it "
            "picks CUDA (or pass -o device=cuda)",
            stacklevel=2,
        )
        return "cpu"
    device = str(requested)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"{what}: -o device={device}, but torch sees no CUDA device here (use -o device=auto or cpu)"
        )
    return device
