"""`reca-eval leaderboard --format table|markdown|html|csv|json` and the CI job summary (issue 13)."""

from __future__ import annotations

import io
import json
from html.parser import HTMLParser

import pandas as pd
from typer.testing import CliRunner

from reca_eval.cli import app
from tests.test_leaderboard import write
from tests.test_stats import fix_failing_prompts, make_rows

runner = CliRunner(env={"COLUMNS": "200"})


def store(tmp_path):
    rows = make_rows(n_prompts=40, seed=1)
    write(tmp_path, "r1", rows, label="SFT")
    write(tmp_path, "r2", fix_failing_prompts(rows, fraction=0.5, seed=0), label="SFT+RecA | [x]")
    return tmp_path


class Tables(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.text = io.StringIO()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.write(data)


def test_markdown_escapes_cells_and_goes_to_the_job_summary(tmp_path, monkeypatch):
    results = store(tmp_path / "results")
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    out = runner.invoke(app, ["leaderboard", "--results", str(results), "--format", "markdown"])
    assert out.exit_code == 0, out.output
    assert "| model | overall |" in out.stdout
    assert "SFT+RecA \\| \\[x\\]" in out.stdout  # a pipe in a label does not split the row
    assert summary.read_text() == out.stdout + "\n"


def test_html_is_one_self_contained_page_with_intervals(tmp_path):
    results = store(tmp_path / "results")
    page = tmp_path / "board.html"
    out = runner.invoke(app, ["leaderboard", "--results", str(results), "-f", "html", "--output", str(page)])
    assert out.exit_code == 0, out.output
    text = page.read_text()
    parser = Tables()
    parser.feed(text)
    assert parser.tags.count("table") == 1 and "script" not in parser.tags and "link" not in parser.tags
    assert "±" in parser.text.getvalue() and "SFT+RecA | [x]" in parser.text.getvalue()
    assert "overflow-x: auto" in text


def test_csv_and_json_carry_every_row(tmp_path):
    results = store(tmp_path / "results")
    csv = runner.invoke(app, ["leaderboard", "--results", str(results), "--format", "csv"])
    assert csv.exit_code == 0, csv.output
    frame = pd.read_csv(io.StringIO(csv.stdout))
    assert set(frame["label"]) == {"SFT", "SFT+RecA | [x]"} and {"overall", "counting"} <= set(
        frame["category"]
    )
    payload = json.loads(runner.invoke(app, ["leaderboard", "--results", str(results), "-f", "json"]).stdout)
    assert [row["label"] for row in payload["tables"][0]["rows"]] == ["SFT+RecA | [x]", "SFT"]
    bad = runner.invoke(app, ["leaderboard", "--results", str(results), "-f", "pdf"])
    assert bad.exit_code == 2 and "--format must be one of" in bad.output
