"""The report: markdown + a self-contained HTML page with the tables, the loss curves (inline SVG) and
image grids (inline base64 PNG) of the same prompts across checkpoints; over seeds, mean ± std."""

from __future__ import annotations

import base64
import io
import re

import pytest
import torch
from PIL import Image

from reca_eval.experiments.arms import BASE, SFT, SFT_RECA, Budget
from reca_eval.experiments.report import (
    EXACT_REFERENCE,
    GRID_CELL,
    GRID_HEADER,
    grid_data,
    grid_html,
    loss_curves,
    loss_curves_svg,
    markdown_table,
    write_report,
)
from reca_eval.experiments.runner import ExperimentPlan, FamilyPlan, run_experiment

BENCHMARKS = ("shapes-geneval", "shapes-edit")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    from reca_eval.training.builders import tiny_janus

    root = tmp_path_factory.mktemp("report")
    tiny_janus(seed=0).save_pretrained(root / "base")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # far faster than 2 on a CPU shared with other test processes
    try:
        plan = ExperimentPlan(
            [FamilyPlan(root / "base", (BASE, SFT, SFT_RECA), BENCHMARKS)],
            results=root / "results",
            seeds=(0, 1),
            budget=Budget(sft_steps=2, reca_steps=2, batch_size=2, warmup_steps=0),
            items_per_benchmark=3,
            generation_batch_size=16,
            n_boot=20,
        )
        return run_experiment(plan)
    finally:
        torch.set_num_threads(threads)


def test_report_files_hold_tables_curves_and_inlined_grids(experiment, tmp_path):
    paths = write_report(experiment, tmp_path / "out")
    md, page = paths.markdown.read_text(), paths.html.read_text()
    for heading in (
        "Leaderboard",
        "Scores per atypical split",
        "Paired comparison: SFT+RecA vs SFT",
        "Over training seeds",
        "Overall score of every seed",
        "Step accounting",
        "Loss curves",
    ):
        assert heading in md and heading in page
    labels = [run.label for run in experiment.arm_runs]
    assert labels == ["base", "SFT seed 0", "SFT+RecA seed 0", "SFT seed 1", "SFT+RecA seed 1"]
    assert all(f"| {label} |" in md for label in labels)
    # self-contained: no image is referenced by path; every image is an inlined PNG that decodes
    assert "src='grid_" not in page and 'src="grid_' not in page
    encoded = re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert encoded and len(encoded) == page.count("<img ")
    for data in encoded:
        assert Image.open(io.BytesIO(base64.b64decode(data))).size[0] > 0
    # the markdown's PNG grids: a header strip of column numbers, then one row per shown run
    for bench in BENCHMARKS:
        grid = Image.open(paths.markdown.parent / f"grid_{bench}.png")
        shown = (
            1
            + len(experiment.arm_runs)
            + (1 + len(experiment.reference_runs) if bench == "shapes-edit" else 0)
        )
        assert grid.height == GRID_HEADER + GRID_CELL * shown  # (+ exact reference) (+ source, editors)
    assert "(loss_curves_janus.svg)" in md and (paths.markdown.parent / "loss_curves_janus.svg").exists()


def test_report_html_has_no_empty_index_rows_paths_or_backticks(experiment, tmp_path):
    page = write_report(experiment, tmp_path / "out").html.read_text()
    # one header row per table (pandas' to_html adds an empty one for a named index)
    for table in re.findall(r"<table.*?</table>", page, flags=re.S):
        head = re.search(r"<thead>(.*?)</thead>", table, flags=re.S).group(1)
        assert head.count("<tr>") == 1
        assert not re.search(r"<tr>(<th[^>]*></th>)+</tr>", table)
    assert "`" not in page and "<code>" in page  # markdown code spans become <code>
    for root in (str(tmp_path), str(experiment.plan.results), str(experiment.plan.families[0].base)):
        assert root not in page
    assert '<div class="scroll"><table class="t">' in page and ".scroll{overflow-x:auto" in page


def test_loss_curves_one_chart_per_family_one_line_per_arm_and_objective(experiment):
    curves = loss_curves(experiment)
    assert list(curves) == ["janus"]
    arms = curves["janus"]
    assert set(arms) == {"SFT", "SFT+RecA"}  # base trains nothing; SFT+RecA's SFT stage is SFT's line
    assert set(arms["SFT"]) == {"t2i"}
    reca = arms["SFT+RecA"]
    assert set(reca) <= {"recon", "i2t"} and reca
    # RecA's steps follow the 2 SFT steps on the x axis: steps 3 and 4, each step under one objective
    assert sorted(x for points in reca.values() for x, _ in points) == [3, 4]
    assert [x for x, _ in arms["SFT"]["t2i"]] == [1, 2]
    svg = loss_curves_svg(arms, "janus")
    assert svg.count("<polyline") == 1 + len(reca)
    assert "optimizer step" in svg and "training loss" in svg
    assert re.search(r"SFT\+RecA · (recon|i2t)", svg)


def test_image_grid_columns_match_the_prompts_with_exact_references_and_marks(experiment):
    data = grid_data(experiment, "shapes-geneval")
    page = grid_html(data)
    assert [label for label, _ in data.rows][0] == EXACT_REFERENCE
    header = re.search(r"<thead>(.*?)</thead>", page).group(1)
    assert re.findall(r">(\d+)</th>", header) == [str(j + 1) for j in range(len(data.prompts))]
    assert page.count("<li>") == len(data.prompts) == 3
    # the marks are the benchmark's own per-image verdicts (sample 0 of each shown item)
    from reca_eval.core.records import read_run

    run = experiment.arm_runs[0]
    _, rows = read_run(run.runs["shapes-geneval"])
    cells = dict(data.rows)[run.label]
    for cell, item_id in zip(cells, ["00000", "00001", "00002"], strict=True):
        score = rows[(rows["item_id"] == item_id) & (rows["sample"] == 0)]["score"].item()
        assert cell.passed == (score >= 1)
    marks = re.findall(r'class="mark (pass|fail)"', page)
    assert len(marks) == sum(1 for label, cells in data.rows for c in cells if c.passed is not None)
    assert len(marks) == 3 * len([r for r in experiment.arm_runs])


def test_report_numbers_come_from_the_records(experiment, tmp_path):
    md = write_report(experiment, tmp_path / "out").markdown.read_text()
    sft = [r for r in experiment.arm_runs if r.arm == SFT]
    values = [r.scores["shapes-geneval"]["overall"] for r in sft]
    mean = sum(values) / 2
    std = abs(values[0] - values[1]) / 2**0.5  # sample std of two values
    cell = f"{mean:.3f} ± {std:.3f}" if std > 0 else f"{mean:.3f}"
    assert cell in md
    # the step accounting states the matched steps
    sft_reca = next(r for r in experiment.arm_runs if r.arm == SFT_RECA)
    assert sft_reca.account.steps == 4
    assert re.search(
        r"\| SFT\+RecA \| sft: t2i, 2 steps; reca: recon:i2t \(1:1\), 2 steps \| 4 \| 2 \| 8 \| 2 \|", md
    )


def test_loss_curve_svg_and_markdown_table_helpers():
    svg = loss_curves_svg(
        {
            "a": {"t2i": [(1, 3.0), (2, 2.0), (3, 1.0)]},
            "b": {"recon": [(1, 2.5), (2, float("nan")), (3, 2.0)]},
        }
    )
    assert svg.startswith("<svg") and svg.count("<polyline") == 2
    points = re.findall(r'points="([^"]+)"', svg)[0].split()
    ys = [float(p.split(",")[1]) for p in points]
    assert ys[0] < ys[1] < ys[2]  # a falling loss is drawn going down (SVG y grows downward)
    assert 'stroke-dasharray="7 4"' in svg  # recon dashed, t2i solid
    ticks = [float(t) for t in re.findall(r'text-anchor="end">([0-9.]+)</text>', svg)]
    assert ticks[0] <= 1.0 and ticks[-1] >= 3.0  # the y ticks cover every value
    import pandas as pd

    table = markdown_table(pd.DataFrame({"x": [0.5, float("nan")]}, index=pd.Index(["p|q", "r"], name="arm")))
    assert table.splitlines()[0] == "| arm | x |"
    assert "| p\\|q | 0.500 |" in table and "| r | — |" in table
