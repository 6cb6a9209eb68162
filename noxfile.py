"""nox sessions: tests, lint, demo, bench, scoregate, mutation. `nox -s tests` is the README's (and CI's) test
command; `nox -s mutation` is not part of it (docs/testing.md)."""

from __future__ import annotations

import ast
import difflib
import fnmatch
import json
import random
import re
import shutil
import subprocess
from dataclasses import dataclass
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


# mutmut's exit codes that count as a kill: a failing test, an internal pytest error, and the codes of a
# test killed for running out of time (the mutant broke the code enough to hang it).
MUTANT_KILLED_CODES = frozenset({1, 3, 24, -24, 36, 152, 255})
# A timeout can come from a busy machine rather than the mutant: it does not make an accepted entry stale.
MUTANT_TIMEOUT_CODES = frozenset({24, -24, 36, 152, 255})
MUTATION_ACCEPTED = Path("tests/mutation_accepted.toml")
_ACCEPTED_KEYS = ("target", "function", "before", "after", "reason")


@dataclass(frozen=True)
class AcceptedMutant:
    """A mutant that survives every test because nothing a caller can observe changes, as listed in
    tests/mutation_accepted.toml. It is named by what survives code edits elsewhere in the module: the
    function and the text of the mutated line(s) before and after the mutation, each line stripped."""

    target: str
    function: str
    before: str
    after: str
    reason: str


@dataclass
class MutationReport:
    """One module's mutants after a run: ``mutants`` counts those tested (all, or a sample); a kill is a
    failing or timed-out test; ``accepted`` are survivors matched by an accepted entry; ``surviving``
    maps the rest to their (function, before, after); ``stale`` says which accepted entries match no
    surviving mutant (checked on whole runs only: a sample may leave an entry's mutant out)."""

    target: str
    mutants: int
    killed: int
    accepted: list[str]
    surviving: dict[str, tuple[str, str, str]]
    stale: list[str]

    @property
    def killed_share(self) -> float:
        """Killed over the mutants that are not accepted as equivalent (the gate's figure)."""
        judged = self.mutants - len(self.accepted)
        return self.killed / judged if judged else 1.0

    @property
    def raw_share(self) -> float:
        """Killed over every mutant tested."""
        return self.killed / self.mutants if self.mutants else 1.0

    @property
    def passed(self) -> bool:
        return self.killed_share >= MUTATION_MIN_KILLED and not self.stale


def _changed_text(lines: list[str]) -> str:
    return "\n".join(line.strip() for line in lines)


def load_accepted(path: Path = MUTATION_ACCEPTED) -> list[AcceptedMutant]:
    """The ``[[accepted]]`` entries of ``path``, each checked for its five string keys and a known target."""
    try:
        entries = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from exc
    unknown_tables = sorted(set(entries) - {"accepted"})
    if unknown_tables:
        raise ValueError(f"{path}: unknown key(s) {unknown_tables}; entries are [[accepted]] tables")
    out = []
    for number, entry in enumerate(entries.get("accepted", []), start=1):
        where = f"{path}: [[accepted]] entry {number} ({entry.get('function', 'no function')})"
        missing = [k for k in _ACCEPTED_KEYS if k not in entry]
        extra = sorted(set(entry) - set(_ACCEPTED_KEYS))
        if missing or extra:
            raise ValueError(f"{where}: missing key(s) {missing}, unknown key(s) {extra}")
        not_text = [k for k in _ACCEPTED_KEYS if not isinstance(entry[k], str)]
        if not_text:
            raise ValueError(f"{where}: {not_text} must be strings")
        if entry["target"] not in MUTATION_TARGETS:
            raise ValueError(
                f"{where}: unknown target {entry['target']!r}; known: {sorted(MUTATION_TARGETS)}"
            )
        if not entry["reason"].strip():
            raise ValueError(f"{where}: empty reason")
        out.append(
            AcceptedMutant(
                target=entry["target"],
                function=entry["function"],
                before=_changed_text(entry["before"].strip("\n").split("\n")),
                after=_changed_text(entry["after"].strip("\n").split("\n")),
                reason=" ".join(entry["reason"].split()),
            )
        )
    return out


def mutant_function(mutant: str) -> str:
    """The mutated function's name in the source: ``pkg.mod.x_cluster_bootstrap__mutmut_12`` ->
    ``cluster_bootstrap``; a method, ``pkg.mod.xǁRecordǁto_dict__mutmut_3`` -> ``Record.to_dict``."""
    name = re.sub(r"__mutmut_(\d+|orig)$", "", mutant.rsplit(".", 1)[-1])
    if name.startswith("xǁ"):
        return name[2:].replace("ǁ", ".")
    return name[2:] if name.startswith("x_") else name


def mutant_changes(mutants_file: Path, names: list[str]) -> dict[str, tuple[str, str]]:
    """For each mutant, the lines it changes in its function (as `mutmut show` prints them), before and
    after, read from the mutated copy of the module mutmut writes (``mutants/<module>``): it holds the
    original of each function as ``<f>__mutmut_orig`` and each mutant as ``<f>__mutmut_<n>``."""
    text = mutants_file.read_text(encoding="utf-8")
    lines = text.splitlines()
    source: dict[str, list[str]] = {}
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and "__mutmut_" in node.name:
            source[node.name] = lines[node.lineno - 1 : node.end_lineno]
    changes = {}
    for mutant in names:
        own = mutant.rsplit(".", 1)[-1]
        orig = re.sub(r"__mutmut_\d+$", "__mutmut_orig", own)
        if own not in source or orig not in source:
            raise ValueError(f"{mutants_file}: no function {own} or {orig} for mutant {mutant}")
        # the def lines carry mutmut's names: give both the function's own name
        plain = mutant_function(own).rsplit(".", 1)[-1]
        original, changed = [*source[orig]], [*source[own]]
        original[0] = original[0].replace(f"{orig}(", f"{plain}(", 1)
        changed[0] = changed[0].replace(f"{own}(", f"{plain}(", 1)
        diff = list(difflib.unified_diff(original, changed, n=0, lineterm=""))[2:]  # no file headers
        before = [line[1:] for line in diff if line.startswith("-")]
        after = [line[1:] for line in diff if line.startswith("+")]
        changes[mutant] = (_changed_text(before), _changed_text(after))
    return changes


def mutation_report(
    target: str, root: Path, accepted: list[AcceptedMutant], only: list[str] | None = None
) -> MutationReport:
    """The outcome of ``target``'s finished mutmut run in ``root`` (.mutation/NAME), counted over the
    mutants its globs select (and, given ``only``, over those names), with the accepted entries matched."""
    module, globs, _ = MUTATION_TARGETS[target]
    meta = json.loads((root / "mutants" / f"{module}.meta").read_text())
    codes = {
        mutant: code
        for mutant, code in meta["exit_code_by_key"].items()
        if any(fnmatch.fnmatchcase(mutant, g) for g in globs) and (only is None or mutant in only)
    }
    tested = sorted(m for m, code in codes.items() if code is not None)
    killed = {m for m in tested if codes[m] in MUTANT_KILLED_CODES}
    changes = mutant_changes(root / "mutants" / module, tested)
    key = {m: (mutant_function(m), *changes[m]) for m in tested}
    matched: set[str] = set()
    stale = []
    for entry in (a for a in accepted if a.target == target):
        hits = [m for m in tested if key[m] == (entry.function, entry.before, entry.after)]
        alive = [m for m in hits if m not in killed]
        matched.update(alive)
        timed_out = any(codes[m] in MUTANT_TIMEOUT_CODES for m in hits)
        if not alive and not timed_out and only is None:
            why = f"killed by the tests ({', '.join(hits)})" if hits else "no mutant makes this change"
            stale.append(f"{entry.function}: {entry.before!r} -> {entry.after!r}: {why}")
    return MutationReport(
        target=target,
        mutants=len(tested),
        killed=len(killed),
        accepted=sorted(matched),
        surviving={m: key[m] for m in tested if m not in killed and m not in matched},
        stale=stale,
    )


def accepted_table(accepted: list[AcceptedMutant]) -> str:
    """The accepted entries as the Markdown table docs/testing.md shows (tests check the two agree)."""

    def code(text: str) -> str:
        return "`" + " ⏎ ".join(text.split("\n")).replace("|", "\\|") + "`" if text else "(nothing)"

    rows = ["| module | function | mutated line → mutant | why it is accepted |", "|---|---|---|---|"]
    for a in accepted:
        rows.append(f"| {a.target} | `{a.function}` | {code(a.before)} → {code(a.after)} | {a.reason} |")
    return "\n".join(rows)


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


def _option(args: list[str], flag: str) -> str | None:
    """Removes ``flag VALUE`` from ``args`` and returns VALUE (None when the flag is absent)."""
    if flag not in args:
        return None
    at = args.index(flag)
    if at + 1 == len(args):
        raise ValueError(f"{flag} needs a value")
    value = args[at + 1]
    del args[at : at + 2]
    return value


@nox.session(python="3.11")
def mutation(session: nox.Session) -> None:
    """mutmut on the modules of MUTATION_TARGETS, one at a time (`nox -s mutation -- stats records` runs
    some; `-- --sample 40 NAME...` tests 40 mutants of each drawn at random; `-- --max-children N` runs N
    mutants at once, default 1; `-- --report NAME...` counts the runs already in .mutation/ again).
    Fails when a module kills fewer than 90% of its mutants not accepted as equivalent
    (tests/mutation_accepted.toml), or when an accepted entry matches no surviving mutant of a whole
    run. Survivors: `mutmut results` and `mutmut show MUTANT` in .mutation/NAME."""
    args = list(session.posargs)
    try:
        sample = _option(args, "--sample")
        children = _option(args, "--max-children") or "1"
        accepted = load_accepted()
    except ValueError as exc:
        session.error(str(exc))
    report_only = "--report" in args
    args = [a for a in args if a != "--report"]
    names = args or list(MUTATION_TARGETS)
    unknown = sorted(set(names) - set(MUTATION_TARGETS))
    if unknown:
        session.error(f"unknown mutation target(s) {unknown}; known: {sorted(MUTATION_TARGETS)}")
    if not report_only:
        session.install("-e", ".[dev]")
    failed = []
    for name in names:
        module, globs, tests = MUTATION_TARGETS[name]
        root = MUTATION_DIR / name
        only = None
        if not report_only:
            root = _mutation_copy(name, module, tests)
            only = None if sample is None else _mutant_sample(session, root, module, globs, int(sample))
            mutants = only if only is not None else ([] if globs == ("*",) else list(globs))
            with session.chdir(root):
                session.run(
                    "mutmut", "run", "--max-children", children, *mutants, env={"OMP_NUM_THREADS": "1"}
                )
        elif not (root / "mutants" / f"{module}.meta").is_file():
            session.error(f"{name}: no finished run in {root}; run `nox -s mutation -- {name}` first")
        report = mutation_report(name, root, accepted, only)
        session.log(
            f"mutation {name} ({module}): {report.mutants} mutants, {report.killed} killed, "
            f"{len(report.accepted)} accepted as equivalent, {len(report.surviving)} surviving: "
            f"{100 * report.killed_share:.1f}% killed of those not accepted "
            f"({100 * report.raw_share:.1f}% of all)"
        )
        for mutant, (function, before, after) in report.surviving.items():
            session.log(f"  survived {mutant} in {function}: {before!r} -> {after!r}")
        for entry in report.stale:
            session.log(f"  stale accepted entry ({MUTATION_ACCEPTED}) {entry}")
        if not report.passed:
            failed.append(name)
    if failed:
        session.error(
            f"below {100 * MUTATION_MIN_KILLED:.0f}% killed or with stale accepted entries: {failed}"
        )
