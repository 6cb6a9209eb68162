"""The `reca-eval` command: typer commands split by group; no library logic lives here."""

from reca_eval.cli.main import app

__all__ = ["app"]
