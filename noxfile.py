"""nox sessions: tests, lint, demo, bench, scoregate, mutation. `nox -s tests` is the README's (and CI's) test
command; `nox -s mutation` is not part of it (docs/testing.md)."""

from __future__ import annotations

import fnmatch
import json
import random
import shutil
import subprocess
from pathlib import Path

import nox
import tomllib

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True

# torch/torchvision from the machine's local wheels: open-clip (GenEval colour) needs torchvision,
# and PyPI's torchvision only pairs with this torch. Installed first so nothing pulls a CUDA build.
TORCH = ("torch==2.14.1", "torchvision==0.29.1")
# The main command needs only torch (the models extra); 2.13.0 is the small local CPU wheel.
DEMO_TORCH = "torch==2.13.0"
LINTED = ("reca_eval", "trainers", "tests", "noxfile.py", "setup.py")


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """The whole test suite, with every optional extra installed (neural scorers on tiny random weights)."""
    session.install(*TORCH)
    session.install("-e", ".[all,dev]")
    session.run("pytest", *session.posargs, env={"OMP_NUM_THREADS": "2"})


@nox.session(python="3.11")
def scoregate(session: nox.Session) -> None:
    """The project's own score gate: the shipped ShapeWorld base regenerates a fixed item subset and
    `reca-eval check` compares it with the run committed in benchmarks/baselines/ (exit 1 on a drop)."""
    session.install(*TORCH)  # the torch the baselines were recorded with: generation is exact only on it
    session.install("-e", ".[models]")
    session.run(
        "python", "-m", "reca_eval.experiments.score_gate", *session.posargs, env={"OMP_NUM_THREADS": "2"}
    )


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff, and the import contract that keeps the layers of the layout honest (pyproject.toml)."""
    session.install("ruff>=0.6", "import-linter>=2.1")
    session.install("--no-deps", "-e", ".")
    session.run("ruff", "check", *LINTED)
    session.run("ruff", "format", "--check", *LINTED)
    session.run("lint-imports")


@nox.session(python="3.11")
def demo(session: nox.Session) -> None:
    """The README's main command, in a clean environment."""
    session.install(DEMO_TORCH)
    session.install("-e", ".[models]")
    session.run("reca-eval", "demo", *session.posargs, env={"OMP_NUM_THREADS": "2"})


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Speed and memory figures (quoted in docs/performance.md); not part of the test suite."""
    session.install(*TORCH)
    session.install("-e", ".[all]")
    for script in sorted(Path("tests/perf").glob("bench_*.py")):
        session.run("python", str(script), *session.posargs)


# Mutation testing: the modules whose bugs would change a number a user reports, each run with the fast
# tests that cover it (mutmut then runs, per mutant, only the tests that call the mutated function).
# name -> (module, mutant-name globs ("*": all of it), test files). docs/testing.md lists the survivors.
MUTATION_TARGETS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "geneval-rules": (
        "reca_eval/benchmarks/geneval/rules.py",
        ("*",),
        ("tests/test_geneval_protocol.py", "tests/test_geneval_parity.py", "tests/test_rules_edges.py"),
    ),
    "dpg-rules": (
        "reca_eval/benchmarks/dpg/rules.py",
        ("*",),
        ("tests/test_dpg_protocol.py", "tests/test_dpg_parity.py", "tests/test_rules_edges.py"),
    ),
    "edit-rules": (
        "reca_eval/benchmarks/edit/rules.py",
        ("*",),
        ("tests/test_edit_protocol.py", "tests/test_rules_edges.py"),
    ),
    "parser": (
        "reca_eval/shapeworld/parse.py",
        ("*",),
        ("tests/test_world_render_parse.py", "tests/test_shapes_scorer.py", "tests/test_parser_edges.py"),
    ),
    "edit-scorer": (
        "reca_eval/scorers/shapes.py",
        ("*",),
        ("tests/test_shapes_scorer.py", "tests/test_shapes_scorer_edges.py", "tests/test_properties.py"),
    ),
    "stats": ("reca_eval/results/stats.py", ("*",), ("tests/test_stats.py", "tests/test_properties.py")),
    # compare and check, not the table rendering around them
    "compare-check": (
        "reca_eval/results/leaderboard.py",
        (
            "*.x_compare_runs__*",
            "*.x_check_regression__*",
            "*.x_declared_tolerance__*",
            "*.x__ordered_keys__*",
        ),
        ("tests/test_check_gate.py", "tests/test_leaderboard.py", "tests/test_contracts.py"),
    ),
    "records": (
        "reca_eval/core/records.py",
        ("*",),
        (
            "tests/test_contracts.py",
            "tests/test_file_modes.py",
            "tests/test_leaderboard.py",
            "tests/reliability/test_records.py",
        ),
    ),
}
MUTATION_MIN_KILLED = 0.90
MUTATION_DIR = Path(".mutation")


def _mutation_copy(name: str, module: str, tests: tuple[str, ...]) -> Path:
    """A scratch copy of the work tree in .mutation/NAME whose mutmut config mutates ``module`` only and
    collects ``tests`` only; mutmut never touches the real tree."""
    root = MUTATION_DIR / name
    shutil.rmtree(root, ignore_errors=True)
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for rel in filter(None, listed.split("\0")):
        if Path(rel).is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(rel, root / rel)
    # pyproject.toml's [tool.mutmut] with this module's file and tests (TOML's strings, lists and
    # booleans are written the way JSON writes them).
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text()
    config = tomllib.loads(text)["tool"]["mutmut"] | {
        "only_mutate": [module],
        "pytest_add_cli_args_test_selection": list(tests),
    }
    section = "\n".join(["[tool.mutmut]", *(f"{key} = {json.dumps(value)}" for key, value in config.items())])
    pyproject.write_text(text.replace("[tool.mutmut]", "[tool.mutmut-defaults]") + "\n" + section + "\n")
    # Tests that read the official GenEval/DPG files find them at ../shared from the repository root;
    # mutmut runs them from .mutation/NAME/mutants/, so the copy gets a link to the same folder.
    shared = Path("..", "shared").resolve()
    if shared.is_dir():
        (root / "shared").symlink_to(shared)
    return root


def mutation_summary(
    root: Path, module: str, globs: tuple[str, ...], only: list[str] | None = None
) -> dict[str, int]:
    """Mutant outcomes of ``module`` in a finished mutmut run, counted over the mutants ``globs`` select
    (and, given ``only``, over those names)."""
    meta = json.loads((root / "mutants" / f"{module}.meta").read_text())
    counts: dict[str, int] = {}
    for mutant, code in meta["exit_code_by_key"].items():
        if not any(fnmatch.fnmatchcase(mutant, g) for g in globs) or (
            only is not None and mutant not in only
        ):
            continue
        status = {1: "killed", 3: "killed", 0: "survived", None: "not run"}.get(code, "other")
        if code in (24, -24, 36, 152, 255):
            status = "killed"  # a timeout: the mutant broke the code enough to hang a test
        counts[status] = counts.get(status, 0) + 1
    return counts


def _mutant_sample(
    session: nox.Session, root: Path, module: str, globs: tuple[str, ...], n: int
) -> list[str]:
    """``n`` of the module's mutants drawn at random (seed 0): mutmut generates them all, then stops
    (exit 1) on a name that matches none."""
    with session.chdir(root):
        session.run(
            "mutmut", "run", "no-mutant-has-this-name", env={"OMP_NUM_THREADS": "1"}, success_codes=[0, 1]
        )
    meta = json.loads((root / "mutants" / f"{module}.meta").read_text())
    names = sorted(m for m in meta["exit_code_by_key"] if any(fnmatch.fnmatchcase(m, g) for g in globs))
    return sorted(random.Random(0).sample(names, min(n, len(names))))


@nox.session(python="3.11")
def mutation(session: nox.Session) -> None:
    """mutmut on the modules of MUTATION_TARGETS, one at a time (`nox -s mutation -- stats records` runs
    some; `-- --sample 40 NAME...` tests 40 mutants of each drawn at random); fails when a module kills
    fewer than 90% of its mutants. Survivors: `mutmut results` and `mutmut show MUTANT` in .mutation/NAME."""
    session.install("-e", ".[dev]")
    args = list(session.posargs)
    sample = None
    if "--sample" in args:
        at = args.index("--sample")
        sample = int(args[at + 1])
        del args[at : at + 2]
    names = args or list(MUTATION_TARGETS)
    unknown = sorted(set(names) - set(MUTATION_TARGETS))
    if unknown:
        session.error(f"unknown mutation target(s) {unknown}; known: {sorted(MUTATION_TARGETS)}")
    below = []
    for name in names:
        module, globs, tests = MUTATION_TARGETS[name]
        root = _mutation_copy(name, module, tests)
        only = None if sample is None else _mutant_sample(session, root, module, globs, sample)
        mutants = only if only is not None else ([] if globs == ("*",) else list(globs))
        with session.chdir(root):
            session.run("mutmut", "run", *mutants, env={"OMP_NUM_THREADS": "1"})
        counts = mutation_summary(root, module, globs, only)
        checked = sum(counts.values()) - counts.get("not run", 0)
        killed = counts.get("killed", 0) / checked if checked else 0.0
        session.log(f"mutation {name} ({module}): {100 * killed:.1f}% killed of {checked}; {counts}")
        if killed < MUTATION_MIN_KILLED:
            below.append(name)
    if below:
        session.error(f"below {100 * MUTATION_MIN_KILLED:.0f}% killed: {below}")
