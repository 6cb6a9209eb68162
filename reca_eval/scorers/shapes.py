"""Exact scorers for the ShapeWorld benchmarks, built on the world's parser.

- GenEval-style (shapes-geneval): :func:`detect_shapes` gives the detector output the GenEval protocol
  expects, :func:`colour_of_image` its colour classifier (the parser knows colours exactly);
- DPG-style (shapes-dpg): :func:`parse_image` once per image, then :func:`answer_question` per row;
- edits (shapes-edit): :func:`score_edit` gives success, preservation and quality per image;
- :func:`render_reference` draws a perfect answer for any item, for reference folders and self-tests.
"""

from __future__ import annotations

import math
from typing import Any

from PIL import Image

from reca_eval.core.detections import Detection, relative_position
from reca_eval.shapeworld.parse import ParsedImage, ParsedObject, parse_image
from reca_eval.shapeworld.questions import parse_tuple
from reca_eval.shapeworld.render import DEFAULT_RESOLUTION, object_box, render_scene
from reca_eval.shapeworld.scene import Scene, SceneObject, clear_relation, scene_from_json

SCORER_NAME = "shapeworld-exact-parser"
# 2: the edit scorer's move/add and no-edit rules; 3: an image is a scene only when most of its pixels
# read as world colours (reca_eval.shapeworld.parse.MIN_SCENE_FRACTION)
SCORER_VERSION = "3"
# A component must match a template this well to count as an object when answering questions.
ANSWER_MIN_CONFIDENCE = 0.5
# Components below this template IoU make an edit output less "clean" (clean renders give 1.0).
QUALITY_MIN_CONFIDENCE = 0.9

__all__ = [
    "answer_question",
    "colour_of_image",
    "detect_shapes",
    "parse_image",
    "render_reference",
    "score_edit",
    "to_detection",
]


def to_detection(obj: ParsedObject) -> Detection:
    return Detection(
        box=tuple(float(v) for v in obj.box),
        score=obj.confidence,
        mask=obj.mask,
        attributes={"colour": obj.colour, "style": obj.style, "size": obj.size},
    )


def detect_shapes(image: Image.Image | ParsedImage) -> dict[str, list[Detection]]:
    """Detections grouped by shape name, most confident first (accepts an already parsed image)."""
    parsed = image if isinstance(image, ParsedImage) else parse_image(image)
    grouped: dict[str, list[Detection]] = {}
    for obj in sorted(parsed.objects, key=lambda o: -o.confidence):
        grouped.setdefault(obj.shape, []).append(to_detection(obj))
    return grouped


def colour_of_image(image: Image.Image | None, classname: str, detections: list[Detection]) -> list[str]:
    """Colour names of ``detections``, read from the parser's attributes (``image`` is not needed)."""
    colours = []
    for det in detections:
        if "colour" not in det.attributes:
            raise ValueError(
                f"{classname} detection at {det.box} has no 'colour' attribute: not from detect_shapes"
            )
        colours.append(det.attributes["colour"])
    return colours


# --------------------------------------------------------------------------------------------------
# DPG-style questions


def answer_question(parsed: ParsedImage, question_row: dict[str, Any]) -> str:
    """Answer one shapes-dpg question row ("yes"/"no") from the image's parse, exactly."""
    where = f"item {question_row.get('item_id')!r} proposition {question_row.get('proposition_id')!r}"
    try:
        broad, detailed, args = parse_tuple(str(question_row["tuple"]))
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from exc
    objects = [o for o in parsed.objects if o.confidence >= ANSWER_MIN_CONFIDENCE]

    def of_shape(shape: str) -> list[ParsedObject]:
        return [o for o in objects if o.shape == shape]

    kind = (broad, detailed)
    if kind == ("entity", "whole") and len(args) == 1:
        answer = bool(of_shape(args[0]))
    elif kind == ("attribute", "color") and len(args) == 2:
        answer = any(o.colour == args[1] for o in of_shape(args[0]))
    elif kind == ("attribute", "size") and len(args) == 2:
        answer = any(o.size == args[1] for o in of_shape(args[0]))
    elif kind == ("attribute", "style") and len(args) == 2:
        answer = any(o.style == args[1] for o in of_shape(args[0]))
    elif kind == ("relation", "spatial") and len(args) == 3:
        answer = any(
            args[2] in relative_position(to_detection(a), to_detection(b))
            for a in of_shape(args[0])
            for b in of_shape(args[1])
        )
    elif kind == ("other", "count") and len(args) == 2 and args[1].startswith("=="):
        answer = len(objects) == int(args[1][2:])
    elif kind == ("global", "background") and len(args) == 1:
        answer = parsed.background == args[0]
    else:
        raise ValueError(f"{where}: cannot answer tuple {question_row['tuple']!r}")
    return "yes" if answer else "no"


# --------------------------------------------------------------------------------------------------
# Edits


def _centre(box: tuple[float, float, float, float]) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def _same_place(obj: ParsedObject, expected_box: tuple[int, int, int, int], tolerance: float) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(obj.box, expected_box, strict=True))


def _take_unchanged(
    unchanged: list[SceneObject], pool: list[ParsedObject], resolution: int, tolerance: float
) -> dict[int, ParsedObject]:
    """Unchanged scene object index -> the parsed object that preserves it (same attributes, same box)."""
    found: dict[int, ParsedObject] = {}
    for i, obj in enumerate(unchanged):
        box = object_box(obj, resolution)
        candidates = [
            p for p in pool if p.attributes() == obj.attributes() and _same_place(p, box, tolerance)
        ]
        if candidates:
            best = min(candidates, key=lambda p: math.dist(_centre(p.box), _centre(box)))
            found[i] = best
            pool.remove(best)
    return found


def _multiset_difference(a: list[SceneObject], b: list[SceneObject]) -> list[SceneObject]:
    rest = list(b)
    out = []
    for obj in a:
        if obj in rest:
            rest.remove(obj)
        else:
            out.append(obj)
    return out


def score_edit(
    source_scene: Scene | dict, target_scene: Scene | dict, output_image: Image.Image | ParsedImage
) -> dict[str, Any]:
    """Exact scores of one edit output (an image, or its parse when one output is scored against several
    targets, as a counterfactual twin's instruction).

    - ``success`` (0/1): every object the edit removes or changes is gone from its old place (same
      attributes within the position tolerance); every object it adds or changes is present with its
      attributes, not at an old place of a removed one, and either at its target place or in each clear
      relation the target scene gives it to an unchanged object, with that object preserved in the
      output (a missing reference fails the relation); a requested background is present; and at
      least one unchanged object (if the edit leaves any) is kept.
    - ``preservation`` (0..1): fraction of the objects the edit leaves alone (plus the background when
      it is not edited) found with the same attributes and box (each edge within ``max(1, res/64)`` px).
    - ``quality`` (0..1): mean of the fraction of pixels that are exact palette/background colours and
      the fraction of components that parse with confidence >= QUALITY_MIN_CONFIDENCE (noise blobs
      count as failing components).
    """
    source = scene_from_json(source_scene, "source_scene")
    target = scene_from_json(target_scene, "target_scene")
    parsed = output_image if isinstance(output_image, ParsedImage) else parse_image(output_image)
    if parsed.width != parsed.height:
        raise ValueError(f"edit output is {parsed.width}x{parsed.height}; ShapeWorld images are square")
    resolution = parsed.width
    tolerance = max(1.0, resolution / 64)
    unchanged = _multiset_difference(source.objects, _multiset_difference(source.objects, target.objects))
    added = _multiset_difference(target.objects, source.objects)
    removed = _multiset_difference(source.objects, target.objects)

    pool = [o for o in parsed.objects]
    preserved = _take_unchanged(unchanged, pool, resolution, tolerance)
    background_edited = source.background != target.background
    units = len(unchanged) + (0 if background_edited else 1)
    kept = len(preserved) + (0 if background_edited or parsed.background != source.background else 1)
    preservation = kept / units if units else 1.0

    reasons: list[str] = []
    # What the edit takes away is checked first, on everything not already claimed as preserved: an
    # object still at its old place is "left behind" and cannot also serve as the moved/added one.
    left_behind: list[ParsedObject] = []
    for obj in removed:
        box = object_box(obj, resolution)
        stayed = [p for p in pool if p.attributes() == obj.attributes() and _same_place(p, box, tolerance)]
        if stayed:
            reasons.append(f"still present {' '.join(obj.attributes())}")
            left_behind.extend(stayed)
    pool = [p for p in pool if all(p is not q for q in left_behind)]
    for obj in added:
        ok = None
        target_box = object_box(obj, resolution)
        for cand in (p for p in pool if p.attributes() == obj.attributes()):
            # At the target scene's own place, the place is right. Elsewhere, every clear relation the
            # target scene gives the object to an unchanged one must hold, and a reference missing from
            # the output fails it (the place cannot be checked against nothing).
            relations_hold = _same_place(cand, target_box, tolerance) or all(
                i in preserved
                and relation in relative_position(to_detection(cand), to_detection(preserved[i]))
                for i, keep in enumerate(unchanged)
                if (relation := clear_relation(obj, keep))
            )
            if relations_hold:
                ok = cand
                break
        if ok is None:
            reasons.append(f"missing {' '.join(obj.attributes())}")
        else:
            pool.remove(ok)
    if background_edited and parsed.background != target.background:
        reasons.append(f"background {parsed.background}, wanted {target.background}")
    if unchanged and not preserved:
        # An output that keeps none of the objects the edit leaves alone is not an edit of this image
        # (a blank canvas would otherwise pass every "remove").
        reasons.append("none of the unchanged objects kept")

    components = len(parsed.objects) + parsed.noise_components
    confident = sum(o.confidence >= QUALITY_MIN_CONFIDENCE for o in parsed.objects)
    component_term = confident / components if components else 1.0
    quality = 0.5 * parsed.exact_pixel_fraction + 0.5 * component_term
    return {
        "success": 0 if reasons else 1,
        "preservation": float(preservation),
        "quality": float(quality),
        "reason": "; ".join(reasons),
    }


# --------------------------------------------------------------------------------------------------
# References


def item_scene(item: dict[str, Any]) -> Scene:
    """The scene a perfect answer to ``item`` shows (any of the three benchmarks' item kinds)."""
    for key in ("target_scene", "reference_scene"):
        if key in item:
            return scene_from_json(item[key], f"item {item.get('item_id', item.get('prompt', '?'))!r}: {key}")
    raise ValueError(
        f"item {item.get('item_id', item.get('prompt', '?'))!r} has no reference_scene or target_scene"
    )


def render_reference(item: dict[str, Any], k: int = 0, resolution: int = DEFAULT_RESOLUTION) -> Image.Image:
    """Reference image number ``k`` for an item: its scene rendered exactly (identical for every k,
    since any variation that is harmless for one benchmark, like the background, is scored by another)."""
    if k < 0:
        raise ValueError(f"sample index must be >= 0, got {k}")
    return render_scene(item_scene(item), resolution)


def render_source(item: dict[str, Any], resolution: int = DEFAULT_RESOLUTION) -> Image.Image:
    """The input image of a shapes-edit item."""
    return render_scene(
        scene_from_json(item["source_scene"], f"item {item.get('item_id')!r}: source_scene"), resolution
    )
