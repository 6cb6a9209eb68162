"""Edges of the exact ShapeWorld parser on hand-made images: masks, touching objects of two colours,
images in other modes, and the scene a parse describes."""

from __future__ import annotations

import numpy as np
from PIL import Image

from reca_eval.shapeworld.parse import palette_indices, parse_differences, parse_image, scene_from_parse
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


RGB = {"red": (230, 25, 25), "blue": (30, 70, 230), "grey": (180, 180, 180)}


def canvas(size: int) -> np.ndarray:
    return np.broadcast_to(np.array(RGB["grey"], dtype=np.uint8), (size, size, 3)).copy()


def test_components_below_the_minimum_area_are_noise_counted_by_component_and_pixel():
    # the minimum is 8 px at 64 px, scaled with the image's area: 32 at 128, 2 at 32, 1 at 8
    for size, minimum in ((64, 8), (128, 32), (32, 2), (8, 1)):
        image = canvas(size)
        image[0, :minimum] = RGB["red"]  # an object of exactly the minimum area
        image[size - 1, : minimum - 1] = RGB["blue"]  # one pixel short: noise (none at 8 px)
        parsed = parse_image(image)
        assert [o.area for o in parsed.objects] == [minimum], size
        assert (parsed.noise_components, parsed.noise_pixels) == ((1, minimum - 1) if minimum > 1 else (0, 0))
    image = canvas(64)
    image[0, :3], image[10, :2], image[20, :1] = RGB["red"], RGB["red"], RGB["blue"]
    parsed = parse_image(image)
    assert (parsed.objects, parsed.noise_components, parsed.noise_pixels) == ([], 3, 6)
    kept = parse_image(Image.fromarray(image), min_object_area=1)  # the caller's minimum is used
    assert sorted(o.area for o in kept.objects) == [1, 2, 3]
    assert all(o.mask.dtype == bool and int(o.mask.sum()) == o.area for o in kept.objects)


def test_objects_come_in_reading_order_top_to_bottom_then_left_to_right():
    image = canvas(64)
    image[2:6, 40:60] = RGB["blue"]  # top, far right
    image[10:14, 2:6] = RGB["red"]  # lower, left: its right edge is left of the blue one's
    image[10:14, 20:24] = RGB["blue"]  # same row as the red one, further right
    parsed = parse_image(image)
    assert [(o.colour, o.box[:2]) for o in parsed.objects] == [
        ("blue", (40, 2)),
        ("red", (2, 10)),
        ("blue", (20, 10)),
    ]


def test_an_outline_touching_another_colour_stays_one_object():
    # a red diagonal (8-connected only) touching a blue square: one blob of two colours, split by colour
    image = canvas(64)
    for i in range(12):
        image[20 + i, 20 + i] = RGB["red"]
    image[32:36, 32:36] = RGB["blue"]
    parsed = parse_image(image)
    assert sorted((o.colour, o.area) for o in parsed.objects) == [("blue", 16), ("red", 12)]
    assert parsed.noise_components == 0


def test_an_image_without_background_pixels_has_no_background_and_the_differences_are_worded():
    full = np.broadcast_to(np.array(RGB["red"], dtype=np.uint8), (64, 64, 3)).copy()
    assert parse_image(full).background is None
    image = canvas(64)
    image[0, 0] = RGB["red"]
    assert parse_differences(parse_image(image), Scene("sand", [])) == [
        "background grey != sand",
        "1 noise component(s)",
    ]


def test_palette_indices_are_per_pixel_and_a_parsed_scene_has_seed_0():
    image = canvas(8)
    image[0, 0] = (231, 25, 25)  # off by one from red
    nearest, exact = palette_indices(image)
    assert nearest.shape == exact.shape == (8, 8)
    assert (int(nearest[0, 0]), bool(exact[0, 0]), int(exact.sum())) == (0, False, 63)
    assert scene_from_parse(parse_image(canvas(64))).seed == 0


def test_an_image_reads_as_a_scene_only_when_most_pixels_are_world_colours():
    from reca_eval.shapeworld.parse import MIN_SCENE_FRACTION, READABLE_TOLERANCE

    drawn = render_array(Scene("grey", [at("square", "red", 48, 32, "small")]), 64)
    assert parse_image(drawn).scene and parse_image(drawn).readable_fraction == 1.0
    # Grey with its green channel lowered by the tolerance still reads as grey; one level more is no
    # world colour at all (every other colour is farther).
    near = np.array(RGB["grey"]) - (0, READABLE_TOLERANCE, 0)
    far = np.array(RGB["grey"]) - (0, READABLE_TOLERANCE + 1, 0)
    shifted = drawn.copy()
    shifted[(drawn == RGB["grey"]).all(-1)] = near
    parsed = parse_image(shifted)
    assert (
        parsed.readable_fraction == 1.0 and parsed.exact_pixel_fraction < 0.05 and parsed.background == "grey"
    )
    assert [o.attributes() for o in parsed.objects] == [("square", "red", "small", "solid")]
    # A band of unreadable columns over exactly half the image keeps it a scene; one more column makes
    # it noise: no objects, no background, nothing counted as noise components either.
    assert 64 * MIN_SCENE_FRACTION == 32
    on_threshold = drawn.copy()
    on_threshold[:, :32] = far
    parsed = parse_image(on_threshold)
    assert parsed.readable_fraction == 0.5 and parsed.scene and parsed.background == "grey"
    assert [o.attributes() for o in parsed.objects] == [("square", "red", "small", "solid")]
    below = drawn.copy()
    below[:, :33] = far
    noise = parse_image(below)
    assert noise.readable_fraction == 31 / 64 and not noise.scene
    assert noise.objects == [] and noise.background is None
    assert (noise.noise_components, noise.noise_pixels) == (0, 0)
    assert noise.exact_pixel_fraction == 31 / 64 and (noise.width, noise.height) == (64, 64)


def test_random_noise_is_no_scene_and_scores_nothing():
    rng = np.random.default_rng(0)
    for pixels in (
        rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
        np.asarray(
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).resize((64, 64), Image.BICUBIC)
        ),
    ):
        parsed = parse_image(pixels)
        assert not parsed.scene and parsed.objects == [] and parsed.readable_fraction < 0.5
