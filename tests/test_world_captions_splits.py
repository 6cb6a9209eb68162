"""Captions (dense / sparse / verbose) and the atypical (shape, colour) splits."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from reca_eval.shapeworld.captions import caption
from reca_eval.shapeworld.palette import COLOURS, SHAPES
from reca_eval.shapeworld.scene import Scene, SceneObject, random_scene
from reca_eval.shapeworld.splits import (
    SPLITS,
    TYPICAL_COLOUR,
    combo_split,
    combos_in,
    most_held_out,
    sample_combo,
)


def _mentions(text: str, scene: Scene) -> int:
    words = text.lower().replace(".", " ").replace(",", " ").split()
    return sum(o.colour in words for o in scene.objects) + sum(o.size in words for o in scene.objects)


def test_dense_caption_names_every_attribute_and_relation():
    scene = Scene(
        "grey",
        [
            SceneObject("circle", "orange", "large", "outline", 0.25, 0.5),
            SceneObject("square", "pink", "small", "solid", 0.75, 0.5),
        ],
    )
    text = caption(scene, "dense", hide_uncaptioned=False)
    for word in (
        "circle",
        "orange",
        "large",
        "outlined",
        "square",
        "pink",
        "small",
        "solid",
        "grey",
        "left of",
    ):
        assert word in text, word


def test_captions_are_deterministic_and_modes_differ():
    scene = random_scene(3, n_objects=3)
    for mode in ("dense", "sparse", "verbose"):
        assert caption(scene, mode, seed=9) == caption(scene, mode, seed=9)
    sparse = [caption(scene, "sparse", seed=s) for s in range(30)]
    assert len(set(sparse)) > 3


def test_sparse_and_verbose_captions_miss_detail_but_verbose_is_long():
    dense_hits = sparse_hits = verbose_hits = 0
    verbose_len = dense_len = 0
    for seed in range(60):
        scene = random_scene(seed, n_objects=3)
        dense, sparse, verbose = (
            caption(scene, m, seed=seed, hide_uncaptioned=False) for m in ("dense", "sparse", "verbose")
        )
        dense_hits += _mentions(dense, scene)
        sparse_hits += _mentions(sparse, scene)
        verbose_hits += _mentions(verbose, scene)
        dense_len += len(dense.split())
        verbose_len += len(verbose.split())
    assert dense_hits == 60 * 3 * 2
    assert sparse_hits < 0.7 * dense_hits and verbose_hits < 0.7 * dense_hits
    assert verbose_len > 0.5 * dense_len  # long, though incomplete


def test_uncaptioned_colour_is_never_named_in_training_captions():
    shape, colour = combos_in("uncaptioned")[0]
    scene = Scene("sky", [SceneObject(shape, colour, "medium", "solid", 0.5, 0.5)])
    for mode in ("dense", "sparse", "verbose"):
        for seed in range(20):
            assert colour not in caption(scene, mode, seed=seed)
    assert colour in caption(scene, "dense", hide_uncaptioned=False)


def test_splits_partition_the_combinations():
    counts = Counter(combo_split(s, c) for s in SHAPES for c in COLOURS)
    assert counts == {"typical": 5, "common": 30, "rare": 5, "uncaptioned": 5, "unrendered": 5}
    assert all(combo_split(s, c) == "typical" for s, c in TYPICAL_COLOUR.items())
    assert most_held_out([("circle", TYPICAL_COLOUR["circle"]), combos_in("rare")[0]]) == "rare"
    assert most_held_out([]) == "none"
    with pytest.raises(ValueError, match="unknown combination"):
        combo_split("hexagon", "red")


def test_training_sampler_follows_split_frequencies():
    rng = random.Random(0)
    drawn = Counter(combo_split(*sample_combo(rng)) for _ in range(20000))
    assert drawn["unrendered"] == 0
    assert drawn["rare"] < 0.01 * drawn["uncaptioned"] + 10
    assert drawn["typical"] > drawn["common"] / 30 * 5  # each typical combo far likelier than a common one
    assert set(drawn) <= set(SPLITS)
