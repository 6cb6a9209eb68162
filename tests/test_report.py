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
from reca_eval.experiments.report import GRID_CELL, loss_curves_svg, markdown_table, write_report
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
    # every trained run's label is a row, and its loss curve is drawn (one polyline per trained run)
    labels = [run.label for run in experiment.arm_runs]
    assert labels == ["base", "SFT seed 0", "SFT+RecA seed 0", "SFT seed 1", "SFT+RecA seed 1"]
    assert all(f"| {label} |" in md for label in labels)
    assert page.count("<polyline") == 4
    # self-contained: no image is referenced by path; each grid is an inlined PNG that decodes
    assert "src='grid_" not in page and 'src="grid_' not in page
    encoded = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(encoded) == len(BENCHMARKS)
    for data in encoded:
        grid = Image.open(io.BytesIO(base64.b64decode(data)))
        assert grid.height in (
            GRID_CELL * len(labels),
            GRID_CELL * (len(labels) + 1 + len(experiment.reference_runs)),
        )  # + the edit source row and the reference editors' rows
    assert (paths.markdown.parent / "grid_shapes-edit.png").exists()
    assert "(loss_curves.svg)" in md and (paths.markdown.parent / "loss_curves.svg").exists()


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
    svg = loss_curves_svg({"a": [3.0, 2.0, 1.0], "b": [2.5, float("nan"), 2.0]})
    assert svg.startswith("<svg") and svg.count("<polyline") == 2
    points = re.findall(r'points="([^"]+)"', svg)[0].split()
    ys = [float(p.split(",")[1]) for p in points]
    assert ys[0] < ys[1] < ys[2]  # a falling loss is drawn going down (SVG y grows downward)
    import pandas as pd

    table = markdown_table(pd.DataFrame({"x": [0.5, float("nan")]}, index=pd.Index(["p|q", "r"], name="arm")))
    assert table.splitlines()[0] == "| arm | x |"
    assert "| p\\|q | 0.500 |" in table and "| r | — |" in table
