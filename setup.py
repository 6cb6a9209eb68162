"""Packages of the wheel: only ``reca_eval``, plus the benchmark definitions and training recipes.

``benchmarks/`` and ``trainers/recipes/`` live at the top of the repository (data, not code); the
wheel carries them as ``reca_eval/_data/benchmarks`` and ``reca_eval/_data/recipes``, which
:mod:`reca_eval.core.paths` reads when no checkout is around. pyproject.toml can list found packages or
mapped ones, not both, hence this file; everything else is in pyproject.toml.
"""

from setuptools import find_packages, setup

DATA_PACKAGES = {"reca_eval._data.benchmarks": "benchmarks", "reca_eval._data.recipes": "trainers/recipes"}

setup(
    packages=[*find_packages(include=["reca_eval", "reca_eval.*"]), *DATA_PACKAGES],
    package_dir=DATA_PACKAGES,
)
