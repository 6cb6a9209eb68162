"""Atypical (shape, colour) splits: which combinations training data shows, and how.

Each shape has one *typical* colour, drawn often. Of the other 45 combinations, three per shape are
held out, one in each of three ways, and the rest are *common*:

- ``rare``: rendered and captioned, but drawn ~100x less often than a common combination;
- ``uncaptioned``: rendered as often as common ones, but a caption never names its colour, so only a
  caption-free objective (RecA reconstruction) can learn that the combination exists;
- ``unrendered``: never in any training image or caption (pure compositional generalisation).

Benchmark items carry the most held-out split among the combinations their prompt names, so scores
can be broken down by split later (e.g. SFT vs RecA on ``uncaptioned``).
"""

from __future__ import annotations

import random

from reca_eval.shapeworld.palette import COLOURS, SHAPES

SPLITS: tuple[str, ...] = ("typical", "common", "rare", "uncaptioned", "unrendered")
NO_COMBO_SPLIT = "none"  # items whose prompt names no colour

TYPICAL_COLOUR: dict[str, str] = {
    "circle": "red",
    "square": "blue",
    "triangle": "yellow",
    "diamond": "green",
    "cross": "purple",
}
HELD_OUT: dict[str, dict[str, str]] = {
    "rare": {"circle": "green", "square": "pink", "triangle": "black", "diamond": "orange", "cross": "white"},
    "uncaptioned": {
        "circle": "blue",
        "square": "brown",
        "triangle": "purple",
        "diamond": "white",
        "cross": "yellow",
    },
    "unrendered": {
        "circle": "purple",
        "square": "yellow",
        "triangle": "green",
        "diamond": "black",
        "cross": "red",
    },
}
# Relative sampling weight of one combination of each split in training scenes.
TRAINING_WEIGHT: dict[str, float] = {
    "typical": 9.0,
    "common": 1.0,
    "rare": 0.01,
    "uncaptioned": 1.0,
    "unrendered": 0.0,
}


def combo_split(shape: str, colour: str) -> str:
    """One of SPLITS for a (shape, colour) combination."""
    if shape not in SHAPES or colour not in COLOURS:
        raise ValueError(f"unknown combination {shape!r}/{colour!r}")
    if TYPICAL_COLOUR[shape] == colour:
        return "typical"
    for split, colours in HELD_OUT.items():
        if colours[shape] == colour:
            return split
    return "common"


def combos_in(split: str) -> list[tuple[str, str]]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
    return [(s, c) for s in SHAPES for c in COLOURS if combo_split(s, c) == split]


def most_held_out(combos: list[tuple[str, str]]) -> str:
    """The item-level split: the most held-out of ``combos`` (NO_COMBO_SPLIT when there are none)."""
    if not combos:
        return NO_COMBO_SPLIT
    return max((combo_split(s, c) for s, c in combos), key=SPLITS.index)


def caption_may_name_colour(shape: str, colour: str) -> bool:
    return combo_split(shape, colour) != "uncaptioned"


def sample_combo(rng: random.Random, weights: dict[str, float] = TRAINING_WEIGHT) -> tuple[str, str]:
    """A (shape, colour) drawn with training-data frequencies (never an ``unrendered`` one by default)."""
    combos = [(s, c) for s in SHAPES for c in COLOURS]
    return rng.choices(combos, weights=[weights[combo_split(s, c)] for s, c in combos])[0]
