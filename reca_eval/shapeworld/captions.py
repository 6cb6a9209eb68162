"""Captions of ShapeWorld scenes: dense (every proposition), sparse, and verbose-but-sparse.

The RecA paper's point is that captions miss detail an image has. Here that is controlled:

- ``dense``: every object's size, colour, style and shape, every clear pairwise relation and the
  background;
- ``sparse``: the shapes always, each other attribute with its own probability (SparseRates);
- ``verbose``: the sparse content padded with content-free sentences, long but just as incomplete.

With ``hide_uncaptioned`` (the default, for training captions) an object whose (shape, colour) is in
the ``uncaptioned`` split never has its colour named. Benchmark prompts pass ``hide_uncaptioned=False``.
Every caption is a function of (scene, mode, seed).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from reca_eval.shapeworld.palette import NUMBER_WORDS
from reca_eval.shapeworld.scene import Scene, SceneObject, clear_relation, scene_from_json
from reca_eval.shapeworld.splits import caption_may_name_colour

MODES = ("dense", "sparse", "verbose")
STYLE_WORDS = {"solid": "solid", "outline": "outlined"}
FILLER_SENTENCES = (
    "The picture has a calm, minimal look.",
    "Everything is drawn with crisp, flat edges and no shading.",
    "The composition is simple and uncluttered.",
    "There is plenty of empty space around the figures.",
    "It looks like an illustration from a geometry workbook.",
    "Nothing else appears in the frame.",
    "The lighting is even, without shadows or highlights.",
    "The overall impression is tidy and deliberate.",
)


@dataclass(frozen=True)
class SparseRates:
    """Probability that a sparse caption names each kind of detail."""

    size: float = 0.3
    colour: float = 0.5
    style: float = 0.3
    relation: float = 0.2
    background: float = 0.2


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def noun_phrase(obj: SceneObject, size: bool, colour: bool, style: bool) -> str:
    words = ([obj.size] if size else []) + ([obj.colour] if colour else [])
    words += [STYLE_WORDS[obj.style]] if style else []
    return " ".join(words + [obj.shape])


def _with_article(phrase: str) -> str:
    return f"{article(phrase)} {phrase}"


def _shape_count_word(n: int) -> str:
    return NUMBER_WORDS.get(n, str(n))


def caption(
    scene: Scene | dict,
    mode: str = "dense",
    seed: int = 0,
    rates: SparseRates = SparseRates(),
    hide_uncaptioned: bool = True,
    verbose_sentences: int = 4,
) -> str:
    scene = scene_from_json(scene)
    if mode not in MODES:
        raise ValueError(f"unknown caption mode {mode!r} (known: {', '.join(MODES)})")
    rng = random.Random(seed * 7919 + MODES.index(mode))
    dense = mode == "dense"

    def keep(p: float) -> bool:
        return dense or rng.random() < p

    objects = scene.objects
    # The same attribute choices are used for an object's mention and for references to it.
    phrases = []
    for obj in objects:
        show_colour = keep(rates.colour) and (not hide_uncaptioned or caption_may_name_colour(*obj.combo))
        phrases.append(noun_phrase(obj, keep(rates.size), show_colour, keep(rates.style)))
    count = len(objects)
    if count == 0:
        sentences = ["An empty canvas."]
    else:
        listed = [_with_article(p) for p in phrases]
        items = listed[0] if count == 1 else ", ".join(listed[:-1]) + " and " + listed[-1]
        noun = "shape" if count == 1 else "shapes"
        sentences = [f"{_shape_count_word(count).capitalize()} {noun}: {items}."]
    if keep(rates.background):
        sentences.append(f"The background is {scene.background}.")
    unique_phrases = {p for p in phrases if phrases.count(p) == 1}
    for i in range(count):
        for j in range(i + 1, count):
            relation = clear_relation(objects[i], objects[j])
            # Ambiguous references ("the circle" with two circles) would make a false statement.
            if (
                relation
                and phrases[i] in unique_phrases
                and phrases[j] in unique_phrases
                and keep(rates.relation)
            ):
                sentences.append(f"The {phrases[i]} is {relation} the {phrases[j]}.")
    if mode == "verbose":
        sentences += rng.sample(FILLER_SENTENCES, k=min(verbose_sentences, len(FILLER_SENTENCES)))
    return " ".join(sentences)
