"""DPG-Bench semantics: the question graph, its gating, and how gated answers become scores.

DPG-Bench (ELLA, arXiv 2403.05135) asks a VQA model yes/no questions about each image. Questions are
propositions of a graph: a question whose parent was answered "no" cannot be true, so it is zeroed.
The reference implementation is ``dpg_bench/compute_dpg_bench.py`` in TencentQQGYLab/ELLA (commit
3c228f1); the line numbers below refer to it. Its semantics, reproduced here:

- An answer counts only if it equals ``"yes"`` (L135: ``float(answer == 'yes')``), with no
  normalisation (its mPLUG answers are lower-case single words). Official mode does exactly that:
  ``"Yes"``, ``" yes"`` and ``"yes."`` score 0. Fixed mode normalises first (:func:`normalise_answer`:
  the first word, lower-cased, punctuation stripped), so a chat answerer's ``"Yes, there is."``
  counts; :data:`ANSWER_RULES` words each rule for the record.
- Gating runs over the questions in file order, *in place* (L140-153): a question is zeroed when any
  parent's *current* score is 0, so a parent zeroed earlier in the order zeroes its children in turn,
  while a parent that comes later in the order is read before its own gating. Dependency ``0`` means
  "no parent".
- An image's score is the mean of its gated scores (L155); tiles of one file are averaged (L157) and
  the benchmark score is the mean over files x 100 (L219, L249). Here the unit is the image (tile):
  with every tile present, as in the official 2x2 grid, the two are the same number.
- Category scores use the *raw* (ungated) answers (L138 ``qid2scores_orig``, L208-211), averaged over
  questions, not images. L2 is the ``tuple`` column's text before ``(`` (e.g. ``"entity - whole"``,
  and ``"global -"`` for a tuple ``"global - (...)"``) and L1 its text before ``-`` (L209, L232).
  :func:`load_questions` checks these agree with the ``category_broad`` / ``category_detailed``
  columns where both say something; rows carry both. Official mode groups L2 by the tuple text and
  keeps its name (key ``"<L1>/<tuple text>"``, e.g. ``"entity/entity - whole"``, ``"global/global -"``);
  fixed mode groups by ``category_detailed`` (``"entity/whole"``).

Two quirks of the script are kept under ``mode="official"`` and removed under ``mode="fixed"``:

1. ``prepare_dpg_data`` skips the CSV's first data row (L72-74: ``for i, line in data.iterrows(): if i
   == 0: continue``), so the first item (``partiprompts97`` in the released CSV; ELLA issue #61) is
   scored without its first proposition. When the gating loop of any tile actually reads the dropped
   proposition, ``qid2scores[parent_id]`` raises ``KeyError`` (L146), the exception is caught
   (L213-215, "Failed filename") and the whole file (every tile) is left out. The loop reads a
   question's parents in order and stops at the first one scored 0, so a dependency list "2,1" whose
   proposition 2 was answered "no" never reads the dropped 1 and the file scores. :func:`gate`
   raises :class:`DroppedParentError` exactly when the read happens, on the actual answers; the folder
   scorer then skips every sample of the item (:func:`certain_failure` spares the VQA calls when the
   read cannot be avoided).
2. ``qid2scores_orig`` is overwritten for every tile (L138) and only the last one is returned (L161),
   so the official category scores come from the *last* tile of each file only (ELLA issue #60).
   Official-mode rows therefore feed categories from each item's last sample only.

Fixed mode also differs in the answer rule and the L2 grouping (above). Everything else (gating
order, image and overall means) is the same in both modes.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from reca_eval.core.paths import check_item_id, read_input_text

Mode = Literal["official", "fixed"]
MODES: tuple[str, ...] = ("official", "fixed")

QUESTION_COLUMNS = (
    "item_id",
    "text",
    "keywords",
    "proposition_id",
    "dependency",
    "category_broad",
    "category_detailed",
    "tuple",
    "question_natural_language",
)


class DroppedParentError(ValueError):
    """Official mode only: a question depends on the proposition the official script never loads."""


def check_mode(mode: str) -> Mode:
    if mode not in MODES:
        raise ValueError(f"DPG mode must be one of {MODES}, got {mode!r}")
    return mode  # type: ignore[return-value]


ANSWER_RULES: dict[str, str] = {
    "official": "answer == 'yes' exactly (compute_dpg_bench.py L135)",
    "fixed": "first word of the answer, lower-cased, punctuation stripped, == 'yes'",
}
_WORD = re.compile(r"[a-z0-9]+")


def normalise_answer(answer: str) -> str:
    """Fixed mode's reading of an answer: its first word, lower-case, without punctuation."""
    words = str(answer).lower().split(maxsplit=1)
    match = _WORD.search(words[0]) if words else None
    return match.group(0) if match else ""


def answer_is_yes(answer: str, mode: Mode = "official") -> bool:
    """Official: the exact string ``"yes"`` (as the script's ``answer == 'yes'``); fixed: normalised first."""
    if check_mode(mode) == "official":
        return answer == "yes"
    return normalise_answer(answer) == "yes"


def official_l2(tuple_text: str) -> str:
    """The official L2 category of a question: its ``tuple`` text before ``(``, stripped (L209)."""
    return tuple_text.split("(")[0].strip()


def _official_categories(tuple_text: str) -> tuple[str, str]:
    """(L1, L2) exactly as the official script derives them from the ``tuple`` column (L209, L232)."""
    l2 = official_l2(tuple_text)
    return l2.split("-")[0].strip(), l2


def _question_records(csv_path: Path) -> list[dict]:
    """The CSV's data rows as dicts of the question columns, each with its ``csv_line``."""
    fh = io.StringIO(read_input_text(csv_path, "question file"), newline="")
    reader = csv.reader(fh)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ValueError(f"{csv_path}: empty file, expected a header with {list(QUESTION_COLUMNS)}") from None
    missing = [c for c in QUESTION_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{csv_path}:1: header lacks column(s) {missing}; has {header}")
    index = {name: header.index(name) for name in QUESTION_COLUMNS}
    records: list[dict] = []
    line_start = reader.line_num + 1
    for fields in reader:
        line = line_start
        line_start = reader.line_num + 1
        if not fields or all(not f.strip() for f in fields):
            continue  # blank line: pandas (the official reader) skips these too
        if len(fields) != len(header):
            raise ValueError(f"{csv_path}:{line}: {len(fields)} fields, header has {len(header)}")
        rec = {name: fields[i] for name, i in index.items()}
        rec["csv_line"] = line
        records.append(rec)
    return records


def load_questions(csv_path: Path) -> pd.DataFrame:
    """Read and validate a DPG-Bench question-graph CSV.

    Returns one row per question in file order with the CSV's columns (``proposition_id`` as int,
    ``dependency`` parsed to a tuple of ints, 0 = no parent) plus ``category_official`` (the official
    L2 name, :func:`official_l2`), ``csv_line`` (the file line a row starts on) and ``row_index`` (0
    for the first data row: the one the official script skips).
    Errors name the file and line: missing columns, empty or non-integer ids, duplicate propositions
    within an item, an item whose rows are not contiguous (the official loader would silently keep
    only the last run of rows), dependencies on propositions the item does not have, and category
    columns that disagree with the ``tuple`` column the official script groups by.
    """
    csv_path = Path(csv_path)
    try:
        records = _question_records(csv_path)
    except csv.Error as exc:
        raise ValueError(f"{csv_path}: not a readable CSV file ({exc})") from None
    if not records:
        raise ValueError(f"{csv_path}: no questions")

    seen_items: set[str] = set()
    props_by_item: dict[str, set[int]] = {}
    previous_item = None
    for row_index, rec in enumerate(records):
        where = f"{csv_path}:{rec['csv_line']}"
        item = rec["item_id"].strip()
        if not item:
            raise ValueError(f"{where}: empty item_id")
        check_item_id(item, where)
        if item != previous_item and item in seen_items:
            raise ValueError(f"{where}: rows of item {item!r} are not contiguous (it appeared earlier)")
        seen_items.add(item)
        previous_item = item
        try:
            prop = int(rec["proposition_id"])
        except ValueError:
            raise ValueError(f"{where}: proposition_id {rec['proposition_id']!r} is not an integer") from None
        if prop <= 0:
            raise ValueError(f"{where}: proposition_id must be >= 1 (0 means 'no parent'), got {prop}")
        if prop in props_by_item.setdefault(item, set()):
            raise ValueError(f"{where}: duplicate proposition_id {prop} in item {item!r}")
        props_by_item[item].add(prop)
        try:
            deps = tuple(int(d.strip()) for d in rec["dependency"].split(","))
        except ValueError:
            raise ValueError(
                f"{where}: dependency {rec['dependency']!r} is not a comma-separated list of integers"
            ) from None
        if prop in deps:
            raise ValueError(f"{where}: proposition {prop} of item {item!r} depends on itself")
        l1, l2 = _official_categories(rec["tuple"])
        broad, detailed = rec["category_broad"].strip(), rec["category_detailed"].strip()
        l2_rest = l2.split("-", 1)[1].strip() if "-" in l2 else ""
        if l1 != broad or (l2_rest and l2_rest != detailed):
            raise ValueError(
                f"{where}: category_broad/category_detailed {broad!r}/{detailed!r} disagree with the tuple "
                f"{rec['tuple']!r} (the official script groups by the tuple: L1 {l1!r}, L2 {l2!r})"
            )
        rec.update(
            item_id=item,
            proposition_id=prop,
            dependency=deps,
            category_broad=broad,
            category_detailed=detailed,
            category_official=l2,
            row_index=row_index,
        )
    for rec in records:
        unknown = [d for d in rec["dependency"] if d != 0 and d not in props_by_item[rec["item_id"]]]
        if unknown:
            raise ValueError(
                f"{csv_path}:{rec['csv_line']}: proposition {rec['proposition_id']} of item "
                f"{rec['item_id']!r} depends on {unknown}, which the item does not have"
            )
    return pd.DataFrame.from_records(
        records, columns=[*QUESTION_COLUMNS, "category_official", "csv_line", "row_index"]
    )


def frame_records(questions: pd.DataFrame) -> list[dict]:
    """``questions.to_dict("records")``: one dict per row, Python scalars as ``to_dict`` gives them, built
    from each column's ``tolist()`` (``to_dict``'s per-call cost was a third of scoring a shapes-dpg run,
    which reads one small frame per item)."""
    columns = list(questions.columns)
    values = [questions[c].tolist() for c in questions.columns]
    return [dict(zip(columns, row, strict=True)) for row in zip(*values, strict=True)]


def asked_questions(questions_for_item: pd.DataFrame, mode: Mode) -> pd.DataFrame:
    """The questions the protocol asks, in gating order: all of them, less the first CSV row if official."""
    check_mode(mode)
    if mode == "official":
        return questions_for_item[questions_for_item["row_index"] != 0]
    return questions_for_item


def gate(questions_for_item: pd.DataFrame, raw: dict[int, float], mode: Mode) -> dict[int, float]:
    """Gated scores of one image's questions: zero a question when a parent's current score is 0.

    Runs in the rows' order and in place, as the official script does (see the module docstring), over
    :func:`asked_questions`. ``raw`` maps proposition_id -> raw score (1.0 for "yes", else 0.0).
    Raises :class:`DroppedParentError` in official mode when the loop reads the dropped first row's
    proposition: a parent listed after one already at 0 is never read (the official script fails
    the whole file only on the read).
    """
    asked = asked_questions(questions_for_item, mode)
    props = asked["proposition_id"].tolist()
    absent = [p for p in props if p not in raw]
    if absent:
        raise KeyError(f"no raw score for proposition(s) {absent} (have {sorted(raw)})")
    scores = {p: float(raw[p]) for p in props}
    for prop, parents in zip(props, asked["dependency"], strict=True):
        for parent in parents:
            if parent == 0:
                continue
            if parent not in scores:
                raise _dropped_parent(prop, parent)
            if scores[parent] == 0:
                scores[prop] = 0.0
                break
    return scores


def _dropped_parent(prop: int, parent: int) -> DroppedParentError:
    return DroppedParentError(
        f"proposition {prop} depends on proposition {parent}, which official mode drops with the "
        "CSV's first row (compute_dpg_bench.py L73); the official script fails this image (L146)"
    )


def certain_failure(questions_for_item: pd.DataFrame, mode: Mode) -> DroppedParentError | None:
    """The error official-mode gating raises on this item whatever the answers are, or None.

    The gating loop always reads a question's first non-zero parent; only when that is the dropped
    first row is the failure certain (a later parent is read only if the earlier ones are not 0).
    An item whose only question was the dropped row is not in the script's question table at all,
    and fails too (``value['qid2tuple']`` on ``None``, L122).
    """
    asked = asked_questions(questions_for_item, mode)
    if asked.empty:
        return DroppedParentError(
            "the item's only question is the CSV's first row, which official mode drops "
            "(compute_dpg_bench.py L73); the official script has no questions for it and fails this image"
        )
    present = set(asked["proposition_id"].tolist())
    for prop, parents in zip(asked["proposition_id"], asked["dependency"], strict=True):
        first = next((p for p in parents if p != 0), None)
        if first is not None and first not in present:
            return _dropped_parent(int(prop), first)
    return None


def item_rows(
    item_id: str, sample: int, questions_for_item: pd.DataFrame, answers: dict[int, str], mode: Mode
) -> list[dict]:
    """Per-question result rows for one image: raw and gated score, the answer, categories, mode.

    ``answers`` maps proposition_id -> the VQA model's answer for every asked question. In official
    mode the first CSV row is not asked and has no row. Raises :class:`DroppedParentError` as
    :func:`gate` does.
    """
    asked = asked_questions(questions_for_item, mode)
    raw = {p: float(answer_is_yes(answers[p], mode)) for p in asked["proposition_id"] if p in answers}
    gated = gate(questions_for_item, raw, mode)
    return [
        {
            "item_id": str(item_id),
            "sample": int(sample),
            "proposition_id": int(prop),
            "category": broad,
            "category_detailed": detailed,
            "category_official": official,
            "raw": raw[prop],
            "score": gated[prop],
            "answer": str(answers[prop]),
            "mode": mode,
        }
        for prop, broad, detailed, official in zip(
            asked["proposition_id"],
            asked["category_broad"],
            asked["category_detailed"],
            asked["category_official"],
            strict=True,
        )
    ]


def _group_means(codes: np.ndarray, n: int, values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean of ``values`` per group code; NaN for a group with no weight (absent from a replicate)."""
    total = np.bincount(codes, weights=weights * values, minlength=n)
    mass = np.bincount(codes, weights=weights, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mass > 0, total / np.where(mass > 0, mass, 1.0), np.nan)


def aggregate(rows: pd.DataFrame, weights: np.ndarray | None = None) -> dict[str, float]:
    """DPG-Bench scores (x100) from per-question rows made by :func:`item_rows`.

    ``overall``: weighted mean over images (item_id, sample) of the image's mean gated score.
    L1 categories keyed by ``category``; L2 keyed ``"L1/L2"``: weighted means of the *raw* scores over
    questions; in official mode only each item's last sample counts for them, and L2 is the official
    tuple-text name (``category_official``; rows without that column fall back to
    ``category_detailed``), in fixed mode ``category_detailed`` (module docstring).
    ``weights`` are per-row (cluster-bootstrap multiplicities; None = all 1). A category with no weight
    in a replicate is NaN.
    """
    needed = ("item_id", "sample", "category", "category_detailed", "raw", "score")
    missing = [c for c in needed if c not in rows.columns]
    if missing:
        raise ValueError(f"DPG rows lack column(s) {missing}")
    if len(rows) == 0:
        raise ValueError("no DPG rows to aggregate")
    w = np.ones(len(rows)) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (len(rows),):
        raise ValueError(f"weights have shape {w.shape}, expected ({len(rows)},)")
    if (w < 0).any():
        raise ValueError("weights must be non-negative")
    modes = set(rows["mode"].unique()) if "mode" in rows.columns else {"fixed"}
    if len(modes) != 1:
        raise ValueError(f"DPG rows mix modes {sorted(modes)}; score each mode separately")
    mode = check_mode(modes.pop())

    # Integer codes throughout: the bootstrap calls this once per replicate on the same rows.
    item_codes, item_names = pd.factorize(rows["item_id"].astype(str))
    samples = rows["sample"].to_numpy(np.int64)
    sample_codes, sample_values = pd.factorize(samples)
    image_codes, _ = pd.factorize(item_codes * len(sample_values) + sample_codes)
    n_images = int(image_codes.max()) + 1
    rows_per_image = np.bincount(image_codes, minlength=n_images)
    image_score = (
        np.bincount(image_codes, weights=rows["score"].to_numpy(float), minlength=n_images) / rows_per_image
    )
    # Rows of one image share a cluster, hence a weight: the image's weight is its rows' mean weight.
    image_weight = np.bincount(image_codes, weights=w, minlength=n_images) / rows_per_image
    if image_weight.sum() <= 0:
        raise ValueError("all weights are zero")
    result = {"overall": float((image_weight * image_score).sum() / image_weight.sum() * 100)}

    in_categories = np.ones(len(rows), dtype=bool)
    if mode == "official":
        last_sample = np.full(len(item_names), np.iinfo(np.int64).min)
        np.maximum.at(last_sample, item_codes, samples)
        in_categories = samples == last_sample[item_codes]
    raw = rows["raw"].to_numpy(float)[in_categories]
    wc = w[in_categories]
    l1_codes, l1_names = pd.factorize(rows["category"].astype(str), sort=True)
    l2_column = (
        "category_official"
        if mode == "official" and "category_official" in rows.columns
        else "category_detailed"
    )
    l2_codes, l2_names = pd.factorize(rows[l2_column].astype(str), sort=True)
    l1_codes, l2_codes = l1_codes[in_categories], l2_codes[in_categories]
    for code, value in enumerate(_group_means(l1_codes, len(l1_names), raw, wc)):
        result[str(l1_names[code])] = float(value * 100)
    pair_codes, pairs = pd.factorize(l1_codes * len(l2_names) + l2_codes, sort=True)
    l2_means = _group_means(pair_codes, len(pairs), raw, wc)
    for pair, value in zip(pairs, l2_means, strict=True):
        l1_name, l2_name = l1_names[pair // len(l2_names)], l2_names[pair % len(l2_names)]
        result[f"{l1_name}/{l2_name}"] = float(value * 100)
    return result
