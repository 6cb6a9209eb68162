"""Recipes (YAML + dotted overrides, typed, errors naming the key) and the instruction list."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from reca_eval.models.instructions import RECONSTRUCTION_INSTRUCTIONS, sample_instruction
from reca_eval.training.recipe import RecipeError, load_recipe, recipe_from_dict

RECIPES = Path(__file__).resolve().parents[1] / "trainers" / "recipes"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


BASE = """
name: demo
data:
  sources:
    - {kind: folder, path: /data/a, objective: recon, ratio: 1}
    - {kind: folder, path: /data/b, objective: i2t, ratio: 1}
train:
  lr: 1e-4
  steps: 10
"""


def test_yaml_types_and_overrides(tmp_path):
    recipe = load_recipe(
        write(tmp_path, BASE),
        [
            "train.lr=3e-5",
            "data.sources.0.ratio=2",
            "model.freeze=[vision, vq]",
            "objective.condition_dropout=0.25",
        ],
    )
    assert recipe.train.lr == pytest.approx(3e-5)
    assert isinstance(recipe.train.lr, float)
    assert recipe.data.sources[0].ratio == 2.0
    assert recipe.data.sources[1].objective == "i2t"
    assert recipe.model.freeze == ["vision", "vq"]
    assert recipe.objective.condition_dropout == 0.25
    assert recipe.train.steps == 10


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("train.lrr=1", "train.lrr"),
        ("data.sources.0.colour=red", "data.sources.0.colour"),
        ("data.sources.5.ratio=1", "data.sources.5"),
        ("train.steps=ten", "train.steps"),
        ("train.steps=1.5", "train.steps"),
        ("train.progress=1", "train.progress"),
        ("objective.condition_on=pixels", "objective.condition_on"),
        ("data.sources.1.objective=caption", "data.sources.1.objective"),
        ("objective.condition_dropout=1.0", "objective.condition_dropout"),
        ("objective.instructions=-1", "objective.instructions"),
        ("objective.instructions=109", "objective.instructions"),
        ("train.lr", "train.lr"),
    ],
)
def test_override_errors_name_the_key(tmp_path, override, names):
    with pytest.raises(RecipeError, match=names.replace(".", r"\.")):
        load_recipe(write(tmp_path, BASE), [override])


def test_unknown_key_in_file_names_file_and_key(tmp_path):
    path = write(tmp_path, BASE + "  warmup: 3\n")
    with pytest.raises(RecipeError, match=r"r\.yaml.*train\.warmup"):
        load_recipe(path)


def test_wrong_nested_type():
    with pytest.raises(RecipeError, match=r"data\.sources: expected a list"):
        recipe_from_dict({"data": {"sources": {"kind": "folder"}}})


@pytest.mark.parametrize("name", ["sft.yaml", "reca.yaml", "sft_reca.yaml"])
def test_shipped_recipes_parse(name):
    recipe = load_recipe(RECIPES / name)
    assert recipe.data.sources
    assert recipe.model.builder


def test_instruction_list_is_large_and_unique():
    normalised = {s.lower().strip().rstrip(".?!") for s in RECONSTRUCTION_INSTRUCTIONS}
    assert len(RECONSTRUCTION_INSTRUCTIONS) >= 100
    assert len(normalised) == len(RECONSTRUCTION_INSTRUCTIONS)


def test_instruction_sampling_is_per_example_and_reproducible():
    draws = [sample_instruction(random.Random(f"0:0:{i}")) for i in range(300)]
    assert len(set(draws)) > 80  # many different instructions, not one fixed phrase
    assert draws == [sample_instruction(random.Random(f"0:0:{i}")) for i in range(300)]
