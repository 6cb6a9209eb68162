"""The mutation gate of noxfile.py: how survivors of a mutmut run are matched against the accepted
(equivalent) mutants of tests/mutation_accepted.toml, how a module's figure is computed, and that
docs/testing.md shows the same accepted list."""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("nox")
REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("noxfile", REPO / "noxfile.py")
noxfile = importlib.util.module_from_spec(_spec)
sys.modules["noxfile"] = noxfile  # dataclasses look their module up there
_spec.loader.exec_module(noxfile)

# A module as mutmut's mutated copy holds it: each function's original and its mutants side by side.
MUTANTS_SOURCE = '''
def x_scale__mutmut_orig(v, k=2):
    """Doc."""
    return v * k


def x_scale__mutmut_1(v, k=3):
    """Doc."""
    return v * k


def x_scale__mutmut_2(v, k=2):
    """Doc."""
    return v / k


def x_scale__mutmut_3(v, k=2):
    """Doc."""
    return v * k + 0


class Box:
    def xǁBoxǁopen__mutmut_orig(self, path):
        with open(path, encoding="utf-8") as f:
            return f.read()

    def xǁBoxǁopen__mutmut_1(self, path):
        with open(path, encoding="UTF-8") as f:
            return f.read()
'''
M = "pkg.mod."


def toy_run(tmp_path: Path, monkeypatch, codes: dict[str, int | None]) -> Path:
    monkeypatch.setitem(noxfile.MUTATION_TARGETS, "toy", ("pkg/mod.py", ("*",), ()))
    root = tmp_path / "toy"
    (root / "mutants" / "pkg").mkdir(parents=True)
    (root / "mutants" / "pkg" / "mod.py").write_text(MUTANTS_SOURCE, encoding="utf-8")
    meta = {"exit_code_by_key": {M + name: code for name, code in codes.items()}}
    (root / "mutants" / "pkg" / "mod.py.meta").write_text(json.dumps(meta))
    return root


def accepted(function: str, before: str, after: str, target: str = "toy") -> noxfile.AcceptedMutant:
    return noxfile.AcceptedMutant(target, function, before, after, "no caller can tell")


def test_mutant_names_map_to_the_functions_of_the_source():
    assert (
        noxfile.mutant_function("reca_eval.results.stats.x_cluster_bootstrap__mutmut_12")
        == "cluster_bootstrap"
    )
    assert (
        noxfile.mutant_function("reca_eval.results.leaderboard.x__ordered_keys__mutmut_3") == "_ordered_keys"
    )
    assert (
        noxfile.mutant_function("reca_eval.core.records.xǁRunRecordǁto_json__mutmut_7") == "RunRecord.to_json"
    )


def test_a_mutants_change_is_the_lines_it_alters_stripped(tmp_path, monkeypatch):
    root = toy_run(tmp_path, monkeypatch, {})
    names = [
        M + n for n in ("x_scale__mutmut_1", "x_scale__mutmut_2", "x_scale__mutmut_3", "xǁBoxǁopen__mutmut_1")
    ]
    changes = noxfile.mutant_changes(root / "mutants" / "pkg" / "mod.py", names)
    assert list(changes.values()) == [
        ("def scale(v, k=2):", "def scale(v, k=3):"),  # the def line, with its own name
        ("return v * k", "return v / k"),
        ("return v * k", "return v * k + 0"),
        ('with open(path, encoding="utf-8") as f:', 'with open(path, encoding="UTF-8") as f:'),
    ]
    with pytest.raises(ValueError, match="no function x_scale__mutmut_9"):
        noxfile.mutant_changes(root / "mutants" / "pkg" / "mod.py", [M + "x_scale__mutmut_9"])


def test_the_figure_leaves_accepted_survivors_out_of_the_denominator(tmp_path, monkeypatch):
    # 1 killed, 1 timed out (a kill), 2 survivors of which 1 accepted, 1 not run (not counted)
    codes = {
        "x_scale__mutmut_1": 0,
        "x_scale__mutmut_2": 1,
        "x_scale__mutmut_3": None,
        "xǁBoxǁopen__mutmut_1": 0,
    }
    root = toy_run(tmp_path, monkeypatch, codes | {"x_scale__mutmut_3": -24})
    utf8 = accepted(
        "Box.open", 'with open(path, encoding="utf-8") as f:', 'with open(path, encoding="UTF-8") as f:'
    )
    report = noxfile.mutation_report("toy", root, [utf8])
    assert (report.mutants, report.killed) == (4, 2)
    assert report.accepted == [M + "xǁBoxǁopen__mutmut_1"]
    assert report.surviving == {
        M + "x_scale__mutmut_1": ("scale", "def scale(v, k=2):", "def scale(v, k=3):")
    }
    assert report.killed_share == pytest.approx(2 / 3) and report.raw_share == pytest.approx(2 / 4)
    assert report.stale == [] and not report.passed  # 67% < 90%
    not_run = noxfile.mutation_report("toy", toy_run(tmp_path / "b", monkeypatch, codes), [utf8])
    assert (not_run.mutants, not_run.killed) == (3, 1)
    # an entry of another target, or of another function with the same lines, accepts nothing
    other = [
        accepted("open", utf8.before, utf8.after),
        accepted("Box.open", utf8.before, utf8.after, "stats"),
    ]
    assert noxfile.mutation_report("toy", root, other).accepted == []


def test_an_entry_matching_no_surviving_mutant_is_stale_on_a_whole_run_only(tmp_path, monkeypatch):
    root = toy_run(tmp_path, monkeypatch, {"x_scale__mutmut_2": 1, "xǁBoxǁopen__mutmut_1": 0})
    killed = accepted("scale", "return v * k", "return v / k")
    gone = accepted("scale", "return v * k", "return v - k")
    utf8 = accepted(
        "Box.open", 'with open(path, encoding="utf-8") as f:', 'with open(path, encoding="UTF-8") as f:'
    )
    report = noxfile.mutation_report("toy", root, [killed, gone, utf8])
    assert report.killed_share == 1.0 and len(report.accepted) == 1
    assert report.stale == [
        f"scale: 'return v * k' -> 'return v / k': killed by the tests ({M}x_scale__mutmut_2)",
        "scale: 'return v * k' -> 'return v - k': no mutant makes this change",
    ]
    assert not report.passed
    timed_out = toy_run(tmp_path / "b", monkeypatch, {"x_scale__mutmut_2": 36, "xǁBoxǁopen__mutmut_1": 0})
    assert noxfile.mutation_report("toy", timed_out, [killed, utf8]).stale == []  # a busy machine, maybe
    sampled = noxfile.mutation_report("toy", root, [killed, gone, utf8], only=[M + "x_scale__mutmut_2"])
    assert sampled.stale == [] and sampled.mutants == 1 and sampled.passed


def write_accepted(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "accepted.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_accepted_entries_are_checked_naming_the_file_and_entry(tmp_path):
    good = (
        'target = "stats"\nfunction = "f"\nbefore = "  a = 1  "\nafter = "a = 2"\nreason = "same\\n  value"\n'
    )
    loaded = noxfile.load_accepted(write_accepted(tmp_path, "[[accepted]]\n" + good))
    assert loaded == [noxfile.AcceptedMutant("stats", "f", "a = 1", "a = 2", "same value")]
    cases = {
        "[[accepted]]\n"
        + good.replace('reason = "same\\n  value"\n', ""): r"entry 1 \(f\): missing key\(s\) \['reason'\]",
        "[[accepted]]\n" + good + "why = 1\n": r"unknown key\(s\) \['why'\]",
        "[[accepted]]\n" + good.replace('"stats"', '"nope"'): "entry 1 \\(f\\): unknown target 'nope'",
        "[[accepted]]\n" + good.replace('after = "a = 2"', "after = 2"): r"\['after'\] must be strings",
        "[[accepted]]\n" + good.replace('"same\\n  value"', '" "'): "entry 1 \\(f\\): empty reason",
        "[[mutants]]\n" + good: r"unknown key\(s\) \['mutants'\]",
        "[[accepted]\n": "not valid TOML",
    }
    for text, message in cases.items():
        path = write_accepted(tmp_path, text)
        with pytest.raises(ValueError, match=f"^{path}: .*{message}"):
            noxfile.load_accepted(path)


def function_sources(module: Path) -> dict[str, list[str]]:
    """Each function's stripped source lines by its name as mutant_function gives it (Class.method)."""
    lines = module.read_text().splitlines()
    out = {}
    tree = ast.parse(module.read_text())
    for node in tree.body:
        members = (
            [(f"{node.name}.", n) for n in node.body] if isinstance(node, ast.ClassDef) else [("", node)]
        )
        for prefix, fn in members:
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out[prefix + fn.name] = [line.strip() for line in lines[fn.lineno - 1 : fn.end_lineno]]
    return out


def test_every_accepted_entry_names_a_line_of_its_function_as_the_code_stands():
    # what a mutation run would report as a stale entry, checked without one
    entries = noxfile.load_accepted(REPO / noxfile.MUTATION_ACCEPTED)
    assert entries, "no accepted mutants listed"
    for entry in entries:
        module = REPO / noxfile.MUTATION_TARGETS[entry.target][0]
        functions = function_sources(module)
        assert entry.function in functions, f"{entry.target}: no function {entry.function} in {module}"
        body = functions[entry.function]
        before = entry.before.split("\n")
        assert any(body[i : i + len(before)] == before for i in range(len(body))), (
            f"{entry.target} {entry.function}: {entry.before!r} is not a line of it any more"
        )
        assert entry.after != entry.before
    keys = [(e.target, e.function, e.before, e.after) for e in entries]
    assert len(keys) == len(set(keys)), "an accepted mutant is listed twice"


def test_the_docs_list_the_accepted_mutants_of_the_file():
    docs = (REPO / "docs" / "testing.md").read_text()
    expected = noxfile.accepted_table(noxfile.load_accepted(REPO / noxfile.MUTATION_ACCEPTED))
    section = docs[docs.index("### Accepted survivors") :]
    section = section[: section.index("\n## ")]
    assert expected in section, f"docs/testing.md's accepted table should read:\n{expected}"
