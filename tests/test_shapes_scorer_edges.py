"""Edges of the exact ShapeWorld scorers on hand-made scenes: detection order and attributes, an edit that
leaves nothing unchanged, the reference and source renders, and the errors that name the item."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from reca_eval.scorers.shapes import detect_shapes, item_scene, render_reference, render_source, score_edit
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
