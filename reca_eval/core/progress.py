"""Progress bars: always on stderr, so `--json` output on stdout stays machine-readable."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


def progress_bar(transient: bool = True) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=transient,
    )


def progress_iter(iterable: Iterable[T], total: int, description: str, enabled: bool = True) -> Iterator[T]:
    if not enabled:
        yield from iterable
        return
    with progress_bar() as progress:
        task = progress.add_task(description, total=total)
        for value in iterable:
            yield value
            progress.advance(task)
