from reca_eval.cli.main import app

app()
