"""What the command modules share: exit codes, consoles, failing with a message, shared options.

Exit codes: 0 success; 1 a regression (`check`); 2 bad input (unknown names, malformed files);
3 a run that scored but skipped images (pass --allow-skips to accept them).
"""

from __future__ import annotations

import json
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

ResultsOpt = typer.Option(Path("results"), "--results", help="Results folder (records, leaderboard files).")


def get_console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    get_console(stderr=True).print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


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


def parse_options(pairs: list[str]) -> dict[str, object]:
    """``KEY=VALUE`` strings into a dict; values that read as JSON (numbers, true/false) are typed."""
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--option takes KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


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
