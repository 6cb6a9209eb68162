"""The registry: benchmark.yaml files indexed without importing implementations; user folders; clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reca_eval import registry
from reca_eval.core.paths import BENCHMARKS_DIR
from reca_eval.core.spec import SpecError, read_spec

SHIPPED = {"geneval", "geneval-long", "dpg", "imgedit", "gedit", "gedit-en", "gedit-cn"}
SHAPES = {"shapes-geneval", "shapes-dpg", "shapes-edit"}


def test_listing_reads_yaml_only_and_get_imports_one_implementation():
    code = (
        "import sys, json\n"
        "from reca_eval import registry\n"
        "names = list(registry.specs())\n"
        "before = sorted(m for m in sys.modules if m.startswith('reca_eval.benchmarks'))\n"
        "registry.get('shapes-edit')\n"
        "after = sorted(m for m in sys.modules if m.startswith('reca_eval.benchmarks.'))\n"
        "print(json.dumps([names, before, after]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    names, before, after = json.loads(out)
    assert set(names) == SHIPPED | SHAPES
    assert before == []
    assert "reca_eval.benchmarks.shapes.benchmark" in after
    assert "reca_eval.benchmarks.geneval.benchmark" not in after  # GenEval's detector code stays unloaded
    assert "reca_eval.benchmarks.edit.benchmark" not in after


def test_spec_fields_reach_the_benchmark():
    for name in SHIPPED | SHAPES:
        spec, bench = registry.spec(name), registry.get(name)
        assert (bench.name, bench.version, bench.task, bench.layout) == (
            spec.name,
            spec.version,
            spec.task,
            spec.layout,
        )
        assert bench.images_per_prompt == spec.images_per_prompt and bench.categories == spec.categories
    assert registry.get("gedit-en").load_items is not registry.get("gedit-cn").load_items


def _user_benchmark(root: Path, name: str = "my-shapes", **changes) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    spec = yaml.safe_load((BENCHMARKS_DIR / "shapes-geneval" / "benchmark.yaml").read_text())
    spec.update(name=name, version="0.1", **changes)
    spec.pop("manifest")
    lines = (BENCHMARKS_DIR / "shapes-geneval" / "items.jsonl").read_text().splitlines()[:6]
    (folder / "items.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "benchmark.yaml").write_text(yaml.safe_dump(spec))
    return folder


def test_a_users_folder_adds_a_benchmark_that_scores(tmp_path, monkeypatch):
    from reca_eval.evaluation import score
    from reca_eval.evaluation.references import write_reference_folder

    _user_benchmark(tmp_path / "mine")
    monkeypatch.setenv(registry.USER_BENCHMARKS_ENV, str(tmp_path / "mine"))
    bench = registry.get("my-shapes")
    assert bench.version == "0.1" and len(bench.load_items(bench.default_items())) == 6
    refs = tmp_path / "refs"
    write_reference_folder("shapes-geneval", refs, items_path=bench.default_items())
    outcome = score.score_images(
        "my-shapes", refs, results_dir=tmp_path / "results", options={"progress": False}
    )
    assert outcome.record.benchmark == "my-shapes" and outcome.record.spec_version == "0.1"
    assert outcome.record.scores["overall"] == 1.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"task": "video"}, "key 'task'"),
        ({"images_per_prompt": "four"}, "key 'images_per_prompt'"),
        ({"implementation": "no_colon"}, "key 'implementation'"),
        ({"colour": "red"}, "unknown key(s) colour"),
        ({"name": "other"}, "key 'name' is 'other'"),
    ],
)
def test_bad_specs_name_the_file_and_key(tmp_path, change, message):
    folder = _user_benchmark(tmp_path)
    data = yaml.safe_load((folder / "benchmark.yaml").read_text())
    data.update(change)
    (folder / "benchmark.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as info:
        read_spec(folder / "benchmark.yaml")
    assert str(folder / "benchmark.yaml") in str(info.value) and message in str(info.value)


def test_missing_key_duplicate_name_and_bad_implementation(tmp_path, monkeypatch):
    folder = _user_benchmark(tmp_path / "a")
    data = yaml.safe_load((folder / "benchmark.yaml").read_text())
    del data["layout"]
    (folder / "benchmark.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match="missing key 'layout'"):
        read_spec(folder / "benchmark.yaml")

    _user_benchmark(tmp_path / "b", name="shapes-edit")
    monkeypatch.setenv(registry.USER_BENCHMARKS_ENV, str(tmp_path / "b"))
    with pytest.raises(SpecError, match="declared twice"):
        registry.specs()

    _user_benchmark(tmp_path / "c", implementation="reca_eval.benchmarks.shapes.benchmark:nothing_here")
    monkeypatch.setenv(registry.USER_BENCHMARKS_ENV, str(tmp_path / "c"))
    with pytest.raises(SpecError, match="has no 'nothing_here'"):
        registry.get("my-shapes")
    with pytest.raises(KeyError, match="unknown benchmark 'nope'"):
        registry.get("nope")
