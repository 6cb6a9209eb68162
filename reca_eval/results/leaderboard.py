"""The leaderboard: the results store read as tables, paired comparisons of runs, and the CI regression gate.

Two numbers share a table only when they measured the same thing: the same benchmark, spec version
and item file (``items_sha256``). Each run lives in ``results/runs/<run_id>/`` (see
:mod:`reca_eval.core.records`); the leaderboard files ``results/leaderboard.csv`` and
``results/leaderboard.json`` are derived from those folders and can be rebuilt at any time.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from reca_eval.core.records import (
    PER_IMAGE_FILE,
    RECORD_FILE,
    RunRecord,
    Skip,
    atomic_write_text,
    check_per_image,
    parse_record,
    read_run,
)
from reca_eval.results.stats import AggregateFn, PairedDelta, cluster_bootstrap, paired_bootstrap

RUNS_DIR = "runs"
LEADERBOARD_CSV = "leaderboard.csv"
LEADERBOARD_JSON = "leaderboard.json"

# A run with or without the folder it was read from (None: built in memory, no per-image rows).
RunEntry = tuple[RunRecord, "Path | None"]


# ---------------------------------------------------------------------------------------------- store


@dataclass
class RunScan:
    """What ``results/runs`` holds: the readable runs (record, run folder) and the records skipped."""

    runs: list[tuple[RunRecord, Path]]
    skipped: list[Skip]


def _parse_record(path: Path) -> RunRecord:
    record = parse_record(path)
    check_per_image(record, path.parent / PER_IMAGE_FILE)
    return record


def scan_runs(results_dir: Path) -> RunScan:
    """Read every ``results_dir/runs/*/record.json``; a corrupt record becomes a :class:`Skip`.

    Hidden folders (a run being written, under its staging name) are not runs yet. A record is
    corrupt when it is not strict JSON, a field has the wrong type, its figures differ from their
    digest, or its per-image file is missing or differs from the one it was written with."""
    runs: list[tuple[RunRecord, Path]] = []
    skipped: list[Skip] = []
    runs_dir = Path(results_dir) / RUNS_DIR
    if not runs_dir.is_dir():
        return RunScan(runs=runs, skipped=skipped)
    for record_path in sorted(runs_dir.glob(f"*/{RECORD_FILE}")):
        if record_path.parent.name.startswith("."):
            continue
        try:
            runs.append((_parse_record(record_path), record_path.parent))
        except (ValueError, OSError) as exc:
            skipped.append(Skip(path=str(record_path), reason=str(exc)))
    return RunScan(runs=runs, skipped=skipped)


def leaderboard_is_stale(results_dir: Path) -> bool:
    """The leaderboard files are derived from the records: stale when missing or older than the newest
    record (a run killed between writing its record and rebuilding them, or a record copied in)."""
    results_dir = Path(results_dir)
    try:
        built = min((results_dir / name).stat().st_mtime_ns for name in (LEADERBOARD_CSV, LEADERBOARD_JSON))
    except OSError:
        return True
    newest = 0
    for record_path in (results_dir / RUNS_DIR).glob(f"*/{RECORD_FILE}"):
        try:
            newest = max(newest, record_path.stat().st_mtime_ns, record_path.parent.stat().st_mtime_ns)
        except OSError:
            continue
    return newest > built


def load_runs(results_dir: Path) -> list[tuple[RunRecord, Path]]:
    """Every readable run under ``results_dir/runs`` as (record, run folder); warns once per corrupt record."""
    scan = scan_runs(results_dir)
    for skip in scan.skipped:
        warnings.warn(f"skipping corrupt result record {skip.path}: {skip.reason}", stacklevel=2)
    if scan.skipped:
        warnings.warn(
            f"skipped {len(scan.skipped)} of {len(scan.skipped) + len(scan.runs)} result records in "
            f"{Path(results_dir) / RUNS_DIR}",
            stacklevel=2,
        )
    return scan.runs


def _describe(record: RunRecord, path: Path) -> str:
    return (
        f"{record.benchmark}: run {record.run_id} (label {record.label!r}, model {record.model}, "
        f"created {record.created or 'unknown'}, {path})"
    )


def run_candidates(
    ref: str, results_dir: Path, benchmark: str | None = None
) -> dict[str, list[tuple[RunRecord, Path]]]:
    """What ``ref`` may name, per benchmark: {benchmark: [(record, run folder), ...]}.

    ``ref`` is a run folder or record.json (one run), a run id (one run), or a label. A label keeps,
    per benchmark, the latest run of each checkpoint that carries it.
    """
    path = Path(ref)
    if path.exists():
        record, _ = read_run(path)
        found = [(record, path)]
    else:
        runs = load_runs(results_dir)
        found = [(rec, p) for rec, p in runs if rec.run_id == ref]
        if not found:
            latest: dict[tuple[str, str], tuple[RunRecord, Path]] = {}
            for rec, p in runs:
                if rec.label == ref:
                    key = (rec.benchmark, rec.model)
                    if key not in latest or _recency((rec, p)) > _recency(latest[key]):
                        latest[key] = (rec, p)
            found = list(latest.values())
        if not found:
            raise LookupError(f"no run named {ref!r} (not a path, run id or label under {results_dir})")
    by_benchmark: dict[str, list[tuple[RunRecord, Path]]] = {}
    for rec, p in found:
        by_benchmark.setdefault(rec.benchmark, []).append((rec, p))
    if benchmark is not None:
        if benchmark not in by_benchmark:
            raise LookupError(
                f"{ref!r} names no run of {benchmark}; it names runs of: {', '.join(sorted(by_benchmark))}"
            )
        by_benchmark = {benchmark: by_benchmark[benchmark]}
    return dict(sorted(by_benchmark.items()))


def _single(ref: str, benchmark: str, candidates: list[tuple[RunRecord, Path]]) -> Path:
    """The latest of a label's runs on one benchmark; when several checkpoints carry the label, a
    warning names the runs left aside (a run id or folder picks one of them)."""
    ordered = sorted(candidates, key=_recency)
    if len(ordered) > 1:
        listing = "\n  ".join(_describe(rec, p) for rec, p in ordered[:-1])
        warnings.warn(
            f"label {ref!r} is carried by {len(ordered)} checkpoints on {benchmark}; using the latest, run "
            f"{ordered[-1][0].run_id} ({ordered[-1][0].model}); name another by run id or folder:\n  {listing}",
            stacklevel=3,
        )
    return ordered[-1][1]


def resolve_run(ref: str, results_dir: Path, benchmark: str | None = None) -> Path:
    """The one run ``ref`` names (folder, record.json, run id, or label: the latest run with it).

    A label resolves per benchmark: without ``benchmark``, a label with runs of several benchmarks is
    ambiguous, a LookupError listing the candidates; so is a reference that names nothing.
    """
    candidates = run_candidates(ref, results_dir, benchmark)
    if len(candidates) > 1:
        listing = "\n  ".join(_describe(rec, p) for runs in candidates.values() for rec, p in runs)
        raise LookupError(
            f"{ref!r} names runs of {len(candidates)} benchmarks ({', '.join(candidates)}); say which "
            f"benchmark (--benchmark) or name a run by id or folder:\n  {listing}"
        )
    ((name, runs),) = candidates.items()
    return _single(ref, name, runs)


def resolve_pairs(
    ref_a: str, ref_b: str, results_dir: Path, benchmark: str | None = None
) -> list[tuple[str, Path, Path]]:
    """(benchmark, run A, run B) for every benchmark the two references share, sorted by benchmark.

    LookupError when they share none.
    """
    a = run_candidates(ref_a, results_dir, benchmark)
    b = run_candidates(ref_b, results_dir, benchmark)
    shared = [name for name in a if name in b]
    if not shared:
        raise LookupError(
            f"{ref_a!r} and {ref_b!r} share no benchmark: {ref_a!r} has runs of {', '.join(a)}; "
            f"{ref_b!r} of {', '.join(b)}"
        )
    return [(name, _single(ref_a, name, a[name]), _single(ref_b, name, b[name])) for name in shared]


def latest_run(results_dir: Path, benchmark: str, *, excluding: str = "") -> Path:
    """The newest run of ``benchmark`` under ``results_dir`` other than run id ``excluding``;
    LookupError when there is none."""
    candidates = [
        (rec, p)
        for rec, p in load_runs(results_dir)
        if rec.benchmark == benchmark and rec.run_id != excluding
    ]
    if not candidates:
        raise LookupError(f"no run of {benchmark} under {results_dir} to check against the baseline")
    return max(candidates, key=lambda rp: rp[0].created)[1]


# ---------------------------------------------------------------------------------------------- tables


@dataclass
class LeaderboardTable:
    """One comparable group of runs: the latest run per (model, label), ranked by overall score.

    ``frame`` has one row per shown run (index: the row name) and one column per category, overall
    first. ``older_runs`` maps a row name to how many older runs of it were hidden.
    """

    benchmark: str
    spec_version: str
    items_sha256: str
    frame: pd.DataFrame
    runs: dict[str, RunEntry]
    older_runs: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.benchmark} v{self.spec_version} (items {self.items_sha256[:8] or 'unknown'})"


def _as_entries(records: Iterable[RunRecord | RunEntry]) -> list[RunEntry]:
    entries: list[RunEntry] = []
    for item in records:
        if isinstance(item, RunRecord):
            entries.append((item, None))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], RunRecord):
            entries.append((item[0], None if item[1] is None else Path(item[1])))
        else:
            raise TypeError(f"expected a RunRecord or (RunRecord, Path), got {type(item).__name__}")
    return entries


def _recency(entry: RunEntry) -> tuple[int, str, str]:
    record, path = entry
    created = pd.to_datetime(record.created, utc=True, errors="coerce") if record.created else pd.NaT
    # Undated records sort oldest; ties fall back to run id, then folder, so the choice is stable.
    return (-(2**63) if pd.isna(created) else created.value, record.run_id, str(path or ""))


def _ordered_categories(records: Sequence[RunRecord]) -> list[str]:
    seen: dict[str, None] = {"overall": None}
    for record in records:
        for key in record.scores:
            seen.setdefault(key, None)
    return list(seen)


def _row_names(latest: list[RunEntry]) -> list[str]:
    names = [record.label or record.model for record, _ in latest]
    # Two different models given the same label stay apart: add the model to the name.
    counts = pd.Series(names).value_counts()
    return [
        f"{name} [{record.model}]" if counts[name] > 1 else name
        for name, (record, _) in zip(names, latest, strict=True)
    ]


def leaderboard_tables(records: Iterable[RunRecord | RunEntry]) -> list[LeaderboardTable]:
    """Group runs by (benchmark, spec_version, items_sha256); keep the latest run per (model, label)."""
    groups: dict[tuple[str, str, str], list[RunEntry]] = {}
    for entry in _as_entries(records):
        record = entry[0]
        groups.setdefault((record.benchmark, record.spec_version, record.items_sha256), []).append(entry)
    tables = []
    for (benchmark, spec_version, items_sha256), entries in sorted(groups.items()):
        by_identity: dict[tuple[str, str], list[RunEntry]] = {}
        for entry in entries:
            by_identity.setdefault((entry[0].model, entry[0].label), []).append(entry)
        latest = [max(runs, key=_recency) for runs in by_identity.values()]
        hidden = [len(runs) - 1 for runs in by_identity.values()]
        names = _row_names(latest)
        categories = _ordered_categories([record for record, _ in latest])
        frame = pd.DataFrame(
            [[float(record.scores.get(c, math.nan)) for c in categories] for record, _ in latest],
            index=pd.Index(names, name="model"),
            columns=categories,
        )
        frame = frame.sort_values("overall", ascending=False, kind="stable", na_position="last")
        tables.append(
            LeaderboardTable(
                benchmark=benchmark,
                spec_version=spec_version,
                items_sha256=items_sha256,
                frame=frame,
                runs=dict(zip(names, latest, strict=True)),
                older_runs={n: h for n, h in zip(names, hidden, strict=True) if h},
            )
        )
    return tables


def leaderboard_frame(records: Iterable[RunRecord | RunEntry]) -> pd.DataFrame:
    """Wide table: one row per model/label, columns (table, category) with table = benchmark, version, items."""
    tables = leaderboard_tables(records)
    if not tables:
        return pd.DataFrame(columns=pd.MultiIndex.from_tuples([], names=["table", "category"]))
    frame = pd.concat([t.frame for t in tables], axis=1, keys=[t.name for t in tables], sort=False)
    frame.columns.names = ["table", "category"]
    return frame


def _long_rows(tables: list[LeaderboardTable]) -> pd.DataFrame:
    rows = []
    for table in tables:
        for name in table.frame.index:  # rank order
            record = table.runs[name][0]
            for category, score in table.frame.loc[name].items():
                if pd.isna(score):
                    continue
                rows.append(
                    {
                        "benchmark": table.benchmark,
                        "spec_version": table.spec_version,
                        "items_sha256": table.items_sha256,
                        "model": name,
                        "label": record.label,
                        "checkpoint": record.model,
                        "run_id": record.run_id,
                        "created": record.created,
                        "category": category,
                        "score": score,
                        "older_runs_hidden": table.older_runs.get(name, 0),
                    }
                )
    return pd.DataFrame(rows)


def write_leaderboard(results_dir: Path) -> tuple[Path, Path]:
    """Rebuild ``results/leaderboard.csv`` (tidy: one row per table, model, category) and ``.json``.

    The JSON keeps the grouping: one entry per table with its provenance, rows in rank order, and the
    corrupt records that were skipped.
    """
    results_dir = Path(results_dir)
    csv_path, json_path = results_dir / LEADERBOARD_CSV, results_dir / LEADERBOARD_JSON
    # Runs finishing at the same time: a run whose folder appeared after this scan began, and that
    # rebuilt before this write, would be missing from the files; scan again until the folder is still.
    for _ in range(_REBUILD_ATTEMPTS):
        listed = _run_folders(results_dir)
        scan = scan_runs(results_dir)
        tables = leaderboard_tables(scan.runs)
        atomic_write_text(csv_path, leaderboard_csv(tables))
        atomic_write_text(json_path, json.dumps(leaderboard_payload(tables, scan.skipped), indent=2) + "\n")
        if _run_folders(results_dir) == listed:
            break
    for skip in scan.skipped:
        warnings.warn(f"skipping corrupt result record {skip.path}: {skip.reason}", stacklevel=2)
    return csv_path, json_path


_REBUILD_ATTEMPTS = 5


def _run_folders(results_dir: Path) -> list[str]:
    try:
        return sorted(p.name for p in (Path(results_dir) / RUNS_DIR).iterdir() if not p.name.startswith("."))
    except OSError:
        return []


def leaderboard_csv(tables: list[LeaderboardTable]) -> str:
    """Tidy CSV: one row per (table, model, category)."""
    return _long_rows(tables).to_csv(index=False)


def leaderboard_payload(tables: list[LeaderboardTable], skipped: Sequence[Skip] = ()) -> dict:
    """The leaderboard as JSON: one entry per table with its provenance, rows in rank order."""
    return {
        "tables": [
            {
                "benchmark": t.benchmark,
                "spec_version": t.spec_version,
                "items_sha256": t.items_sha256,
                "categories": list(t.frame.columns),
                "rows": [
                    {
                        "model": name,
                        "label": t.runs[name][0].label,
                        "checkpoint": t.runs[name][0].model,
                        "run_id": t.runs[name][0].run_id,
                        "created": t.runs[name][0].created,
                        "older_runs_hidden": t.older_runs.get(name, 0),
                        "scores": {
                            c: (None if pd.isna(v) else float(v)) for c, v in t.frame.loc[name].items()
                        },
                    }
                    for name in t.frame.index
                ],
            }
            for t in tables
        ],
        "skipped_records": [{"path": s.path, "reason": s.reason} for s in skipped],
    }


def format_score(value: float, decimals: int) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{decimals}f}"


def _decimals(frame: pd.DataFrame) -> int:
    values = frame.to_numpy(dtype=float)
    values = values[pd.notna(values)]
    # Fractions (GenEval, DPG as 0-1) read best with 3 decimals; 0-100 or 1-10 scales with 2.
    return 3 if values.size == 0 or (values.min() >= 0 and values.max() <= 1) else 2


def _registry_aggregate(benchmark: str) -> AggregateFn:
    from reca_eval import registry

    return registry.get(benchmark).aggregate


@dataclass
class FormattedTable:
    """A leaderboard table as display strings, shared by the terminal, markdown and HTML forms.

    ``cells[name]`` holds one (text, is_best) pair per category, in ``categories`` order.
    """

    table: LeaderboardTable
    categories: list[str]
    cells: dict[str, list[tuple[str, bool]]]
    notes: list[str]


def format_tables(
    records: Iterable[RunRecord | RunEntry],
    *,
    with_ci: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    aggregate_for: Callable[[str], AggregateFn] | None = None,
) -> list[FormattedTable]:
    """Scores formatted per table (3 decimals for 0-1 scales, 2 otherwise), ± half-widths with ``with_ci``."""
    lookup = aggregate_for or _registry_aggregate
    formatted = []
    for table in leaderboard_tables(records):
        decimals = _decimals(table.frame)
        half_widths: dict[str, dict[str, float]] = {}
        notes: list[str] = []
        if with_ci:
            half_widths, notes = _half_widths(table, lookup, n_boot=n_boot, seed=seed, alpha=alpha)
        best = table.frame.max(axis=0, skipna=True)
        cells: dict[str, list[tuple[str, bool]]] = {}
        for name, scores in table.frame.iterrows():
            cells[name] = []
            for category, value in scores.items():
                text = format_score(value, decimals)
                if category in half_widths.get(name, {}):
                    text += f" ±{format_score(half_widths[name][category], decimals)}"
                is_best = bool(len(table.frame) > 1 and pd.notna(value) and value == best[category])
                cells[name].append((text, is_best))
        for name, hidden in table.older_runs.items():
            notes.append(f"{name}: latest of {hidden + 1} runs shown")
        if with_ci:
            notes.append(
                f"± half-width of the {100 * (1 - alpha):.0f}% cluster-bootstrap interval (prompts resampled)"
            )
        formatted.append(FormattedTable(table, [str(c) for c in table.frame.columns], cells, notes))
    return formatted


def render_leaderboard(
    records: Iterable[RunRecord | RunEntry],
    console: Console,
    *,
    with_ci: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    aggregate_for: Callable[[str], AggregateFn] | None = None,
    shown: Callable[[str], Sequence[str]] | None = None,
) -> list[LeaderboardTable]:
    """Print one rich table per comparable group; the best score of each column in bold.

    ``with_ci`` adds ± the half-width of the cluster-bootstrap interval, computed from each run's
    per-image rows with the benchmark's aggregate (``aggregate_for(benchmark)``, default: the registry).
    ``shown(benchmark)``: the figures printed besides ``overall`` (None = all); a note counts the rest.
    """
    formatted = format_tables(
        records, with_ci=with_ci, n_boot=n_boot, seed=seed, alpha=alpha, aggregate_for=aggregate_for
    )
    if not formatted:
        console.print("No result records found.")
        return []
    for f in formatted:
        cells = {
            name: [Text(text, style="bold" if is_best else "") for text, is_best in row]
            for name, row in f.cells.items()
        }
        categories = f.categories
        if shown is not None:
            wanted = set(shown(f.table.benchmark)) | {"overall"}
            keep = [i for i, c in enumerate(categories) if c in wanted]
            if len(keep) < len(categories):
                f.notes.append(
                    f"{len(categories) - len(keep)} more figures in the report and `reca-eval leaderboard`"
                )
                categories = [categories[i] for i in keep]
                cells = {name: [row[i] for i in keep] for name, row in cells.items()}
        # Rows are checkpoints; when the categories would not fit across the terminal (editing
        # benchmarks have twenty), the table turns so that categories run down instead.
        cell_width = 16 if with_ci else 9
        # Every user string (labels, paths, categories) goes in as Text or escaped: rich would read
        # a label such as "geneval [/data/sft]" as markup and die on the closing tag.
        if (len(categories) + 1) * (cell_width + 3) <= console.width:
            out = Table(title=Text(f.table.name), title_justify="left")
            out.add_column("model")
            for category in categories:
                out.add_column(Text(category), justify="right")
            for name, row in cells.items():
                out.add_row(Text(str(name)), *row)
            parts = [out]
        else:
            # More checkpoints than fit across too: consecutive tables of as many as fit, each with
            # the category column, instead of columns truncated to one character.
            category_width = min(24, max(len(c) for c in categories)) + 3
            per = max(1, (console.width - category_width) // (max(cell_width, 12) + 3))
            names = list(cells)
            groups = [names[i : i + per] for i in range(0, len(names), per)]
            parts = []
            for k, group in enumerate(groups, 1):
                title = f.table.name if len(groups) == 1 else f"{f.table.name} ({k}/{len(groups)})"
                out = Table(title=Text(title), title_justify="left")
                out.add_column("category")
                for name in group:
                    out.add_column(Text(str(name)), justify="right")
                for i, category in enumerate(categories):
                    out.add_row(Text(category), *(cells[name][i] for name in group))
                parts.append(out)
        if f.notes:
            parts[-1].caption = Text("\n".join(f.notes))
            parts[-1].caption_justify = "left"
        for out in parts:
            console.print(out)
    return [f.table for f in formatted]


def _half_widths(
    table: LeaderboardTable, lookup: Callable[[str], AggregateFn], *, n_boot: int, seed: int, alpha: float
) -> tuple[dict[str, dict[str, float]], list[str]]:
    half_widths: dict[str, dict[str, float]] = {}
    notes: list[str] = []
    try:
        aggregate = lookup(table.benchmark)
    except KeyError as exc:
        return half_widths, [f"no intervals: {exc}"]
    for name, (_, path) in table.runs.items():
        if path is None:
            notes.append(f"{name}: no interval (record has no run folder)")
            continue
        try:
            _, rows = read_run(path)
        except (OSError, ValueError) as exc:
            notes.append(f"{name}: no interval ({exc})")
            continue
        intervals = cluster_bootstrap(rows, aggregate, n_boot=n_boot, seed=seed, alpha=alpha)
        half_widths[name] = {k: v.half_width for k, v in intervals.items()}
    return half_widths, notes


# ---------------------------------------------------------------------------------------------- compare


@dataclass
class CompareResult:
    """Run B against run A on the rows they share: per-key scores, delta (B − A) and its interval."""

    record_a: RunRecord
    record_b: RunRecord
    path_a: Path
    path_b: Path
    deltas: dict[str, PairedDelta]
    alpha: float
    n_boot: int
    warnings: list[str] = field(default_factory=list)

    @property
    def n_pairs(self) -> int:
        return next(iter(self.deltas.values())).n_pairs

    @property
    def unmatched(self) -> tuple[int, int]:
        first = next(iter(self.deltas.values()))
        return first.unmatched_a, first.unmatched_b


def _run_name(record: RunRecord, path: Path) -> str:
    return record.label or record.model or path.name


def seed_difference(seeds_a: Sequence[int], seeds_b: Sequence[int], shown: int = 8) -> str:
    """Two runs' generation seeds side by side when short, else how many differ and the first that does:
    a run of 1,080 images has 1,080 seeds, too many for one warning line."""
    if max(len(seeds_a), len(seeds_b)) <= shown:
        return f"{list(seeds_a)} vs {list(seeds_b)}"
    differing = [i for i, (a, b) in enumerate(zip(seeds_a, seeds_b, strict=False)) if a != b]
    counts = (
        f"{len(seeds_a):,} vs {len(seeds_b):,} seeds"
        if len(seeds_a) != len(seeds_b)
        else f"{len(seeds_a):,} seeds"
    )
    if not differing:
        return counts
    first = differing[0]
    return f"{counts}, {len(differing):,} differ; the first at image {first}: {seeds_a[first]} vs {seeds_b[first]}"


def compare_runs(
    run_a: Path,
    run_b: Path,
    aggregate: AggregateFn | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    *,
    alpha: float = 0.05,
    keys: Sequence[str] | None = None,
) -> CompareResult:
    """Paired cluster-bootstrap comparison of two run folders (or their record.json).

    Refuses runs that did not measure the same thing (benchmark, spec version, item file); warns when
    the generation seeds differ, since then part of the delta is sampling noise of the generator.
    ``aggregate=None`` uses the registered benchmark's aggregate.
    """
    record_a, rows_a = read_run(Path(run_a))
    record_b, rows_b = read_run(Path(run_b))
    differences = [
        f"{name}: {getattr(record_a, name)!r} vs {getattr(record_b, name)!r}"
        for name in ("benchmark", "spec_version", "items_sha256")
        if getattr(record_a, name) != getattr(record_b, name)
    ]
    if differences:
        raise ValueError(
            f"runs {run_a} and {run_b} did not measure the same thing; " + "; ".join(differences)
        )
    notes = []
    if list(record_a.seeds) != list(record_b.seeds):
        notes.append(f"generation seeds differ ({seed_difference(record_a.seeds, record_b.seeds)})")
    for note in notes:
        warnings.warn(f"comparing {run_a} with {run_b}: {note}", stacklevel=2)
    aggregate = aggregate or _registry_aggregate(record_a.benchmark)
    deltas = paired_bootstrap(rows_a, rows_b, aggregate, keys=keys, n_boot=n_boot, seed=seed, alpha=alpha)
    if not deltas:
        raise ValueError(f"the aggregate returned no score key common to {run_a} and {run_b}")
    first = next(iter(deltas.values()))
    unmatched_a, unmatched_b = first.unmatched_a, first.unmatched_b
    if unmatched_a or unmatched_b:
        notes.append(f"unpaired rows left out: {unmatched_a} in A, {unmatched_b} in B")
    return CompareResult(
        record_a=record_a,
        record_b=record_b,
        path_a=Path(run_a),
        path_b=Path(run_b),
        deltas=deltas,
        alpha=alpha,
        n_boot=n_boot,
        warnings=notes,
    )


def _ordered_keys(deltas: dict[str, PairedDelta]) -> list[str]:
    return ["overall", *[k for k in deltas if k != "overall"]] if "overall" in deltas else list(deltas)


def render_compare(result: CompareResult, console: Console, *, shown: Sequence[str] | None = None) -> None:
    """Per-category A, B, Δ and the interval of Δ; ▲/▼ where the interval excludes 0.

    ``shown``: the categories always printed (None = all); the others are printed only where their
    interval excludes 0, and the caption counts those left out (a benchmark with seventy secondary
    figures keeps its table short without hiding a change)."""
    name_a = _run_name(result.record_a, result.path_a)
    name_b = _run_name(result.record_b, result.path_b)
    values = pd.DataFrame([[d.a, d.b] for d in result.deltas.values()])
    decimals = _decimals(values)
    level = f"{100 * (1 - result.alpha):.0f}% CI"
    table = Table(
        title=Text(f"{result.record_a.benchmark}: {name_b} (B) vs {name_a} (A)"), title_justify="left"
    )
    for column in ("category", f"A: {name_a}", f"B: {name_b}", "Δ (B−A)", level, ""):
        table.add_column(Text(column), justify="left" if column == "category" else "right")
    left_out = 0
    for key in _ordered_keys(result.deltas):
        d = result.deltas[key]
        if shown is not None and key != "overall" and key not in shown and not (d.low > 0 or d.high < 0):
            left_out += 1
            continue
        marker = Text("▲", style="green") if d.low > 0 else Text("▼", style="red") if d.high < 0 else Text("")
        table.add_row(
            Text(key),
            format_score(d.a, decimals),
            format_score(d.b, decimals),
            f"{d.delta:+.{decimals}f}",
            f"[{d.low:+.{decimals}f}, {d.high:+.{decimals}f}]",
            marker,
        )
    notes = [f"{result.n_pairs} paired rows; {result.n_boot} cluster-bootstrap replicates over prompts"]
    if left_out:
        notes.append(
            f"{left_out} more figures, each with an interval that includes 0: reca-eval compare shows them"
        )
    notes += [f"warning: {w}" for w in result.warnings]
    table.caption = Text("\n".join(notes))
    table.caption_justify = "left"
    console.print(table)


# ---------------------------------------------------------------------------------------------- gate


# Float noise in an aggregate (a sum in another order) must not count as a drop.
_EPS = 1e-9


@dataclass
class CategoryVerdict:
    """One category under the gate: the allowed drop, and which of the two rules fired."""

    key: str
    delta: PairedDelta
    allowed_drop: float  # in the benchmark's units (a relative tolerance times the baseline score)
    point_drop: bool  # the point estimate fell by more than the allowed drop
    significant_drop: bool  # the whole interval lies below -allowed_drop
    failed: bool

    @property
    def verdict(self) -> str:
        if self.failed:
            return "FAIL: significant drop" if self.significant_drop else "FAIL: drop"
        if self.point_drop:
            return "pass: drop not significant"
        return "pass"


@dataclass
class CheckResult:
    """The regression gate on one benchmark (A = baseline, B = the run under test).

    Rule: a category fails when its point estimate fell by more than the allowed drop (the tolerance,
    or with ``relative`` the tolerance times the baseline's score); with ``significant`` it must in
    addition be resolved by the paired interval (its upper bound below minus the allowed drop).
    """

    comparison: CompareResult
    tolerance: float
    failing: list[str]
    relative: bool = False
    significant: bool = False
    tolerance_source: str = "given"  # "given" (--tolerance) or where the default came from
    verdicts: dict[str, CategoryVerdict] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failing

    @property
    def rule(self) -> str:
        drop = (
            f"{100 * self.tolerance:g}% of the baseline's score"
            if self.relative
            else f"{self.tolerance:g} ({self.tolerance_source})"
        )
        text = f"a category fails when its score fell by more than {drop}"
        if self.significant:
            level = f"{100 * (1 - self.comparison.alpha):.0f}%"
            text += f", and the {level} paired interval of the drop excludes that tolerance"
        return text


def declared_tolerance(benchmark: str) -> float | None:
    """The ``check_tolerance`` a benchmark's spec declares (None: none declared or not registered)."""
    from reca_eval import registry

    try:
        spec = registry.get(benchmark).spec
    except KeyError:
        return None
    return None if spec is None else spec.check_tolerance


def check_regression(
    run: Path,
    baseline: Path,
    aggregate: AggregateFn | None = None,
    tolerance: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    *,
    alpha: float = 0.05,
    keys: Sequence[str] | None = None,
    relative: bool = False,
    significant: bool = False,
) -> CheckResult:
    """Gate ``run`` against ``baseline``: fail a category whose point estimate fell by more than the
    tolerance (with ``significant``, only when the paired interval also lies wholly below it).

    ``tolerance=None`` takes the benchmark's declared ``check_tolerance`` (0 when none is declared);
    it is in the benchmark's units, or with ``relative`` a fraction of the baseline's score.
    """
    if relative and tolerance is None:
        raise ValueError("--relative needs --tolerance (a fraction of the baseline's score, e.g. 0.02)")
    comparison = compare_runs(baseline, run, aggregate, n_boot, seed, alpha=alpha, keys=keys)
    source = "given"
    if tolerance is None:
        declared = declared_tolerance(comparison.record_a.benchmark)
        tolerance = 0.0 if declared is None else declared
        source = (
            f"check_tolerance of {comparison.record_a.benchmark}"
            if declared is not None
            else "no check_tolerance declared"
        )
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be a number >= 0, got {tolerance}")
    verdicts: dict[str, CategoryVerdict] = {}
    for key in _ordered_keys(comparison.deltas):
        d = comparison.deltas[key]
        allowed = tolerance * abs(d.a) if relative else tolerance
        point = bool(d.delta < -allowed - _EPS)
        resolved = bool(d.high < -allowed - _EPS)
        verdicts[key] = CategoryVerdict(
            key=key,
            delta=d,
            allowed_drop=allowed,
            point_drop=point,
            significant_drop=resolved,
            failed=point and (resolved or not significant),
        )
    return CheckResult(
        comparison=comparison,
        tolerance=tolerance,
        failing=[k for k, v in verdicts.items() if v.failed],
        relative=relative,
        significant=significant,
        tolerance_source=source,
        verdicts=verdicts,
    )


def render_check(result: CheckResult, console: Console) -> None:
    """The rule, then per category: baseline, run, Δ, its interval, the allowed drop (tol.) and the verdict."""
    comparison = result.comparison
    name = _run_name(comparison.record_b, comparison.path_b)
    baseline = _run_name(comparison.record_a, comparison.path_a)
    benchmark = comparison.record_a.benchmark
    level = f"{100 * (1 - comparison.alpha):.0f}% CI"
    for note in comparison.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(note)}")
    values = pd.DataFrame([[d.a, d.b] for d in comparison.deltas.values()])
    decimals = max(3, _decimals(values))
    table = Table(title=Text(f"check {benchmark}: {name} against baseline {baseline}"), title_justify="left")
    # Narrow headers and unbroken cells: CI logs are often 80 columns wide.
    for column in ("category", "base", "run", "Δ", level, "tol.", "verdict"):
        words = column in ("category", "verdict")
        table.add_column(column, justify="left" if words else "right", no_wrap=not words)
    for key, v in result.verdicts.items():
        d = v.delta
        style = "red" if v.failed else "yellow" if v.point_drop else "green"
        table.add_row(
            Text(key),
            format_score(d.a, decimals),
            format_score(d.b, decimals),
            f"{d.delta:+.{decimals}f}",
            f"[{d.low:+.{decimals}f}, {d.high:+.{decimals}f}]",
            f"{v.allowed_drop:.{decimals}f}",
            Text(v.verdict, style=style),
        )
    table.caption = Text(
        f"{comparison.n_pairs} paired rows; {comparison.n_boot} cluster-bootstrap replicates over prompts"
    )
    table.caption_justify = "left"
    console.print(Text(f"rule: {result.rule}"))
    console.print(table)
    if result.passed:
        console.print(
            "[green]PASS[/green] "
            + escape(
                f"{benchmark}: no category of {name} fell below {baseline} by more than allowed "
                f"({len(result.verdicts)} checked)"
            )
        )
        return
    for key in result.failing:
        v = result.verdicts[key]
        d = v.delta
        why = (
            f"upper bound {d.high:+.3f} below −{v.allowed_drop:.3g}"
            if v.significant_drop
            else f"Δ below −{v.allowed_drop:.3g}"
        )
        console.print(
            "[red]REGRESSION[/red] "
            + escape(
                f"{benchmark}/{key}: {d.a:.3f} → {d.b:.3f} "
                f"(Δ {d.delta:+.3f}, {level} [{d.low:+.3f}, {d.high:+.3f}]; {why})"
            )
        )
    console.print(
        "[red]FAIL[/red] "
        + escape(
            f"{benchmark}: {len(result.failing)} categor{'y' if len(result.failing) == 1 else 'ies'} regressed"
        )
    )
