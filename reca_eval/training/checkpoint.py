"""Training checkpoints: atomic (written to a temp folder, then renamed), the last k kept, and complete
enough to resume on exactly the same trajectory.

A checkpoint folder ``step-00000040/`` holds accelerate's state (model, optimizer, registered objects
such as the LR scheduler, and every process's python/numpy/torch RNG states; sharded correctly under
FSDP/DeepSpeed) plus ``trainer_state.json`` (step, data positions, skip counts, loss history). The
folder only ever appears under its final name once complete, so a run killed mid-save leaves the
previous checkpoint as the latest one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from reca_eval.core.records import atomic_write_text


class _TiedWeightsNotice(logging.Filter):
    """Drops accelerate's "Removed shared tensor ... while saving" notice: a model with tied embeddings (the
    Harmon LLM's lm_head is its input embedding) stores the shared tensor once, and loading re-ties it, so
    a resumed run continues from it (tests/test_harmon_family.py); the notice printed once per checkpoint,
    ten times in the main command."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Removed shared tensor" not in str(record.getMessage())


logging.getLogger("accelerate.utils.other").addFilter(_TiedWeightsNotice())

STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_path(root: Path, step: int) -> Path:
    return Path(root) / f"step-{step:08d}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root`` as (step, path), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / STATE_FILE).exists():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def save_checkpoint(
    accelerator: Accelerator, root: Path, step: int, trainer_state: dict[str, Any], keep_last: int
) -> Path:
    """Every process calls this (accelerate writes per-process RNG states and shards); returns the folder."""
    root = Path(root)
    final = checkpoint_path(root, step)
    tmp = root / f".tmp-{final.name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a run killed mid-save
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            atomic_write_text(tmp / STATE_FILE, json.dumps(trainer_state, indent=1) + "\n")
    except OSError as exc:
        # A full disk mid-save: the partial folder goes, the previous checkpoint stays the latest.
        shutil.rmtree(tmp, ignore_errors=True)
        raise OSError(
            exc.errno,
            f"checkpoint of step {step} not saved ({exc.strerror}); the previous one is kept",
            str(tmp),
        ) from exc
    if accelerator.is_main_process:
        if final.exists():  # the same step saved by an earlier, interrupted run: replace it
            stale = root / f".stale-{final.name}"
            shutil.rmtree(stale, ignore_errors=True)
            os.replace(final, stale)
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(tmp, final)
        _fsync_dir(root)
        prune_checkpoints(root, keep_last)
    accelerator.wait_for_everyone()
    return final


def prune_checkpoints(root: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` complete checkpoints, and leftover temp folders."""
    for _, path in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)
    for child in Path(root).glob(".tmp-step-*"):
        shutil.rmtree(child, ignore_errors=True)


def load_checkpoint(accelerator: Accelerator, path: Path) -> dict[str, Any]:
    """Restore model, optimizer, registered objects and RNG states; return the trainer state."""
    path = Path(path)
    state_file = path / STATE_FILE
    if not state_file.exists():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {STATE_FILE})")
    accelerator.load_state(str(path))
    return json.loads(state_file.read_text())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
