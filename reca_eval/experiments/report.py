"""The experiment's report: one markdown file and one self-contained HTML page.

Contents: the leaderboard per benchmark (one row per arm/seed), scores per atypical split, the paired
comparison (B − A with its 95% interval), mean ± std over training seeds when there are several, the
step accounting that makes "matched compute" checkable, loss curves (one chart per family, one line
per arm and objective, from the trainer's metrics.jsonl), and image grids of the same prompts across
checkpoints (numbered columns matching the prompt list, the exact reference above the runs, each image
marked pass/fail by the benchmark's own per-image rows). With several model families (Janus, flow), a family's rows carry its name
(``flow/SFT+RecA``) and sit in the tables of the benchmarks it was scored on; the paired comparison is
made within each family. The HTML page inlines everything (SVG curves, base64 PNG images) and its
tables scroll sideways instead of overflowing; the markdown file links grid PNGs and curve SVGs
written beside it. Neither shows a machine's absolute paths.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw

from reca_eval import registry
from reca_eval.benchmarks.shapes.benchmark import _read_jsonl
from reca_eval.core.images import png_bytes
from reca_eval.core.records import atomic_write_bytes, atomic_write_text, read_run
from reca_eval.evaluation.references import SHAPES_BENCHMARKS, reference_scenes_path
from reca_eval.experiments.arms import reca_t2i_mix
from reca_eval.experiments.runner import (
    SPLIT_NAMES,
    SPLIT_ORDER,
    ExperimentResult,
    seed_summary,
)

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
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
            marker = "▲ up" if d.low > 0 else "▼ down" if d.high < 0 else ""
            rows.append(
                {
                    "category": key,
                    f"A: {name_a}": d.a,
                    f"B: {name_b}": d.b,
                    "Δ (B−A)": d.delta,
                    "95% CI": f"[{d.low:+.3f}, {d.high:+.3f}]",
                    "CI excludes 0": marker,
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
    """One header row (index names, then the columns) and one row per index entry, in a box that scrolls
    sideways: pandas' ``to_html`` adds a second, empty header row for a named index."""
    index_names = [n or "" for n in frame.index.names]
    head = "".join(f'<th scope="col">{html.escape(str(c))}</th>' for c in [*index_names, *frame.columns])
    body = []
    for index, row in frame.iterrows():
        keys = index if isinstance(index, tuple) else (index,)
        cells = "".join(f'<th scope="row">{html.escape(_fmt(k))}</th>' for k in keys)
        cells += "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row.tolist())
        body.append(f"<tr>{cells}</tr>")
    return (
        f'<div class="scroll"><table class="t"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def inline_html(text: str) -> str:
    """A line of report text as HTML: escaped, with `code` spans as <code> instead of literal backticks."""
    parts = html.escape(text).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick stays as it is
        return html.escape(text)
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def display_path(path: Path | str, out_dir: Path | str | None = None) -> str:
    """A path as the report shows it: relative to the report's folder or the working directory when
    inside them, else its last two parts; a report never shows a machine's absolute paths."""
    path = Path(path)
    for root in [out_dir, Path.cwd()]:
        if root is None:
            continue
        try:
            return str(path.resolve().relative_to(Path(root).resolve()))
        except ValueError:
            continue
    return str(Path(*path.parts[-2:])) if path.is_absolute() else str(path)


# ------------------------------------------------------------------------------------------- curves


OBJECTIVE_DASH = {"t2i": "", "recon": "7 4", "i2t": "2 3"}  # one line style per objective, as in the legend
Curves = dict[str, dict[str, list[tuple[int, float]]]]  # arm -> objective -> (optimizer step, loss)


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 x 10^k apart) from at or below ``low`` to at or above ``high``."""
    span = high - low if high > low else max(abs(high), 1.0)
    raw = span / max(1, count - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [round(i * step, 10) for i in range(first, max(last, first + 1) + 1)]


def loss_curves_svg(curves: Curves, title: str = "", width: int = 800, height: int = 340) -> str:
    """Training loss per optimizer step as a standalone SVG: one colour per arm, one line style per
    objective (t2i solid, recon dashed, i2t dotted), labelled axes with round ticks, a legend."""
    lines = [
        (arm, objective, [(x, y) for x, y in points if math.isfinite(y)])
        for arm, objectives in curves.items()
        for objective, points in objectives.items()
    ]
    lines = [line for line in lines if line[2]]
    pad_l, pad_r, pad_t, pad_b = 64, 240, 28 if title else 14, 48
    height = max(height, pad_t + 24 + 17 * len(lines))  # room for every legend entry
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b
    xs = [x for *_, points in lines for x, _ in points] or [1, 2]
    ys = [y for *_, points in lines for _, y in points] or [0.0, 1.0]
    x_low, x_high = min(xs), max(max(xs), min(xs) + 1)
    y_ticks = _ticks(min(ys), max(ys))
    y_low, y_high = y_ticks[0], y_ticks[-1]

    def px(x: float) -> float:
        return pad_l + plot_w * (x - x_low) / (x_high - x_low)

    def py(y: float) -> float:
        return pad_t + plot_h * (1 - (y - y_low) / (y_high - y_low))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" style="max-width:100%;height:auto" font-family="sans-serif" font-size="12" '
        f'role="img" aria-label="{html.escape(title or "training loss per objective")}">',
    ]
    if title:
        parts.append(f'<text x="{pad_l}" y="16" font-weight="bold">{html.escape(title)}</text>')
    for tick in y_ticks:
        y = py(tick)
        parts.append(f'<line x1="{pad_l}" x2="{pad_l + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e4e4"/>')
        parts.append(f'<text x="{pad_l - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>')
    for tick in _ticks(x_low, x_high):
        if float(tick).is_integer() and x_low <= tick <= x_high:
            x = px(tick)
            parts.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{pad_t + plot_h}" y2="{pad_t + plot_h + 4}" stroke="#555"/>'
            )
            parts.append(
                f'<text x="{x:.1f}" y="{pad_t + plot_h + 17}" text-anchor="middle">{int(tick)}</text>'
            )
    parts += [
        f'<rect x="{pad_l}" y="{pad_t}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>',
        f'<text x="{pad_l + plot_w / 2}" y="{height - 8}" text-anchor="middle">optimizer step</text>',
        f'<text transform="translate(16 {pad_t + plot_h / 2}) rotate(-90)" text-anchor="middle">training loss</text>',
    ]
    colours = {arm: PALETTE[i % len(PALETTE)] for i, arm in enumerate(curves)}
    for i, (arm, objective, points) in enumerate(lines):
        dash = OBJECTIVE_DASH.get(objective, "4 2 1 2")
        style = f' stroke-dasharray="{dash}"' if dash else ""
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        name = html.escape(f"{arm} · {objective}")
        parts.append(
            f'<polyline fill="none" stroke="{colours[arm]}" stroke-width="1.8"{style} points="{coords}">'
            f"<title>{name}</title></polyline>"
        )
        y = pad_t + 10 + 17 * i
        parts.append(
            f'<line x1="{width - pad_r + 12}" y1="{y - 4}" x2="{width - pad_r + 40}" y2="{y - 4}" '
            f'stroke="{colours[arm]}" stroke-width="2"{style}/>'
        )
        parts.append(f'<text x="{width - pad_r + 46}" y="{y}">{name}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _stage_curves(stage) -> dict[str, list[tuple[int, float]]]:
    """A trained stage's loss per objective and step, from the trainer's metrics.jsonl beside its final
    model (``loss/<objective>`` every logged step); without that file, its total loss under the stage's
    objectives joined by "+"."""
    metrics = Path(stage.checkpoint).parent / "metrics.jsonl"
    curves: dict[str, list[tuple[int, float]]] = {}
    if metrics.exists():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a killed run
            for key, value in entry.items():
                if key.startswith("loss/") and isinstance(value, (int, float)):
                    curves.setdefault(key.removeprefix("loss/"), []).append(
                        (int(entry["step"]), float(value))
                    )
    if not curves and stage.losses:
        curves[stage.key.split("-")[0]] = [(i + 1, v) for i, v in enumerate(stage.losses)]
    return curves


def loss_curves(result: ExperimentResult) -> dict[str, Curves]:
    """family -> arm -> objective -> (step, loss) of the first training seed, every arm's stages end to end
    (SFT+RecA: the SFT steps, then the RecA steps); a stage two arms share is drawn once."""
    seed = result.plan.seeds[0]
    by_family: dict[str, Curves] = {}
    drawn: set[tuple[str, int]] = set()
    for run in result.arm_runs:
        if run.seed != seed or not run.stages:
            continue
        offset = 0
        for stage in run.stages:
            if (stage.key, offset) not in drawn:
                drawn.add((stage.key, offset))
                arm = by_family.setdefault(run.family, {}).setdefault(run.arm, {})
                for objective, points in _stage_curves(stage).items():
                    arm.setdefault(objective, []).extend((offset + x, y) for x, y in points)
            offset += stage.steps
    return by_family


# ------------------------------------------------------------------------------------------- grids


EXACT_REFERENCE = "exact reference"


@dataclass
class GridCell:
    image: Image.Image | None  # None: the file is missing
    passed: bool | None = None  # the benchmark's per-image verdict (None: not scored, e.g. a reference)
    detail: str = (
        ""  # shown beside the mark: "3/5 right" (an image with several scored rows: DPG's questions)
    )
    note: str = ""  # the scorer's reason, shown on hover


@dataclass
class Grid:
    benchmark: str
    prompts: list[str]  # column j shows prompt j + 1
    rows: list[tuple[str, list[GridCell]]]


def _verdicts(run_dir: Path, item_ids: list[str]) -> dict[str, tuple[bool, str, str]]:
    """Per item, sample 0: (passed = every scored row of the image at full score, "right/rows" when the
    image has several rows, the scorer's first reason)."""
    try:
        _, rows = read_run(run_dir)
    except (FileNotFoundError, ValueError):
        return {}
    if rows.empty or "score" not in rows.columns:
        return {}
    rows = rows[(rows["sample"] == 0) & rows["item_id"].astype(str).isin(item_ids)]
    verdicts = {}
    for item_id, part in rows.groupby(rows["item_id"].astype(str), sort=False):
        scores = pd.to_numeric(part["score"], errors="coerce")
        right = int((scores >= 1).sum())
        detail = f"{right}/{len(part)} right" if len(part) > 1 else ""
        reasons = [str(r) for r in part["reason"].fillna("") if str(r)] if "reason" in part.columns else []
        verdicts[str(item_id)] = (bool(right == len(part)), detail, reasons[0] if reasons else "")
    return verdicts


def _exact_references(benchmark: str, items: list[dict]) -> list[Image.Image] | None:
    """What a perfect model draws for each item (ShapeWorld benchmarks only; None elsewhere)."""
    if benchmark not in SHAPES_BENCHMARKS:
        return None
    from reca_eval.scorers import shapes

    if benchmark == "shapes-dpg":  # the question file carries no scenes: they sit in items.jsonl
        scenes = {str(it["item_id"]): it for it in _read_jsonl(reference_scenes_path(benchmark))}
        items = [{**item, **scenes.get(str(item["item_id"]), {})} for item in items]
    try:
        return [shapes.render_reference(item, 0) for item in items]
    except (KeyError, ValueError):
        return None


def grid_data(result: ExperimentResult, benchmark: str, prompts: int = GRID_PROMPTS) -> Grid:
    """Sample 0 of the same ``prompts`` items (evenly spaced) for every run, each marked pass/fail by the
    benchmark's own per-image rows; above them the edit's source and the exact reference."""
    bench = registry.get(benchmark)
    items = bench.load_items(result.items_paths[benchmark])
    columns = [i * len(items) // min(prompts, len(items)) for i in range(min(prompts, len(items)))]
    chosen = [items[i] for i in columns]
    # the rows' item_id: the item's own, else (GenEval's folder layout) the 5-digit folder name
    ids = [str(item.get("item_id", f"{i:05d}")) for item, i in zip(chosen, columns, strict=True)]
    rows: list[tuple[str, list[GridCell]]] = []
    if bench.source_image_of is not None:
        rows.append(("source", [GridCell(bench.source_image_of(item)) for item in chosen]))
    if (references := _exact_references(benchmark, chosen)) is not None:
        rows.append((EXACT_REFERENCE, [GridCell(image) for image in references]))
    for run in [*result.arm_runs, *result.reference_runs]:  # the floors' scenes are random: not shown
        if benchmark not in run.runs:
            continue
        run_dir = Path(run.runs[benchmark])
        verdicts = _verdicts(run_dir, ids)
        cells = []
        for index, item_id in zip(columns, ids, strict=True):
            path = bench.sample_path(items, index, 0, run_dir / "images")
            passed, detail, note = verdicts.get(item_id, (None, "", ""))
            image = Image.open(path).convert("RGB") if path.exists() else None
            cells.append(GridCell(image, passed if image is not None else None, detail, note))
        rows.append((run.label, cells))
    return Grid(benchmark, [bench.prompt_of(item) for item in chosen], rows)


GRID_HEADER = 20  # px: the column numbers above the PNG grid
MARK = {True: "✓", False: "✗"}


def grid_image(data: Grid) -> Image.Image:
    """The grid as one picture for the markdown report: numbered columns, a label per row, a green
    (pass) or red (fail) corner per scored image."""
    label_w, n = 150, len(data.prompts)
    grid = Image.new("RGB", (label_w + GRID_CELL * n, GRID_HEADER + GRID_CELL * len(data.rows)), "white")
    draw = ImageDraw.Draw(grid)
    for c in range(n):
        draw.text((label_w + c * GRID_CELL + GRID_CELL // 2 - 3, 4), str(c + 1), fill="black")
    for r, (label, cells) in enumerate(data.rows):
        top = GRID_HEADER + r * GRID_CELL
        draw.text((4, top + GRID_CELL // 2 - 6), label[:24], fill="black")
        for c, cell in enumerate(cells):
            box = (label_w + c * GRID_CELL, top)
            if cell.image is None:
                draw.rectangle([*box, box[0] + GRID_CELL - 1, box[1] + GRID_CELL - 1], outline="red")
                continue
            grid.paste(
                cell.image.resize((GRID_CELL - 2, GRID_CELL - 2), Image.Resampling.NEAREST),
                (box[0] + 1, box[1] + 1),
            )
            if cell.passed is not None:
                colour = "#1a7f37" if cell.passed else "#cf222e"
                draw.rectangle(
                    [box[0] + GRID_CELL - 13, box[1] + 1, box[0] + GRID_CELL - 2, box[1] + 12], fill=colour
                )
    return grid


def grid_html(data: Grid) -> str:
    """The grid as an HTML table: a header of column numbers (the numbers of the prompt list below it),
    row labels as text, each image inlined as a PNG with its pass/fail mark and the scorer's note."""
    head = '<th scope="col">checkpoint</th>' + "".join(
        f'<th scope="col" title="{html.escape(p)}">{j + 1}</th>' for j, p in enumerate(data.prompts)
    )
    body = []
    for label, cells in data.rows:
        tds = []
        for j, cell in enumerate(cells):
            if cell.image is None:
                tds.append('<td class="missing">missing</td>')
                continue
            encoded = base64.b64encode(png_bytes(cell.image)).decode("ascii")
            alt = html.escape(f"{label}, prompt {j + 1}")
            mark = ""
            if cell.passed is not None:
                verdict = "pass" if cell.passed else "fail"
                detail = f" {html.escape(cell.detail)}" if cell.detail else ""
                mark = (
                    f'<span class="mark {verdict}" title="{html.escape(cell.note)}">'
                    f"{MARK[cell.passed]} {verdict}{detail}</span>"
                )
            tds.append(
                f'<td><img alt="{alt}" width="{GRID_CELL}" height="{GRID_CELL}" '
                f'src="data:image/png;base64,{encoded}">{mark}</td>'
            )
        body.append(f'<tr><th scope="row">{html.escape(label)}</th>{"".join(tds)}</tr>')
    prompts = "".join(f"<li>{html.escape(p)}</li>" for p in data.prompts)
    return (
        f'<div class="scroll"><table class="grid"><thead><tr>{head}</tr></thead>'
        f'<tbody>{"".join(body)}</tbody></table></div><ol class="prompts">{prompts}</ol>'
    )


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


def _setup_lines(result: ExperimentResult, out_dir: Path | None = None) -> list[str]:
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
            f"Base checkpoint: `{display_path(families[0].base, out_dir)}`",
            f"Arms: {', '.join(families[0].arms)}; training seeds: {list(plan.seeds)}",
        ]
    else:
        lines = [
            f"Family {f.family}: base `{display_path(f.base, out_dir)}`; arms {', '.join(f.arms)}; scored on {', '.join(f.benchmarks)}"
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


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#1b1b1b}"
    ".scroll{overflow-x:auto;max-width:100%;margin:.5em 0 1.5em}"
    "table.t,table.grid{border-collapse:collapse;font-variant-numeric:tabular-nums}"
    "table.t td,table.t th{border:1px solid #ccc;padding:2px 8px;text-align:right;white-space:nowrap}"
    "table.t thead th{background:#f4f4f4}table.t thead th:first-child{text-align:left}table.t tbody th{text-align:left;font-weight:normal}"
    "table.grid th{font-weight:normal;padding:2px 6px}table.grid tbody th{text-align:left;white-space:nowrap}"
    "table.grid td{padding:3px;text-align:center;vertical-align:top}"
    "table.grid img{display:block;image-rendering:pixelated;border:1px solid #ddd}"
    "table.grid td.missing{color:#cf222e;border:1px dashed #cf222e;width:96px;height:96px}"
    ".mark{display:block;font-size:12px;white-space:nowrap}.mark.pass{color:#1a7f37}.mark.fail{color:#cf222e}"
    "li,h3{overflow-wrap:anywhere}code{background:#f4f4f4;padding:0 3px;overflow-wrap:anywhere}"
    "h3{margin-bottom:.2em}svg{display:block;margin:.5em 0 1.5em}"
)


def write_report(result: ExperimentResult, out_dir: Path | None = None) -> ReportPaths:
    """Write report.md (+ grid PNGs and one loss SVG per family beside it) and a self-contained report.html."""
    out_dir = Path(out_dir or result.plan.results)
    title = f"reca-eval: {result.plan.compare[1]} vs {result.plan.compare[0]} on ShapeWorld"
    seed = result.plan.seeds[0]
    charts = []
    for family, curves in loss_curves(result).items():
        svg = loss_curves_svg(curves, f"{family}: training loss per objective (seed {seed})")
        name = f"loss_curves_{family}.svg"
        atomic_write_text(out_dir / name, svg)
        charts.append((family, name, svg))
    grids = []
    for bench in result.plan.all_benchmarks():
        data = grid_data(result, bench)
        atomic_write_bytes(out_dir / f"grid_{bench}.png", png_bytes(grid_image(data)))
        grids.append((bench, f"grid_{bench}.png", data))
    sections = _sections(result)
    setup = _setup_lines(result, out_dir)

    md = [f"# {title}", "", *[f"- {line}" for line in setup], ""]
    page = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><ul>",
        *[f"<li>{inline_html(line)}</li>" for line in setup],
        "</ul>",
    ]
    for heading, tables in sections:
        md += [f"## {heading}", ""]
        page.append(f"<h2>{inline_html(heading)}</h2>")
        for caption, frame in tables:
            if caption:
                md += [f"### {caption}", ""]
                page.append(f"<h3>{inline_html(caption)}</h3>")
            if frame.empty:
                md += ["(nothing to show)", ""]
                page.append("<p>(nothing to show)</p>")
                continue
            md += [markdown_table(frame), ""]
            page.append(html_table(frame))
    legend = "one colour per arm; t2i solid, recon dashed, i2t dotted; a stage two arms share is drawn once"
    md += ["## Loss curves", "", f"{legend[0].upper()}{legend[1:]}.", ""]
    page += ["<h2>Loss curves</h2>", f"<p>{html.escape(legend[0].upper() + legend[1:])}.</p>"]
    for family, name, svg in charts:
        md += [f"![{family}: training loss per objective]({name})", ""]
        page.append(svg)
    heading = "The same prompts across checkpoints (sample 0)"
    note = (
        "Columns are numbered as the prompt list below each grid; ✓/✗ is the benchmark's own verdict on "
        "that image (green/red corner in the PNG); the exact reference is what a perfect model draws."
    )
    md += [f"## {heading}", "", note, ""]
    page += [f"<h2>{heading}</h2>", f"<p>{html.escape(note)}</p>"]
    for bench, name, data in grids:
        md += [
            f"### {bench}",
            "",
            f"![{bench}]({name})",
            "",
            *[f"{i + 1}. {p}" for i, p in enumerate(data.prompts)],
            "",
        ]
        page += [f"<h3>{html.escape(bench)}</h3>", grid_html(data)]
    page.append("</body></html>")
    paths = ReportPaths(out_dir / REPORT_MD, out_dir / REPORT_HTML)
    atomic_write_text(paths.markdown, "\n".join(md) + "\n")
    atomic_write_text(paths.html, "\n".join(page) + "\n")
    return paths
