"""The `reca-eval` command: typer commands split by group; no library logic lives here.

scoring.py    list, validate, run, render-references, fetch
results.py    leaderboard, compare, check
training.py   demo, experiment, train
diagnose.py   diagnose alignment, diagnose ceiling
convert.py    convert harmon (an official release into a checkpoint folder)
common.py     exit codes, consoles, shared options and helpers
"""

import typer

from reca_eval.cli import convert, diagnose, results, scoring, training
from reca_eval.cli.common import guarded

app = typer.Typer(
    help="Evaluation-first harness for Reconstruction Alignment (RecA) of unified multimodal models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(diagnose.app, name="diagnose")
app.add_typer(convert.app, name="convert")
app.command("list")(scoring.list_benchmarks)
app.command()(scoring.validate)
app.command()(scoring.run)
app.command()(results.leaderboard)
app.command()(results.compare)
app.command()(results.check)
app.command("render-references")(scoring.render_references)
app.command()(training.demo)
app.command()(training.experiment)
app.command()(training.train)
app.command()(scoring.fetch)
# Every command, sub-commands included: an OSError or a missing models extra is a message, not a traceback.
for _typer_app in (app, diagnose.app, convert.app):
    for _info in _typer_app.registered_commands:
        _info.callback = guarded(_info.callback)

__all__ = ["app"]
