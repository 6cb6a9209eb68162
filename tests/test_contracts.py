"""Contracts a user relies on, asserted against what is documented rather than against the code's own
constants: the exit codes, runs that measured different things being refused, and run records that a
failure mid-write never leaves half written."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from reca_eval import registry
from reca_eval.cli import app
from reca_eval.core.records import (
    RunRecord,
    Skip,
    atomic_write_dir,
    atomic_write_text,
    current_umask,
    figures_digest,
    git_commit,
    now_iso,
    package_versions,
    printable,
    read_run,
    sha256_file,
    sha256_of_files,
    strict_json_loads,
    write_run,
)
from reca_eval.results.leaderboard import check_regression, compare_runs, declared_tolerance, render_compare
from reca_eval.results.stats import paired_bootstrap
from tests.test_check_gate import drop_prompts
from tests.test_leaderboard import ITEMS, write
from tests.test_stats import make_rows, mean_of_category_means

runner = CliRunner(env={"COLUMNS": "200"})
README = Path(__file__).resolve().parents[1] / "README.md"

# The exit codes as the README and `reca-eval --help` document them.
DOCUMENTED = {
    0: "success",
    1: "regression",
    2: "bad input",
    3: "images skipped",
}


def test_the_readme_documents_the_exit_codes_the_tests_assert():
    text = README.read_text()
    paragraph = text[text.index("Exit codes:") :].split("\n\n")[0].replace("\n", " ")
    for code, meaning in DOCUMENTED.items():
        assert f"{code} {meaning}" in paragraph, paragraph


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, Path]:
    rows = make_rows(n_prompts=60, seed=3)
    return {
        "results": tmp_path,
        "base": write(tmp_path, "base", rows, label="base"),
        "same": write(tmp_path, "same", rows, label="same"),
        "drop": write(tmp_path, "drop", drop_prompts(rows, "counting", 4), label="drop"),
        "v2": write(tmp_path, "v2", rows, label="v2", spec_version="2.0"),
        "items": write(tmp_path, "items", rows, label="items", items_sha256="f" * 64),
        "other": write(tmp_path, "other", rows, label="other", benchmark="shapes-geneval"),
    }


def check(runs: dict[str, Path], run: str, *extra: str):
    return runner.invoke(
        app,
        ["check", "--baseline", str(runs["base"]), "--run", str(runs[run]), "--n-boot", "100", *extra],
    )


def test_check_exits_1_on_a_regression_and_0_without_one(runs):
    dropped = check(runs, "drop")
    assert dropped.exit_code == 1, dropped.output
    assert "REGRESSION geneval/counting" in dropped.output
    same = check(runs, "same")
    assert same.exit_code == 0, same.output
    assert "PASS" in same.output


@pytest.mark.parametrize(
    ("run", "named"),
    [("v2", "spec_version: '1.0' vs '2.0'"), ("items", "items_sha256"), ("other", "benchmark: 'geneval'")],
)
def test_runs_that_measured_different_things_are_refused(runs, run, named):
    with pytest.raises(ValueError, match="did not measure the same thing") as refused:
        compare_runs(runs["base"], runs[run], n_boot=10)
    assert named in str(refused.value)
    with pytest.raises(ValueError, match="did not measure the same thing"):
        check_regression(runs[run], runs["base"], n_boot=10)
    out = runner.invoke(app, ["compare", str(runs["base"]), str(runs[run]), "--n-boot", "10"])
    assert out.exit_code == 2, out.output
    assert out.output.startswith("error:") and "Traceback" not in out.output


def test_bad_input_exits_2_with_a_message(runs, tmp_path):
    missing = runner.invoke(app, ["compare", str(runs["base"]), str(tmp_path / "nowhere"), "--n-boot", "10"])
    assert missing.exit_code == 2 and "error:" in missing.output
    unknown = runner.invoke(app, ["validate", "no-such-benchmark"])
    assert unknown.exit_code == 2 and "unknown benchmark" in unknown.output


# ---------------------------------------------------------------------------------------------- records


def record(overall: float, run_id: str = "r") -> RunRecord:
    return RunRecord(
        benchmark="geneval",
        spec_version="1.0",
        items_sha256="0" * 64,
        model="/ckpt",
        scores={"overall": overall},
        images_scored=2,
        images_skipped=0,
        run_id=run_id,
    )


def rows(score: float) -> pd.DataFrame:
    return pd.DataFrame(
        [{"item_id": "0", "sample": s, "category": "counting", "score": score} for s in range(2)]
    )


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden temp files and folders included) with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class DiskFull(OSError):
    pass


def calls_in_a_write(monkeypatch, name: str, run_dir: Path) -> int:
    """How many times a rewrite of ``run_dir`` calls ``os.<name>``: every one of them is a place to fail."""
    real = getattr(os, name)
    calls = []

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, counting)
    write_run(run_dir, record(0.5), rows(0.5))
    monkeypatch.undo()
    return len(calls)


def fail_at(monkeypatch, name: str, at: int) -> dict[str, int]:
    """``os.<name>`` raising DiskFull on its call number ``at`` (0-based); earlier calls are real."""
    real = getattr(os, name)
    seen = {"n": 0}

    def fake(*args, **kwargs):
        seen["n"] += 1
        if seen["n"] > at:
            raise DiskFull(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, fake)
    return seen


def scores_in(path: Path) -> set[float]:
    return {json.loads(line)["score"] for line in path.read_text().splitlines()}


@pytest.mark.parametrize("name", ["replace", "fsync"])
def test_a_failure_mid_rewrite_leaves_the_old_record_intact_and_no_partial_file(tmp_path, monkeypatch, name):
    """os.replace or fsync failing at each of its calls during a rewrite of an existing run."""
    n_calls = calls_in_a_write(monkeypatch, name, tmp_path / "probe")
    assert n_calls >= 1, f"a run write that never calls os.{name} is not atomic and durable"
    for at in range(n_calls):
        root = tmp_path / f"fail-{at}"
        run_dir = root / "runs" / "r"
        write_run(run_dir, record(0.25), rows(0.25))
        before = tree(root)
        fail_at(monkeypatch, name, at)
        with pytest.raises(OSError, match="No space left on device"):
            write_run(run_dir, record(0.75), rows(0.75))
        monkeypatch.undo()
        after = tree(root)
        assert set(after) == set(before), f"call {at}: files {set(after) ^ set(before)}"
        assert after["runs/r/record.json"] == before["runs/r/record.json"], f"call {at}"
        assert json.loads(after["runs/r/record.json"])["scores"] == {"overall": 0.25}
        # the rows beside it are complete: the old ones, or (record not yet replaced) the new ones
        assert scores_in(run_dir / "per_image.jsonl") in ({0.25}, {0.75}), f"call {at}"


@pytest.mark.parametrize("name", ["replace", "fsync"])
def test_a_failure_on_a_new_run_leaves_no_record_and_no_partial_file(tmp_path, monkeypatch, name):
    n_calls = calls_in_a_write(monkeypatch, name, tmp_path / "probe")
    for at in range(n_calls):
        root = tmp_path / f"fail-{at}"
        fail_at(monkeypatch, name, at)
        with pytest.raises(OSError, match="No space left on device"):
            write_run(root / "runs" / "r", record(0.5), rows(0.5))
        monkeypatch.undo()
        files = tree(root) if root.exists() else {}
        assert "runs/r/record.json" not in files, f"call {at}"
        assert set(files) <= {"runs/r/per_image.jsonl"}, f"call {at}: {set(files)}"


def fail_the_per_image_file(monkeypatch) -> None:
    """The disk fails on the per-image file only: its fsync or its rename (whichever the writer reaches)."""
    real_fsync, real_replace = os.fsync, os.replace

    def names_rows(*paths) -> bool:
        return any("per_image" in os.fspath(p) for p in paths)

    def fsync(fd):
        if names_rows(os.readlink(f"/proc/self/fd/{fd}")):
            raise DiskFull(28, "No space left on device")
        return real_fsync(fd)

    def replace(src, dst, **kwargs):
        if names_rows(src, dst):
            raise DiskFull(28, "No space left on device")
        return real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names an fd's file through /proc")
def test_the_record_is_written_after_the_per_image_rows(tmp_path, monkeypatch):
    """A run whose per-image rows fail to be written has no record: a record means a complete run."""
    fail_the_per_image_file(monkeypatch)
    with pytest.raises(OSError, match="No space left on device"):
        write_run(tmp_path / "runs" / "r", record(0.5), rows(0.5))
    assert not list(tmp_path.rglob("record.json"))
    # ... and an existing run keeps its old record and rows.
    monkeypatch.undo()
    run_dir = tmp_path / "runs" / "old"
    write_run(run_dir, record(0.25), rows(0.25))
    before = tree(run_dir)
    fail_the_per_image_file(monkeypatch)
    with pytest.raises(OSError, match="No space left on device"):
        write_run(run_dir, record(0.75), rows(0.75))
    monkeypatch.undo()
    assert tree(run_dir) == before


def test_a_record_names_its_benchmark_version_and_scores_after_a_round_trip(tmp_path):
    run_dir = tmp_path / "runs" / "r"
    path = write_run(run_dir, record(0.5, run_id="abc"), rows(0.5))
    data = json.loads(path.read_text())
    assert (data["benchmark"], data["spec_version"], data["run_id"]) == ("geneval", "1.0", "abc")
    back, back_rows = read_run(run_dir)
    digests = {"per_image_sha256", "figures_sha256"}  # what the writer adds
    written = {k: v for k, v in back.to_json().items() if k not in digests}
    assert written == {k: v for k, v in record(0.5, run_id="abc").to_json().items() if k not in digests}
    pd.testing.assert_frame_equal(back_rows, rows(0.5), check_dtype=False)


def test_reading_a_run_names_what_is_missing_or_broken(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no result record at .*nowhere"):
        read_run(tmp_path / "nowhere")
    run_dir = tmp_path / "runs" / "r"
    write_run(run_dir, record(0.5), rows(0.5).assign(item_id=["00001", "00001"]))
    # a folder or its record.json; item ids stay strings ("00001", not 1)
    for path in (run_dir, run_dir / "record.json"):
        back, back_rows = read_run(path)
        assert back.scores == {"overall": 0.5} and list(back_rows["item_id"]) == ["00001", "00001"]
    (run_dir / "per_image.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match=r"record\.json: per-image results per_image\.jsonl missing"):
        read_run(run_dir)
    (run_dir / "record.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"record\.json: not a (usable )?reca-eval result record"):
        read_run(run_dir)
    (run_dir / "record.json").write_text('{"benchmark": "geneval"}')
    with pytest.raises(ValueError, match="not a (usable )?reca-eval result record"):
        read_run(run_dir)


def test_rows_without_the_required_columns_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match=r"per-image rows lack column\(s\) \['sample', 'score'\]"):
        write_run(tmp_path / "r", record(0.5), rows(0.5).drop(columns=["sample", "score"]))
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_a_record_keeps_unknown_keys_out_and_skips_as_skips():
    data = record(0.5).to_json() | {
        "from_a_newer_version": 1,
        "skips": [{"path": "a.png", "reason": "corrupt"}],
    }
    back = RunRecord.from_json(data)
    assert back.skips == [Skip(path="a.png", reason="corrupt")] and not hasattr(back, "from_a_newer_version")
    assert data["skips"] == [{"path": "a.png", "reason": "corrupt"}]  # the input is left as it was


def test_file_hashes_cover_content_and_relative_path_in_any_order(tmp_path):
    for root in (tmp_path / "a", tmp_path / "b"):
        (root / "x").mkdir(parents=True)
        (root / "x" / "1.png").write_bytes(b"one")
        (root / "2.png").write_bytes(b"two")
    files_a = [tmp_path / "a" / "x" / "1.png", tmp_path / "a" / "2.png"]
    files_b = [tmp_path / "b" / "2.png", tmp_path / "b" / "x" / "1.png"]
    digest = sha256_of_files(files_a, tmp_path / "a")
    assert digest == sha256_of_files(files_b, tmp_path / "b")  # root-relative, order-free
    assert sha256_file(files_a[0]) == hashlib.sha256(b"one").hexdigest()
    (tmp_path / "b" / "2.png").write_bytes(b"tw0")
    assert sha256_of_files(files_b, tmp_path / "b") != digest
    (tmp_path / "b" / "2.png").write_bytes(b"two")
    (tmp_path / "b" / "2.png").rename(tmp_path / "b" / "3.png")
    assert sha256_of_files([tmp_path / "b" / "3.png", files_b[1]], tmp_path / "b") != digest
    big = tmp_path / "big.bin"
    big.write_bytes(b"ab" * (1 << 20))  # read in chunks
    assert sha256_file(big) == hashlib.sha256(b"ab" * (1 << 20)).hexdigest()


def test_provenance_fields(tmp_path):
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", now_iso())
    commit = git_commit(Path(__file__).parent)
    assert commit == "" or re.fullmatch(r"[0-9a-f]{40}", commit)
    assert git_commit(tmp_path) == ""  # not a repository
    versions = package_versions(("pandas", "no-such-package-xyz"))
    assert versions == {"pandas": pd.__version__}


def test_the_umask_is_read_without_being_changed():
    old = os.umask(0o027)
    try:
        assert current_umask() == 0o027
        assert current_umask() == 0o027
    finally:
        os.umask(old)


def test_a_folder_write_that_fails_leaves_the_old_folder_and_no_staging(tmp_path):
    target = tmp_path / "ckpt"
    atomic_write_dir(target, lambda folder: (folder / "weights").write_text("old"))
    assert (target / "weights").read_text() == "old"

    def broken(folder: Path) -> None:
        (folder / "weights").write_text("half")
        raise DiskFull(28, "No space left on device")

    with pytest.raises(OSError, match="No space left on device"):
        atomic_write_dir(target, broken)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"] and (target / "weights").read_text() == "old"
    atomic_write_dir(target, lambda folder: (folder / "weights").write_text("new"))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"] and (target / "weights").read_text() == "new"
    assert sorted(p.name for p in target.iterdir()) == ["weights"]


def test_a_record_with_the_wrong_shape_is_refused_with_the_documented_message():
    base = record(0.5).to_json()
    with pytest.raises(ValueError, match="^a result record is a JSON object, got list$"):
        RunRecord.from_json([base])
    required = {k: base[k] for k in ("benchmark", "spec_version", "items_sha256", "model", "scores")}
    minimal = RunRecord.from_json(required | {"images_scored": 2, "images_skipped": 0})
    assert (minimal.label, minimal.skips, minimal.seeds) == ("", [], [])  # optional keys take defaults
    partial = {k: v for k, v in base.items() if k not in ("benchmark", "scores")}
    with pytest.raises(ValueError, match="^not a result record: missing key\\(s\\) benchmark, scores$"):
        RunRecord.from_json(partial)
    with pytest.raises(ValueError, match="^key 'benchmark' must be a string, got 3$"):
        RunRecord.from_json(base | {"benchmark": 3})
    with pytest.raises(ValueError, match="^key 'seeds' must be a list, got 'x'$"):
        RunRecord.from_json(base | {"seeds": "x"})
    with pytest.raises(ValueError, match="^key 'scores': 'overall' must be a number, got True$"):
        RunRecord.from_json(base | {"scores": {"overall": True}})


def test_type_names_in_messages_cover_several_types_and_unnamed_ones():
    from reca_eval.core.records import _kind_names

    assert _kind_names((str, int)) == "a string or an integer"
    assert _kind_names((list, float)) == "a list or float"


def test_strict_json_refuses_non_standard_numbers_by_name():
    for token in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(ValueError, match=f"^non-standard JSON number {token}$"):
            strict_json_loads(f'{{"overall": {token}}}')
    assert strict_json_loads('{"overall": 0.5}') == {"overall": 0.5}


def test_reading_a_run_gives_the_exact_reason_it_is_unusable(tmp_path):
    run_dir = tmp_path / "runs" / "r"
    write_run(run_dir, record(0.5), rows(0.5))
    record_path, rows_path = run_dir / "record.json", run_dir / "per_image.jsonl"
    unusable = f"^{re.escape(str(record_path))}: not a usable reca-eval result record "
    data = json.loads(record_path.read_text())
    record_path.write_text(json.dumps(data | {"scores": {"overall": 0.9}}))
    edited = "(its scores or counts differ from the digest written with them (edited after the run?); "
    with pytest.raises(
        ValueError, match=unusable + re.escape(edited + "score the images again to get a record)") + "$"
    ):
        read_run(run_dir)
    record_path.write_text(json.dumps(data))
    rows_path.write_text(rows_path.read_text().replace("0.5", "0.9"))
    with pytest.raises(ValueError) as changed:
        read_run(run_dir)
    assert str(changed.value) == (
        f"{rows_path}: differs from the per_image_sha256 its record.json was written with "
        "(edited after the run?); score the images again to get a record"
    )
    # without the digests, what the rows file holds is checked as it is read
    record_path.write_text(json.dumps(data | {"per_image_sha256": "", "figures_sha256": ""}))
    rows_path.write_text("not json\n")
    with pytest.raises(ValueError, match=f"^{re.escape(str(rows_path))}: not per-image JSON lines \\("):
        read_run(run_dir)
    rows_path.write_text('{"item_id": "0", "sample": 0, "category": "counting"}\n')
    with pytest.raises(ValueError) as lacking:
        read_run(run_dir)
    assert str(lacking.value) == f"{rows_path}: per-image rows lack column(s) ['score']"
    rows_path.unlink()
    rows_path.mkdir()  # there, but not a file
    with pytest.raises(FileNotFoundError) as not_a_file:
        read_run(run_dir)
    assert str(not_a_file.value) == f"per-image results {rows_path} missing beside its record"
    record_path.unlink()
    record_path.mkdir()
    with pytest.raises(ValueError, match=unusable + re.escape("(not a regular file)") + "$"):
        read_run(run_dir)


def test_the_hash_of_many_files_is_each_relative_path_a_nul_and_the_files_sha256(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "1.png").write_bytes(b"one")
    (tmp_path / "2.png").write_bytes(b"two")
    expected = hashlib.sha256()
    for rel, content in (("2.png", b"two"), ("x/1.png", b"one")):
        expected.update(rel.encode() + b"\0" + hashlib.sha256(content).hexdigest().encode())
    assert sha256_of_files([tmp_path / "x" / "1.png", tmp_path / "2.png"], tmp_path) == expected.hexdigest()


def test_git_commit_reads_head_and_is_empty_where_git_cannot_answer(tmp_path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], cwd=repo, check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{40}", head) and git_commit(repo) == head
    assert git_commit(tmp_path / "no-such-folder") == ""  # git cannot even start there
    here = git_commit()  # the package's own checkout, or "" for an installed copy
    assert here == "" or re.fullmatch(r"[0-9a-f]{40}", here)


def test_package_versions_skip_a_missing_package_and_go_on():
    assert package_versions(("no-such-package-xyz", "pandas")) == {"pandas": pd.__version__}


def spy_on(monkeypatch, module, name: str) -> list[tuple[Path, Path]]:
    """Every (source, destination) of ``module.name`` (os.replace, os.rename) from now on; each call is
    still carried out."""
    calls: list[tuple[Path, Path]] = []
    real = getattr(module, name)

    def spying(src, dst):
        calls.append((Path(src), Path(dst)))
        return real(src, dst)

    monkeypatch.setattr(module, name, spying)
    return calls


def test_a_folder_write_creates_missing_parents_and_swaps_through_a_hidden_folder(tmp_path, monkeypatch):
    target = tmp_path / "a" / "b" / "ckpt"
    atomic_write_dir(target, lambda folder: (folder / "weights").write_text("old"))
    moves = spy_on(monkeypatch, os, "replace")
    atomic_write_dir(target, lambda folder: (folder / "weights").write_text("new"))
    monkeypatch.undo()
    (src, old), (staging, dst) = moves
    assert src == target and old.name == "ckpt" and old.parent.parent == target.parent
    assert old.parent.name.startswith(".ckpt.old.") and staging.name.startswith(".ckpt.") and dst == target
    assert sorted(p.name for p in target.parent.iterdir()) == ["ckpt"]


def test_a_failed_swap_puts_the_previous_folder_back_at_its_path(tmp_path, monkeypatch):
    import reca_eval.core.records as records

    target = tmp_path / "ckpt"
    atomic_write_dir(target, lambda folder: (folder / "weights").write_text("old"))
    real_replace, calls = os.replace, []

    def second_fails(src, dst):
        calls.append(Path(src))
        if len(calls) == 2:  # the staged folder into place
            raise DiskFull(28, "No space left on device")
        return real_replace(src, dst)

    def stuck(path, ignore_errors=False):
        if not ignore_errors:
            raise OSError(16, "Device or resource busy", str(path))

    monkeypatch.setattr(os, "replace", second_fails)
    with pytest.raises(DiskFull):
        atomic_write_dir(target, lambda folder: (folder / "weights").write_text("new"))
    assert (target / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no staging or hidden old folder left
    calls.clear()
    monkeypatch.setattr(records.shutil, "rmtree", stuck)
    with pytest.raises(DiskFull):  # the swap's own error, not a failing cleanup's
        atomic_write_dir(target, lambda folder: (folder / "weights").write_text("new"))
    assert (target / "weights").read_text() == "old"


def test_a_folder_write_is_not_failed_by_a_cleanup_that_fails(tmp_path, monkeypatch):
    import reca_eval.core.records as records

    def stuck(path, ignore_errors=False):
        if not ignore_errors:
            raise OSError(16, "Device or resource busy", str(path))

    target = tmp_path / "ckpt"
    atomic_write_dir(target, lambda folder: (folder / "weights").write_text("old"))
    monkeypatch.setattr(records.shutil, "rmtree", stuck)
    atomic_write_dir(target, lambda folder: (folder / "weights").write_text("new"))
    assert (target / "weights").read_text() == "new"

    def broken(folder: Path) -> None:
        raise DiskFull(28, "No space left on device")

    with pytest.raises(DiskFull):  # the write's own error, not the cleanup's
        atomic_write_dir(target, broken)


def test_the_figures_digest_of_a_fixed_record_is_pinned():
    # records already on disk carry this digest: a change to what it covers or how makes them unreadable
    fixed = RunRecord(
        benchmark="geneval",
        spec_version="1.0",
        items_sha256="0" * 64,
        model="/ckpt",
        scores={"overall": 0.5, "colors": math.nan},
        images_scored=2,
        images_skipped=1,
        per_image_sha256="1" * 64,
    )
    assert figures_digest(fixed) == "51a1c03a51a2f7989e305ba95ef890d798eb7181d5626e4033fd782c622a4d4c"


def test_printable_escapes_undecodable_bytes_and_control_characters_only():
    latin1_name = os.fsdecode(b"caf\xe9")  # a folder name that is not UTF-8
    assert printable(latin1_name + "\x1b[31m\tété") == "caf\\xe9\\x1b[31m\\tété"


def test_a_record_file_is_indented_json_in_field_order_and_the_path_is_returned(tmp_path):
    run_dir = tmp_path / "runs" / "r"
    assert write_run(run_dir, record(0.5), rows(0.5)) == run_dir / "record.json"
    assert write_run(run_dir, record(0.25), rows(0.25)) == run_dir / "record.json"  # into the folder
    text = (run_dir / "record.json").read_text()
    assert text.startswith('{\n  "benchmark": "geneval",\n  "spec_version": "1.0",\n') and text.endswith(
        "}\n"
    )


def test_a_new_run_folder_follows_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_run(tmp_path / "runs" / "r", record(0.5), rows(0.5))
    finally:
        os.umask(old)
    assert (tmp_path / "runs" / "r").stat().st_mode & 0o7777 == 0o750


def test_the_umask_comes_from_proc_and_otherwise_from_a_set_and_restore(monkeypatch):
    old = os.umask(0o027)
    try:
        calls = []
        real_umask = os.umask

        def spying(mask):
            calls.append(mask)
            return real_umask(mask)

        monkeypatch.setattr(os, "umask", spying)
        assert current_umask() == 0o027 and calls == []  # /proc answered: the umask was never set
        real_read_text = Path.read_text

        def no_proc(self, *args, **kwargs):
            if str(self).startswith("/proc"):
                raise PermissionError(13, "Permission denied", str(self))
            return real_read_text(self, *args, **kwargs)

        monkeypatch.setattr(Path, "read_text", no_proc)
        assert current_umask() == 0o027 and real_umask(0o027) == 0o027  # read, then put back
        assert calls[-1] == 0o027
    finally:
        monkeypatch.undo()
        os.umask(old)


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the umask through /proc")
def test_the_proc_umask_line_is_the_one_read():
    old = os.umask(0o027)
    try:
        assert current_umask() == 0o027
        os.umask(0o002)
        assert current_umask() == 0o002
    finally:
        os.umask(old)


def test_a_text_write_goes_through_a_hidden_temp_file_beside_the_target(tmp_path, monkeypatch):
    target = tmp_path / "a" / "b" / "record.json"
    moves = spy_on(monkeypatch, os, "replace")
    atomic_write_text(target, "é\n")  # missing parents are made
    monkeypatch.undo()
    ((tmp, dst),) = moves
    assert dst == target and tmp.parent == target.parent and tmp.name.startswith(".record.json.")
    assert target.read_bytes() == "é\n".encode() and sorted(target.parent.iterdir()) == [target]


def stale_staging(runs: Path, name: str, age: float) -> Path:
    folder = runs / f".staging-{name}.x"
    folder.mkdir(parents=True)
    os.utime(folder, (time.time() - age,) * 2)
    return folder


def test_stale_staging_is_swept_past_a_vanished_entry_and_a_cleanup_that_fails(tmp_path, monkeypatch):
    import reca_eval.core.records as records

    runs = tmp_path / "runs"
    hour = records.STALE_STAGING_SECONDS
    stale = stale_staging(runs, "old", hour + 60)
    now = 2_000_000_000.0
    exact = stale_staging(runs, "exact", 0)
    os.utime(exact, (now - hour,) * 2)
    monkeypatch.setattr(time, "time", lambda: now)
    os.utime(stale, (now - hour - 60,) * 2)
    real_scandir = os.scandir

    class Vanished:
        name = ".staging-gone.x"
        path = str(runs / name)

        def stat(self, follow_symlinks=True):
            raise FileNotFoundError(2, "No such file or directory", self.path)

    def scandir(path):  # the runs folder lists a first entry that vanishes before it is looked at
        if isinstance(path, int) or Path(path) != runs:
            return real_scandir(path)
        return [Vanished(), *sorted(real_scandir(path), key=lambda e: e.name)]

    monkeypatch.setattr(records.os, "scandir", scandir)
    write_run(runs / "r", record(0.5), rows(0.5))
    monkeypatch.undo()
    assert not stale.exists() and exact.exists()  # older than an hour goes; exactly an hour stays

    def stuck(path, ignore_errors=False):
        if not ignore_errors:
            raise OSError(16, "Device or resource busy", str(path))

    stale_staging(runs, "stuck", hour + 60)
    monkeypatch.setattr(records.shutil, "rmtree", stuck)
    write_run(runs / "r2", record(0.5), rows(0.5))  # a leftover that will not go does not fail a run
    with pytest.raises(ValueError, match="lack column"):
        write_run(runs / "r3", record(0.5), rows(0.5).drop(columns="score"))
    monkeypatch.setattr(
        records, "atomic_write_text", lambda path, text: (_ for _ in ()).throw(DiskFull(28, "full"))
    )
    with pytest.raises(DiskFull):  # the write's own error, not the cleanup's
        write_run(runs / "r4", record(0.5), rows(0.5))


def test_a_record_needs_a_finite_overall_and_counts_of_zero_or_more():
    base = record(0.5).to_json()
    for scores in ({"overall": None}, {"colors": 0.5}):
        with pytest.raises(ValueError, match="^key 'scores' lacks a finite 'overall'$"):
            RunRecord.from_json(base | {"scores": scores})
    negative = "^keys 'images_scored' and 'images_skipped' must be >= 0$"
    for counts in ({"images_scored": -1}, {"images_skipped": -1}):
        with pytest.raises(ValueError, match=negative):
            RunRecord.from_json(base | counts)
    empty = RunRecord.from_json(base | {"images_scored": 0, "images_skipped": 0})
    assert (empty.images_scored, empty.images_skipped) == (0, 0)
    assert RunRecord.from_json(base | {"skips": [{"path": "a.png"}]}).skips == [Skip(path="a.png", reason="")]


def test_a_failed_file_write_names_the_file_and_keeps_the_error_number(tmp_path, monkeypatch):
    target = tmp_path / "record.json"
    fail_at(monkeypatch, "fsync", 0)
    with pytest.raises(OSError) as failed:
        atomic_write_text(target, "x")
    monkeypatch.undo()
    assert (failed.value.errno, failed.value.filename) == (28, str(target))
    assert list(tmp_path.iterdir()) == []

    def interrupted(fd, mode):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fchmod", interrupted)
    with pytest.raises(KeyboardInterrupt):  # not an OSError: the temp file is removed all the same
        atomic_write_text(target, "x")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- check


def test_check_takes_the_declared_tolerance_and_a_drop_of_exactly_the_tolerance_passes(runs):
    # drop_prompts made 4 of counting's 20 prompts fail: counting fell by 0.2 exactly
    result = check_regression(runs["drop"], runs["base"], n_boot=50)
    assert (result.tolerance, result.tolerance_source) == (0.01, "check_tolerance of geneval")
    counting = result.verdicts["counting"]
    assert counting.delta.delta == pytest.approx(-0.2) and counting.failed and counting.allowed_drop == 0.01
    assert list(result.verdicts)[0] == "overall"  # overall first, then the categories
    assert result.failing == [k for k, v in result.verdicts.items() if v.failed]
    exact = check_regression(runs["drop"], runs["base"], tolerance=-counting.delta.delta, n_boot=50)
    assert not exact.verdicts["counting"].failed and exact.verdicts["counting"].point_drop is False
    relative = check_regression(runs["drop"], runs["base"], tolerance=0.5, relative=True, n_boot=50)
    assert relative.verdicts["counting"].allowed_drop == pytest.approx(0.5 * counting.delta.a)
    assert relative.verdicts["counting"].failed == (0.2 > 0.5 * counting.delta.a)


def test_check_refuses_bad_tolerances_and_names_an_undeclared_one(tmp_path, runs):
    with pytest.raises(ValueError, match="--relative needs --tolerance"):
        check_regression(runs["drop"], runs["base"], relative=True, n_boot=10)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="tolerance must be a number >= 0"):
            check_regression(runs["drop"], runs["base"], tolerance=bad, n_boot=10)
    rows = make_rows(n_prompts=20, seed=1)
    base = write(tmp_path, "mine-base", rows, label="b", benchmark="not-registered")
    run = write(tmp_path, "mine-run", rows.assign(score=0.0), label="r", benchmark="not-registered")
    result = check_regression(run, base, mean_of_category_means, n_boot=20)
    assert (result.tolerance, result.tolerance_source) == (0.0, "no check_tolerance declared")
    assert not result.passed


def test_compare_counts_unpaired_rows_and_uses_the_benchmarks_own_aggregate(tmp_path, runs):
    rows = make_rows(n_prompts=60, seed=3)
    fewer = write(tmp_path, "fewer", rows[rows["item_id"] != "00000"], label="fewer")
    result = compare_runs(runs["base"], fewer, n_boot=20)
    assert result.unmatched == (4, 0) and "unpaired rows left out: 4 in A, 0 in B" in result.warnings
    explicit = compare_runs(runs["base"], fewer, registry.get("geneval").aggregate, n_boot=20)
    assert result.deltas == explicit.deltas
    with pytest.raises(ValueError, match="no score key common"):
        compare_runs(runs["base"], runs["same"], lambda rows, weights: {}, n_boot=5)


def test_a_record_read_back_is_checked_and_normalised():
    base = record(0.5).to_json()
    back = RunRecord.from_json(base | {"scores": {"overall": 1, "colors": None}})
    assert back.scores["overall"] == 1.0 and isinstance(back.scores["overall"], float)
    assert math.isnan(back.scores["colors"])  # null: nothing scored in that category
    with pytest.raises(ValueError, match="^key 'images_scored' must be an integer, got True$"):
        RunRecord.from_json(base | {"images_scored": True})  # a bool is not a count
    with pytest.raises(ValueError, match=r"^key 'scores' must be an object, got \[0\.5\]$"):
        RunRecord.from_json(base | {"scores": [0.5]})
    with pytest.raises(ValueError, match=r"^key 'skips' must be a list of \{path, reason\} objects$"):
        RunRecord.from_json(base | {"skips": [{"reason": "no path"}]})
    escaped = RunRecord.from_json(base | {"label": "a\x1b[31mred", "model": "m\x1b[0m"})
    assert "\x1b" not in escaped.label and "\x1b" not in escaped.model


def test_an_edited_record_is_refused_saying_what_to_do(tmp_path):
    run_dir = tmp_path / "runs" / "r"
    write_run(run_dir, record(0.5), rows(0.5))
    data = json.loads((run_dir / "record.json").read_text())
    data["scores"]["overall"] = 0.9
    (run_dir / "record.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="edited after the run.*score the images again to get a record"):
        read_run(run_dir)


def test_staging_folders_are_hidden_beside_the_target_and_stale_ones_are_swept(tmp_path, monkeypatch):
    seen = []
    atomic_write_dir(tmp_path / "ckpt", lambda folder: seen.append(folder))
    assert seen[0].parent == tmp_path and seen[0].name.startswith(".ckpt.")
    runs = tmp_path / "runs"
    stale, fresh = runs / ".staging-old.x1", runs / ".staging-new.x2"
    for folder in (stale, fresh):
        folder.mkdir(parents=True)
    os.utime(stale, (0, 0))  # left by a process killed long ago
    renames = spy_on(monkeypatch, os, "rename")
    write_run(runs / "r", record(0.5), rows(0.5))
    monkeypatch.undo()
    assert not stale.exists() and fresh.exists()
    (src, dst), *_ = [(s, d) for s, d in renames if d == runs / "r"]
    assert src.parent == runs and src.name.startswith(".staging-r.")


def test_compare_keeps_its_runs_and_defaults_and_a_drop_of_exactly_the_tolerance_is_not_significant(tmp_path):
    rows = make_rows(n_prompts=20, seed=2).assign(score=0.5)
    base = write(tmp_path, "flat-base", rows, label="base")
    run = write(tmp_path, "flat-run", rows.assign(score=0.3), label="run")
    result = compare_runs(base, run, mean_of_category_means)
    assert (result.path_a, result.path_b, result.n_boot, result.alpha) == (base, run, 1000, 0.05)
    # every replicate's delta is -0.2: the interval's upper bound is -0.2, not below it
    gate = check_regression(run, base, mean_of_category_means, tolerance=0.2, significant=True, n_boot=20)
    verdict = gate.verdicts["overall"]
    assert verdict.delta.high == pytest.approx(-0.2) and not verdict.significant_drop and gate.passed


def one_sample_runs(tmp_path: Path) -> tuple[Path, Path]:
    """A base run and a run with three counting prompts broken, one sample per prompt, whose sample
    numbers differ between the runs: they pair on ``item_id`` only."""
    rows = make_rows(n_prompts=30, samples=1, seed=4)
    base = write(tmp_path, "one-base", rows, label="base")
    run = write(tmp_path, "one-run", drop_prompts(rows, "counting", 3).assign(sample=7), label="run")
    return base, run


def test_compare_and_check_hand_every_argument_to_the_paired_bootstrap(tmp_path):
    base, run = one_sample_runs(tmp_path)
    (_, rows_a), (_, rows_b) = read_run(base), read_run(run)
    asked = {"keys": ("item_id",), "n_boot": 40, "seed": 7, "alpha": 0.2}
    expected = paired_bootstrap(rows_a, rows_b, mean_of_category_means, **asked)
    compared = compare_runs(base, run, mean_of_category_means, **asked)
    assert compared.deltas == expected and (compared.n_boot, compared.alpha) == (40, 0.2)
    checked = check_regression(run, base, mean_of_category_means, tolerance=0.01, **asked)
    assert checked.comparison.deltas == expected and checked.tolerance_source == "given"
    assert all(verdict.key == key for key, verdict in checked.verdicts.items())
    # the default pairing keys (item_id, sample) pair nothing here
    with pytest.raises(ValueError, match="no rows of run A pair with run B"):
        compare_runs(base, run, mean_of_category_means, n_boot=5)


def test_compare_and_check_default_to_seed_0_and_1000_replicates(tmp_path):
    base, run = one_sample_runs(tmp_path)
    keys = ("item_id",)
    unseeded = compare_runs(base, run, mean_of_category_means, n_boot=40, keys=keys)
    assert (
        unseeded.deltas
        == compare_runs(base, run, mean_of_category_means, n_boot=40, seed=0, keys=keys).deltas
    )
    gate = check_regression(run, base, mean_of_category_means, keys=keys)
    assert gate.comparison.n_boot == 1000
    assert gate.comparison.deltas == compare_runs(base, run, mean_of_category_means, keys=keys).deltas


def test_refusals_and_warnings_name_every_difference_and_point_at_the_caller(tmp_path, runs):
    rows = make_rows(n_prompts=20, seed=1)
    other = write(tmp_path, "both", rows, label="both", spec_version="2.0", items_sha256="f" * 64)
    with pytest.raises(ValueError) as refused:
        compare_runs(runs["base"], other, n_boot=5)
    assert str(refused.value).endswith(
        f"spec_version: '1.0' vs '2.0'; items_sha256: {ITEMS!r} vs {'f' * 64!r}"
    )
    reseeded = write(tmp_path, "reseeded", make_rows(n_prompts=60, seed=3), label="reseeded", seeds=(1,))
    with pytest.warns(UserWarning, match=r"generation seeds differ \(\[0\] vs \[1\]\)") as caught:
        compare_runs(runs["base"], reseeded, n_boot=5)
    # the caller's line, not leaderboard.py's (mutmut's trampoline adds a frame, so no exact file)
    assert len(caught) == 1 and Path(caught[0].filename).name != "leaderboard.py"
    with pytest.raises(
        ValueError, match=r"^--relative needs --tolerance \(a fraction of the baseline's score"
    ):
        check_regression(runs["drop"], runs["base"], relative=True, n_boot=10)


def test_check_without_an_overall_score_and_compare_shows_overall_once(tmp_path, runs):
    def categories_only(rows: pd.DataFrame, weights) -> dict[str, float]:
        return {k: v for k, v in mean_of_category_means(rows, weights).items() if k != "overall"}

    result = check_regression(runs["drop"], runs["base"], categories_only, n_boot=20)
    assert list(result.verdicts) == list(result.comparison.deltas) and "overall" not in result.verdicts
    assert result.failing == ["counting"]
    console = Console(record=True, width=200)
    render_compare(compare_runs(runs["base"], runs["drop"], n_boot=20), console)
    lines = console.export_text().splitlines()
    assert sum(line.split("│")[1].strip() == "overall" for line in lines if line.count("│") > 2) == 1


def test_a_drop_within_float_noise_of_the_tolerance_is_no_drop(tmp_path):
    # every replicate gives A 1e-9 and B 0: a drop of 1e-9 against a tolerance of 0, which the gate
    # reads as float noise (an aggregate summed in another order), neither a point nor a resolved drop
    rows = make_rows(n_prompts=10, seed=5)
    base = write(tmp_path, "noise-base", rows.assign(score=1.0), label="base")
    run = write(tmp_path, "noise-run", rows.assign(score=0.0), label="run")

    def tiny(frame: pd.DataFrame, weights) -> dict[str, float]:
        return {"overall": float(frame["score"].iloc[0]) * 1e-9}

    gate = check_regression(run, base, tiny, tolerance=0.0, significant=True, n_boot=10)
    verdict = gate.verdicts["overall"]
    assert verdict.delta.delta == verdict.delta.high == -1e-9
    assert (verdict.point_drop, verdict.significant_drop, gate.passed) == (False, False, True)


def test_a_benchmark_without_a_spec_declares_no_tolerance(monkeypatch):
    assert declared_tolerance("geneval") == 0.01 and declared_tolerance("no-such-benchmark") is None
    monkeypatch.setattr(registry, "get", lambda name: SimpleNamespace(spec=None))
    assert declared_tolerance("geneval") is None
