"""Result records: what one scoring run measured, with enough provenance to know when two numbers compare.

A run produces two things, written side by side in ``results/runs/<run_id>/``:

- ``record.json``: one :class:`RunRecord` (scores per category and overall, counts, skips, seeds,
  scorer versions, spec version, item-file and image hashes, git commit, time);
- ``per_image.jsonl``: one row per scored image (or per question for DPG-style benchmarks): the
  columns every benchmark writes are ``item_id`` (the prompt: the cluster for the bootstrap),
  ``sample`` (image index within the prompt), ``category`` and ``score``; protocols add their own
  (``reason``, ``proposition_id``, ...).

Records are strict JSON: a score that is not a number (a category with no scored image) is ``null``
in the file and NaN in memory, never the non-standard ``NaN`` token. A record carries the sha256 of its
per-image file and a digest of its own figures, so a hand-edited score or per-image row is noticed.

Everything is written atomically: a new run folder is written under a hidden name and renamed into
place, so a crash never leaves a run folder without its record, nor half a file.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import importlib.metadata
import json
import math
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
    per_image_sha256: str = ""  # sha256 of per_image.jsonl as written
    figures_sha256: str = ""  # digest of the measured fields (see figures_digest)

    def to_json(self) -> dict[str, Any]:
        return finite_json(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        """A record from its JSON object; a field of the wrong type raises ValueError naming the key."""
        if not isinstance(data, dict):
            raise ValueError(f"a result record is a JSON object, got {type(data).__name__}")
        data = dict(data)
        missing = [
            f.name for f in dataclasses.fields(cls) if f.name in _REQUIRED_FIELDS and f.name not in data
        ]
        if missing:
            raise ValueError(f"not a result record: missing key(s) {', '.join(missing)}")
        for key, kinds in _FIELD_TYPES.items():
            if key in data and (not isinstance(data[key], kinds) or isinstance(data[key], bool)):
                raise ValueError(f"key {key!r} must be {_kind_names(kinds)}, got {data[key]!r:.60}")
        scores = {}
        for category, value in data["scores"].items():
            if value is None:  # a category with nothing scored: NaN in memory, null in the file
                value = math.nan
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ValueError(f"key 'scores': {category!r} must be a number, got {value!r:.60}")
            scores[str(category)] = float(value)
        if "overall" not in scores or not math.isfinite(scores["overall"]):
            raise ValueError("key 'scores' lacks a finite 'overall'")
        data["scores"] = scores
        skips = data.get("skips", [])
        if not all(isinstance(s, dict) and isinstance(s.get("path"), str) for s in skips):
            raise ValueError("key 'skips' must be a list of {path, reason} objects")
        data["skips"] = [Skip(path=s["path"], reason=str(s.get("reason", ""))) for s in skips]
        if data["images_scored"] < 0 or data["images_skipped"] < 0:
            raise ValueError("keys 'images_scored' and 'images_skipped' must be >= 0")
        for key in ("label", "model"):  # what tables print: a hand-edited escape code is shown, not obeyed
            if key in data:
                data[key] = printable(data[key])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


_REQUIRED_FIELDS = (
    "benchmark",
    "spec_version",
    "items_sha256",
    "model",
    "scores",
    "images_scored",
    "images_skipped",
)
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "benchmark": str,
    "spec_version": str,
    "items_sha256": str,
    "model": str,
    "scores": dict,
    "images_scored": int,
    "images_skipped": int,
    "skips": list,
    "images_sha256": str,
    "seeds": list,
    "scorer": dict,
    "options": dict,
    "generation": dict,
    "label": str,
    "run_id": str,
    "git_commit": str,
    "created": str,
    "reca_eval_version": str,
    "per_image_sha256": str,
    "figures_sha256": str,
}


def _kind_names(kinds: type | tuple[type, ...]) -> str:
    names = {"str": "a string", "int": "an integer", "dict": "an object", "list": "a list"}
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    return " or ".join(names.get(k.__name__, k.__name__) for k in kinds)


def printable(text: str) -> str:
    """``text`` safe to store and print: bytes of a file name that are not UTF-8 (a Latin-1 folder
    name) and control characters (terminal escape codes, tabs, newlines) written as backslash escapes."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def finite_json(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf) replaced by None: JSON that every parser reads."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value


def strict_json_loads(text: str) -> Any:
    """json.loads that refuses the non-standard NaN / Infinity tokens Python's json would accept."""

    def refuse(token: str) -> Any:
        raise ValueError(f"non-standard JSON number {token}")

    return json.loads(text, parse_constant=refuse)


def figures_digest(record: RunRecord) -> str:
    """sha256 over what a record measured (benchmark, versions, items, scores, counts, per-image file):
    any hand edit of these shows as a mismatch with the stored ``figures_sha256``."""
    figures = {
        "benchmark": record.benchmark,
        "spec_version": record.spec_version,
        "items_sha256": record.items_sha256,
        "scores": finite_json(dict(record.scores)),
        "images_scored": record.images_scored,
        "images_skipped": record.images_skipped,
        "per_image_sha256": record.per_image_sha256,
    }
    return hashlib.sha256(json.dumps(figures, sort_keys=True).encode()).hexdigest()


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
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None:  # a failed write or fsync names no file: say which one
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def follow_umask(root: Path) -> None:
    """Give every folder and regular file under ``root`` the mode the umask gives new ones. Some writers
    ignore the umask (safetensors creates its files 0600), which leaves a checkpoint that teammates on
    a shared cluster cannot read. Symbolic links are left alone: their targets may lie outside ``root``."""
    mask = current_umask()
    for folder, dirs, files in os.walk(root):
        for name, mode in [*((d, 0o777) for d in dirs), *((f, 0o666) for f in files)]:
            path = Path(folder, name)
            if not path.is_symlink():
                os.chmod(path, mode & ~mask)


def atomic_write_dir(path: Path, write: Callable[[Path], None]) -> None:
    """Write a folder (a checkpoint) into a staging folder beside it, then swap it in whole: readers never
    see a half-written folder, and a crash leaves the previous one intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes it 0700
        write(staging)
        follow_umask(staging)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / path.name)
            try:
                os.replace(staging, path)
            except BaseException:
                os.replace(old / path.name, path)  # the previous folder back at its path
                shutil.rmtree(old, ignore_errors=True)
                raise
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


STAGING_PREFIX = ".staging-"
# A staging folder lives for the milliseconds two files take to write; one older than this was left
# by a killed process and is removed by the next run that writes beside it.
STALE_STAGING_SECONDS = 3600


def _remove_stale_staging(runs_dir: Path) -> None:
    import time

    try:
        entries = list(os.scandir(runs_dir))
    except OSError:
        return
    for entry in entries:
        try:
            old = time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_STAGING_SECONDS
        except OSError:
            continue
        if entry.name.startswith(STAGING_PREFIX) and entry.is_dir(follow_symlinks=False) and old:
            shutil.rmtree(entry.path, ignore_errors=True)


def write_run(run_dir: Path, record: RunRecord, rows: pd.DataFrame) -> Path:
    """Write ``per_image.jsonl`` and ``record.json`` (with the per-image file's sha256 and the figures'
    digest). A new run folder is written under a hidden staging name and renamed into place, so it
    appears complete or not at all; into an existing folder (a `run --ckpt` folder holding its images)
    the per-image file goes first and the record last, so the record's presence means complete."""
    check_rows(rows)
    run_dir = Path(run_dir)
    per_image = rows.to_json(orient="records", lines=True)
    record.per_image_sha256 = hashlib.sha256(per_image.encode("utf-8")).hexdigest()
    record.figures_sha256 = figures_digest(record)
    record_text = json.dumps(record.to_json(), indent=2, sort_keys=False, allow_nan=False) + "\n"
    if run_dir.is_dir():
        for leftover in run_dir.glob(f".{PER_IMAGE_FILE}.*"):  # a killed earlier attempt's temp file
            leftover.unlink(missing_ok=True)
        atomic_write_text(run_dir / PER_IMAGE_FILE, per_image)
        atomic_write_text(run_dir / RECORD_FILE, record_text)
        return run_dir / RECORD_FILE
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(run_dir.parent)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{run_dir.name}.", dir=run_dir.parent))
    try:
        os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes it 0700
        atomic_write_text(staging / PER_IMAGE_FILE, per_image)
        atomic_write_text(staging / RECORD_FILE, record_text)
        os.rename(staging, run_dir)  # fails, rather than merges, if the folder appeared meanwhile
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return run_dir / RECORD_FILE


def parse_record(record_path: Path) -> RunRecord:
    """Read and check one ``record.json``; anything wrong raises ValueError saying what (the caller
    names the file). Only a regular file is opened (a named pipe would block)."""
    record_path = Path(record_path)
    if not record_path.is_file():
        raise ValueError("not a regular file")
    try:
        data = strict_json_loads(record_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"unreadable JSON ({exc})") from exc
    record = RunRecord.from_json(data)
    if record.figures_sha256 and record.figures_sha256 != figures_digest(record):
        raise ValueError(
            "its scores or counts differ from the digest written with them (edited after the run?); "
            "score the images again to get a record"
        )
    return record


def check_per_image(record: RunRecord, rows_path: Path) -> None:
    """Refuse a per-image file that is not the one the record was written with."""
    if not rows_path.is_file():
        raise FileNotFoundError(f"per-image results {rows_path} missing beside its record")
    if record.per_image_sha256 and sha256_file(rows_path) != record.per_image_sha256:
        raise ValueError(
            f"{rows_path}: differs from the per_image_sha256 its record.json was written with "
            "(edited after the run?); score the images again to get a record"
        )


def read_run(path: Path) -> tuple[RunRecord, pd.DataFrame]:
    """Read a run from its folder or its ``record.json``; the per-image rows come from beside it.
    Errors name the file: a record that is not strict JSON or a record, or figures and per-image rows
    that differ from the digests written with them."""
    path = Path(path)
    record_path = path / RECORD_FILE if path.is_dir() else path
    if not record_path.exists():
        raise FileNotFoundError(f"no result record at {record_path}")
    try:
        record = parse_record(record_path)
    except ValueError as exc:
        raise ValueError(f"{record_path}: not a usable reca-eval result record ({exc})") from exc
    rows_path = record_path.parent / PER_IMAGE_FILE
    if not rows_path.exists():
        raise FileNotFoundError(f"{record_path}: per-image results {rows_path.name} missing beside it")
    check_per_image(record, rows_path)
    try:
        rows = pd.read_json(rows_path, orient="records", lines=True, dtype={"item_id": str})
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{rows_path}: not per-image JSON lines ({exc})") from exc
    try:
        check_rows(rows)
    except ValueError as exc:
        raise ValueError(f"{rows_path}: {exc}") from exc
    return record, rows


def package_versions(names: tuple[str, ...]) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions
