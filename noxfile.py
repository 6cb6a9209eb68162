"""nox sessions: tests, lint, demo, bench, scoregate. `nox -s tests` is the README's (and CI's) test command."""

from __future__ import annotations

from pathlib import Path

import nox

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
