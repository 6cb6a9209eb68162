"""Wall time of the README's main command, `reca-eval demo`, end to end (the README's figure).

    .venv/bin/python tests/perf/bench_main_command.py                      # the defaults, as the README runs them
    .venv/bin/python tests/perf/bench_main_command.py --threads 1 -- --items-per-benchmark 30
    .venv/bin/python tests/perf/bench_main_command.py -- --families flow        # the flow family's part alone

Runs the command in a fresh process (imports, model loads and all) into a temporary results folder,
and prints one JSON line: wall seconds, the command's own split (training, generation + scoring, and
both per model family),
the machine's CPU count and load average at the start, and the arguments. Everything after ``--`` is
passed to `reca-eval demo`. The 10-minute budget is for a 2-core machine with nothing else running;
the load average says how far a measurement was from that.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUDGET_S = 600


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = the command's default)")
    parser.add_argument(
        "--keep", type=Path, default=None, help="results folder to keep (default: a temp dir)"
    )
    parser.add_argument("demo_args", nargs="*", help="arguments for `reca-eval demo` (after --)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        results = args.keep or Path(tmp) / "demo"
        command = [sys.executable, "-m", "reca_eval.cli", "demo", "--results", str(results)]
        command += (["--threads", str(args.threads)] if args.threads else []) + list(args.demo_args)
        load = os.getloadavg()[0]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
            return done.returncode
        summary = json.loads((results / "experiment.json").read_text())
    per_family: dict[str, dict[str, float]] = {}
    for run in summary["arm_runs"]:
        part = per_family.setdefault(
            run.get("family", "janus"), {"train_s": 0.0, "generate_and_score_s": 0.0}
        )
        part["train_s"] += sum(stage["seconds"] for stage in run["stages"])
        part["generate_and_score_s"] += run.get("eval_seconds", 0.0)
    print(
        json.dumps(
            {
                "wall_s": round(wall, 1),
                "within_budget": wall <= BUDGET_S,
                "train_s": round(summary["seconds"]["train"], 1),
                "generate_and_score_s": round(summary["seconds"]["evaluate"], 1),
                "per_family": {
                    f: {k: round(v, 1) for k, v in part.items()} for f, part in per_family.items()
                },
                "items_per_benchmark": summary["items_per_benchmark"],
                "budget": summary["budget"],
                "cpus": os.cpu_count(),
                "load_average_at_start": round(load, 2),
                "command": " ".join(command[2:]),
            }
        )
    )
    sys.stdout.write(done.stdout[-6000:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
