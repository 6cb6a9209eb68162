"""Train from a recipe: ``python -m trainers.train trainers/recipes/reca.yaml [key=value ...]``.

A thin entry script (torchtune's recipes/ pattern): the training loop itself is
:mod:`reca_eval.training.loop`, which ``reca-eval train`` runs too.
"""

from reca_eval.training.loop import main

if __name__ == "__main__":
    raise SystemExit(main())
