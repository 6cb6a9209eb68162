"""Worker processes of an experiment: scoring, probes, floors and reference editors beside training.

Once a checkpoint exists, generating and scoring its images is independent of everything else the
experiment does, and so are the floors, the ceilings and the reference editors. The experiment submits
these jobs to a pool of worker processes and trains the next arm meanwhile. On a CPU, processes are what
pays: the ShapeWorld models are small, so a second OpenMP thread speeds one process's sampling well short
of 2x, and its threads wait on each other whenever another process shares a core, while single-thread
processes keep every core busy (the main command: 1.28x on 2 cores, docs/performance.md).

    layout = worker_layout()              # every CPU used: (2 workers, 1 thread each) on 2 cores
    with job_pool(layout.workers, layout.threads) as pool:
        future = pool.submit(timed, score_checkpoint, ...)

``workers=1`` runs every job in the calling process at ``submit`` (no pool): the same results, since a
job's arithmetic depends only on its inputs and the thread count, not on where it runs.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

# More workers than this buys little on the ShapeWorld models and costs a model's memory each.
MAX_DEFAULT_WORKERS = 4


@dataclass(frozen=True)
class WorkerLayout:
    workers: int  # processes that run jobs (1 = none: jobs run in the calling process)
    threads: int  # torch threads of each process


def worker_layout(workers: int = 0, threads: int = 0, cpus: int | None = None) -> WorkerLayout:
    """``workers`` (0 = one per CPU, at most MAX_DEFAULT_WORKERS) with ``threads`` torch threads each
    (0 = the CPUs shared out among the workers, at least 1); ValueError for a negative count."""
    if workers < 0 or threads < 0:
        raise ValueError(
            f"workers and threads must be 0 (automatic) or positive, got {workers} and {threads}"
        )
    cpus = cpus or os.cpu_count() or 1
    workers = workers or min(MAX_DEFAULT_WORKERS, cpus)
    return WorkerLayout(workers, threads or max(1, cpus // workers))


def _start_worker(threads: int) -> None:
    # Ctrl-C reaches every process of the terminal's group: the main process stops the pool, and the
    # workers would otherwise each print a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()


def timed(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``fn(*args, **kwargs)`` and the seconds it took (in the process that ran it)."""
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - started


class InlineExecutor(cf.Executor):
    """Runs a job at ``submit``, in this process; its error is raised there, as a plain call would."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        future: cf.Future = cf.Future()
        future.set_result(fn(*args, **kwargs))
        return future


@contextlib.contextmanager
def job_pool(workers: int, threads: int) -> Iterator[cf.Executor]:
    """An executor of ``workers`` spawned processes with ``threads`` torch threads each (an
    :class:`InlineExecutor` for one worker). Leaving the block on an error or Ctrl-C cancels the jobs not
    started and stops the running ones, so no worker goes on writing after the command has ended."""
    if workers <= 1:
        yield InlineExecutor()
        return
    # spawn, not fork: a fork of a process whose OpenMP threads have run can deadlock in the child.
    pool = cf.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(threads,),
    )
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        # ProcessPoolExecutor has no public way to stop a running job before Python 3.14's
        # terminate_workers(); its processes are terminated directly.
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        raise
    pool.shutdown(wait=True)
