"""Edges of the exact ShapeWorld parser on hand-made images: masks, touching objects of two colours,
images in other modes, and the scene a parse describes."""

from __future__ import annotations

import numpy as np
from PIL import Image

from reca_eval.shapeworld.parse import parse_image, scene_from_parse
from reca_eval.shapeworld.render import object_box, render_array, render_scene
from reca_eval.shapeworld.scene import Scene, SceneObject


def at(shape: str, colour: str, cx: int, cy: int, size: str = "small", style: str = "solid") -> SceneObject:
    """An object centred on pixel (cx, cy) of a 64 px image."""
    return SceneObject(shape, colour, size, style, (cx + 0.5) / 64, (cy + 0.5) / 64)


def test_each_object_mask_is_exactly_its_pixels():
    scene = Scene("sand", [at("circle", "red", 16, 16), at("triangle", "blue", 44, 40, size="medium")])
    rgb = render_array(scene, 64)
    parsed = parse_image(rgb)
    assert len(parsed.objects) == 2
    for obj in parsed.objects:
        colour = np.array({"red": (230, 25, 25), "blue": (30, 70, 230)}[obj.colour])
        assert np.array_equal(obj.mask, np.all(rgb == colour, axis=-1)), obj.colour
        assert obj.area == int(obj.mask.sum()) and obj.confidence == 1.0


def test_touching_objects_of_two_colours_are_two_objects():
    # Boxes (15..26) and (26..37): the squares share an edge, one 8-connected blob of two colours.
    red, blue = at("square", "red", 20, 30), at("square", "blue", 31, 30)
    assert object_box(red, 64)[2] == object_box(blue, 64)[0]
    parsed = parse_image(render_scene(Scene("grey", [red, blue]), 64))
    found = sorted((o.colour, o.shape, o.box) for o in parsed.objects)
    assert found == [("blue", "square", object_box(blue, 64)), ("red", "square", object_box(red, 64))]
    assert parsed.noise_components == 0


def test_images_in_other_modes_parse_as_their_rgb():
    scene = Scene("mint", [at("diamond", "yellow", 30, 30, size="medium")])
    image = render_scene(scene, 64)
    expected = [(o.attributes(), o.box) for o in parse_image(image).objects]
    for mode in ("RGBA", "P"):
        assert [(o.attributes(), o.box) for o in parse_image(image.convert(mode)).objects] == expected, mode


def test_the_scene_a_parse_describes_is_the_scene_drawn():
    scene = Scene("sky", [at("cross", "green", 20, 44), at("square", "pink", 46, 18, style="outline")])
    back = scene_from_parse(parse_image(render_scene(scene, 64)), seed=7)
    assert back.background == "sky" and back.seed == 7
    # positions are the box centres, to 4 decimals
    rounded = [SceneObject(*o.attributes(), round(o.x, 4), round(o.y, 4)) for o in scene.objects]
    assert sorted(back.objects, key=lambda o: o.x) == sorted(rounded, key=lambda o: o.x)
    # An image without a background tone falls back to grey.
    assert scene_from_parse(parse_image(Image.new("RGB", (32, 32), (230, 25, 25)))).background == "grey"


def test_objects_group_by_shape_in_parse_order():
    scene = Scene(
        "grey", [at("circle", "red", 12, 12), at("square", "blue", 40, 12), at("circle", "green", 12, 44)]
    )
    parsed = parse_image(render_scene(scene, 64))
    groups = parsed.by_shape()
    assert sorted(groups) == ["circle", "square"]
    assert (
        groups["circle"] == [o for o in parsed.objects if o.shape == "circle"] and len(groups["circle"]) == 2
    )
    assert [o.colour for o in groups["square"]] == ["blue"]
