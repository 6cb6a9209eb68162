"""The experiment's report: one markdown file and one self-contained HTML page.

Contents: the leaderboard per benchmark (one row per arm/seed), scores per atypical split, the paired
comparison (B − A with its 95% interval), mean ± std over training seeds when there are several, the
step accounting that makes "matched compute" checkable, loss curves, and image grids of the same
prompts across checkpoints. With several model families (Janus, flow), a family's rows carry its name
(``flow/SFT+RecA``) and sit in the tables of the benchmarks it was scored on; the paired comparison is
made within each family. The HTML page inlines everything (SVG curves, base64 PNG grids); the
markdown file links the same grid PNGs and curve SVG, written beside it.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw

from reca_eval import registry
from reca_eval.core.images import png_bytes
from reca_eval.core.records import atomic_write_bytes, atomic_write_text
from reca_eval.experiments.arms import reca_t2i_mix
from reca_eval.experiments.runner import (
    SPLIT_NAMES,
    SPLIT_ORDER,
    ExperimentResult,
    seed_summary,
)

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
LOSS_SVG = "loss_curves.svg"
GRID_PROMPTS = 6
GRID_CELL = 96  # px per generated image in the grids (32-px renders scaled up without smoothing)
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


@dataclass
class ReportPaths:
    markdown: Path
    html: Path


# ------------------------------------------------------------------------------------------- tables


def leaderboard_table(result: ExperimentResult, benchmark: str, kind: str = "category") -> pd.DataFrame:
    """Rows: run labels; columns: "overall" then the categories (kind="category") or splits (kind="split")."""
    frame = result.scores_frame()
    frame = frame[(frame["benchmark"] == benchmark) & (frame["kind"] == kind)]
    if frame.empty:
        return pd.DataFrame()
    table = frame.pivot_table(index="label", columns="key", values="value", sort=False)
    table = table.reindex([r.label for r in result.table_runs() if r.label in table.index])
    if kind == "split":
        order = [s for s in SPLIT_ORDER if s in table.columns] + [
            c for c in table.columns if c not in SPLIT_ORDER
        ]
        return table[order].rename(columns=SPLIT_NAMES)
    keys = ["overall", *[c for c in table.columns if c != "overall" and "/" not in c]]
    table = table[[k for k in keys if k in table.columns]]
    if result.bounds_for(benchmark) is not None and "overall" in table.columns:
        # beside the raw overall: (score - floor) / (ceiling - floor), 0 at chance, 1 at the tokenizer's limit
        runs = {r.label: r for r in result.table_runs()}
        table.insert(1, NORMALISED, [result.normalised(runs[label], benchmark) for label in table.index])
    return table


NORMALISED = "normalised"


def bounds_tables(result: ExperimentResult) -> list[tuple[str, pd.DataFrame]]:
    """Per benchmark with a floor: the floor (as drawn and through the tokenizer: mean, 95% prediction
    interval of one more prompt-blind run, every seed) and the tokenizer ceiling; then every arm's
    overall score, normalised, and whether it sits inside the floor's interval."""
    tables = []
    for bounds in result.bounds:
        name = bounds.benchmark
        rows = []
        kinds = [bounds.floor] + ([bounds.tokenizer_floor] if bounds.tokenizer_floor is not None else [])
        for kind in kinds:
            low, high = kind.interval()
            rows.append(
                {
                    "row": kind.label,
                    "overall": kind.mean(),
                    "95% interval (one prompt-blind run)": f"[{low:.3f}, {high:.3f}]",
                    "per seed": ", ".join(f"{v:.3f}" for v in kind.values()),
                }
            )
        if bounds.ceiling is not None:
            rows.append(
                {
                    "row": bounds.ceiling.record.label,
                    "overall": bounds.ceiling_score(),
                    "95% interval (one prompt-blind run)": "",
                    "per seed": "",
                }
            )
        low, high = bounds.floor_interval()
        whose = f" ({bounds.family} base)" if bounds.family else ""
        tables.append(
            (
                f"{name}{whose}: floor and ceiling, prompt-blind seeds {list(bounds.floor.seeds)}",
                pd.DataFrame(rows).set_index("row"),
            )
        )
        arms = [
            {
                "arm": run.label,
                "overall": run.scores[name]["overall"],
                NORMALISED: bounds.normalise(run.scores[name]["overall"]),
                "inside the floor's interval": "yes"
                if bounds.within_floor(run.scores[name]["overall"])
                else "",
            }
            for run in result.arm_runs
            if name in run.scores and result.bounds_for(name, run.family) is bounds
        ]
        if arms:
            tables.append(
                (
                    f"{name}{whose}: every arm read between floor {bounds.floor_mean():.3f} "
                    f"[{low:.3f}, {high:.3f}] and ceiling {bounds.ceiling_score():.3f}",
                    pd.DataFrame(arms).set_index("arm"),
                )
            )
    return tables


def comparison_table(result: ExperimentResult) -> list[tuple[str, pd.DataFrame]]:
    """(title, table of category, A, B, Δ, CI) per benchmark and seed."""
    tables = []
    notes = {id(comp): note for _, comp, note in result.chance_notes()}
    for _, comp in result.comparisons:
        name_a = comp.record_a.label or "A"
        name_b = comp.record_b.label or "B"
        keys = [k for k in comp.deltas if k != "overall" and "/" not in k]
        rows = []
        for key in (["overall"] if "overall" in comp.deltas else []) + keys:
            d = comp.deltas[key]
            marker = "▲" if d.low > 0 else "▼" if d.high < 0 else ""
            rows.append(
                {
                    "category": key,
                    f"A: {name_a}": d.a,
                    f"B: {name_b}": d.b,
                    "Δ (B−A)": d.delta,
                    "95% CI": f"[{d.low:+.3f}, {d.high:+.3f}]",
                    "": marker,
                }
            )
        frame = pd.DataFrame(rows).set_index("category")
        title = f"{comp.record_a.benchmark}: {name_b} vs {name_a} ({comp.n_pairs} paired rows)"
        if id(comp) in notes:
            title += f" — {notes[id(comp)]}"
        tables.append((title, frame))
    return tables


def step_table(result: ExperimentResult) -> pd.DataFrame:
    rows = []
    for run in result.arm_runs:
        if run.seed != result.plan.seeds[0]:
            continue  # the accounting is the same for every seed except SFT-half's exact T2I count
        acc = run.account
        rows.append(
            {
                "arm": run.arm,
                "stages": "; ".join(acc.stages) or "—",
                "optimizer steps": acc.steps,
                "batch": acc.batch_size or "—",
                "images seen": acc.steps * acc.batch_size,
                "T2I steps": acc.t2i_steps,
                "train s (stages not shared)": round(sum(s.seconds for s in run.stages), 1),
                "matched to": acc.controls or "—",
            }
        )
    return pd.DataFrame(rows).set_index("arm")


def seed_tables(result: ExperimentResult) -> list[tuple[str, pd.DataFrame]]:
    """mean ± std over seeds: per benchmark, categories then splits (columns), arms (rows)."""
    summary = seed_summary(result.scores_frame())
    tables = []
    order = [*result.plan.qualified_arms(), *(r.arm for r in [*result.reference_runs, *result.bound_runs])]
    for bench in result.plan.all_benchmarks():
        for kind in ("category", "split"):
            part = summary[(summary["benchmark"] == bench) & (summary["kind"] == kind)]
            if kind == "category":
                part = part[~part["key"].str.contains("/")]
            if part.empty:
                continue
            cells = part.assign(
                cell=[
                    _mean_std(m, s, n) for m, s, n in zip(part["mean"], part["std"], part["n"], strict=True)
                ]
            )
            table = cells.pivot_table(index="arm", columns="key", values="cell", aggfunc="first", sort=False)
            table = table.reindex([a for a in order if a in table.index])
            if kind == "split":
                table = table[[s for s in SPLIT_ORDER if s in table.columns]].rename(columns=SPLIT_NAMES)
            else:
                table = table[["overall", *[c for c in table.columns if c != "overall"]]]
            what = "per category" if kind == "category" else "per atypical split (overall score on its items)"
            tables.append((f"{bench}: mean ± std over seeds {list(result.plan.seeds)}, {what}", table))
    return tables


def terminal_tables(result: ExperimentResult) -> list[tuple[str, pd.DataFrame]]:
    """What `reca-eval experiment` prints: :func:`seed_tables` with the overall score only per category
    (every category is in the report) and the splits in full."""
    return [
        (title, frame[["overall"]] if "per category" in title else frame)
        for title, frame in seed_tables(result)
    ]


def alignment_table(result: ExperimentResult) -> pd.DataFrame:
    """The alignment probe of every probed arm, mean ± std over seeds (empty when nothing was probed)."""
    rows = [{"arm": r.arm, "seed": r.seed, **r.alignment} for r in result.arm_runs if r.alignment]
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    table = {}
    for arm, part in frame.groupby("arm", sort=False):
        table[arm] = {
            column: _mean_std(float(part[key].mean()), float(part[key].std(ddof=1)), len(part))
            for column, key in (
                ("within-modality accuracy", "within"),
                ("cross-modality accuracy", "cross"),
                ("chance", "chance"),
                ("retention (cross vs within, above chance)", "transfer"),
            )
        }
    out = pd.DataFrame.from_dict(table, orient="index")
    out.index.name = "arm"
    return out


def _mean_std(mean: float, std: float, n: int) -> str:
    if n < 2 or math.isnan(std):
        return f"{mean:.3f}"
    return f"{mean:.3f} ± {std:.3f}"


def per_seed_table(result: ExperimentResult) -> pd.DataFrame:
    """Overall score of every seed per benchmark (no chosen seeds: all of them are shown)."""
    frame = result.scores_frame()
    frame = frame[(frame["kind"] == "category") & (frame["key"] == "overall")]
    table = frame.pivot_table(index=["arm", "seed"], columns="benchmark", values="value", sort=False)
    return table[[b for b in result.plan.all_benchmarks() if b in table.columns]]


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def markdown_table(frame: pd.DataFrame) -> str:
    index_names = [n or "" for n in frame.index.names]
    header = [*index_names, *[str(c) for c in frame.columns]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in frame.iterrows():
        keys = index if isinstance(index, tuple) else (index,)
        cells = [_fmt(k) for k in keys] + [_fmt(v) for v in row.tolist()]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def html_table(frame: pd.DataFrame) -> str:
    return frame.to_html(float_format=lambda v: _fmt(float(v)), na_rep="—", border=0, classes="t")


# ------------------------------------------------------------------------------------------- curves


def loss_curves_svg(series: dict[str, list[float]], width: int = 720, height: int = 320) -> str:
    """Training loss per optimizer step, one polyline per arm, as a standalone SVG document."""
    series = {k: [v for v in vals if math.isfinite(v)] for k, vals in series.items() if vals}
    pad_l, pad_r, pad_t, pad_b = 56, 190, 16, 36
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b
    longest = max((len(v) for v in series.values()), default=1)
    values = [v for vals in series.values() for v in vals] or [0.0, 1.0]
    low, high = min(values), max(values)
    high = high if high > low else low + 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
        f'<rect x="{pad_l}" y="{pad_t}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>',
        f'<text x="{pad_l - 4}" y="{pad_t + 10}" text-anchor="end">{high:.3g}</text>',
        f'<text x="{pad_l - 4}" y="{pad_t + plot_h}" text-anchor="end">{low:.3g}</text>',
        f'<text x="{pad_l}" y="{height - 8}">step 1</text>',
        f'<text x="{pad_l + plot_w}" y="{height - 8}" text-anchor="end">step {longest}</text>',
        f'<text x="{pad_l + plot_w / 2}" y="{height - 8}" text-anchor="middle">training loss</text>',
    ]
    for i, (name, vals) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        points = " ".join(
            f"{pad_l + plot_w * (j / max(1, longest - 1)):.1f},{pad_t + plot_h * (1 - (v - low) / (high - low)):.1f}"
            for j, v in enumerate(vals)
        )
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"><title>{html.escape(name)}</title></polyline>'
        )
        y = pad_t + 12 + 16 * i
        parts.append(
            f'<line x1="{width - pad_r + 10}" y1="{y - 4}" x2="{width - pad_r + 28}" y2="{y - 4}" stroke="{colour}" stroke-width="2"/>'
        )
        parts.append(f'<text x="{width - pad_r + 32}" y="{y}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def loss_series(result: ExperimentResult) -> dict[str, list[float]]:
    """Each trained run's losses, its stages end to end (SFT+RecA: the SFT steps, then the RecA steps)."""
    return {run.label: [v for s in run.stages for v in s.losses] for run in result.arm_runs if run.stages}


# ------------------------------------------------------------------------------------------- grids


def image_grid(
    result: ExperimentResult, benchmark: str, prompts: int = GRID_PROMPTS
) -> tuple[Image.Image, list[str]]:
    """Sample 0 of the same ``prompts`` items (evenly spaced) for every run; edits get a source row first.

    Returns the grid and the prompts in column order."""
    bench = registry.get(benchmark)
    items = bench.load_items(result.items_paths[benchmark])
    columns = [i * len(items) // min(prompts, len(items)) for i in range(min(prompts, len(items)))]
    rows: list[tuple[str, list[Image.Image | None]]] = []
    if bench.source_image_of is not None:
        rows.append(("source", [bench.source_image_of(items[i]) for i in columns]))
    for run in [*result.arm_runs, *result.reference_runs]:  # the floors' scenes are random: not shown
        if benchmark not in run.runs:
            continue
        image_dir = Path(run.runs[benchmark]) / "images"
        cells: list[Image.Image | None] = []
        for index in columns:
            path = bench.sample_path(items, index, 0, image_dir)
            cells.append(Image.open(path).convert("RGB") if path.exists() else None)
        rows.append((run.label, cells))
    label_w = 150
    grid = Image.new("RGB", (label_w + GRID_CELL * len(columns), GRID_CELL * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    for r, (label, cells) in enumerate(rows):
        draw.text((4, r * GRID_CELL + GRID_CELL // 2 - 6), label[:24], fill="black")
        for c, cell in enumerate(cells):
            box = (label_w + c * GRID_CELL, r * GRID_CELL)
            if cell is None:
                draw.rectangle([*box, box[0] + GRID_CELL - 1, box[1] + GRID_CELL - 1], outline="red")
                continue
            grid.paste(
                cell.resize((GRID_CELL - 2, GRID_CELL - 2), Image.Resampling.NEAREST),
                (box[0] + 1, box[1] + 1),
            )
    return grid, [bench.prompt_of(items[i]) for i in columns]


# ------------------------------------------------------------------------------------------- writing


def _sections(result: ExperimentResult) -> list[tuple[str, list[tuple[str, pd.DataFrame]]]]:
    plan = result.plan
    benchmarks = plan.all_benchmarks()
    sections = [
        ("Leaderboard", [(b, leaderboard_table(result, b)) for b in benchmarks]),
        (
            "Scores per atypical split",
            [
                (f"{b} (overall score on each split's items)", leaderboard_table(result, b, "split"))
                for b in benchmarks
            ],
        ),
        (f"Paired comparison: {plan.compare[1]} vs {plan.compare[0]}", comparison_table(result)),
    ]
    if result.bounds:
        sections.insert(1, ("Read between floor and ceiling", bounds_tables(result)))
    if len(plan.seeds) > 1:
        sections.append(("Over training seeds", seed_tables(result)))
        sections.append(("Overall score of every seed", [("", per_seed_table(result))]))
    probes = alignment_table(result)
    if not probes.empty:
        caption = f"`reca-eval diagnose alignment`, {plan.probe_scenes} held-out scenes, final layer"
        sections.append(("Cross-modal alignment probe of every checkpoint", [(caption, probes)]))
    sections.append(("Step accounting (matched compute)", [("", step_table(result))]))
    return sections


def _mix_text(budget, family: str, named: bool) -> str:
    ratios = reca_t2i_mix(budget, family)
    sources = ("t2i", "recon", "i2t")[: len(ratios)]
    text = f"{':'.join(sources)} = {':'.join(f'{x:g}' for x in ratios)}"
    return f"{family}: {text}" if named else text


def _setup_lines(result: ExperimentResult) -> list[str]:
    plan, b = result.plan, result.plan.budget
    items = (
        "every item"
        if not plan.items_per_benchmark
        else f"{plan.items_per_benchmark} evenly spaced items per benchmark (a subset: not comparable with full-set runs)"
    )
    families = plan.family_plans()
    # The first family's guidance heads the setup; another family's is named only where it differs.
    guidance = plan.guidance(families[0])
    if len(families) == 1:
        lines = [
            f"Base checkpoint: `{families[0].base}`",
            f"Arms: {', '.join(families[0].arms)}; training seeds: {list(plan.seeds)}",
        ]
    else:
        lines = [
            f"Family {f.family}: base `{f.base}`; arms {', '.join(f.arms)}; scored on {', '.join(f.benchmarks)}"
            + ("" if plan.guidance(f) == guidance else f"; guidance {plan.guidance(f):g}")
            for f in families
        ] + [f"Training seeds: {list(plan.seeds)}"]
    return [
        *lines,
        f"Budget: SFT {b.sft_steps} steps, RecA {b.reca_steps} steps, batch {b.batch_size}, lr {b.lr:g} "
        f"(constant after {b.warmup_steps} warmup steps), captions {b.caption_mode}, "
        f"RecA instructions {b.instructions or 'all'}, "
        "RecA+T2I mix " + "; ".join(_mix_text(b, f.family, len(families) > 1) for f in families),
        f"Scored on: {', '.join(plan.all_benchmarks())} — {items}; images per prompt from each benchmark's spec; "
        f"guidance {guidance:g}, temperature {plan.temperature:g}; generation seeds are each benchmark's own, the same for every arm",
        *(
            [
                f"Floors: a prompt-blind generator (each image a training-distribution scene picked by a seed, "
                f"the prompt ignored) over seeds {list(plan.floor_seeds)}, as drawn and through each base's "
                "tokenizer; ceilings: the exact references through that tokenizer; normalised = "
                "(score − floor) / (ceiling − floor), the floor through the tokenizer"
            ]
            if result.bounds
            else []
        ),
        "Wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items()),
    ]


def write_report(result: ExperimentResult, out_dir: Path | None = None) -> ReportPaths:
    """Write report.md (+ grid PNGs and the loss SVG beside it) and a self-contained report.html."""
    out_dir = Path(out_dir or result.plan.results)
    title = f"reca-eval: {result.plan.compare[1]} vs {result.plan.compare[0]} on ShapeWorld"
    svg = loss_curves_svg(loss_series(result))
    atomic_write_text(out_dir / LOSS_SVG, svg)
    grids = []
    for bench in result.plan.all_benchmarks():
        grid, prompts = image_grid(result, bench)
        data = png_bytes(grid)
        atomic_write_bytes(out_dir / f"grid_{bench}.png", data)
        grids.append((bench, f"grid_{bench}.png", data, prompts))
    sections = _sections(result)

    md = [f"# {title}", "", *[f"- {line}" for line in _setup_lines(result)], ""]
    page = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table.t{border-collapse:collapse;margin:.5em 0 1.5em}table.t td,table.t th{border:1px solid #ccc;"
        "padding:2px 8px;text-align:right}table.t th{background:#f4f4f4}h3{margin-bottom:.2em}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><ul>",
        *[f"<li>{html.escape(line)}</li>" for line in _setup_lines(result)],
        "</ul>",
    ]
    for heading, tables in sections:
        md += [f"## {heading}", ""]
        page.append(f"<h2>{html.escape(heading)}</h2>")
        for caption, frame in tables:
            if caption:
                md += [f"### {caption}", ""]
                page.append(f"<h3>{html.escape(caption)}</h3>")
            if frame.empty:
                md += ["(nothing to show)", ""]
                continue
            md += [markdown_table(frame), ""]
            page.append(html_table(frame))
    md += ["## Loss curves", "", f"![training loss per step]({LOSS_SVG})", ""]
    page += ["<h2>Loss curves</h2>", svg]
    md += ["## The same prompts across checkpoints (sample 0)", ""]
    page.append("<h2>The same prompts across checkpoints (sample 0)</h2>")
    for bench, name, data, prompts in grids:
        md += [
            f"### {bench}",
            "",
            f"![{bench}]({name})",
            "",
            *[f"{i + 1}. {p}" for i, p in enumerate(prompts)],
            "",
        ]
        encoded = base64.b64encode(data).decode("ascii")
        page += [
            f"<h3>{html.escape(bench)}</h3>",
            f"<img alt='{html.escape(bench)}' src='data:image/png;base64,{encoded}'>",
            "<ol>" + "".join(f"<li>{html.escape(p)}</li>" for p in prompts) + "</ol>",
        ]
    page.append("</body></html>")
    paths = ReportPaths(out_dir / REPORT_MD, out_dir / REPORT_HTML)
    atomic_write_text(paths.markdown, "\n".join(md) + "\n")
    atomic_write_text(paths.html, "\n".join(page) + "\n")
    return paths
