"""Every command shown in README.md and docs/*.md runs, so that a documented example cannot crash.

The shell blocks (```bash / ```sh, and the `run:` steps of ```yaml blocks) are read from the files
themselves. Each command is then, in this order of preference:

- run as written, in a scratch working directory prepared by the ``workspace`` fixture, with the
  placeholders (DIR, PATH, CKPT, RUN, OUT_DIR) replaced by paths prepared there;
- run with the small substitute that ``SUBSTITUTES`` names (fewer steps, seeds, items or scenes)
  when as written it would take minutes;
- for a command whose doc line ends in ``# needs: ...`` (network, weights, a GPU), or that
  ``FLAGS_ONLY`` lists: parsed, not run (the `reca-eval` command line through the CLI's own parser,
  a script's flags against its argparse, a shell script with ``bash -n``).

A `reca-eval demo / experiment / train / run --ckpt / diagnose` command, or any other program, that is
in none of these tables fails the test: add it to a table. Entries a doc no longer shows fail too.
`reca-eval` and `python -m` commands run in this process (imports are paid once); scripts under
tests/perf run in a subprocess, as a user runs them.
"""

from __future__ import annotations

import ast
import csv
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest brings tomli
    import tomli as tomllib

torch = pytest.importorskip("torch")  # the documented commands train and generate: the models extra

import typer  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from reca_eval import registry  # noqa: E402
from reca_eval.cli import app  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent

# Small substitutes of the expensive defaults: one step per stage, one seed, one item per benchmark.
TINY = "--sft-steps 1 --reca-steps 1 --items-per-benchmark 1 --probe-scenes 0 --threads 1"
TINY_EXPERIMENT = f"--seeds 0 {TINY} --workers 1"  # the worker pool: tests/test_workers.py
# Runs on a two-item subset write to their own results folder, so that the leaderboard, `compare` and
# `check` commands shown as written keep comparing runs over the full item files.
SUBSET = "--results results/substituted --items subsets/{bench}"
GENEVAL_SUBSET = SUBSET.format(bench="shapes-geneval.jsonl")
PRETRAIN_TINY = (
    "device=cpu threads=1 vq.steps=2 vq.pool=64 'vq.codebook_sizes=[64]' vq.batch_size=4 vq.eval_scenes=8 "
    "joint.steps=2 joint.batch_size=4 joint.eval_scenes=24 joint.data_workers=0 "
    "output_dir=OUT_DIR/janus export_dir=OUT_DIR/janus/base"
)
PRETRAIN_FLOW_TINY = (
    "autoencoder.steps=2 autoencoder.pool=32 autoencoder.eval_every=1 autoencoder.eval_scenes=4 "
    "dit.steps=2 dit.eval_every=1 dit.eval_scenes=4 dit.generate_scenes=4 "
    "output_dir=OUT_DIR/flow export_dir=OUT_DIR/flow/base"
)

# The command as a doc shows it -> what this test runs instead.
SUBSTITUTES: dict[str, str] = {
    # README.md: the quickstart on the shipped base (both checkpoints), a two-item subset in results/
    "reca-eval run shapes-geneval --ckpt SFT_CKPT --label SFT": (
        "reca-eval run shapes-geneval --ckpt SFT_CKPT --label SFT --limit 2"
    ),
    "reca-eval run shapes-geneval --ckpt RECA_CKPT --label SFT+RecA": (
        "reca-eval run shapes-geneval --ckpt RECA_CKPT --label SFT+RecA --limit 2"
    ),
    "reca-eval run shapes-geneval --ckpt reca_eval/assets/shapeworld-base --limit 30 --seed 1 --cfg 3": (
        "reca-eval run shapes-geneval --ckpt reca_eval/assets/shapeworld-base --limit 2 --seed 1 --cfg 3 "
        "--results results/substituted"
    ),
    "reca-eval demo": f"reca-eval demo {TINY}",
    "reca-eval run shapes-geneval --ckpt reca_eval/assets/shapeworld-base --label base": (
        f"reca-eval run shapes-geneval --ckpt reca_eval/assets/shapeworld-base --label base {GENEVAL_SUBSET}"
    ),
    "reca-eval demo --base janus=PATH --families janus --items-per-benchmark 30": (
        f"reca-eval demo --base janus=PATH --families janus {TINY} --results results/demo-janus"
    ),
    "reca-eval experiment --families janus --seeds 0,1,2 --arms all": (
        f"reca-eval experiment --families janus --arms RecA {TINY_EXPERIMENT} --results results/x-readme"
    ),
    "reca-eval train reca model.builder=reca_eval.training.builders:from_checkpoint model.kwargs.path=PATH "
    "train.steps=500 --score shapes-geneval --label RecA": (
        # --score on a two-item benchmark of the same kind (`train` has no --items).
        "RECA_EVAL_BENCHMARKS=my-benchmarks reca-eval train reca "
        "model.builder=reca_eval.training.builders:from_checkpoint model.kwargs.path=PATH train.steps=2 "
        "--score my-shapes --label RecA --results results/substituted"
    ),
    "reca-eval train sft train.steps=200": "reca-eval train sft train.steps=2",
    # docs/reliability.md: the whole bad-input corpus takes a minute; its ten bad-name cases stand in.
    "python -m tests.reliability.report": "python -m tests.reliability.report names/",
    "python -m trainers.train trainers/recipes/sft_reca.yaml train.steps=200 train.lr=1e-4": (
        "python -m trainers.train trainers/recipes/sft_reca.yaml train.steps=2 train.lr=1e-4"
    ),
    # Two items: cheap as written.
    "RECA_EVAL_BENCHMARKS=my-benchmarks reca-eval run my-shapes --ckpt reca_eval/assets/shapeworld-base": (
        "RECA_EVAL_BENCHMARKS=my-benchmarks reca-eval run my-shapes --ckpt reca_eval/assets/shapeworld-base"
    ),
    # docs/ci.md
    "reca-eval run shapes-geneval --ckpt CKPT --label baseline --results baseline-results": (
        "reca-eval run shapes-geneval --ckpt CKPT --label baseline --results baseline-results "
        "--items subsets/shapes-geneval.jsonl"
    ),
    "reca-eval run shapes-geneval --ckpt CKPT --label candidate": (
        "reca-eval run shapes-geneval --ckpt CKPT --label candidate --items subsets/shapes-geneval.jsonl"
    ),
    "reca-eval run shapes-geneval --ckpt checkpoints/candidate --label candidate": (
        "reca-eval run shapes-geneval --ckpt checkpoints/candidate --label candidate "
        "--items subsets/shapes-geneval.jsonl"
    ),
    # docs/performance.md
    "python tests/perf/bench_scoring.py": "python tests/perf/bench_scoring.py --images 40 --repeats 1",
    "python tests/perf/bench_shapes_scorer.py": "python tests/perf/bench_shapes_scorer.py --images 40",
    "python tests/perf/bench_trainer.py": "python tests/perf/bench_trainer.py --images 8 --batch 4 --epochs 1",
    "python tests/perf/bench_generation.py": (
        "python tests/perf/bench_generation.py --threads 1 --images 8 --batches 8 --repeats 1"
    ),
    "python tests/perf/bench_generation.py --threads 1 --batches 256 --families harmon --images 1024": (
        "python tests/perf/bench_generation.py --threads 1 --batches 4 --families harmon --images 4 --repeats 1"
    ),
    "python tests/perf/bench_generation.py --split-threads 1,2 --images 512": (
        "python tests/perf/bench_generation.py --split-threads 1 --images 8 --repeats 1"
    ),
    "python tests/perf/bench_generation_gpu.py --shape small --device cpu --dtype float32 --prompts 8 --batch 4": (
        "python tests/perf/bench_generation_gpu.py --shape small --device cpu --dtype float32 --prompts 2 --batch 2"
    ),
    "python tests/perf/bench_geneval_gpu.py --device cpu --arch tiny --images 6 --batch 4 --size 96": (
        "python tests/perf/bench_geneval_gpu.py --device cpu --arch tiny --images 3 --batch 2 --size 64"
    ),
    "python tests/perf/bench_harmon.py --shape tiny --threads 1": (
        "python tests/perf/bench_harmon.py --shape tiny --threads 1 --batch 2 --steps 1 --sample-batch 2"
    ),
    # docs/shapeworld-results.md
    "python -m trainers.pretrain_shapeworld trainers/recipes/shapeworld_base.yaml device=cpu threads=2 "
    "vq.steps=50 vq.pool=1000 'vq.codebook_sizes=[256]' joint.steps=20 joint.batch_size=4 "
    "output_dir=OUT_DIR export_dir=OUT_DIR/base": (
        f"python -m trainers.pretrain_shapeworld trainers/recipes/shapeworld_base.yaml {PRETRAIN_TINY}"
    ),
    "python -m trainers.pretrain_shapeworld_flow trainers/recipes/shapeworld_flow_base.yaml "
    "output_dir=OUT_DIR export_dir=OUT_DIR/base": (
        f"python -m trainers.pretrain_shapeworld_flow trainers/recipes/shapeworld_flow_base.yaml {PRETRAIN_FLOW_TINY}"
    ),
    # docs/harmon.md
    "python -m trainers.pretrain_shapeworld_harmon trainers/recipes/shapeworld_harmon_base.yaml "
    "output_dir=OUT_DIR export_dir=OUT_DIR/base": (
        "python -m trainers.pretrain_shapeworld_harmon trainers/recipes/shapeworld_harmon_base.yaml "
        "round_trip_scenes=4 mar.steps=2 mar.batch_size=4 mar.eval_every=1 mar.eval_scenes=4 "
        "mar.generate_scenes=2 output_dir=OUT_DIR/harmon export_dir=OUT_DIR/harmon/base"
    ),
    "reca-eval diagnose ceiling --ckpt reca_eval/assets/shapeworld-base": (
        "reca-eval diagnose ceiling --ckpt reca_eval/assets/shapeworld-base -b shapes-edit --results results/substituted"
    ),
    "reca-eval run shapes-dpg --ckpt reca_eval/assets/shapeworld-base --label base": (
        "reca-eval run shapes-dpg --ckpt reca_eval/assets/shapeworld-base --label base "
        + SUBSET.format(bench="shapes-dpg.csv")
    ),
    "reca-eval run shapes-edit --ckpt reca_eval/assets/shapeworld-base --label base": (
        "reca-eval run shapes-edit --ckpt reca_eval/assets/shapeworld-base --label base "
        + SUBSET.format(bench="shapes-edit.jsonl")
    ),
    "reca-eval diagnose floor --ckpt reca_eval/assets/shapeworld-base --seeds 0,1,2": (
        "reca-eval diagnose floor --ckpt reca_eval/assets/shapeworld-base -b shapes-dpg "
        "--items subsets/shapes-dpg.csv --seeds 0,1 --results results/substituted"
    ),
    "reca-eval diagnose floor -b shapes-dpg --seeds 0,1,2 --questions": (
        "reca-eval diagnose floor -b shapes-dpg --items subsets/shapes-dpg.csv --seeds 0,1 --questions "
        "--results results/substituted"
    ),
    "reca-eval diagnose alignment --ckpt reca_eval/assets/shapeworld-base": (
        "reca-eval diagnose alignment --ckpt reca_eval/assets/shapeworld-base --scenes 40"
    ),
    "reca-eval diagnose alignment --ckpt reca_eval/assets/shapeworld-base --layer 2": (
        "reca-eval diagnose alignment --ckpt reca_eval/assets/shapeworld-base --layer 2 --scenes 40"
    ),
    "reca-eval experiment --families janus --seeds 0,1,2 --arms all --items-per-benchmark 60 --threads 2 --workers 1": (
        f"reca-eval experiment --families janus --arms 'RecA-VQ (ablation)' {TINY_EXPERIMENT} --results results/x-all"
    ),
    "reca-eval experiment --families janus --seeds 0,1,2 --arms SFT-matched,RecA --threads 2 --workers 1": (
        f"reca-eval experiment --families janus --arms SFT-matched {TINY_EXPERIMENT} --results results/x-full"
    ),
    "reca-eval experiment --families janus --seeds 0,1,2 --arms SFT+RecA,RecA --bottleneck-size 16 "
    "--items-per-benchmark 60 --threads 2 --workers 1": (
        f"reca-eval experiment --families janus --arms RecA --bottleneck-size 16 {TINY_EXPERIMENT} "
        "--results results/x-bottleneck"
    ),
    "reca-eval experiment --families janus --seeds 0,1,2 --arms SFT,SFT+RecA,SFT-matched,RecA "
    "--caption-mode sparse --items-per-benchmark 60 --threads 2 --workers 1": (
        f"reca-eval experiment --families janus --arms SFT+RecA --caption-mode sparse {TINY_EXPERIMENT} "
        "--results results/x-sparse"
    ),
    "reca-eval experiment --families janus --seeds 0,1,2 --arms SFT+RecA,RecA --instructions 1 "
    "--items-per-benchmark 60 --threads 2 --workers 1": (
        f"reca-eval experiment --families janus --arms RecA --instructions 1 {TINY_EXPERIMENT} "
        "--results results/x-instructions-1"
    ),
    "reca-eval experiment --families janus --seeds 0,1,2 --arms SFT+RecA,RecA --instructions 8 "
    "--items-per-benchmark 60 --threads 2 --workers 1": (
        f"reca-eval experiment --families janus --arms RecA --instructions 8 {TINY_EXPERIMENT} "
        "--results results/x-instructions-8"
    ),
    "reca-eval experiment --families janus,flow --seeds 0,1,2 --arms SFT,SFT+RecA,SFT-matched,RecA "
    "--items-per-benchmark 60 --benchmarks shapes-geneval,shapes-dpg --probe-scenes 0": (
        f"reca-eval experiment --families janus,flow --arms SFT --benchmarks shapes-dpg {TINY_EXPERIMENT} "
        "--results results/x-side"
    ),
    "reca-eval experiment --families harmon --seeds 0,1,2 --arms all --items-per-benchmark 60 "
    "--benchmarks shapes-geneval,shapes-dpg": (
        f"reca-eval experiment --families harmon --arms SFT+RecA --benchmarks shapes-geneval {TINY_EXPERIMENT} "
        "--results results/x-harmon"
    ),
    "reca-eval experiment --families flow --seeds 0,1,2 --arms all --items-per-benchmark 60 --threads 1": (
        f"reca-eval experiment --families flow --arms SFT+RecA {TINY_EXPERIMENT} --results results/x-flow"
    ),
    "reca-eval experiment --families janus,flow --seeds 0,1,2 "
    '--arms "base,SFT,SFT-matched,SFT-half,RecA,SFT+RecA,RecA+T2I,RecA-VQ (ablation)" '
    "--benchmarks shapes-edit --probe-scenes 0 --threads 1": (
        f"reca-eval experiment --families janus,flow --arms SFT+RecA --benchmarks shapes-edit {TINY_EXPERIMENT} "
        "--results results/x-edit"
    ),
    "reca-eval diagnose copier --ckpt reca_eval/assets/shapeworld-base": (
        "reca-eval diagnose copier --ckpt reca_eval/assets/shapeworld-base --items subsets/shapes-edit.jsonl "
        "--results results/substituted"
    ),
}

# Runnable offline but minutes long even when shrunk (they build and time real-size models, or start
# the whole main command): their flags are checked against the script's argparse. What they time is
# exercised by the unit tests and by the commands above.
FLAGS_ONLY: dict[str, str] = {
    "python tests/perf/bench_detector.py --images 2 --size 512": "Mask2Former Swin-S: ~13 s per image on a CPU",
    "python tests/perf/bench_flow.py": "builds and times four flow models",
    "python tests/perf/bench_flow.py --only shapeworld --threads 1 --steps 5": "times the ShapeWorld flow model",
    "python tests/perf/bench_main_command.py": "the whole main command in a fresh process",
    "python tests/perf/bench_main_command.py --workers 0,1": "the whole main command twice, in fresh processes",
}

# Documented commands that fail today; the test expects the failure, so it reports when it is fixed.
KNOWN_BROKEN: dict[str, str] = {}

PLACEHOLDERS = ("OUT_DIR", "DIR", "PATH", "CKPT", "SFT_CKPT", "RECA_CKPT", "RUN")
EXPENSIVE_SUBCOMMANDS = ("demo", "experiment", "train", "diagnose")
LAUNCHERS = {"torchrun": 1, "accelerate": 2}  # program -> words before its options ("accelerate launch")


# ----------------------------------------------------------------------------------------- the docs


@dataclass(frozen=True)
class DocCommand:
    where: str  # "README.md:12"
    text: str  # one command: continuation lines joined, `&&` chains split, the comment removed
    needs: str | None  # what a `# needs: ...` comment says it needs to run


_FENCE = re.compile(r"^```(\w*)\s*$")
_COMMENT = re.compile(r"\s+#\s?(.*)$")


def _commands_of_line(where: str, line: str) -> list[DocCommand]:
    needs = None
    comment = _COMMENT.search(line)
    if comment:
        line = line[: comment.start()]
        if comment.group(1).strip().startswith("needs:"):
            needs = comment.group(1).strip()[len("needs:") :].strip()
    parts = [p.strip() for p in line.split("&&")]
    return [DocCommand(where, " ".join(p.split()), needs) for p in parts if p]


def doc_commands() -> list[DocCommand]:
    """Every command of every shell block (and yaml `run:` step), in file order, first occurrence only."""
    found: dict[str, DocCommand] = {}
    for path in DOC_FILES:
        lines = path.read_text(encoding="utf-8").splitlines()
        language, pending, start = None, "", 0
        for number, raw in enumerate(lines, start=1):
            fence = _FENCE.match(raw.strip())
            if fence:
                language = None if language is not None else fence.group(1)
                continue
            if language in ("bash", "sh"):
                text = raw.strip()
                if not pending:
                    start = number
                if text.endswith("\\"):
                    pending += text[:-1] + " "
                    continue
                text, pending = pending + text, ""
                if not text or text.startswith("#"):
                    continue
                commands = _commands_of_line(f"{path.name}:{start}", text)
            elif language == "yaml" and re.match(r"^\s*-?\s*run:\s", raw):
                commands = _commands_of_line(f"{path.name}:{number}", raw.split("run:", 1)[1].strip())
            else:
                continue
            for command in commands:
                found.setdefault(command.text, command)
    return list(found.values())


COMMANDS = doc_commands()


def _yaml_block(path: Path, first_key: str) -> str:
    """The first ```yaml block of ``path`` that starts with ``first_key``."""
    blocks = re.findall(r"```yaml\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)
    matching = [b for b in blocks if b.startswith(first_key)]
    assert matching, f"{path.name}: no yaml block starting with {first_key!r}"
    return matching[0]


# ------------------------------------------------------------------------------------ the workspace


def _subset_items(out: Path) -> None:
    """Two items of each ShapeWorld benchmark: subsets/shapes-geneval.jsonl, -edit.jsonl, -dpg.csv."""
    out.mkdir(parents=True)
    for name in ("shapes-geneval", "shapes-edit"):
        lines = (registry.spec(name).folder / "items.jsonl").read_text().splitlines()
        (out / f"{name}.jsonl").write_text("\n".join(lines[:2]) + "\n")
    with (registry.spec("shapes-dpg").folder / "questions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    keep = list(dict.fromkeys(r["item_id"] for r in rows))[:2]
    with (out / "shapes-dpg.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if r["item_id"] in keep)


def _invoke(args: list[str], env: dict[str, str] | None = None, expect: int = 0) -> str:
    threads = torch.get_num_threads()
    try:
        result = CliRunner().invoke(app, args, env=env)
    finally:
        torch.set_num_threads(threads)
    if result.exit_code != expect:
        detail = "".join(traceback.format_exception(result.exception)) if result.exception else ""
        raise AssertionError(
            f"reca-eval {shlex.join(args)} exited {result.exit_code}, expected {expect}:\n"
            f"{result.output[-3000:]}\n{detail[-3000:]}"
        )
    return result.output


def _invoke_new_run(args: list[str], results: Path) -> Path:
    """Run `reca-eval ARGS` and return the one run folder it added under ``results``/runs."""
    before = set((results / "runs").glob("*")) if (results / "runs").is_dir() else set()
    _invoke(args)
    added = set((results / "runs").glob("*")) - before
    assert len(added) == 1, f"reca-eval {shlex.join(args)} added {sorted(added)}"
    return added.pop()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A scratch working directory in the state the docs assume.

    reca_eval/assets (a copy: commands that write an export_dir cannot touch the package), trainers/
    and tests/ (links), training folders data/captioned and data/unlabelled, reference renders under
    images/<benchmark>, runs labelled `base` (half the references blanked) and `RecA` (the references)
    in results/, two-item subsets, the README's own benchmark under my-benchmarks/, and a baseline run
    with a `candidate` run of the same images (docs/ci.md).
    """
    from PIL import Image

    from reca_eval.evaluation.references import write_reference_folder
    from reca_eval.shapeworld.captions import caption
    from reca_eval.shapeworld.render import render_scene
    from reca_eval.shapeworld.scene import random_scene

    root = tmp_path_factory.mktemp("docs-commands")
    shutil.copytree(REPO / "reca_eval" / "assets", root / "reca_eval" / "assets")
    for name in ("trainers", "tests"):
        (root / name).symlink_to(REPO / name)
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "candidate").symlink_to(root / "reca_eval" / "assets" / "shapeworld-base")
    for folder, offset in (("captioned", 0), ("unlabelled", 100)):
        (root / "data" / folder).mkdir(parents=True)
        for i in range(8):
            scene = random_scene(offset + i)
            render_scene(scene, 32).save(root / "data" / folder / f"{i:03d}.png")
            if folder == "captioned":
                (root / "data" / folder / f"{i:03d}.txt").write_text(caption(scene))
    for name in ("shapes-geneval", "shapes-dpg"):
        write_reference_folder(name, root / "images" / name)
    _subset_items(root / "subsets")

    own = root / "my-benchmarks" / "my-shapes"
    own.mkdir(parents=True)
    (own / "benchmark.yaml").write_text(_yaml_block(REPO / "README.md", "name: my-shapes"))
    shutil.copy(root / "subsets" / "shapes-geneval.jsonl", own / "items.jsonl")

    old = Path.cwd()
    os.chdir(root)
    try:
        blanked = root / "images" / "blanked"
        shutil.copytree(root / "images" / "shapes-geneval", blanked)
        for i, png in enumerate(sorted(blanked.rglob("*.png"))):
            if i % 2 == 0:
                Image.new("RGB", Image.open(png).size, "white").save(png)
        base_run = _invoke_new_run(
            ["run", "shapes-geneval", "--images", str(blanked), "--label", "base"], root / "results"
        )
        _invoke(["run", "shapes-geneval", "--images", "images/shapes-geneval", "--label", "RecA"])
        baseline_dir = _invoke_new_run(
            "run shapes-geneval --ckpt reca_eval/assets/shapeworld-base --label baseline "
            "--items subsets/shapes-geneval.jsonl --results baseline-fixture".split(),
            root / "baseline-fixture",
        )
        (root / "baselines").mkdir()
        shutil.copytree(
            baseline_dir, root / "baselines" / "shapes-geneval", ignore=shutil.ignore_patterns("images")
        )
        generated = next(p for p in baseline_dir.rglob("metadata.jsonl")).parents[1]
        _invoke(
            ["run", "shapes-geneval", "--images", str(generated), "--items", "subsets/shapes-geneval.jsonl"]
            + ["--label", "candidate", "-o", "resolution=32"]  # the shipped base draws 32 px
        )
    finally:
        os.chdir(old)
    return {"root": root, "RUN": str(base_run.relative_to(root))}


# ---------------------------------------------------------------------------------- running commands


def _fill(text: str, bench: str | None, workspace: dict) -> str:
    values = {
        "OUT_DIR": "out",
        "DIR": f"images/{bench}" if bench else "images/any",
        "PATH": "reca_eval/assets/shapeworld-base",
        "CKPT": "reca_eval/assets/shapeworld-base",
        "SFT_CKPT": "reca_eval/assets/shapeworld-base",
        "RECA_CKPT": "reca_eval/assets/shapeworld-base",
        "RUN": workspace["RUN"],
    }
    pattern = r"(?<![A-Za-z0-9_])(" + "|".join(PLACEHOLDERS) + r")(?![A-Za-z0-9_])"
    return re.sub(pattern, lambda m: values[m.group(1)], text)


def _split_env(words: list[str]) -> tuple[dict[str, str], list[str]]:
    env = {}
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    return env, words


def _benchmark_named(args: list[str]) -> str | None:
    """The benchmark a `reca-eval run | fetch | validate | render-references NAME` command names."""
    if len(args) > 1 and args[0] in ("run", "fetch", "validate", "render-references"):
        return args[1]
    return None


def _parse_cli(args: list[str]) -> None:
    """Parse a `reca-eval` command line with the CLI's own parser (types and option names checked)."""
    command, context, i = typer.main.get_command(app), None, 0
    names = ["reca-eval"]
    while hasattr(command, "get_command"):
        context = command.make_context(names[-1], [args[i]], parent=context)
        sub = command.get_command(context, args[i])
        assert sub is not None, f"no reca-eval command {args[i]!r}"
        names.append(args[i])
        command, i = sub, i + 1
    command.make_context(names[-1], list(args[i:]), parent=context)
    bench = _benchmark_named(args)
    if bench:
        registry.spec(bench)  # KeyError for a benchmark the docs name but the registry does not know


def _script_flags(path: Path) -> set[str]:
    """The option strings a script's argparse declares (``--no-x`` too for BooleanOptionalAction)."""
    flags: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            names = [
                a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("-")
            ]
            flags.update(names)
            if any("BooleanOptionalAction" in ast.unparse(k.value) for k in node.keywords):
                flags.update("--no-" + n[2:] for n in names if n.startswith("--"))
    return flags


def _check_script_flags(root: Path, words: list[str]) -> None:
    script = root / words[1]
    assert script.is_file(), f"{words[1]} does not exist"
    declared = _script_flags(script)
    args = words[2 : words.index("--")] if "--" in words else words[2:]
    unknown = [w.split("=")[0] for w in args if w.startswith("-") and w.split("=")[0] not in declared]
    assert not unknown, f"{words[1]} declares no {unknown} (it has {sorted(declared)})"


def _run_module(root: Path, module: str, args: list[str]) -> None:
    """`python -m MODULE ARGS` in this process, with the working directory first on sys.path as -m puts it."""
    argv, path, threads = sys.argv[:], sys.path[:], torch.get_num_threads()
    sys.argv = [module, *args]
    sys.path.insert(0, str(root))
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        assert exc.code in (None, 0), f"python -m {module} exited {exc.code}"
    finally:
        sys.argv, sys.path[:] = argv, path
        torch.set_num_threads(threads)


def _run_script(root: Path, words: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, *words[1:]],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, f"{shlex.join(words)} exited {done.returncode}:\n{done.stderr[-3000:]}"


def _check_pip(words: list[str]) -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    for word in words[2:]:
        if word.startswith(".["):
            unknown = [e for e in word[2:].rstrip("]").split(",") if e not in extras]
            assert not unknown, f"pyproject.toml has no extra {unknown}"
        elif word.startswith("torch=="):
            from packaging.specifiers import SpecifierSet

            pin = word.split("==")[1]
            torch_spec = next(d for d in extras["models"] if d.startswith("torch"))
            assert pin in SpecifierSet(torch_spec[len("torch") :]), (
                f"{word} is outside the models extra's {torch_spec}"
            )


def _check_nox(words: list[str]) -> None:
    tree = ast.parse((REPO / "noxfile.py").read_text())
    sessions = {
        f.name
        for f in tree.body
        if isinstance(f, ast.FunctionDef) and any("session" in ast.unparse(d) for d in f.decorator_list)
    }
    assert words[1] == "-s" and words[2] in sessions, (
        f"noxfile.py has no session {words[2:]} ({sorted(sessions)})"
    )


def _check_pytest(words: list[str]) -> None:
    """A `pytest FILES` line: not run here (it is part of the suite), but every file exists and has tests."""
    files = [w for w in words[1:] if not w.startswith("-")]
    assert files, "pytest with no test file"
    for name in files:
        path = REPO / name
        assert path.is_file(), f"{name} does not exist"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert any(isinstance(f, ast.FunctionDef) and f.name.startswith("test_") for f in tree.body), name


def _check_launcher(words: list[str]) -> None:
    """`torchrun ... -m MODULE ARGS` / `accelerate launch ... -m MODULE ARGS`: the launcher is installed
    and the inner command parses."""
    assert (BIN / words[0]).exists(), f"{words[0]} is not installed beside this Python"
    module_at = words.index("-m")
    module, inner = words[module_at + 1], words[module_at + 2 :]
    if module == "reca_eval.cli":
        _parse_cli(inner)
    elif module == "trainers.train":
        from reca_eval.training.recipe import load_recipe

        load_recipe(inner[0], inner[1:])
    else:
        raise AssertionError(f"no check for a launcher running {module}")


def _words(text: str) -> list[str]:
    return shlex.split(text)


def _is_expensive(args: list[str]) -> bool:
    return bool(args) and (args[0] in EXPENSIVE_SUBCOMMANDS or (args[0] == "run" and "--ckpt" in args))


def exercise(command: DocCommand, workspace: dict) -> str:
    """Run, substitute or parse one documented command; returns how it was exercised."""
    root = workspace["root"]
    text = SUBSTITUTES.get(command.text, command.text)
    env, words = _split_env(_words(text))
    program = words[0]
    bench = None
    if program == "reca-eval":
        bench = _benchmark_named(words[1:])
    words = _words(_fill(shlex.join(words), bench, workspace))

    if program == "pip":
        _check_pip(words)
        return "checked against pyproject.toml"
    if program == "pytest":
        _check_pytest(words)
        return "test files exist and define tests (they run in nox -s tests)"
    if program == "nox":
        _check_nox(words)
        return "session exists in noxfile.py"
    if program in LAUNCHERS:
        _check_launcher(words)
        return "launcher installed, inner command parsed"
    if program == "bash":
        assert command.needs, f"{command.where}: `{command.text}` has no # needs: comment"
        script = root / words[1]
        assert script.is_file(), f"{words[1]} does not exist"
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return "bash -n"
    if program == "reca-eval":
        args = words[1:]
        if command.needs:
            _parse_cli(args)
            return f"parsed (needs: {command.needs})"
        if _is_expensive(args) and command.text not in SUBSTITUTES:
            raise AssertionError(
                f"{command.where}: `{command.text}` is expensive as written; add a small substitute to SUBSTITUTES"
            )
        _invoke(args, env=env or None)
        return "ran" if command.text not in SUBSTITUTES else "ran its substitute"
    if program == "python" and words[1] == "-m":
        if command.text not in SUBSTITUTES:
            raise AssertionError(f"{command.where}: `{command.text}` is in no table of this test")
        _run_module(root, words[2], words[3:])
        return "ran its substitute"
    if program == "python" and words[1].startswith("tests/perf/"):
        if command.needs or command.text in FLAGS_ONLY:
            _check_script_flags(root, words)
            return "flags checked"
        if command.text not in SUBSTITUTES:
            raise AssertionError(f"{command.where}: `{command.text}` is in no table of this test")
        _run_script(root, words)
        return "ran its substitute"
    raise AssertionError(
        f"{command.where}: `{command.text}`: no way to exercise {program!r}; add it to a table"
    )


# ------------------------------------------------------------------------------------------- tests


def _param(command: DocCommand):
    marks = ()
    if command.text in KNOWN_BROKEN:
        marks = (pytest.mark.xfail(reason=KNOWN_BROKEN[command.text], raises=AssertionError, strict=False),)
    return pytest.param(command, id=f"{command.where} {command.text[:60]}", marks=marks)


@pytest.mark.parametrize("command", [_param(c) for c in COMMANDS])
def test_documented_command_runs(command: DocCommand, workspace, monkeypatch):
    monkeypatch.chdir(workspace["root"])
    exercise(command, workspace)


def test_docs_show_commands_and_every_table_entry_is_still_shown():
    shown = {c.text for c in COMMANDS}
    assert len(shown) > 40, f"found only {len(shown)} commands in {[p.name for p in DOC_FILES]}"
    for table in (SUBSTITUTES, FLAGS_ONLY, KNOWN_BROKEN):
        stale = [key for key in table if key not in shown]
        assert not stale, f"entries no doc shows any more: {stale}"


def test_needs_comments_say_what_is_needed():
    for command in COMMANDS:
        if command.needs is not None:
            assert command.needs, f"{command.where}: an empty # needs: comment"


def test_readme_is_short_and_the_docs_hold_no_development_history():
    words = len((REPO / "README.md").read_text(encoding="utf-8").split())
    assert words < 2500, f"README.md has {words} words"
    history = re.compile(
        r"\bsession[- ]\d|previous (shipped )?base|\bround \d|under load|was loaded|machine's load", re.I
    )
    for path in DOC_FILES:
        hits = history.findall(path.read_text(encoding="utf-8"))
        assert not hits, f"{path.name}: {hits}"


def test_readme_links_resolve():
    for path in DOC_FILES:
        for target in re.findall(r"\]\(((?!https?:)[^)#]+)", path.read_text(encoding="utf-8")):
            assert (path.parent / target).exists(), f"{path.name} links to missing {target}"


def test_documented_yaml_benchmark_is_valid(tmp_path):
    """The README's benchmark.yaml reads as a spec (the workspace registers and scores it too)."""
    from reca_eval.core.spec import read_spec

    spec_path = tmp_path / "my-shapes" / "benchmark.yaml"
    spec_path.parent.mkdir()
    spec_path.write_text(_yaml_block(REPO / "README.md", "name: my-shapes"))
    spec = read_spec(spec_path)
    assert spec.name == "my-shapes" and spec.items == "items.jsonl"
