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


def _private_file(path: Path) -> None:
    # What safetensors' save_file does: create the file 0600, whatever the umask.
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))


def test_a_checkpoint_folder_follows_the_umask_whatever_its_writer_did(tmp_path, umask_022):
    outside_file, outside_dir = tmp_path / "outside.bin", tmp_path / "outside"
    _private_file(outside_file)
    outside_dir.mkdir(mode=0o700)

    def write(folder: Path) -> None:
        _private_file(folder / "model.safetensors")
        (folder / "vae").mkdir(mode=0o700)
        _private_file(folder / "vae" / "model.safetensors")
        (folder / "vae" / "link.safetensors").symlink_to("model.safetensors")
        (folder / "shared-file").symlink_to(outside_file)  # links to what the writer does not own
        (folder / "shared-dir").symlink_to(outside_dir)

    atomic_write_dir(tmp_path / "ckpt", write)
    assert mode(tmp_path / "ckpt" / "model.safetensors") == 0o644
    assert mode(tmp_path / "ckpt" / "vae") == 0o755
    assert mode(tmp_path / "ckpt" / "vae" / "model.safetensors") == 0o644
    assert (tmp_path / "ckpt" / "vae" / "link.safetensors").is_symlink()
    # what the links point at keeps its mode: nothing outside the folder is changed
    assert mode(outside_file) == 0o600 and mode(outside_dir) == 0o700

    old = os.umask(0o027)
    try:
        atomic_write_dir(tmp_path / "private", write)
    finally:
        os.umask(old)
    assert mode(tmp_path / "private" / "model.safetensors") == 0o640
    assert mode(tmp_path / "private" / "vae") == 0o750


def test_a_shipped_base_saved_again_is_readable_by_others(tmp_path, umask_022):
    pytest.importorskip("torch")
    from reca_eval.training.builders import tiny_janus

    tiny_janus(seed=0).save_pretrained(tmp_path / "tiny")
    assert {mode(p) for p in (tmp_path / "tiny").iterdir()} == {0o644}


def test_a_private_umask_is_kept(tmp_path):
    old = os.umask(0o077)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert mode(tmp_path / "a.txt") == 0o600
