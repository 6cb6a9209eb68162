"""Run one bad-input case through the `reca-eval` command in-process and judge what it did.

A case is judged on six counts: a Python traceback (any exception other than a clean exit), an exit code
outside the ones documented for it, a write outside the folders it was told to write, a non-standard
number (NaN, Infinity) in a JSON file it wrote, an error message that names none of the file, line or key
the case is about, and a silent drop (an image in a scored folder that is neither scored nor a skip).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reca_eval.cli import app

HANG_SECONDS = 10
STRUCTURAL = {"metadata.jsonl", "grid.png"}


@dataclass
class Call:
    """One invocation: argv (relative paths resolve in the case's work folder) and what is acceptable."""

    argv: list[str]
    codes: tuple[int, ...]  # documented exit codes for this input
    names: tuple[str, ...] = ()  # what the message must name (a file, a line, a key), any one of them
    writes: tuple[str, ...] = ()  # folders (relative to the work folder) the command may write under
    env: dict[str, str] = field(default_factory=dict)
    patch: Callable[[pytest.MonkeyPatch], None] | None = None
    scored: str | None = None  # an image folder the command scores: checked for silent drops
    after: Callable[[Path], list[str]] | None = None  # extra checks on the work folder: problems found
    shows: tuple[str, ...] = ()  # what the output must show whatever the exit code (a warning's file)
    hides: tuple[str, ...] = ()  # what it must never show (a raw escape code)


@dataclass
class Case:
    name: str
    make: Callable[[Path], Call]  # builds the inputs under the work folder, returns the call


@dataclass
class Outcome:
    name: str
    code: int | None
    output: str
    traceback: str = ""
    hang: bool = False
    wrong_code: bool = False
    outside_writes: list[str] = field(default_factory=list)
    nan_files: list[str] = field(default_factory=list)
    unnamed: bool = False
    drops: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        found = []
        if self.traceback:
            found.append(f"traceback:\n{self.traceback}")
        if self.hang:
            found.append("hang")
        if self.wrong_code:
            found.append(f"exit code {self.code}")
        if self.outside_writes:
            found.append(f"writes outside: {self.outside_writes}")
        if self.nan_files:
            found.append(f"non-standard JSON numbers in {self.nan_files}")
        if self.unnamed:
            found.append("message names no file, line or key")
        if self.drops:
            found.append(f"silent drops: {self.drops}")
        if self.leftovers:
            found.append(f"leftovers: {self.leftovers}")
        found += self.other
        return found


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (links not followed) with what would show a write."""
    seen: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            kind = stat.S_IFMT(st.st_mode)
            if stat.S_ISDIR(
                st.st_mode
            ):  # a folder counts as written when created, not when its listing changes
                seen[os.fsdecode(path)] = (kind, 0, 0)
            else:
                seen[os.fsdecode(path)] = (kind, st.st_size, st.st_mtime_ns)
    return seen


def _strict_json(text: str) -> None:
    def refuse(token: str):
        raise ValueError(token)

    for line in text.splitlines() if text.lstrip().startswith("{") and "\n{" in text else [text]:
        if line.strip():
            json.loads(line, parse_constant=refuse)


def nan_files(paths: list[str]) -> list[str]:
    bad = []
    for path in paths:
        if not path.endswith((".json", ".jsonl")) or not os.path.isfile(path):
            continue
        try:
            _strict_json(Path(path).read_text(encoding="utf-8"))
        except ValueError as exc:
            if str(exc) in ("NaN", "Infinity", "-Infinity"):
                bad.append(path)
        except OSError:
            continue
    return bad


def leaf_entries(folder: Path) -> list[str]:
    leaves = []
    for dirpath, dirnames, filenames in os.walk(os.fsencode(folder)):
        for name in filenames:
            if os.fsdecode(name) not in STRUCTURAL:
                leaves.append(os.fsdecode(os.path.join(dirpath, name)))
        for name in list(dirnames):
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                leaves.append(os.fsdecode(path))
    return leaves


def check_drops(work: Path, image_dir: Path) -> list[str]:
    """Every file in a scored folder is either scored or a skip: count the records' figures against it."""
    runs = (
        [p for p in (work / "results" / "runs").glob("*/record.json")] if (work / "results").is_dir() else []
    )
    problems = []
    for record_path in runs:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        skipped = {os.path.normpath(os.path.join(work, s["path"])) for s in record.get("skips", [])}
        # A file is accounted for when it, or a folder holding it, is a skip.
        unaccounted = [
            p
            for p in leaf_entries(image_dir)
            if p not in skipped and not any(p.startswith(s + os.sep) for s in skipped)
        ]
        if len(unaccounted) > record.get("images_scored", 0):
            problems.append(
                f"{record_path}: {len(unaccounted)} file(s) neither skipped nor among "
                f"{record.get('images_scored')} scored"
            )
        if any(not s.get("reason") for s in record.get("skips", [])):
            problems.append(f"{record_path}: a skip without a reason")
    return problems


def _alarm(signum, frame):
    raise TimeoutError("case hung")


def run_case(case: Case, root: Path, monkeypatch: pytest.MonkeyPatch) -> Outcome:
    """Build the case under ``root/work`` and run it; ``root`` as a whole is watched for writes."""
    work = root / "a" / "b" / "work"
    work.mkdir(parents=True)
    call = case.make(work)
    monkeypatch.chdir(work)
    for key, value in call.env.items():
        monkeypatch.setenv(key, value)
    if call.patch is not None:
        call.patch(monkeypatch)
    before = snapshot(root)
    runner = CliRunner(env={"COLUMNS": "200", **call.env})
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HANG_SECONDS)
    try:
        result = runner.invoke(app, call.argv, catch_exceptions=True)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        monkeypatch.undo()
    outcome = Outcome(name=case.name, code=result.exit_code, output=result.output)
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        if isinstance(exc, TimeoutError) and str(exc) == "case hung":
            outcome.hang = True
        else:
            outcome.traceback = "".join(traceback.format_exception(exc))[-3000:]
    if "Traceback (most recent call last)" in result.output:
        outcome.traceback = outcome.traceback or result.output[-3000:]
    outcome.wrong_code = not outcome.hang and not outcome.traceback and result.exit_code not in call.codes
    after = snapshot(root)
    allowed = [str(work / w) for w in call.writes]
    changed = [p for p, v in after.items() if before.get(p) != v]
    outcome.outside_writes = [
        p for p in changed if not any(p == a or p.startswith(a + os.sep) for a in allowed)
    ]
    outcome.nan_files = nan_files(changed)
    if result.exit_code not in (0, 3) and call.names:
        outcome.unnamed = not any(n in result.output for n in call.names)
    missing = [x for x in call.shows if x not in result.output]
    if missing:
        outcome.other.append(f"output does not show {missing}")
    shown = [x for x in call.hides if x in result.output]
    if shown:
        outcome.other.append(f"output shows {shown}")
    if call.scored is not None:
        outcome.drops = check_drops(work, work / call.scored)
    outcome.leftovers = [p for p in changed if _is_leftover(p, after)]
    if call.after is not None:
        outcome.other += call.after(work)
    return outcome


def _is_leftover(path: str, after: dict[str, tuple]) -> bool:
    """A temp file of an atomic write, or a run folder without its record, still there when it ended."""
    name = os.path.basename(path)
    if name.startswith(".") and ("." in name[1:]) and path in after:
        return True
    parent = os.path.dirname(path)
    if os.path.basename(parent) == "runs" and stat.S_ISDIR(after[path][0]):
        return not os.path.exists(os.path.join(path, "record.json"))
    return False
