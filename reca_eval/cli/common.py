"""What the command modules share: exit codes, consoles, failing with a message, shared options.

Exit codes: 0 success; 1 a regression (`check`); 2 bad input (unknown names, malformed files);
3 a run that scored but skipped images (pass --allow-skips to accept them); 4 an output that could not
be written or a file that could not be read (read-only or full disk, a folder where a file should be),
with nothing half-written left behind.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

EXIT_REGRESSION = 1
EXIT_BAD_INPUT = 2
EXIT_SKIPS = 3
EXIT_IO = 4

# Modules only the models extra installs: a command that imports one on the core install gets the hint.
MODELS_EXTRA_MODULES = ("torch", "transformers", "diffusers", "accelerate", "safetensors", "huggingface_hub")

ResultsOpt = typer.Option(Path("results"), "--results", help="Results folder (records, leaderboard files).")


def get_console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    get_console(stderr=True).print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def guarded(command):
    """``command`` with the errors no command should end in as a traceback turned into messages: an
    OSError (exit 4, naming the path and the reason) and a missing models-extra module (exit 2, with
    the install line)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] not in MODELS_EXTRA_MODULES:
                raise
            fail(
                f"this command needs the models extra ({exc.name} is not installed): "
                "pip install 'reca-eval[models]' (a CPU-only torch: pip install torch==2.13.0 first)"
            )
        except OSError as exc:
            where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
            reason = exc.strerror or str(exc) or type(exc).__name__
            fail(f"{where}: {reason}" if where else f"I/O error: {reason}", EXIT_IO)

    return wrapper


@contextmanager
def printed_warnings() -> Iterator[None]:
    """Warnings raised inside (a label several checkpoints carry, a corrupt record) printed on stderr,
    escaped, once each, whatever Python's warning filters say."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            console = get_console(stderr=True)
            for message in dict.fromkeys(str(w.message) for w in caught):
                console.print(f"[yellow]warning:[/] {escape(message)}")


def parse_options(pairs: list[str], flag: str = "--option") -> dict[str, str]:
    """``KEY=VALUE`` strings into a dict of strings; each value gets its type from the declaration it
    is checked against (:func:`reca_eval.core.spec.check_options`), so a text value stays text."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(f"{flag} takes KEY=VALUE, got {pair!r}")
        if key.strip() in options:
            fail(f"{flag} {key.strip()} is given twice")
        options[key.strip()] = value
    return options


def checked_options(bench, options: dict[str, object]) -> dict[str, object]:
    """A run's options checked against what its benchmark declares (exit 2 naming the option and the
    valid ones), in their declared types."""
    from reca_eval.core.spec import OptionError, check_options

    if bench.spec is None:
        return dict(options)
    try:
        return check_options(bench.spec, options)
    except OptionError as exc:
        fail(str(exc))


def print_record(console: Console, record) -> None:
    table = Table(title=escape(f"{record.benchmark} v{record.spec_version} — {record.label}"))
    table.add_column("category")
    table.add_column("score", justify="right")
    for key, value in record.scores.items():
        table.add_row(escape(key), f"{value:.4f}")
    console.print(table)
    console.print(
        escape(
            f"scored {record.images_scored} image(s), skipped {record.images_skipped}; run {record.run_id}"
        ),
        style="dim",
    )
    reasons: dict[str, int] = {}
    for skip in record.skips:
        reasons[skip.reason] = reasons.get(skip.reason, 0) + 1
    for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1])[:10]:
        console.print(escape(f"  skipped {count}× — {reason}"), style="yellow")
