"""nox sessions: tests, lint, demo, bench. `nox -s tests` is the README's (and CI's) test command."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True

# torch/torchvision from the machine's local wheels: open-clip (GenEval colour) needs torchvision,
# and PyPI's torchvision only pairs with this torch. Installed first so nothing pulls a CUDA build.
TORCH = ("torch==2.14.1", "torchvision==0.29.1")


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """The whole test suite, with every optional extra installed (neural scorers on tiny random weights)."""
    session.install(*TORCH)
    session.install("-e", ".[all,dev]")
    session.run("pytest", *session.posargs, env={"OMP_NUM_THREADS": "2"})


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", "reca_eval", "trainers", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "reca_eval", "trainers", "tests", "benchmarks", "noxfile.py")


@nox.session(python="3.11")
def demo(session: nox.Session) -> None:
    """The README's main command, in a clean environment."""
    session.install("-e", ".")
    session.run("reca-eval", "demo", *session.posargs)


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Speed and memory figures (quoted in the README); not part of the test suite."""
    session.install(*TORCH)
    session.install("-e", ".[all]")
    for script in sorted(__import__("pathlib").Path("benchmarks").glob("bench_*.py")):
        session.run("python", str(script), *session.posargs)
