"""The experiment's worker processes: how CPUs are shared out, jobs run in other processes with the
threads asked for, an error ends the pool, and an experiment on two workers writes the very scores it
writes in one process."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest
import torch

from reca_eval.experiments.arms import BASE, SFT, SFT_RECA, Budget
from reca_eval.experiments.runner import ExperimentPlan, FamilyPlan, run_experiment
from reca_eval.experiments.workers import InlineExecutor, job_pool, timed, worker_layout


def _where() -> tuple[int, int]:
    return os.getpid(), torch.get_num_threads()


def _fails(message: str) -> None:
    raise ValueError(message)


def _sleeps(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@pytest.mark.parametrize(
    ("cpus", "workers", "threads", "expected"),
    [
        (2, 0, 0, (2, 1)),  # the README's machine: two single-thread workers
        (16, 0, 0, (4, 4)),  # at most four workers; the CPUs shared out among them
        (1, 0, 0, (1, 1)),
        (3, 0, 0, (3, 1)),
        (16, 2, 0, (2, 8)),
        (2, 1, 0, (1, 2)),
        (2, 2, 3, (2, 3)),
    ],
)
def test_worker_layout_shares_the_cpus_out(cpus, workers, threads, expected):
    layout = worker_layout(workers, threads, cpus=cpus)
    assert (layout.workers, layout.threads) == expected


def test_worker_layout_refuses_negative_counts():
    with pytest.raises(ValueError, match="workers and threads"):
        worker_layout(-1, 0, cpus=2)
    with pytest.raises(ValueError, match="workers and threads"):
        worker_layout(0, -2, cpus=2)


def test_one_worker_runs_each_job_here_at_submit():
    with job_pool(1, 1) as pool:
        assert isinstance(pool, InlineExecutor)
        (pid, _), took = pool.submit(timed, _where).result()
        assert pid == os.getpid() and took >= 0
        with pytest.raises(ValueError, match="at once"):
            pool.submit(_fails, "raised at once")


def test_jobs_run_in_other_processes_with_the_threads_asked_for():
    with job_pool(2, 1) as pool:
        where = [pool.submit(_where) for _ in range(4)]
        pids, threads = zip(*(f.result() for f in where), strict=True)
    assert os.getpid() not in pids
    assert set(threads) == {1}


def test_a_failed_job_raises_where_its_result_is_read_and_stops_the_pool():
    started = time.perf_counter()
    with pytest.raises(ValueError, match="broken item"):
        with job_pool(2, 1) as pool:
            sleeping = pool.submit(_sleeps, 60.0)  # one worker sleeps, the other fails
            pool.submit(_fails, "broken item").result()
    # The sleeping job was stopped with the pool, not waited for.
    assert time.perf_counter() - started < 50
    assert not (sleeping.done() and not sleeping.cancelled() and sleeping.exception() is None)


def test_the_closing_line_says_the_work_overlapped_on_several_workers():
    from reca_eval.experiments.main_command import phase_times

    seconds = {"train": 30.4, "evaluate": 150.0, "floors": 20.0, "total": 110.2}
    assert (
        phase_times(seconds)
        == "wall time 110 s (training 30 s, generation + scoring 150 s, floors and ceilings 20 s)"
    )
    assert phase_times(seconds, workers=2) == (
        "wall time 110 s on 2 workers (work: training 30 s, generation + scoring 150 s, floors and ceilings 20 s)"
    )


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    from reca_eval.training.builders import tiny_janus

    path = tmp_path_factory.mktemp("base") / "tiny-janus"
    tiny_janus(seed=0).save_pretrained(path)
    return path


def test_an_experiment_on_two_workers_scores_what_it_scores_in_one_process(tiny_base, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers get this process's thread count
    plan = ExperimentPlan(
        [FamilyPlan(tiny_base, (BASE, SFT, SFT_RECA))],
        results=tmp_path / "inline",
        budget=Budget(sft_steps=2, reca_steps=2, batch_size=2, warmup_steps=0),
        items_per_benchmark=2,
        generation_batch_size=8,
        n_boot=20,
        probe_scenes=24,
        floor_seeds=(0,),
    )
    try:
        inline = run_experiment(plan)
        pooled = run_experiment(dataclasses.replace(plan, results=tmp_path / "pooled", workers=2))
    finally:
        torch.set_num_threads(threads)

    def table(result):
        return [(r.label, r.scores, r.alignment) for r in result.table_runs()]

    assert [r.label for r in inline.arm_runs] == ["base", "SFT", "SFT+RecA"]
    assert table(pooled) == table(inline)
    assert [b.floor.scores() for b in pooled.bounds] == [b.floor.scores() for b in inline.bounds]
    assert [(s, c.deltas) for s, c in pooled.comparisons] == [(s, c.deltas) for s, c in inline.comparisons]
    # Each run folder names a scored record; the two experiments wrote their own.
    for run in pooled.arm_runs:
        assert all(str(path).startswith(str(tmp_path / "pooled")) for path in run.runs.values())
        assert run.eval_seconds > 0
