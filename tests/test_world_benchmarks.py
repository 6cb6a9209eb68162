"""The generated ShapeWorld benchmark folders: deterministic, checksummed, in the official schemas."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from reca_eval.benchmarks.dpg.rules import QUESTION_COLUMNS
from reca_eval.benchmarks.geneval.rules import load_metadata
from reca_eval.benchmarks.shapes.build import BENCHMARKS_DIR, main, write_benchmarks
from reca_eval.core.spec import read_spec
from reca_eval.shapeworld.edits import EDIT_TYPES
from reca_eval.shapeworld.scene import layout_is_valid, scene_from_json
from reca_eval.shapeworld.splits import SPLITS

NAMES = ("shapes-geneval", "shapes-dpg", "shapes-edit")


def test_committed_files_match_the_generator(tmp_path):
    # Rebuilding in a fresh folder gives byte-identical files to the committed ones.
    assert write_benchmarks(tmp_path) != []
    for name in NAMES:
        for path in (tmp_path / name).iterdir():
            assert path.read_bytes() == (BENCHMARKS_DIR / name / path.name).read_bytes(), path
    assert main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "shapes-edit" / "items.jsonl").write_text("{}\n")
    assert main(["--check", "--out", str(tmp_path)]) == 1


@pytest.mark.parametrize("name", NAMES)
def test_spec_checksums_and_counts(name):
    folder = BENCHMARKS_DIR / name
    spec = read_spec(folder / "benchmark.yaml").manifest
    assert spec["generator"] == "python -m reca_eval.benchmarks.shapes.build"
    for filename, digest in spec["sha256"].items():
        assert hashlib.sha256((folder / filename).read_bytes()).hexdigest() == digest
    assert (folder / "README.md").read_text().startswith(f"# {name}")


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_geneval_items_follow_the_official_schema():
    items = load_metadata(BENCHMARKS_DIR / "shapes-geneval" / "items.jsonl")
    spec = read_spec(BENCHMARKS_DIR / "shapes-geneval" / "benchmark.yaml").manifest
    assert Counter(i["tag"] for i in items) == spec["count"]
    assert len({i["prompt"] for i in items}) == len(items)
    for item in items:
        assert item["split"] in SPLITS + ("none",)
        scene = scene_from_json(item["reference_scene"])
        assert layout_is_valid(scene.objects)
        if item["tag"] == "counting":
            n = item["include"][0]["count"]
            assert item["exclude"] == [{"class": item["include"][0]["class"], "count": n + 1}]
    colour_splits = Counter(i["split"] for i in items if i["tag"] == "color_attr")
    assert set(colour_splits) == set(SPLITS)


def test_dpg_items_and_question_graph():
    items = _lines(BENCHMARKS_DIR / "shapes-dpg" / "items.jsonl")
    questions = pd.read_csv(BENCHMARKS_DIR / "shapes-dpg" / "questions.csv", dtype=str, keep_default_na=False)
    assert tuple(questions.columns) == QUESTION_COLUMNS
    assert len(items) == 150 and set(questions["item_id"]) == {i["item_id"] for i in items}
    for item_id, group in questions.groupby("item_id"):
        ids = [int(p) for p in group["proposition_id"]]
        assert ids == list(range(1, len(ids) + 1)), item_id
        for dependency, pid in zip(group["dependency"], ids, strict=True):
            parents = [int(p) for p in dependency.split(",")]
            assert parents == [0] or all(0 < p < pid for p in parents), (item_id, pid)
    assert set(questions["category_broad"]) == {"entity", "attribute", "relation", "other", "global"}


def test_edit_items_cover_every_type():
    items = _lines(BENCHMARKS_DIR / "shapes-edit" / "items.jsonl")
    assert Counter(i["edit_type"] for i in items) == {t: 20 for t in EDIT_TYPES}
    for item in items:
        source, target = scene_from_json(item["source_scene"]), scene_from_json(item["target_scene"])
        assert source != target and layout_is_valid(target.objects)
        assert item["instruction"].endswith(".")
