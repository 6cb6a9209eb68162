"""Benchmarks and scoring: `list`, `validate`, `run`, `render-references`, `fetch`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from reca_eval import registry
from reca_eval.cli.common import (
    EXIT_IO,
    EXIT_SKIPS,
    ResultsOpt,
    checked_options,
    fail,
    get_console,
    parse_options,
    print_record,
    printed_warnings,
)
from reca_eval.core.spec import declared_options
from reca_eval.evaluation import score as evaluate


def list_benchmarks(
    name: str = typer.Argument(None, help="Show one benchmark in full: its spec, tolerance and sources."),
) -> None:
    """Show the registered benchmarks: items, generation protocol, scorer and the extra it needs."""
    if name is not None:
        show_benchmark(name)
        return
    # Seven columns that fit an 80-column terminal; `reca-eval list NAME` shows the rest of a spec
    # (images per prompt, resolution, options, sources).
    table = Table(title="reca-eval benchmarks", caption="reca-eval list NAME: one benchmark in full")
    for col in ("name", "ver", "task", "items", "scorer", "tol", "needs"):
        table.add_column(col, no_wrap=col in ("name", "ver", "task", "tol", "needs"))
    not_fetched = []
    for bench in registry.all_benchmarks():
        try:
            n_items = str(len(bench.load_items(bench.default_items())))
        except FileNotFoundError:
            n_items = "[dim]fetch first[/]"
            not_fetched.append(bench.name)
        except ValueError as exc:
            n_items = f"[red]invalid[/] ({escape(str(exc)[:60])})"
        table.add_row(
            escape(bench.name),
            escape(bench.version),
            escape(bench.task),
            n_items,
            escape(bench.scorer_name),
            "—"
            if bench.spec is None or bench.spec.check_tolerance is None
            else f"{bench.spec.check_tolerance:g}",
            escape(bench.extra) if bench.extra else "core",
        )
    if not_fetched:
        table.caption += escape(f"; items not here yet: reca-eval fetch NAME ({', '.join(not_fetched)})")
    get_console().print(table)
    from reca_eval.fetch import describe_source, pinning

    unpinned = [
        f"{bench.name}: {describe_source(source)[0]} ({why})"
        for bench in registry.all_benchmarks()
        if bench.spec is not None
        for source in bench.spec.sources
        if (why := pinning(source))
    ]
    if unpinned:
        get_console().print(
            escape("Sources not pinned yet (fetched files are checked only where a sha256 is known):\n- ")
            + escape("\n- ".join(unpinned))
        )


def show_benchmark(name: str) -> None:
    """One benchmark's declared facts, as its benchmark.yaml says, and where its files come from."""
    try:
        bench = registry.get(name)
    except KeyError as exc:
        fail(str(exc).strip("'\""))
    spec = bench.spec
    table = Table(title=escape(f"{bench.name} v{bench.version}"), show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    tolerance = None if spec is None else spec.check_tolerance
    rows = [
        ("description", bench.description),
        ("task / layout", f"{bench.task} / {bench.layout}"),
        ("images per prompt", str(bench.images_per_prompt)),
        ("resolution", str(bench.resolution)),
        ("categories", ", ".join(bench.categories)),
        ("scorer", bench.scorer_name),
        ("needs", f"reca-eval[{bench.extra}]" if bench.extra else "core"),
        ("check tolerance", "none declared (any drop fails)" if tolerance is None else f"{tolerance:g}"),
    ]
    if spec is not None:
        rows.append(("spec", str(spec.folder / "benchmark.yaml")))
        for key, value in spec.settings.items():
            rows.append((f"setting {key}", str(value)))
        for option in declared_options(spec).values():
            rows.append((f"-o {option.name}", f"{option.describe()}. {option.help}"))
        from reca_eval.fetch import describe_source

        for source in spec.sources:
            where, what = describe_source(source)
            rows.append((f"source {where}", what))
    for key, value in rows:
        table.add_row(escape(key), escape(value))
    get_console().print(table)


def validate(
    name: str = typer.Argument(..., help="Benchmark name (see `reca-eval list`)."),
    items: Path = typer.Option(None, help="Item file to validate (default: the benchmark's own)."),
    option: list[str] = typer.Option(
        [], "--option", "-o", help="Scorer option KEY=VALUE to check too, repeatable (as `run` takes them)."
    ),
) -> None:
    """Check a benchmark's item file against its schema (errors name the file and line), and any
    `-o` options against the ones it declares."""
    try:
        bench = registry.get(name)
    except KeyError as exc:
        fail(str(exc).strip("'\""))
    checked_options(bench, parse_options(option))
    try:
        path = items or bench.default_items()
        loaded = bench.load_items(path)
    except (KeyError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    get_console().print(
        f"[green]ok[/] {escape(f'{path}: {len(loaded)} items valid for {name} v{bench.version}')}"
    )


def run(
    name: str = typer.Argument(..., help="Benchmark name (see `reca-eval list`)."),
    images: Path = typer.Option(
        None, "--images", help="Score images produced by any tool (official layout)."
    ),
    ckpt: str = typer.Option(
        None,
        "--ckpt",
        help="Generate with this checkpoint, then score: a local folder or a Hugging Face model id "
        "(ORG/NAME, read from the Hugging Face cache).",
    ),
    revision: str = typer.Option(None, "--revision", help="With a Hub id: the branch, tag or commit."),
    items: Path = typer.Option(
        None, "--items", help="Item file (default: the benchmark's own / fetched copy)."
    ),
    limit: int = typer.Option(
        None, "--limit", min=1, help="Score an evenly spaced subset of N items (recorded)."
    ),
    label: str = typer.Option("", help="Row name in the leaderboard (default: the folder name)."),
    mode: str = typer.Option(None, help="Protocol mode where one exists (dpg: official | fixed)."),
    results: Path = ResultsOpt,
    as_json: bool = typer.Option(
        False, "--json", help="Print the record as JSON on stdout (tables on stderr)."
    ),
    allow_skips: bool = typer.Option(False, help="Exit 0 even when images were skipped."),
    run_dir: Path = typer.Option(
        None,
        "--run-dir",
        help="With --ckpt: generate into this run folder, keeping the images already there.",
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="With --ckpt: continue the newest unfinished run (no record yet) of this benchmark and label.",
    ),
    seed: int = typer.Option(
        None, "--seed", help="With --ckpt: base generation seed (default: the benchmark's)."
    ),
    images_per_prompt: int = typer.Option(
        None,
        "--images-per-prompt",
        min=1,
        max=64,
        help="With --ckpt: samples per item (default: the benchmark's; GenEval's is 4, the RecA paper used 12).",
    ),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="With --ckpt: images per forward pass."),
    dtype: str = typer.Option(
        None,
        "--dtype",
        help="With --ckpt: bfloat16 | float16 | float32 (default: bfloat16 on CUDA, float32 on CPU).",
    ),
    device: str = typer.Option(
        None, "--device", help="With --ckpt: where to generate (default: CUDA when available, else the CPU)."
    ),
    cfg: float = typer.Option(
        None,
        "--cfg",
        help="With --ckpt: classifier-free guidance scale (default: the family's published one).",
    ),
    temperature: float = typer.Option(
        None, "--temperature", help="With --ckpt: sampling temperature, where the family samples tokens."
    ),
    sampling: list[str] = typer.Option(
        [],
        "--sampling",
        "-s",
        help="With --ckpt: a sampling setting KEY=VALUE, repeatable (guidance_scale, temperature, top_k, top_p).",
    ),
    option: list[str] = typer.Option(
        [],
        "--option",
        "-o",
        help="Scorer option KEY=VALUE, repeatable; `reca-eval list NAME` shows a benchmark's "
        "(e.g. -o device=cuda, -o judge=openai -o judge_model=gpt-4.1-2025-04-14).",
    ),
) -> None:
    """Score a benchmark: one result record, per-image results beside it, one leaderboard row."""
    from reca_eval.results.leaderboard import render_leaderboard, write_leaderboard

    if (images is None) == (ckpt is None):
        fail("give exactly one of --images DIR or --ckpt PATH")
    generation_flags = {
        "--run-dir": run_dir is not None,
        "--resume": resume,
        "--revision": revision is not None,
        "--seed": seed is not None,
        "--images-per-prompt": images_per_prompt is not None,
        "--dtype": dtype is not None,
        "--device": device is not None,
        "--cfg": cfg is not None,
        "--temperature": temperature is not None,
        "--sampling": bool(sampling),
    }
    if ckpt is None and any(generation_flags.values()):
        given = ", ".join(flag for flag, on in generation_flags.items() if on)
        fail(f"{given} set(s) how a checkpoint generates: give it with --ckpt")
    if run_dir is not None and resume:
        fail("give one of --run-dir PATH or --resume")
    try:
        bench = registry.get(name)
    except KeyError as exc:
        fail(str(exc).strip("'\""))
    options: dict[str, object] = parse_options(option)
    if mode:
        options["mode"] = mode
    if images_per_prompt is not None:
        # One number: the samples generated are the samples scored, within the benchmark's declared range.
        given = options.get("images_per_prompt")
        if given is not None and str(given) != str(images_per_prompt):
            fail(
                f"--images-per-prompt {images_per_prompt} and -o images_per_prompt={given} disagree: give one"
            )
        options["images_per_prompt"] = images_per_prompt
    options = checked_options(bench, options)  # before anything is generated or written
    if ckpt is not None and images_per_prompt is None and "images_per_prompt" in options:
        images_per_prompt = int(options["images_per_prompt"])  # -o alone sets what is generated too
    with printed_warnings():  # the CPU-time warning of a neural scorer, among others
        try:
            if images is not None:
                outcome = evaluate.score_images(
                    name,
                    images,
                    items_path=items,
                    label=label,
                    options=options,
                    results_dir=results,
                    limit=limit,
                )
            else:
                outcome = _generate_and_score(
                    bench.name,
                    ckpt,
                    revision=revision,
                    overrides={
                        **parse_options(sampling, flag="--sampling"),
                        **({"guidance_scale": cfg} if cfg is not None else {}),
                        **({"temperature": temperature} if temperature is not None else {}),
                    },
                    device=device,
                    dtype=dtype,
                    batch_size=batch_size,
                    items=items,
                    label=label,
                    options=options,
                    results=results,
                    run_dir=run_dir,
                    resume=resume,
                    seed=seed,
                    images_per_prompt=images_per_prompt,
                    limit=limit,
                )
        except (KeyError, FileNotFoundError, ValueError) as exc:
            fail(str(exc).strip("'\""))
    if outcome is None:  # a non-main process under `accelerate launch`: its shard is written
        return
    try:
        with printed_warnings():  # a corrupt record beside this run is skipped, named
            write_leaderboard(results)
    except OSError as exc:
        fail(
            f"the run is recorded in {outcome.run_dir}, but the leaderboard files could not be rebuilt "
            f"({exc.filename}: {exc.strerror}); `reca-eval leaderboard` rebuilds them",
            EXIT_IO,
        )
    console = get_console(stderr=as_json)
    record = outcome.record
    print_record(console, record)
    if as_json:
        sys.stdout.write(json.dumps(record.to_json(), indent=2) + "\n")
    render_leaderboard([(record, outcome.run_dir)], console)
    if record.images_skipped and not allow_skips:
        console.print(
            f"[yellow]{record.images_skipped} image(s) skipped[/]: see skips in {escape(str(outcome.run_dir))}/record.json"
        )
        raise typer.Exit(EXIT_SKIPS)


def _generate_and_score(
    name: str,
    ckpt: str,
    *,
    revision: str | None,
    overrides: dict[str, object],
    device: str | None,
    dtype: str | None,
    batch_size: int,
    items: Path | None,
    label: str,
    options: dict[str, object],
    results: Path,
    run_dir: Path | None,
    resume: bool,
    seed: int | None,
    images_per_prompt: int | None,
    limit: int | None,
):
    """`run --ckpt`: resolve the checkpoint (folder or Hub id) and its generation settings (the
    family's defaults, then the overrides), all before generating; then generate and score."""
    import functools

    from reca_eval.evaluation.generate import generate_for_benchmark, resolve_generation
    from reca_eval.models.loading import resolve_checkpoint

    ref = resolve_checkpoint(ckpt, revision)
    settings = resolve_generation(ref.path, device=device, dtype=dtype, sampling=overrides)
    label = label or Path(ref.id).name
    if resume:
        run_dir = evaluate.unfinished_run_dir(results, name, label)
        message = (
            f"resuming {run_dir}"
            if run_dir
            else f"--resume: no unfinished run of {name} labelled {label!r}; starting one"
        )
        get_console(stderr=True).print(escape(message))
    generate = functools.partial(
        generate_for_benchmark,
        sampling=settings["sampling"],
        device=settings["device"],
        dtype=settings["dtype"],
        batch_size=batch_size,
    )
    return evaluate.generate_and_score(
        name,
        ref.path,
        generate=generate,
        items_path=items,
        label=label,
        options=options,
        results_dir=results,
        run_dir=run_dir,
        model_id=ref.id,
        seed=seed,
        images_per_prompt=images_per_prompt,
        limit=limit,
        generation={"checkpoint": ref.id, "revision": ref.revision, **settings, "batch_size": batch_size},
    )


def render_references(
    name: str = typer.Argument(..., help="A ShapeWorld benchmark (shapes-geneval, shapes-dpg, shapes-edit)."),
    out: Path = typer.Argument(..., help="Folder to write the reference renders into (official layout)."),
    items: Path = typer.Option(None, help="Item file (default: the benchmark's own)."),
) -> None:
    """Write the exact reference renders of a ShapeWorld benchmark (they score 1.0 by construction)."""
    from reca_eval.evaluation.references import write_reference_folder

    if out.exists() and not out.is_dir():
        fail(f"{out} is a file: give a folder to write the reference renders into")
    try:
        n = write_reference_folder(name, out, items_path=items)
    except (KeyError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    get_console().print(escape(f"wrote {n} reference image(s) for {name} to {out}"))


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

    console = get_console()
    try:
        files = fetching.fetch_benchmark(
            name, root=data, base_url=base_url, retries=retries, log=lambda m: console.print(escape(m))
        )
    except (KeyError, fetching.FetchError) as exc:
        fail(str(exc).strip("'\""))
    console.print(f"[green]ok[/] {escape(name)}: {len(files)} source(s) in place")
