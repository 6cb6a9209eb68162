"""ShapeWorld scenes, renderer and exact parser: round trips, confusion matrices, robustness."""

from __future__ import annotations

import random

import numpy as np
import pytest

from reca_eval.shapeworld.palette import BACKGROUNDS, COLOURS, PALETTE_RGB, SHAPES, SIZES, STYLES
from reca_eval.shapeworld.parse import parse_differences, parse_image, scene_from_parse
from reca_eval.shapeworld.render import TEMPLATE_KEYS, object_side, render_array, render_scene, template_stack
from reca_eval.shapeworld.scene import Scene, SceneObject, layout_is_valid, random_scene, scene_from_json


def test_palette_colours_are_far_apart():
    dist = np.sqrt(((PALETTE_RGB[:, None] - PALETTE_RGB[None]) ** 2).sum(-1))
    n_objects = len(COLOURS)
    # Object colours apart from each other and from every background; backgrounds may be close.
    object_rows = dist[:n_objects]
    off_diagonal = object_rows[~np.eye(len(PALETTE_RGB), dtype=bool)[:n_objects]]
    assert off_diagonal.min() > 80


@pytest.mark.parametrize("resolution", [64, 96, 128])
def test_templates_are_pairwise_distinct(resolution):
    for size in SIZES:
        side = object_side(size, resolution)
        stack = template_stack(side, side).reshape(len(TEMPLATE_KEYS), -1).astype(float)
        inter = stack @ stack.T
        area = stack.sum(1)
        iou = inter / (area[:, None] + area[None] - inter)
        np.fill_diagonal(iou, 0)
        assert iou.max() < 0.85, (resolution, size)


def test_scene_is_reproducible_and_json_round_trips():
    a, b = random_scene(123), random_scene(123)
    assert a == b
    assert random_scene(124) != a
    assert scene_from_json(a.to_json()) == a
    assert np.array_equal(render_array(a), render_array(scene_from_json(a.to_json())))


def test_bad_scene_json_names_the_key():
    good = random_scene(1).to_json()
    bad = dict(good, objects=[dict(good["objects"][0], colour="teal")])
    with pytest.raises(ValueError, match=r"items.jsonl:3: objects\[0\]: colour 'teal'"):
        scene_from_json(bad, "items.jsonl:3")
    with pytest.raises(ValueError, match="unknown background"):
        scene_from_json(dict(good, background="white"))


@pytest.mark.parametrize("resolution", [64, 128])
def test_render_parse_round_trip_is_exact(resolution):
    for seed in range(150):
        scene = random_scene(seed)
        parsed = parse_image(render_scene(scene, resolution))
        assert parse_differences(parsed, scene) == [], seed
        assert all(o.confidence == 1.0 for o in parsed.objects)
        assert parsed.exact_pixel_fraction == 1.0
        rebuilt = scene_from_parse(parsed)
        assert sorted(o.attributes() for o in rebuilt.objects) == sorted(
            o.attributes() for o in scene.objects
        )


def test_parse_detects_a_changed_attribute():
    scene = random_scene(5, n_objects=2)
    obj = scene.objects[0]
    for field, value in [
        ("colour", "white" if obj.colour != "white" else "black"),
        ("style", "solid" if obj.style == "outline" else "outline"),
    ]:
        changed = Scene(
            scene.background, [SceneObject(**{**obj.__dict__, field: value})] + scene.objects[1:], scene.seed
        )
        assert parse_differences(parse_image(render_scene(changed)), scene), field


def test_confusion_matrices_are_diagonal_on_jittered_renders():
    """Every shape x style x colour x size on random backgrounds/positions: parse names it exactly."""
    rng = random.Random(0)
    shape_confusion = np.zeros((len(SHAPES), len(SHAPES)), dtype=int)
    colour_confusion = np.zeros((len(COLOURS), len(COLOURS)), dtype=int)
    colours = list(COLOURS)
    count = 0
    for shape in SHAPES:
        for colour in colours:
            for style in STYLES:
                for size in SIZES:
                    obj = SceneObject(shape, colour, size, style, 0.5, 0.5)
                    x, y = rng.uniform(0.25, 0.75), rng.uniform(0.25, 0.75)
                    obj = SceneObject(shape, colour, size, style, round(x, 4), round(y, 4))
                    assert layout_is_valid([obj])
                    scene = Scene(rng.choice(list(BACKGROUNDS)), [obj])
                    parsed = parse_image(render_scene(scene, rng.choice([64, 80, 128])))
                    assert len(parsed.objects) == 1
                    got = parsed.objects[0]
                    shape_confusion[SHAPES.index(shape), SHAPES.index(got.shape)] += 1
                    colour_confusion[colours.index(colour), colours.index(got.colour)] += 1
                    assert (got.size, got.style) == (size, style)
                    count += 1
    assert count == 300
    assert np.array_equal(shape_confusion, np.diag(np.diag(shape_confusion)))
    assert np.array_equal(colour_confusion, np.diag(np.diag(colour_confusion)))


def test_parser_tolerates_colour_noise_and_counts_specks():
    scene = random_scene(11, n_objects=3)
    rgb = render_array(scene).astype(int)
    noise = np.random.default_rng(0).integers(-20, 21, size=rgb.shape)
    noisy = np.clip(rgb + noise, 0, 255).astype(np.uint8)
    noisy[0, 0] = COLOURS["red"]  # a two-pixel speck in a corner
    noisy[0, 1] = COLOURS["red"]
    parsed = parse_image(noisy)
    assert sorted(o.attributes() for o in parsed.objects) == sorted(o.attributes() for o in scene.objects)
    assert parsed.noise_components == 1 and parsed.noise_pixels == 2
    assert parsed.exact_pixel_fraction < 0.2


def test_parse_rejects_non_rgb_array():
    with pytest.raises(ValueError, match="RGB array"):
        parse_image(np.zeros((8, 8), dtype=np.uint8))
