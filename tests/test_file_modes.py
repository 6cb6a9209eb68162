"""Issue 13, defect 7: records, per-image files, images and checkpoints follow the umask (they were
written 0600 / 0700 by mkstemp / mkdtemp, unreadable by teammates on a shared cluster)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pandas as pd
import pytest

from reca_eval.core.records import (
    RunRecord,
    atomic_write_bytes,
    atomic_write_dir,
    atomic_write_text,
    current_umask,
    write_run,
)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_respect_the_umask(tmp_path, umask_022):
    assert current_umask() == 0o022
    atomic_write_text(tmp_path / "a.txt", "x")
    atomic_write_bytes(tmp_path / "b.png", b"x", durable=False)
    atomic_write_dir(tmp_path / "ckpt", lambda d: (d / "config.json").write_text("{}"))
    assert mode(tmp_path / "a.txt") == 0o644
    assert mode(tmp_path / "b.png") == 0o644
    assert mode(tmp_path / "ckpt") == 0o755
    assert mode(tmp_path / "ckpt" / "config.json") == 0o644
    record = RunRecord(
        benchmark="geneval",
        spec_version="1.0",
        items_sha256="a" * 64,
        model="m",
        scores={"overall": 1.0},
        images_scored=1,
        images_skipped=0,
    )
    write_run(
        tmp_path / "run",
        record,
        pd.DataFrame({"item_id": ["0"], "sample": [0], "category": ["c"], "score": [1.0]}),
    )
    for path in (tmp_path / "run").iterdir():
        assert mode(path) == 0o644, path


def test_a_private_umask_is_kept(tmp_path):
    old = os.umask(0o077)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert mode(tmp_path / "a.txt") == 0o600
