"""Edges of the exact ShapeWorld scorers on hand-made scenes: detection order and attributes, an edit that
leaves nothing unchanged, the reference and source renders, and the errors that name the item."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from reca_eval.scorers.shapes import (
    ANSWER_MIN_CONFIDENCE,
    QUALITY_MIN_CONFIDENCE,
    answer_question,
    detect_shapes,
    item_scene,
    render_reference,
    render_source,
    score_edit,
)
from reca_eval.shapeworld.parse import ParsedImage, ParsedObject, parse_image
from reca_eval.shapeworld.render import render_array, render_scene
from reca_eval.shapeworld.scene import Scene, SceneObject


def obj(
    shape: str, colour: str, x: float, y: float, size: str = "medium", style: str = "solid"
) -> SceneObject:
    return SceneObject(shape, colour, size, style, x, y)


def test_detections_are_grouped_by_shape_most_confident_first_with_their_attributes():
    scene = Scene("grey", [obj("circle", "red", 0.25, 0.25), obj("circle", "blue", 0.7, 0.7, size="large")])
    rgb = render_array(scene, 64).copy()
    # Punch background-coloured holes into the red circle: it parses with a lower template IoU.
    red = np.all(rgb == rgb[16, 16], axis=-1)
    ys, xs = np.nonzero(red)
    rgb[ys[::3], xs[::3]] = rgb[0, 0]
    detections = detect_shapes(Image.fromarray(rgb))
    assert list(detections) == ["circle"]
    blue, red_det = detections["circle"]
    assert blue.score == 1.0 and red_det.score < 1.0
    assert blue.attributes == {"colour": "blue", "style": "solid", "size": "large"}
    assert red_det.attributes["colour"] == "red"


def test_an_edit_that_changes_every_object_and_the_background_preserves_everything_there_is():
    source = Scene("grey", [obj("square", "red", 0.3, 0.3)])
    target = Scene("sky", [obj("square", "green", 0.3, 0.3)])
    result = score_edit(source, target, render_scene(target, 64))
    assert result == {"success": 1, "preservation": 1.0, "quality": 1.0, "reason": ""}


def test_references_and_sources_are_the_item_scenes_rendered():
    source = Scene("mint", [obj("diamond", "yellow", 0.4, 0.6)])
    target = Scene("mint", [obj("diamond", "purple", 0.4, 0.6)])
    item = {"item_id": "e1", "source_scene": source.to_json(), "target_scene": target.to_json()}
    assert np.array_equal(np.asarray(render_source(item, 64)), render_array(source, 64))
    assert np.array_equal(np.asarray(render_reference(item, 0, 64)), render_array(target, 64))
    assert np.array_equal(np.asarray(render_reference(item, 3, 64)), render_array(target, 64))
    with pytest.raises(ValueError, match="sample index must be >= 0, got -1"):
        render_reference(item, -1)


def test_item_errors_name_the_item_and_the_key():
    with pytest.raises(ValueError, match="item 'e7' has no reference_scene or target_scene"):
        item_scene({"item_id": "e7"})
    with pytest.raises(ValueError, match="item 'e7': target_scene: missing key 'background'"):
        item_scene({"item_id": "e7", "target_scene": {"objects": []}})
    with pytest.raises(ValueError, match="item 'a prompt': reference_scene: missing key 'objects'"):
        item_scene({"prompt": "a prompt", "reference_scene": {"background": "grey"}})
    with pytest.raises(ValueError, match="item 'e7': source_scene: missing key 'background'"):
        render_source({"item_id": "e7", "source_scene": {"objects": []}})


def one_object_parse(confidence: float, shape: str = "circle", colour: str = "red") -> ParsedImage:
    """A parse holding one object of the given template confidence (as a model's blurry output gives)."""
    mask = np.zeros((64, 64), dtype=bool)
    mask[10:20, 10:20] = True
    parsed_obj = ParsedObject(shape, colour, "medium", "solid", (10, 10, 20, 20), confidence, 100, mask)
    return ParsedImage([parsed_obj], "grey", 64, 64, 1.0, 0, 0)


def test_confidence_thresholds_are_inclusive():
    row = {"item_id": "i1", "proposition_id": 1, "tuple": "entity - whole (circle)"}
    assert answer_question(one_object_parse(ANSWER_MIN_CONFIDENCE), row) == "yes"
    assert answer_question(one_object_parse(ANSWER_MIN_CONFIDENCE - 0.01), row) == "no"
    scene = Scene("grey", [obj("circle", "red", 0.25, 0.25)])
    at_threshold = score_edit(scene, scene, one_object_parse(QUALITY_MIN_CONFIDENCE))
    assert at_threshold["quality"] == 1.0  # exact pixels and the one component clean enough
    assert score_edit(scene, scene, one_object_parse(0.5))["quality"] == 0.5


def test_questions_are_answered_only_in_their_own_form():
    parsed = one_object_parse(1.0)
    for text in ("attribute - color (circle, red, extra)", "entity - whole (circle, ==1)"):
        with pytest.raises(ValueError) as refused:
            answer_question(parsed, {"item_id": "i1", "proposition_id": 3, "tuple": text})
        assert str(refused.value) == f"item 'i1' proposition 3: cannot answer tuple {text!r}"
    with pytest.raises(ValueError) as malformed:
        answer_question(parsed, {"item_id": "i1", "proposition_id": 3, "tuple": "no parentheses"})
    assert str(malformed.value) == (
        "item 'i1' proposition 3: tuple 'no parentheses' is not of the form 'broad - detailed (arg, ...)'"
    )


def test_detections_of_a_parse_keep_its_masks():
    image = render_scene(Scene("grey", [obj("circle", "red", 0.3, 0.3)]), 64)
    parsed = parse_image(image)
    from_parse, from_image = detect_shapes(parsed), detect_shapes(image)
    assert [d.box for d in from_parse["circle"]] == [d.box for d in from_image["circle"]]
    assert np.array_equal(from_parse["circle"][0].mask, parsed.objects[0].mask)


def test_edit_quality_counts_off_palette_pixels_and_noise_components():
    scene = Scene("grey", [obj("square", "blue", 0.3, 0.3)])
    rgb = render_array(scene, 64).copy()
    rgb[60, 60] = (231, 25, 25)  # one pixel off red: inexact, and a one-pixel noise component
    result = score_edit(scene, scene, Image.fromarray(rgb))
    assert result["quality"] == pytest.approx(0.5 * 4095 / 4096 + 0.5 * 1 / 2)


def test_edit_reasons_are_worded_and_joined():
    red, blue = obj("circle", "red", 0.25, 0.25), obj("square", "blue", 0.75, 0.75)
    source = Scene("grey", [red, blue])
    target = Scene("grey", [obj("triangle", "green", 0.5, 0.5, size="small")])
    result = score_edit(source, target, render_scene(source, 64))  # nothing edited
    assert result["reason"] == (
        "still present circle red medium solid; still present square blue medium solid; "
        "missing triangle green small solid"
    )
    kept = Scene("grey", [red, blue, obj("triangle", "green", 0.5, 0.8, size="small")])
    blank = score_edit(kept, Scene("grey", [red, blue]), render_scene(Scene("grey", []), 64))
    assert blank["reason"] == "none of the unchanged objects kept"
    with pytest.raises(ValueError) as wide:
        score_edit(source, source, Image.new("RGB", (64, 32)))
    assert str(wide.value) == "edit output is 64x32; ShapeWorld images are square"
    for bad, name in (((source.to_json() | {"background": "x"}), "source_scene"),):
        with pytest.raises(ValueError, match=f"^{name}: unknown background 'x'"):
            score_edit(bad, source, render_scene(source, 64))
    with pytest.raises(ValueError, match="^target_scene: unknown background 'x'"):
        score_edit(source, source.to_json() | {"background": "x"}, render_scene(source, 64))


def test_an_unchanged_object_two_pixels_off_at_64_is_not_preserved():
    still = obj("square", "red", 0.5, 0.5)
    source = Scene("grey", [still, obj("circle", "blue", 0.2, 0.2)])
    target = Scene("grey", [still])
    rgb = render_array(target, 64)
    for shift, preserved in ((1, 1.0), (2, 0.5)):  # the object and the background
        moved = np.roll(rgb, shift, axis=1)
        assert score_edit(source, target, Image.fromarray(moved))["preservation"] == preserved, shift


def test_items_without_an_id_are_named_by_their_prompt_or_a_question_mark():
    with pytest.raises(ValueError) as no_scene:
        item_scene({"prompt": "a prompt"})
    assert str(no_scene.value) == "item 'a prompt' has no reference_scene or target_scene"
    with pytest.raises(ValueError) as nothing:
        item_scene({})
    assert str(nothing.value) == "item '?' has no reference_scene or target_scene"
    with pytest.raises(ValueError, match=r"^item '\?': target_scene: missing key 'background'"):
        item_scene({"target_scene": {"objects": []}})
    item = {
        "item_id": "e1",
        "source_scene": Scene("grey", []).to_json(),
        "target_scene": Scene("sky", []).to_json(),
    }
    assert render_reference(item, resolution=32).size == render_source(item, resolution=32).size == (32, 32)


def test_smoothed_noise_detects_nothing_and_answers_no_though_its_blobs_once_passed():
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).resize((64, 64), Image.BICUBIC)
    assert detect_shapes(noise) == {}
    parsed = parse_image(noise)
    for shape in ("circle", "square", "triangle"):
        row = {"item_id": "n", "proposition_id": 1, "tuple": f"entity - whole ({shape})"}
        assert answer_question(parsed, row) == "no"
    # Read pixel by pixel as the nearest colours, the same image is dozens of blobs of every shape.
    from reca_eval.shapeworld import parse as parser

    blobs = parser.parse_array(np.asarray(noise), min_object_area=None)
    assert blobs.objects == []
    original = parser.MIN_SCENE_FRACTION
    try:
        parser.MIN_SCENE_FRACTION = 0.0
        assert len({o.shape for o in parser.parse_array(np.asarray(noise)).objects}) >= 3
    finally:
        parser.MIN_SCENE_FRACTION = original
