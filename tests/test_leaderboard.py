"""Leaderboard store, tables, compare and the regression gate, on synthetic runs written to tmp_path."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from reca_eval.core.records import RunRecord, write_run
from reca_eval.results.leaderboard import (
    check_regression,
    compare_runs,
    leaderboard_frame,
    leaderboard_tables,
    load_runs,
    render_check,
    render_compare,
    render_leaderboard,
    scan_runs,
    write_leaderboard,
)
from tests.test_stats import fix_failing_prompts, make_rows, mean_of_category_means

ITEMS = "a" * 64


def write(
    results: Path,
    run_id: str,
    rows: pd.DataFrame,
    *,
    label: str,
    benchmark: str = "geneval",
    items_sha256: str = ITEMS,
    spec_version: str = "1.0",
    created: str = "2026-01-01T00:00:00+00:00",
    seeds: tuple[int, ...] = (0,),
    model: str | None = None,
) -> Path:
    scores = mean_of_category_means(rows, None)
    record = RunRecord(
        benchmark=benchmark,
        spec_version=spec_version,
        items_sha256=items_sha256,
        model=model or f"/ckpt/{label}",
        scores=scores,
        images_scored=len(rows),
        images_skipped=0,
        seeds=list(seeds),
        label=label,
        run_id=run_id,
        created=created,
    )
    run_dir = results / "runs" / run_id
    write_run(run_dir, record, rows)
    return run_dir


def recorded_console() -> Console:
    return Console(record=True, width=160, color_system=None, file=io.StringIO())


@pytest.fixture
def store(tmp_path: Path) -> dict[str, Path]:
    rows_sft = make_rows(n_prompts=60, seed=1)
    rows_reca = fix_failing_prompts(rows_sft, fraction=0.5, seed=0)
    return {
        "results": tmp_path,
        "sft": write(tmp_path, "r1", rows_sft, label="SFT"),
        "reca": write(tmp_path, "r2", rows_reca, label="SFT+RecA"),
    }


def test_load_runs_counts_a_corrupt_record_as_a_skip(store):
    bad = store["results"] / "runs" / "broken" / "record.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{ not json")
    no_overall = store["results"] / "runs" / "partial" / "record.json"
    no_overall.parent.mkdir(parents=True)
    no_overall.write_text(json.dumps({"benchmark": "geneval"}))

    with pytest.warns(UserWarning) as caught:
        runs = load_runs(store["results"])
    messages = [str(w.message) for w in caught]
    assert any("broken/record.json" in m and "unreadable JSON" in m for m in messages)
    assert any("partial/record.json" in m and "not a result record" in m for m in messages)
    assert sorted(r.label for r, _ in runs) == ["SFT", "SFT+RecA"]
    assert {p.name for _, p in runs} == {"r1", "r2"}
    assert any("skipped 2 of 4" in m for m in messages)
    scan = scan_runs(store["results"])
    assert len(scan.skipped) == 2
    assert {Path(s.path).parent.name for s in scan.skipped} == {"broken", "partial"}


def test_tables_group_by_what_was_measured_and_keep_the_latest_run(tmp_path):
    rows = make_rows(n_prompts=30, seed=0)
    better = fix_failing_prompts(rows, fraction=1.0, seed=0)
    write(tmp_path, "old", rows, label="SFT", created="2026-01-01T00:00:00+00:00")
    write(tmp_path, "new", better, label="SFT", created="2026-02-01T00:00:00+00:00")
    write(tmp_path, "other_items", rows, label="SFT", items_sha256="b" * 64)
    write(tmp_path, "other_version", rows, label="SFT", spec_version="2.0")

    runs = load_runs(tmp_path)
    tables = leaderboard_tables(runs)
    assert [(t.spec_version, t.items_sha256[:1]) for t in tables] == [
        ("1.0", "a"),
        ("1.0", "b"),
        ("2.0", "a"),
    ]
    main = tables[0]
    assert list(main.frame.index) == ["SFT"]
    assert main.runs["SFT"][0].run_id == "new"
    assert main.frame.loc["SFT", "overall"] == pytest.approx(mean_of_category_means(better, None)["overall"])
    assert main.older_runs == {"SFT": 1}

    frame = leaderboard_frame(runs)
    assert frame.columns.names == ["table", "category"]
    assert frame.shape[1] == 3 * 4  # three tables, overall + three categories each
    assert list(frame.columns.get_level_values("category")[:1]) == ["overall"]

    console = recorded_console()
    render_leaderboard(runs, console)
    assert "SFT: latest of 2 runs shown" in console.export_text()


def test_leaderboard_renders_labels_numbers_and_bold_best(store):
    runs = load_runs(store["results"])
    console = Console(
        record=True, width=160, force_terminal=True, color_system="standard", file=io.StringIO()
    )
    tables = render_leaderboard(runs, console)
    text = console.export_text(clear=False)
    frame = tables[0].frame
    assert list(frame.index) == ["SFT+RecA", "SFT"]  # ranked by overall
    assert list(frame.columns)[0] == "overall"
    for label in ("SFT", "SFT+RecA", "geneval v1.0"):
        assert label in text
    for value in frame.to_numpy().ravel():
        assert f"{value:.3f}" in text
    styled = {
        line.split("│")[1].strip(): line
        for line in console.export_text(styles=True).splitlines()
        if "│" in line
    }
    best = f"{frame.loc['SFT+RecA', 'overall']:.3f}"
    assert re.search(rf"\x1b\[1m\s*{re.escape(best)}", styled["SFT+RecA"])
    assert "\x1b[1m" not in styled["SFT"]  # worse in every column: nothing bold


def test_leaderboard_with_ci_shows_half_widths(store):
    runs = load_runs(store["results"])
    console = recorded_console()
    render_leaderboard(
        runs, console, with_ci=True, n_boot=100, aggregate_for=lambda name: mean_of_category_means
    )
    text = console.export_text()
    assert text.count("±") >= 2 * 4
    assert "cluster-bootstrap" in text


def test_write_leaderboard_writes_csv_and_json(store):
    csv_path, json_path = write_leaderboard(store["results"])
    table = pd.read_csv(csv_path)
    assert set(table["model"]) == {"SFT", "SFT+RecA"}
    assert len(table) == 2 * 4
    payload = json.loads(json_path.read_text())
    assert [row["model"] for row in payload["tables"][0]["rows"]] == ["SFT+RecA", "SFT"]
    assert payload["tables"][0]["categories"][0] == "overall"


def test_compare_detects_the_planted_improvement(store):
    result = compare_runs(store["sft"], store["reca"], mean_of_category_means, n_boot=300, seed=0)
    overall = result.deltas["overall"]
    assert overall.delta > 0 and overall.low > 0
    assert result.n_pairs == 240 and result.unmatched == (0, 0)
    console = recorded_console()
    render_compare(result, console)
    text = console.export_text()
    assert "SFT+RecA" in text and "▲" in text
    assert f"{overall.delta:+.3f}" in text


def test_compare_refuses_different_items_and_warns_on_different_seeds(tmp_path):
    rows = make_rows(n_prompts=20)
    a = write(tmp_path, "a", rows, label="A")
    b = write(tmp_path, "b", rows, label="B", items_sha256="c" * 64)
    with pytest.raises(ValueError, match="items_sha256"):
        compare_runs(a, b, mean_of_category_means, n_boot=10, seed=0)
    c = write(tmp_path, "c", rows, label="C", seeds=(1,))
    with pytest.warns(UserWarning, match="seeds differ"):
        result = compare_runs(a, c, mean_of_category_means, n_boot=10, seed=0)
    assert any("seeds differ" in w for w in result.warnings)


def test_a_seed_warning_of_long_runs_is_one_line():
    from reca_eval.results.leaderboard import seed_difference

    assert seed_difference([0, 1], [0, 2]) == "[0, 1] vs [0, 2]"
    a = list(range(1080))
    b = a[:5] + [s + 1000 for s in a[5:]]
    assert seed_difference(a, b) == "1,080 seeds, 1,075 differ; the first at image 5: 5 vs 1005"
    assert seed_difference(a, a[:600]) == "1,080 vs 600 seeds"
    assert seed_difference(a, [9, *a[1:600]]) == "1,080 vs 600 seeds, 1 differ; the first at image 0: 0 vs 9"


def test_compare_of_runs_with_many_seeds_warns_in_one_line(tmp_path):
    rows = make_rows(n_prompts=20)
    a = write(tmp_path, "a", rows, label="A", seeds=tuple(range(100)))
    b = write(tmp_path, "b", rows, label="B", seeds=tuple(range(1, 101)))
    with pytest.warns(UserWarning) as caught:
        compare_runs(a, b, mean_of_category_means, n_boot=10, seed=0)
    message = str(caught[0].message)
    assert "100 seeds, 100 differ; the first at image 0: 0 vs 1" in message and "[" not in message


def drop_category(rows: pd.DataFrame, category: str, fraction: float, seed: int) -> pd.DataFrame:
    """Make ``fraction`` of the category's fully passing prompts fail on every sample."""
    rng = np.random.default_rng(seed)
    per_prompt = rows[rows["category"] == category].groupby("item_id")["score"].min()
    passing = per_prompt.index[per_prompt == 1].to_numpy()
    broken = rng.choice(passing, size=int(round(fraction * len(passing))), replace=False)
    out = rows.copy()
    out.loc[out["item_id"].isin(broken), "score"] = 0.0
    return out


def test_check_regression_fails_exactly_when_the_drop_exceeds_tolerance(tmp_path):
    baseline_rows = make_rows(n_prompts=150, seed=4)
    baseline = write(tmp_path, "base", baseline_rows, label="baseline")
    dropped_rows = drop_category(baseline_rows, "counting", fraction=0.8, seed=0)
    run = write(tmp_path, "run", dropped_rows, label="candidate")
    drop = (
        mean_of_category_means(dropped_rows, None)["counting"]
        - mean_of_category_means(baseline_rows, None)["counting"]
    )
    assert drop < -0.25

    strict = check_regression(run, baseline, mean_of_category_means, tolerance=0.05, n_boot=300, seed=0)
    assert not strict.passed
    assert "counting" in strict.failing
    assert not {"colors", "position"} & set(strict.failing)
    console = recorded_console()
    render_check(strict, console)
    text = console.export_text()
    assert "REGRESSION geneval/counting" in text and f"{drop:+.3f}" in text

    lenient = check_regression(run, baseline, mean_of_category_means, tolerance=0.6, n_boot=300, seed=0)
    assert lenient.passed and lenient.failing == []
    console = recorded_console()
    render_check(lenient, console)
    assert "PASS" in console.export_text()

    # By default the point estimate decides: just inside the drop fails, just outside it passes.
    just_inside = check_regression(run, baseline, mean_of_category_means, tolerance=-drop - 0.01, n_boot=300)
    just_outside = check_regression(run, baseline, mean_of_category_means, tolerance=-drop + 0.01, n_boot=300)
    assert "counting" in just_inside.failing and "counting" not in just_outside.failing
    # With --significant the interval's upper bound must lie below -tolerance as well.
    upper = strict.comparison.deltas["counting"].high
    assert drop < upper < -0.05
    sig_inside = check_regression(
        run, baseline, mean_of_category_means, tolerance=-upper - 0.01, n_boot=300, significant=True
    )
    sig_outside = check_regression(
        run, baseline, mean_of_category_means, tolerance=-upper + 0.01, n_boot=300, significant=True
    )
    assert "counting" in sig_inside.failing and "counting" not in sig_outside.failing
    assert sig_outside.verdicts["counting"].verdict == "pass: drop not significant"
    assert sig_inside.verdicts["counting"].verdict == "FAIL: significant drop"

    same = check_regression(baseline, baseline, mean_of_category_means, tolerance=0.0, n_boot=100, seed=0)
    assert same.passed


def test_check_regression_ignores_an_improvement(store):
    result = check_regression(
        store["reca"], store["sft"], mean_of_category_means, tolerance=0.0, n_boot=200, seed=0
    )
    assert result.passed


def test_user_strings_with_brackets_never_reach_rich_as_markup(tmp_path):
    """Defect 1 of issue 13: a shared label made rows "geneval [/data/sft]", which rich read as a
    closing tag (MarkupError). Labels, paths and categories are printed as text."""
    from typer.testing import CliRunner

    from reca_eval.cli import app

    rows = make_rows(n_prompts=20, seed=2)
    # Two checkpoints given the same (default) label: the rows become "geneval [<model>]".
    a = write(tmp_path, "r1", rows, label="geneval", model="/data/[/sft]")
    b = write(tmp_path, "r2", rows, label="geneval", model="/data/[bold]reca[/bold]")
    c = write(tmp_path, "r3", rows, label="[/x] [red]odd", model="/data/odd")
    console = recorded_console()
    render_leaderboard(
        load_runs(tmp_path), console, with_ci=True, aggregate_for=lambda _: mean_of_category_means
    )
    text = console.export_text()
    assert "geneval [/data/[/sft]]" in text and "[bold]reca[/bold]" in text and "[/x] [red]odd" in text
    console = recorded_console()
    render_compare(compare_runs(a, c, mean_of_category_means, n_boot=50), console)
    assert "[/x] [red]odd" in console.export_text()
    console = recorded_console()
    render_check(check_regression(c, b, mean_of_category_means, tolerance=0.0, n_boot=50), console)
    assert "[/x] [red]odd" in console.export_text()
    board = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["leaderboard", "--results", str(tmp_path)])
    assert board.exit_code == 0, board.output
    assert "geneval [/data/[/sft]]" in board.output


def test_a_table_too_wide_both_ways_is_split_into_tables_that_fit(tmp_path):
    """Fifteen checkpoints on a benchmark with many categories, on an 80-column terminal: every
    checkpoint's name and score is shown whole, in consecutive tables that each fit the width."""
    rows = make_rows(n_prompts=24, seed=0, categories=tuple(f"category_{c:02d}" for c in range(12)))
    for i in range(15):
        write(tmp_path, f"r{i:02d}", rows, label=f"checkpoint-{i:02d}")
    runs = load_runs(tmp_path)
    console = Console(record=True, width=80, color_system=None, file=io.StringIO())
    render_leaderboard(runs, console, aggregate_for=None)
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    assert all(f"checkpoint-{i:02d}" in text for i in range(15))
    assert "…" not in text
    assert "(1/" in text and text.count("category_11") >= 2  # every part lists every category


def test_a_short_compare_keeps_what_moved_and_counts_what_it_leaves_out(tmp_path):
    rows_a = make_rows(n_prompts=80, seed=3)
    rows_b = rows_a.copy()
    rows_b.loc[rows_b["category"] == "colors", "score"] = 1.0  # only one category improves
    a = write(tmp_path, "a", rows_a, label="A")
    b = write(tmp_path, "b", rows_b, label="B")
    result = compare_runs(a, b, mean_of_category_means, n_boot=300, seed=0)
    moved = {k for k, d in result.deltas.items() if d.low > 0 or d.high < 0}
    still = set(result.deltas) - moved - {"overall"}
    assert "colors" in moved and still
    console = recorded_console()
    render_compare(result, console, shown=[])
    text = console.export_text()
    printed = {line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│ ")}
    assert printed == moved | {"overall"}
    assert f"{len(still)} more figures, each with an interval that includes 0" in text
    console = recorded_console()
    render_compare(result, console, shown=sorted(still))
    text = console.export_text()
    assert {line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│ ")} == set(
        result.deltas
    )


def test_the_leaderboard_can_print_chosen_figures_and_count_the_rest(store):
    console = recorded_console()
    render_leaderboard(load_runs(store["results"]), console, shown=lambda benchmark: ["colors"])
    text = console.export_text()
    header = next(line for line in text.splitlines() if "model" in line)
    assert "overall" in header and "colors" in header and "counting" not in header
    assert "2 more figures in the report" in " ".join(text.split())
