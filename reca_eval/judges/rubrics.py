"""The judges' prompt texts, read from the files the benchmarks publish (fetched by `reca-eval fetch`).

We keep no copies: ImgEdit's per-edit-type rubrics come from its ``prompts.json`` (``Benchmark/Basic``
in PKU-YuanGroup/ImgEdit), GEdit's VIEScore prompts from ``viescore/vie_prompts.py`` in
stepfun-ai/Step1X-Edit. The Python file is read with :mod:`ast` (string literals only, never executed)
and composed exactly as VIEScore's ``task="tie"`` does.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

from reca_eval.core.records import sha256_file

IMGEDIT_TYPES = ("replace", "add", "adjust", "remove", "style", "action", "extract", "background", "compose")
IMGEDIT_PLACEHOLDER = "<edit_prompt>"
VIESCORE_PLACEHOLDER = "<instruction>"
# VIEScore(task="tie"): SC = context + two-image edit rule + SC rule; PQ = context + PQ rule.
_VIESCORE_SC_PARTS = (
    "_context_no_delimit",
    "_prompts_0shot_two_image_edit_rule",
    "_prompts_0shot_tie_rule_SC",
)
_VIESCORE_PQ_PARTS = ("_context_no_delimit", "_prompts_0shot_rule_PQ")


@dataclass(frozen=True)
class ImgEditRubrics:
    by_type: dict[str, str]
    source: str  # file path
    sha256: str

    def prompt(self, edit_type: str, instruction: str) -> str:
        if edit_type not in self.by_type:
            raise KeyError(
                f"{self.source}: no rubric for edit type {edit_type!r}; have {sorted(self.by_type)}"
            )
        return self.by_type[edit_type].replace(IMGEDIT_PLACEHOLDER, instruction)


@dataclass(frozen=True)
class VIEScorePrompts:
    sc_template: str  # holds VIESCORE_PLACEHOLDER
    pq: str
    source: str
    sha256: str

    def sc(self, instruction: str) -> str:
        return self.sc_template.replace(VIESCORE_PLACEHOLDER, instruction)


def load_imgedit_rubrics(path: Path) -> ImgEditRubrics:
    """ImgEdit's ``prompts.json``: {edit_type: rubric text with <edit_prompt>} for all nine types."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"ImgEdit rubric file {path} not found; run `reca-eval fetch imgedit`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{path}: expected an object of edit type -> rubric text")
    missing = [t for t in IMGEDIT_TYPES if t not in data]
    if missing:
        raise ValueError(f"{path}: no rubric for edit type(s) {missing}")
    without = [t for t, text in data.items() if IMGEDIT_PLACEHOLDER not in text]
    if without:
        raise ValueError(f"{path}: rubric(s) {without} lack the {IMGEDIT_PLACEHOLDER} placeholder")
    return ImgEditRubrics(dict(data), str(path), sha256_file(path))


def _string_assignments(path: Path) -> dict[str, str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not a Python file ({exc.msg})") from exc
    found: dict[str, str] = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value.value
    return found


def load_viescore_prompts(path: Path) -> VIEScorePrompts:
    """GEdit-Bench's VIEScore prompts (``vie_prompts.py``), composed as VIEScore's image-editing task."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"VIEScore prompt file {path} not found; run `reca-eval fetch gedit`")
    strings = _string_assignments(path)
    missing = [n for n in (*_VIESCORE_SC_PARTS, *_VIESCORE_PQ_PARTS) if n not in strings]
    if missing:
        raise ValueError(f"{path}: string assignment(s) {sorted(set(missing))} not found")
    sc = "\n".join(strings[n] for n in _VIESCORE_SC_PARTS)
    if VIESCORE_PLACEHOLDER not in sc:
        raise ValueError(f"{path}: the SC prompt lacks the {VIESCORE_PLACEHOLDER} placeholder")
    pq = "\n".join(strings[n] for n in _VIESCORE_PQ_PARTS)
    return VIEScorePrompts(sc, pq, str(path), sha256_file(path))
