"""Wall time of the README's main command, `reca-eval demo`, end to end (the README's figure).

    .venv/bin/python tests/perf/bench_main_command.py                      # the defaults, as the README runs them
    .venv/bin/python tests/perf/bench_main_command.py --threads 1 -- --items-per-benchmark 30
    .venv/bin/python tests/perf/bench_main_command.py -- --families flow        # the flow family's part alone
    .venv/bin/python tests/perf/bench_main_command.py --workers 1,0             # one process against the default workers, one run each

Runs the command in a fresh process (imports, model loads and all) into a temporary results folder,
and prints one JSON line per run: wall seconds, the CPU seconds of the process and its workers, the
command's own split (training, generation + scoring, and both per model family; with several workers
these overlap), the machine's CPU count and load average at the start, and the arguments; with
``--workers A,B`` a last line gives the first run's wall time over each run's. Everything after
``--`` is passed to `reca-eval demo`. The 120-second target is for a 2-core machine with nothing else
running; the load average says how far a measurement was from that.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TARGET_S = 120


def run_demo(args: argparse.Namespace, workers: int | None) -> dict:
    """One `reca-eval demo` in a fresh process; its JSON line's fields."""
    with tempfile.TemporaryDirectory() as tmp:
        results = args.keep or Path(tmp) / "demo"
        command = [sys.executable, "-m", "reca_eval.cli", "demo", "--results", str(results)]
        command += ["--threads", str(args.threads)] if args.threads else []
        command += ["--workers", str(workers)] if workers is not None else []
        command += list(args.demo_args)
        load = os.getloadavg()[0]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
            raise SystemExit(done.returncode)
        summary = json.loads((results / "experiment.json").read_text())
    per_family: dict[str, dict[str, float]] = {}
    for run in summary["arm_runs"]:
        part = per_family.setdefault(
            run.get("family", "janus"), {"train_s": 0.0, "generate_and_score_s": 0.0}
        )
        part["train_s"] += sum(stage["seconds"] for stage in run["stages"])
        part["generate_and_score_s"] += run.get("eval_seconds", 0.0)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "wall_s": round(wall, 1),
        "within_target": wall <= TARGET_S,
        "cpu_s": round(cpu, 1),  # the process and its workers, user + system
        "phases_s": {k: round(v, 1) for k, v in summary["seconds"].items()},
        "per_family": {f: {k: round(v, 1) for k, v in part.items()} for f, part in per_family.items()},
        "items_per_benchmark": summary["items_per_benchmark"],
        "budget": summary["budget"],
        "cpus": os.cpu_count(),
        "load_average_at_start": round(load, 2),
        "command": " ".join(command[2:]),
        "output_tail": done.stdout[-6000:],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = the command's default)")
    parser.add_argument(
        "--workers",
        default="",
        help="comma-separated --workers values, one run each, in order (default: the command's default)",
    )
    parser.add_argument(
        "--keep", type=Path, default=None, help="results folder to keep (default: a temp dir)"
    )
    parser.add_argument("demo_args", nargs="*", help="arguments for `reca-eval demo` (after --)")
    args = parser.parse_args(argv)
    settings: list[int | None] = [int(w) for w in args.workers.split(",")] if args.workers else [None]
    runs = []
    for workers in settings:
        run = run_demo(args, workers)
        tail = run.pop("output_tail")
        print(json.dumps(run), flush=True)
        runs.append(run)
    if len(runs) > 1:
        first = runs[0]["wall_s"]
        print(
            json.dumps(
                {"speedup_over_first": [round(first / r["wall_s"], 2) for r in runs], "workers": settings}
            )
        )
    sys.stdout.write(tail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
