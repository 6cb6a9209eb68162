"""Result records: what one scoring run measured, with enough provenance to know when two numbers compare.

A run produces two things, written side by side in ``results/runs/<run_id>/``:

- ``record.json``: one :class:`RunRecord` (scores per category and overall, counts, skips, seeds,
  scorer versions, spec version, item-file and image hashes, git commit, time);
- ``per_image.jsonl``: one row per scored image (or per question for DPG-style benchmarks): the
  columns every benchmark writes are ``item_id`` (the prompt: the cluster for the bootstrap),
  ``sample`` (image index within the prompt), ``category`` and ``score``; protocols add their own
  (``reason``, ``proposition_id``, ...).

Everything is written atomically (temp file + rename), so a crash never leaves half a record.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

PER_IMAGE_FILE = "per_image.jsonl"
RECORD_FILE = "record.json"
REQUIRED_ROW_COLUMNS = ("item_id", "sample", "category", "score")


@dataclass
class Skip:
    """An image that was not scored, and why (corrupt file, missing sample, wrong size, ...)."""

    path: str
    reason: str


@dataclass
class RunRecord:
    benchmark: str
    spec_version: str
    items_sha256: str
    model: str  # checkpoint path/id, or the image directory's id when scoring --images
    scores: dict[str, float]  # category -> score; always has "overall"
    images_scored: int
    images_skipped: int
    skips: list[Skip] = field(default_factory=list)
    images_sha256: str = ""
    seeds: list[int] = field(default_factory=list)
    scorer: dict[str, Any] = field(default_factory=dict)  # backend name + package versions
    options: dict[str, Any] = field(default_factory=dict)  # protocol mode etc.
    # How the images were generated (`run --ckpt`): checkpoint id and Hub revision, family, device,
    # dtype, batch size, base seed, images per prompt, item limit and the sampling settings used.
    generation: dict[str, Any] = field(default_factory=dict)
    label: str = ""  # human name for tables (e.g. "SFT", "SFT+RecA")
    run_id: str = ""
    git_commit: str = ""
    created: str = ""
    reca_eval_version: str = ""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        data = dict(data)
        data["skips"] = [Skip(**s) for s in data.get("skips", [])]
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask is a set-and-get, and
    another thread could create a file while it is set to something else)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` via a temp file in the same folder, fsync and an atomic rename."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """Temp file + atomic rename. ``durable=False`` skips the fsync: still never a half-written file
    after a crash of this process, but thousands of generated images are not each forced to disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # mkstemp creates the file 0600; a result on a shared cluster is readable as the umask says.
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_dir(path: Path, write: Callable[[Path], None]) -> None:
    """Write a folder (a checkpoint) into a staging folder beside it, then swap it in whole: readers never
    see a half-written folder, and a crash leaves the previous one intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes it 0700
        write(staging)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(staging, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_of_files(paths: Iterable[Path], root: Path) -> str:
    """One hash over many files: their paths relative to ``root`` and their contents, in sorted order."""
    h = hashlib.sha256()
    for p in sorted(Path(p) for p in paths):
        h.update(str(p.relative_to(root)).encode())
        h.update(b"\0")
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def git_commit(cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def check_rows(rows: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_ROW_COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"per-image rows lack column(s) {missing}")


def write_run(run_dir: Path, record: RunRecord, rows: pd.DataFrame) -> Path:
    """Write ``per_image.jsonl`` then ``record.json`` (the record last, so its presence means complete)."""
    check_rows(rows)
    run_dir = Path(run_dir)
    atomic_write_text(run_dir / PER_IMAGE_FILE, rows.to_json(orient="records", lines=True))
    atomic_write_text(run_dir / RECORD_FILE, json.dumps(record.to_json(), indent=2, sort_keys=False) + "\n")
    return run_dir / RECORD_FILE


def read_run(path: Path) -> tuple[RunRecord, pd.DataFrame]:
    """Read a run from its folder or its ``record.json``; the per-image rows come from beside it."""
    path = Path(path)
    record_path = path / RECORD_FILE if path.is_dir() else path
    if not record_path.exists():
        raise FileNotFoundError(f"no result record at {record_path}")
    try:
        record = RunRecord.from_json(json.loads(record_path.read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"{record_path}: not a reca-eval result record ({exc})") from exc
    rows_path = record_path.parent / PER_IMAGE_FILE
    if not rows_path.exists():
        raise FileNotFoundError(f"{record_path}: per-image results {rows_path.name} missing beside it")
    rows = pd.read_json(rows_path, orient="records", lines=True, dtype={"item_id": str})
    return record, rows


def package_versions(names: tuple[str, ...]) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions
