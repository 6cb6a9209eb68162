"""The two pages people look at, in a real browser: the experiment's report.html and the leaderboard's
HTML page, rendered by headless Chromium at 1,024 px to a screenshot, with a check script injected into
a test copy of each page that reads the DOM after the load event: nothing wider than the window outside
a scrolling box, every image decoded (naturalWidth > 0), every expected table there, nothing fetched
from outside the page. Skipped where no Chromium is installed (`apt-get install chromium`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on PATH: `apt-get install chromium` (.ci/run installs it)"
)

WIDTH = 1024
CHECK_ID = "reca-eval-browser-check"
CHECK_SCRIPT = """
<script>
window.addEventListener("load", () => {
  const width = window.innerWidth;
  const heading = (el) => {
    for (let e = el.closest(".scroll") || el; e; e = e.previousElementSibling) {
      if (/^H[1-3]$/.test(e.tagName)) return e.textContent.trim();
    }
    return "";
  };
  const sticking = [...document.body.querySelectorAll("*")].filter(
    (e) => !e.closest(".scroll") && e.getBoundingClientRect().right > width + 0.5
  );
  const result = {
    width: width,
    scrollWidth: document.documentElement.scrollWidth,
    overflowing: sticking.map((e) => e.tagName + (e.className ? "." + e.className : "")),
    images: [...document.images].map((i) => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0})),
    tables: [...document.querySelectorAll("table")].map((t) => ({
      heading: heading(t),
      cls: t.className,
      rows: t.rows.length,
      header: [...t.rows[0].cells].map((c) => c.textContent.trim()),
      text: t.textContent,
      scrolls: !!t.closest(".scroll"),
    })),
    fetched: performance.getEntriesByType("resource").map((r) => r.name).filter((n) => !n.startsWith("data:")),
  };
  const out = document.createElement("pre");
  out.id = "CHECK_ID";
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});
</script>
""".replace("CHECK_ID", CHECK_ID)


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


def render(page: Path, tmp_path: Path) -> tuple[dict, Path]:
    """(what the check script read from the DOM at 1,024 px, a full-page screenshot at 1,024 px)."""
    html = page.read_text(encoding="utf-8")
    assert "</body>" in html
    probe = tmp_path / f"{page.stem}.check.html"
    probe.write_text(html.replace("</body>", CHECK_SCRIPT + "</body>", 1), encoding="utf-8")
    dumped = _chromium(
        f"--window-size={WIDTH},800",
        "--virtual-time-budget=10000",
        "--dump-dom",
        probe.as_uri(),
        profile=tmp_path / "profile-dom",
    )
    found = re.search(rf'<pre id="{CHECK_ID}">(.*?)</pre>', dumped.stdout, flags=re.S)
    assert found, f"the check script left no result; chromium said: {dumped.stderr[-2000:]}"
    result = json.loads(found.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
    shot = tmp_path / f"{page.stem}.png"
    taken = _chromium(
        f"--window-size={WIDTH},2400",
        f"--screenshot={shot}",
        page.as_uri(),
        profile=tmp_path / "profile-shot",
    )
    assert shot.exists(), f"no screenshot; chromium said: {taken.stderr[-2000:]}"
    return result, shot


def _assert_renders_cleanly(result: dict, shot: Path) -> None:
    assert result["width"] == WIDTH
    assert result["scrollWidth"] <= WIDTH, f"the page scrolls sideways: {result['overflowing'][:10]}"
    assert not result["overflowing"], result["overflowing"][:10]
    assert all(image["ok"] for image in result["images"]), [i["alt"] for i in result["images"] if not i["ok"]]
    assert not result["fetched"], f"not self-contained: fetched {result['fetched']}"
    assert all(t["scrolls"] for t in result["tables"]), "a table outside a scrolling box can overflow"
    with Image.open(shot) as image:
        assert image.width == WIDTH
        assert len(image.convert("RGB").getcolors(1 << 20) or []) > 20  # drawn, not a blank page


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    import torch

    from reca_eval.experiments.arms import BASE, SFT, SFT_RECA, Budget
    from reca_eval.experiments.runner import ExperimentPlan, FamilyPlan, run_experiment
    from reca_eval.training.builders import tiny_janus

    root = tmp_path_factory.mktemp("pages")
    tiny_janus(seed=0).save_pretrained(root / "base")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        plan = ExperimentPlan(
            [
                FamilyPlan(
                    root / "base", (BASE, SFT, SFT_RECA), ("shapes-geneval", "shapes-dpg", "shapes-edit")
                )
            ],
            results=root / "results",
            budget=Budget(sft_steps=2, reca_steps=2, batch_size=2, warmup_steps=0),
            items_per_benchmark=2,
            generation_batch_size=16,
            n_boot=20,
            floor_seeds=(),
        )
        return run_experiment(plan)
    finally:
        torch.set_num_threads(threads)


def test_report_page_in_chromium(experiment, tmp_path):
    from reca_eval.experiments.report import write_report

    page = write_report(experiment, tmp_path / "report").html
    result, shot = render(page, tmp_path)
    _assert_renders_cleanly(result, shot)
    benchmarks = experiment.plan.all_benchmarks()
    labels = [run.label for run in experiment.arm_runs]
    by_heading = {}
    for table in result["tables"]:
        by_heading.setdefault(table["heading"], []).append(table)
    for bench in benchmarks:
        leaderboard, grid = by_heading[bench]  # the leaderboard table, then the image grid
        assert leaderboard["cls"] == "t" and leaderboard["rows"] == 1 + len(labels) + (
            len(experiment.reference_runs) if bench == "shapes-edit" else 0
        )
        assert grid["cls"] == "grid"
        assert grid["header"] == ["checkpoint", "1", "2"]  # numbered as the two prompts listed below
        assert "exact reference" in grid["text"] and all(label in grid["text"] for label in labels)
        assert grid["text"].count("pass") + grid["text"].count("fail") == 2 * len(
            [r for r in [*experiment.arm_runs, *experiment.reference_runs] if bench in r.runs]
        )
    assert any(h.startswith("shapes-geneval: SFT+RecA vs SFT") for h in by_heading)  # the paired comparison
    assert "Step accounting (matched compute)" in by_heading
    images = len(result["images"])
    assert images == sum(
        2 * (1 + len(labels) + (1 + len(experiment.reference_runs) if b == "shapes-edit" else 0))
        for b in benchmarks
    )


def test_leaderboard_page_in_chromium(experiment, tmp_path):
    # the page `reca-eval leaderboard --format html` writes, with fewer bootstrap draws to stay fast
    from reca_eval.results.leaderboard import format_tables, load_runs
    from reca_eval.results.pages import leaderboard_html

    page = tmp_path / "leaderboard.html"
    runs = load_runs(experiment.plan.results)
    page.write_text(leaderboard_html(format_tables(runs, with_ci=True, n_boot=50)), encoding="utf-8")
    result, shot = render(page, tmp_path)
    _assert_renders_cleanly(result, shot)
    headings = [t["heading"] for t in result["tables"]]
    for bench in experiment.plan.all_benchmarks():
        assert any(h.startswith(bench) for h in headings), headings
    for table in result["tables"]:
        assert table["header"][0] == "model"
        assert "±" in table["text"]  # the intervals
        assert all(run.label in table["text"] for run in experiment.arm_runs)


def test_the_check_sees_a_page_that_overflows_or_shows_a_broken_image(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text(
        "<!doctype html><html><body><h2>wide</h2><table><tr><td>x</td></tr></table>"
        "<div class='plot' style='width:1300px;height:9px'></div>"
        "<img alt='broken' src='data:image/png;base64,iVBORw0KGgo='></body></html>",
        encoding="utf-8",
    )
    result, _ = render(page, tmp_path)
    assert result["scrollWidth"] > WIDTH and result["overflowing"] == ["DIV.plot"]
    assert result["images"] == [{"alt": "broken", "ok": False}]
    assert result["tables"][0]["heading"] == "wide" and not result["tables"][0]["scrolls"]
