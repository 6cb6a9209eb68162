from reca_eval.cli import app

app()
