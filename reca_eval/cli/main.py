"""The `reca-eval` command line. Thin: parse, call library functions, print with rich.

Exit codes: 0 success; 1 a regression (`check`); 2 bad input (unknown names, malformed files);
3 a run that scored but skipped images (pass --allow-skips to accept them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from reca_eval import registry
from reca_eval.evaluation import score as evaluate

app = typer.Typer(
    help="Evaluation-first harness for Reconstruction Alignment (RecA) of unified multimodal models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
diagnose_app = typer.Typer(
    help="Diagnostics of a checkpoint (is this model ready for RecA?).", no_args_is_help=True
)
app.add_typer(diagnose_app, name="diagnose")

EXIT_REGRESSION = 1
EXIT_BAD_INPUT = 2
EXIT_SKIPS = 3

ResultsOpt = typer.Option(Path("results"), "--results", help="Results folder (records, leaderboard files).")


def _console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False)


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    _console(stderr=True).print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


@app.command("list")
def list_benchmarks() -> None:
    """Show the registered benchmarks: items, generation protocol, scorer and the extra it needs."""
    table = Table(title="reca-eval benchmarks")
    for col in ("name", "version", "task", "items", "images/prompt", "res", "scorer", "needs"):
        table.add_column(col, no_wrap=col in ("name", "needs"))
    for bench in registry.all_benchmarks():
        try:
            n_items = str(len(bench.load_items(bench.default_items())))
        except FileNotFoundError:
            n_items = f"[dim]not fetched: reca-eval fetch {bench.name}[/]"
        except ValueError as exc:
            n_items = f"[red]invalid[/] ({escape(str(exc)[:60])})"
        table.add_row(
            bench.name,
            bench.version,
            bench.task,
            n_items,
            str(bench.images_per_prompt),
            str(bench.resolution),
            bench.scorer_name,
            escape(f"reca-eval[{bench.extra}]") if bench.extra else "core",
        )
    _console().print(table)


@app.command()
def validate(
    name: str = typer.Argument(..., help="Benchmark name (see `reca-eval list`)."),
    items: Path = typer.Option(None, help="Item file to validate (default: the benchmark's own)."),
) -> None:
    """Check a benchmark's item file against its schema; errors name the file and line."""
    try:
        bench = registry.get(name)
        path = items or bench.default_items()
        loaded = bench.load_items(path)
    except (KeyError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    _console().print(f"[green]ok[/] {path}: {len(loaded)} items valid for {name} v{bench.version}")


@app.command()
def run(
    name: str = typer.Argument(..., help="Benchmark name (see `reca-eval list`)."),
    images: Path = typer.Option(
        None, "--images", help="Score images produced by any tool (official layout)."
    ),
    ckpt: Path = typer.Option(None, "--ckpt", help="Generate with this checkpoint, then score."),
    items: Path = typer.Option(
        None, "--items", help="Item file (default: the benchmark's own / fetched copy)."
    ),
    label: str = typer.Option("", help="Row name in the leaderboard (default: the folder name)."),
    mode: str = typer.Option(None, help="Protocol mode where one exists (dpg: official | fixed)."),
    results: Path = ResultsOpt,
    as_json: bool = typer.Option(
        False, "--json", help="Print the record as JSON on stdout (tables on stderr)."
    ),
    allow_skips: bool = typer.Option(False, help="Exit 0 even when images were skipped."),
    option: list[str] = typer.Option(
        [],
        "--option",
        "-o",
        help="Scorer option KEY=VALUE, repeatable (e.g. -o judge=openai -o judge_model=gpt-4.1-2025-04-14, "
        "-o device=cuda, -o images_per_prompt=1).",
    ),
) -> None:
    """Score a benchmark: one result record, per-image results beside it, one leaderboard row."""
    from reca_eval.results.leaderboard import render_leaderboard, write_leaderboard

    if (images is None) == (ckpt is None):
        _fail("give exactly one of --images DIR or --ckpt PATH")
    options = parse_options(option)
    if mode:
        options["mode"] = mode
    try:
        if images is not None:
            outcome = evaluate.score_images(
                name, images, items_path=items, label=label, options=options, results_dir=results
            )
        else:
            from reca_eval.evaluation.generate import generate_for_benchmark

            outcome = evaluate.generate_and_score(
                name,
                ckpt,
                generate=generate_for_benchmark,
                items_path=items,
                label=label,
                options=options,
                results_dir=results,
            )
    except (KeyError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc).strip("'\""))
    if outcome is None:  # a non-main process under `accelerate launch`: its shard is written
        return
    write_leaderboard(results)
    console = _console(stderr=as_json)
    record = outcome.record
    _print_record(console, record)
    if as_json:
        sys.stdout.write(json.dumps(record.to_json(), indent=2) + "\n")
    render_leaderboard([(record, outcome.run_dir)], console)
    if record.images_skipped and not allow_skips:
        console.print(
            f"[yellow]{record.images_skipped} image(s) skipped[/]: see skips in {outcome.run_dir}/record.json"
        )
        raise typer.Exit(EXIT_SKIPS)


def parse_options(pairs: list[str]) -> dict[str, object]:
    """``KEY=VALUE`` strings into a dict; values that read as JSON (numbers, true/false) are typed."""
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            _fail(f"--option takes KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _print_record(console: Console, record) -> None:
    table = Table(title=f"{record.benchmark} v{record.spec_version} — {record.label}")
    table.add_column("category")
    table.add_column("score", justify="right")
    for key, value in record.scores.items():
        table.add_row(key, f"{value:.4f}")
    console.print(table)
    console.print(
        f"scored {record.images_scored} image(s), skipped {record.images_skipped}; run {record.run_id}",
        style="dim",
    )
    reasons: dict[str, int] = {}
    for skip in record.skips:
        reasons[skip.reason] = reasons.get(skip.reason, 0) + 1
    for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1])[:10]:
        console.print(f"  skipped {count}× — {reason}", style="yellow")


@app.command()
def leaderboard(
    results: Path = ResultsOpt,
    ci: bool = typer.Option(False, "--ci", help="Add cluster-bootstrap 95% half-widths (by prompt)."),
) -> None:
    """Print the leaderboard: rows are checkpoints, columns benchmark categories."""
    from reca_eval.results.leaderboard import load_runs, render_leaderboard

    runs = load_runs(results)
    if not runs:
        _fail(f"no result records under {results}/runs")
    render_leaderboard(runs, _console(), with_ci=ci)


def _resolve_run(ref: str, results: Path) -> Path:
    """A run is named by its folder, its record.json, its run id, or its label (the latest such run)."""
    from reca_eval.results.leaderboard import load_runs

    path = Path(ref)
    if path.exists():
        return path
    matches = [(rec, p) for rec, p in load_runs(results) if ref in (rec.run_id, rec.label)]
    if not matches:
        _fail(f"no run named {ref!r} (not a path, run id or label under {results})")
    matches.sort(key=lambda rp: rp[0].created)
    return matches[-1][1]


@app.command()
def compare(
    run_a: str = typer.Argument(..., help="Baseline run (folder, record.json, run id or label), e.g. SFT."),
    run_b: str = typer.Argument(..., help="Candidate run, e.g. SFT+RecA."),
    results: Path = ResultsOpt,
    n_boot: int = typer.Option(2000, help="Bootstrap replicates."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
) -> None:
    """Paired comparison on the same prompts and seeds: per-category deltas with 95% intervals."""
    from reca_eval.core.records import read_run
    from reca_eval.results.leaderboard import compare_runs, render_compare

    a, b = _resolve_run(run_a, results), _resolve_run(run_b, results)
    try:
        bench = registry.get(read_run(a)[0].benchmark)
        result = compare_runs(a, b, bench.aggregate, n_boot=n_boot, seed=seed)
    except (KeyError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    render_compare(result, _console())


@app.command()
def check(
    baseline: Path = typer.Option(..., "--baseline", help="Baseline run (folder or record.json)."),
    run_ref: str = typer.Option(
        None, "--run", help="Run to check (default: latest run of the same benchmark)."
    ),
    tolerance: float = typer.Option(0.0, help="Allowed drop before a category counts as regressed."),
    results: Path = ResultsOpt,
    n_boot: int = typer.Option(2000, help="Bootstrap replicates."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
) -> None:
    """CI regression gate: exit 1 when the paired interval says a score fell by more than TOLERANCE."""
    from reca_eval.core.records import read_run
    from reca_eval.results.leaderboard import check_regression, load_runs, render_check

    try:
        base_record, _ = read_run(baseline)
        bench = registry.get(base_record.benchmark)
    except (KeyError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    if run_ref:
        run_path = _resolve_run(run_ref, results)
    else:
        candidates = [
            (rec, p)
            for rec, p in load_runs(results)
            if rec.benchmark == base_record.benchmark and rec.run_id != base_record.run_id
        ]
        if not candidates:
            _fail(f"no run of {base_record.benchmark} under {results} to check against the baseline")
        run_path = max(candidates, key=lambda rp: rp[0].created)[1]
    try:
        result = check_regression(
            run_path, baseline, bench.aggregate, tolerance=tolerance, n_boot=n_boot, seed=seed
        )
    except ValueError as exc:
        _fail(str(exc))
    render_check(result, _console())
    if not result.passed:
        raise typer.Exit(EXIT_REGRESSION)


@app.command("render-references")
def render_references(
    name: str = typer.Argument(..., help="A ShapeWorld benchmark (shapes-geneval, shapes-dpg, shapes-edit)."),
    out: Path = typer.Argument(..., help="Folder to write the reference renders into (official layout)."),
    items: Path = typer.Option(None, help="Item file (default: the benchmark's own)."),
) -> None:
    """Write the exact reference renders of a ShapeWorld benchmark (they score 1.0 by construction)."""
    from reca_eval.evaluation.references import write_reference_folder

    try:
        n = write_reference_folder(name, out, items_path=items)
    except (KeyError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    _console().print(f"wrote {n} reference image(s) for {name} to {out}")


def _budget(
    sft_steps: int,
    reca_steps: int,
    batch_size: int,
    lr: float,
    bottleneck_size: int = 0,
    caption_mode: str = "dense",
    instructions: int = 0,
):
    from reca_eval.experiments.arms import Budget

    try:
        return Budget(
            sft_steps=sft_steps,
            reca_steps=reca_steps,
            batch_size=batch_size,
            lr=lr,
            bottleneck_size=bottleneck_size,
            caption_mode=caption_mode,
            instructions=instructions,
        )
    except ValueError as exc:
        _fail(str(exc))


def _base_or_fail(base: Path | None) -> Path:
    from reca_eval.models.janus.shapeworld import shipped_base_path

    path = base or shipped_base_path()
    if not (path / "config.json").exists():
        _fail(
            f"no base checkpoint at {path} (config.json missing); pass --base PATH or build the shipped one "
            "with `python -m trainers.pretrain_shapeworld trainers/recipes/shapeworld_base.yaml`"
        )
    return path


def _flow_base_or_fail(base: Path | None) -> Path:
    from reca_eval.models.flow.shapeworld import shipped_flow_base_path

    path = base or shipped_flow_base_path()
    if not (path / "config.json").exists():
        _fail(
            f"no flow base checkpoint at {path} (config.json missing); pass --flow-base PATH, leave the family "
            "out (--families janus), or build the shipped one with "
            "`python -m trainers.pretrain_shapeworld_flow trainers/recipes/shapeworld_flow_base.yaml`"
        )
    return path


def _families_or_fail(families: str) -> tuple[str, ...]:
    from reca_eval.experiments.arms import FAMILIES

    names = tuple(dict.fromkeys(f.strip() for f in families.split(",") if f.strip()))
    unknown = [f for f in names if f not in FAMILIES]
    if unknown or not names:
        _fail(
            f"--families: unknown {unknown} (known: {', '.join(FAMILIES)})"
            if unknown
            else "--families: none given"
        )
    return names


FamiliesOpt = typer.Option(
    "janus,flow",
    "--families",
    help="Model families, comma-separated: janus (the Janus-architecture base), flow (VLM + queries + DiT).",
)
ProbeScenesOpt = typer.Option(
    400,
    "--probe-scenes",
    help="Held-out scenes for the alignment probe (diagnose alignment) of every Janus checkpoint; 0 = none.",
)
FlowBaseOpt = typer.Option(
    None, "--flow-base", help="Flow-family base checkpoint (default: the shipped ShapeWorld flow base)."
)


@app.command()
def demo(
    results: Path = typer.Option(Path("results/demo"), "--results", help="Where the demo's records go."),
    base: Path = typer.Option(None, "--base", help="Base checkpoint (default: the shipped ShapeWorld base)."),
    flow_base: Path = FlowBaseOpt,
    families: str = FamiliesOpt,
    sft_steps: int = typer.Option(40, help="SFT steps (S)."),
    reca_steps: int = typer.Option(20, help="RecA steps after SFT (R); SFT-matched trains S+R SFT steps."),
    batch_size: int = typer.Option(16, help="Batch size of every arm."),
    lr: float = typer.Option(2e-4, help="Learning rate of every arm (constant after a short warmup)."),
    items_per_benchmark: int = typer.Option(
        0,
        help="Score an evenly spaced subset of N items per benchmark (0 = all; records say which), "
        "e.g. 30 on a busy CPU.",
    ),
    generation_batch_size: int = typer.Option(64, help="Images sampled per forward batch."),
    seed: int = typer.Option(0, help="Training seed."),
    threads: int = typer.Option(0, help="Torch threads (0 = min(2, CPU count); 1 is faster on a busy CPU)."),
    probe_scenes: int = ProbeScenesOpt,
    references: bool = typer.Option(
        False, "--references", help="Only the cheap pipeline check: score reference renders, no model."
    ),
) -> None:
    """The main command: base -> SFT, SFT+RecA, SFT-matched, SFT-half (Janus) and flow/SFT, flow/SFT+RecA,
    flow/SFT-matched (flow, on shapes-edit); scored, leaderboard, compare, report."""
    if references:
        from reca_eval.experiments.reference_check import run_reference_demo

        run_reference_demo(results, _console())
        return
    try:
        from reca_eval.experiments.main_command import run_main_command
    except ImportError as exc:
        _fail(
            f"the main command trains models and needs the models extra ({exc.name} is missing): "
            "pip install torch==2.13.0 -e '.[models]'; `reca-eval demo --references` runs with the core install"
        )
    family_names = _families_or_fail(families)
    run_main_command(
        _console(),
        base=_base_or_fail(base) if "janus" in family_names else None,
        flow_base=_flow_base_or_fail(flow_base) if "flow" in family_names else None,
        families=family_names,
        results=results,
        budget=_budget(sft_steps, reca_steps, batch_size, lr),
        items_per_benchmark=items_per_benchmark,
        generation_batch_size=generation_batch_size,
        seed=seed,
        threads=threads,
        probe_scenes=probe_scenes,
    )


@app.command()
def experiment(
    results: Path = typer.Option(
        Path("results/experiment"), "--results", help="Records, checkpoints, report."
    ),
    base: Path = typer.Option(None, "--base", help="Base checkpoint (default: the shipped ShapeWorld base)."),
    flow_base: Path = FlowBaseOpt,
    families: str = FamiliesOpt,
    seeds: str = typer.Option("0,1,2", help="Training seeds, comma-separated (every one is reported)."),
    arms: str = typer.Option("all", help="Arms, comma-separated, or 'all' (see reca_eval/arms.py)."),
    sft_steps: int = typer.Option(40, help="SFT steps (S)."),
    reca_steps: int = typer.Option(20, help="RecA steps after SFT (R); RecA-only arms train S+R."),
    batch_size: int = typer.Option(16, help="Batch size of every arm."),
    lr: float = typer.Option(2e-4, help="Learning rate of every arm."),
    bottleneck_size: int = typer.Option(
        0,
        "--bottleneck-size",
        help="RecA's information bottleneck: the condition image is downscaled to this many pixels "
        "before the understanding encoder (0 = the model's own resolution).",
    ),
    caption_mode: str = typer.Option(
        "dense",
        "--caption-mode",
        help="Captions of every arm's text->image and image->text data: dense, sparse or verbose "
        "(the caption-sparsity ablation; see reca_eval/world/captions.py).",
    ),
    instructions: int = typer.Option(
        0,
        "--instructions",
        help="Reconstruction instructions RecA samples from: the first N of "
        "trainers/instructions.py (0 = all 108; 1 = one fixed phrase): the instruction-diversity ablation.",
    ),
    items_per_benchmark: int = typer.Option(
        0, help="Evenly spaced subset of N items per benchmark (0 = all)."
    ),
    generation_batch_size: int = typer.Option(64, help="Images sampled per forward batch."),
    threads: int = typer.Option(0, help="Torch threads (0 = min(2, CPU count); 1 is faster on a busy CPU)."),
    probe_scenes: int = ProbeScenesOpt,
) -> None:
    """Every arm over several training seeds: mean ± std per category and per atypical split, and a report.
    With both families, each trains the arms it has (RecA-VQ is Janus-only) and is labelled (flow/...)."""
    import os

    import torch

    from reca_eval.experiments.arms import ALL_ARMS, FAMILY_ARMS, FLOW, JANUS
    from reca_eval.experiments.main_command import FLOW_GUIDANCE_SCALE
    from reca_eval.experiments.report import seed_tables, write_report
    from reca_eval.experiments.runner import FamilyPlan, plan_for_families, run_experiment

    try:
        seed_list = tuple(int(s) for s in seeds.split(",") if s.strip())
    except ValueError:
        _fail(f"--seeds: expected comma-separated integers, got {seeds!r}")
    arm_list = ALL_ARMS if arms == "all" else tuple(a.strip() for a in arms.split(",") if a.strip())
    unknown = [a for a in arm_list if a not in ALL_ARMS]
    if unknown or not seed_list:
        known = ", ".join(ALL_ARMS)
        _fail(f"unknown arm(s) {unknown} (known: {known})" if unknown else "--seeds: none given")
    family_names = _families_or_fail(families)
    plans = []
    for family in family_names:
        kept = tuple(a for a in arm_list if a in FAMILY_ARMS[family])
        if not kept:
            _fail(f"no arm of {list(arm_list)} exists for family {family!r}")
        if family == JANUS:
            plans.append(FamilyPlan(_base_or_fail(base), kept, family=JANUS))
        else:
            left_out = [a for a in arm_list if a not in kept]
            if left_out:
                _console(stderr=True).print(f"{family}: no such arm(s) {left_out} for this family; left out")
            flow = FamilyPlan(
                _flow_base_or_fail(flow_base), kept, family=FLOW, guidance_scale=FLOW_GUIDANCE_SCALE
            )
            plans.append(flow)
    torch.set_num_threads(threads or min(2, os.cpu_count() or 1))
    plan = plan_for_families(
        plans,
        results=results,
        seeds=seed_list,
        budget=_budget(sft_steps, reca_steps, batch_size, lr, bottleneck_size, caption_mode, instructions),
        items_per_benchmark=items_per_benchmark,
        generation_batch_size=generation_batch_size,
        probe_scenes=probe_scenes,
    )
    console = _console()

    def progress(run) -> None:
        overall = ", ".join(f"{b} {v['overall']:.3f}" for b, v in run.scores.items())
        console.print(f"{run.label}: {overall}")

    result = run_experiment(plan, on_arm=progress)
    # The terminal gets the overall score and the splits; every category is in the report.
    for title, frame in seed_tables(result):
        if "per category" in title:
            frame = frame[["overall"]]
        table = Table(title=title, title_justify="left")
        table.add_column("arm")
        for column in frame.columns:
            table.add_column(str(column), justify="right")
        for arm, row in frame.iterrows():
            table.add_row(str(arm), *[str(v) for v in row.tolist()])
        console.print(table)
    paths = write_report(result)
    console.print(f"report: {paths.markdown} and {paths.html}")


@app.command()
def train(
    recipe: Path = typer.Argument(..., help="Recipe YAML (e.g. trainers/recipes/sft.yaml)."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. train.steps=200 train.lr=1e-4."),
    score: list[str] = typer.Option(
        None, "--score", help="Benchmark to generate and score with the trained model (repeatable)."
    ),
    label: str = typer.Option("", help="Leaderboard row name (default: the recipe's name)."),
    resume: bool = typer.Option(False, help="Continue from the newest checkpoint in the output folder."),
    results: Path = ResultsOpt,
) -> None:
    """Train a recipe, then score the exported model on the named benchmarks and show the leaderboard."""
    from reca_eval.evaluation.generate import generate_for_benchmark
    from reca_eval.results.leaderboard import load_runs, render_leaderboard, write_leaderboard
    from reca_eval.training.loop import TrainingDiverged
    from reca_eval.training.loop import train as run_training
    from reca_eval.training.recipe import RecipeError, load_recipe

    for name in score or []:
        try:
            registry.get(name)
        except KeyError:
            _fail(f"--score: unknown benchmark {name!r} (see `reca-eval list`)")
    try:
        loaded = load_recipe(recipe, list(overrides or []))
        result = run_training(loaded, resume=resume)
    except (RecipeError, TrainingDiverged, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    console = _console()
    final_loss = f"{result.losses[-1]:.4f}" if result.losses else "n/a"
    console.print(f"trained {result.steps} steps; model in {result.final_dir}; final loss {final_loss}")
    shown = []
    for name in score or []:
        outcome = evaluate.generate_and_score(
            name,
            result.final_dir,
            generate=generate_for_benchmark,
            label=label or loaded.name,
            results_dir=results,
        )
        if outcome is None:  # not the main process
            continue
        _print_record(console, outcome.record)
        shown.append(outcome.run_dir)
    if shown:
        write_leaderboard(results)
        render_leaderboard([(rec, path) for rec, path in load_runs(results) if path in shown], console)


@app.command()
def fetch(
    name: str = typer.Argument(
        ..., help="Benchmark whose official files to download (geneval, dpg, imgedit, gedit, ...)."
    ),
    data: Path = typer.Option(
        None, "--data", help="Data folder (default: $RECA_EVAL_DATA or ~/.cache/reca-eval/data)."
    ),
    base_url: str = typer.Option(
        None, "--base-url", help="Mirror serving the files at <base-url>/<relative path>."
    ),
    retries: int = typer.Option(4, help="Retries per file (with exponential backoff)."),
) -> None:
    """Download a benchmark's official files (pinned revisions, sha256-checked, resumable)."""
    from reca_eval import fetch as fetching

    console = _console()
    try:
        files = fetching.fetch_benchmark(
            name, root=data, base_url=base_url, retries=retries, log=lambda m: console.print(escape(m))
        )
    except (KeyError, fetching.FetchError) as exc:
        _fail(str(exc).strip("'\""))
    console.print(f"[green]ok[/] {name}: {len(files)} source(s) in place")


@diagnose_app.command("alignment")
def diagnose_alignment_command(
    ckpt: Path = typer.Option(
        ..., "--ckpt", help="Checkpoint folder (any adapter with condition_hidden_states)."
    ),
    scenes: int = typer.Option(
        400, "--scenes", help="Held-out ShapeWorld scenes: half fit the probes, half test."
    ),
    layer: int = typer.Option(-1, "--layer", help="Trunk layer to probe (-1 = final, 0 = input embeddings)."),
    as_json: bool = typer.Option(
        False, "--json", help="Print the report as JSON on stdout (table on stderr)."
    ),
) -> None:
    """Linear probes on the trunk under text and image prompts: within vs cross-modality accuracy."""
    from reca_eval.diagnostics.alignment import diagnose_alignment
    from reca_eval.models.loading import load_unified_model

    try:
        model = load_unified_model(ckpt)
        report = diagnose_alignment(model, scenes=scenes, layer=layer)
    except (FileNotFoundError, NotADirectoryError, ValueError, TypeError) as exc:
        _fail(str(exc))
    console = _console(stderr=as_json)
    table = Table(title=f"cross-modal alignment of {ckpt} (layer {layer}, {scenes} scenes)")
    for column in (
        "attribute",
        "classes",
        "chance",
        "within text",
        "within image",
        "text->image",
        "image->text",
    ):
        table.add_column(column, justify="left" if column == "attribute" else "right")
    for p in report.probes:
        table.add_row(
            p.attribute,
            str(p.classes),
            f"{p.chance:.2f}",
            *(f"{v:.2f}" for v in (p.within_text, p.within_image, p.text_to_image, p.image_to_text)),
        )
    means = [
        sum(getattr(p, k) for p in report.probes) / len(report.probes)
        for k in ("chance", "within_text", "within_image", "text_to_image", "image_to_text")
    ]
    table.add_row("mean", "", *(f"{v:.2f}" for v in means), style="bold")
    console.print(table)
    for note in report.notes:
        console.print(f"  {escape(note)}", style="yellow")
    console.print(("[green]" if report.ready else "[yellow]") + escape(report.verdict()))
    if as_json:
        print(json.dumps(report.to_json(), indent=1))


@diagnose_app.command("ceiling")
def diagnose_ceiling_command(
    ckpt: Path = typer.Option(..., "--ckpt", help="Checkpoint folder (any adapter)."),
    benchmarks: list[str] = typer.Option(
        ["shapes-geneval", "shapes-dpg", "shapes-edit"],
        "--benchmark",
        "-b",
        help="ShapeWorld benchmark(s) whose exact references go through the tokenizer (repeatable).",
    ),
    label: str = typer.Option("", "--label", help="Row name (default: '<folder> tokenizer ceiling')."),
    results: Path = ResultsOpt,
    as_json: bool = typer.Option(False, "--json", help="Print {benchmark: scores} as JSON on stdout."),
) -> None:
    """Score the exact references after one pass through the model's own generation tokenizer (VQ codes
    or VAE latents): the most any model built on that tokenizer can score."""
    from reca_eval.diagnostics.tokenizer_ceiling import tokenizer_ceiling
    from reca_eval.models.loading import load_unified_model
    from reca_eval.results.leaderboard import write_leaderboard

    console = _console(stderr=as_json)
    label = label or f"{ckpt.resolve().name} tokenizer ceiling"
    try:
        model = load_unified_model(ckpt)
        outcomes = {
            name: tokenizer_ceiling(
                model, name, label=label, results_dir=results, model_id=str(ckpt.resolve())
            )
            for name in benchmarks
        }
    except (FileNotFoundError, NotADirectoryError, ValueError, TypeError, KeyError) as exc:
        _fail(str(exc))
    table = Table(title=f"tokenizer ceiling of {ckpt} (exact references = 1.0 / 100 / 10)")
    table.add_column("benchmark")
    table.add_column("overall", justify="right")
    table.add_column("record")
    for name, outcome in outcomes.items():
        table.add_row(name, f"{outcome.record.scores['overall']:.3f}", str(outcome.run_dir))
    console.print(table)
    write_leaderboard(results)
    if as_json:
        print(json.dumps({name: o.record.scores for name, o in outcomes.items()}, indent=1))


def main() -> None:  # pragma: no cover - console-script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
