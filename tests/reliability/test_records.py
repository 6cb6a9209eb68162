"""Records: strict JSON, digests that catch hand edits, a run folder staged and renamed into place."""

from __future__ import annotations

import json
import math
import os
import time

import pandas as pd
import pytest

from reca_eval.core.records import STAGING_PREFIX, RunRecord, read_run, write_run

ROWS = pd.DataFrame({"item_id": ["a", "b"], "sample": [0, 0], "category": ["x", "y"], "score": [1.0, 0.0]})


def record(**scores) -> RunRecord:
    return RunRecord("shapes-geneval", "1.1", "sha", "model", {"overall": 0.5, **scores}, 2, 0, label="L")


def test_a_category_with_nothing_scored_is_null_on_disk_and_nan_in_memory(tmp_path):
    path = write_run(tmp_path / "runs" / "r1", record(empty=math.nan), ROWS)
    text = path.read_text()
    assert "NaN" not in text and json.loads(text)["scores"]["empty"] is None
    loaded, rows = read_run(path.parent)
    assert math.isnan(loaded.scores["empty"]) and loaded.scores["overall"] == 0.5
    assert len(rows) == 2


@pytest.mark.parametrize("edit", ["score", "rows"])
def test_hand_edits_are_refused_naming_the_file(tmp_path, edit):
    run = write_run(tmp_path / "runs" / "r1", record(), ROWS).parent
    if edit == "score":
        data = json.loads((run / "record.json").read_text())
        data["scores"]["overall"] = 1.0
        (run / "record.json").write_text(json.dumps(data))
        match = "record.json"
    else:
        (run / "per_image.jsonl").write_text(
            (run / "per_image.jsonl").read_text().replace('"score":0.0', '"score":1.0')
        )
        match = "per_image.jsonl"
    with pytest.raises(ValueError, match=match):
        read_run(run)


def test_a_label_edit_is_allowed(tmp_path):
    run = write_run(tmp_path / "runs" / "r1", record(), ROWS).parent
    data = json.loads((run / "record.json").read_text())
    data["label"] = "renamed"
    (run / "record.json").write_text(json.dumps(data))
    assert read_run(run)[0].label == "renamed"


def test_a_new_run_folder_appears_whole_and_stale_staging_is_removed(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    runs.mkdir()
    stale, fresh = runs / f"{STAGING_PREFIX}old.x", runs / f"{STAGING_PREFIX}new.y"
    stale.mkdir()
    fresh.mkdir()
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    renamed = []
    real_rename = os.rename
    monkeypatch.setattr(os, "rename", lambda a, b: (renamed.append((a, b)), real_rename(a, b))[1])
    write_run(runs / "r1", record(), ROWS)
    assert len(renamed) == 1 and renamed[0][1] == runs / "r1"  # one rename: the folder whole
    assert not stale.exists() and fresh.exists()  # a staging folder being written now is left alone
    assert sorted(p.name for p in (runs / "r1").iterdir()) == ["per_image.jsonl", "record.json"]


def test_a_failed_write_leaves_no_run_folder(tmp_path, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as caught:
        write_run(tmp_path / "runs" / "r1", record(), ROWS)
    assert caught.value.filename and caught.value.filename.endswith("per_image.jsonl")
    assert os.listdir(tmp_path / "runs") == []
