"""DPG-Bench-style question graphs for ShapeWorld scenes whose shapes are all different.

One row per proposition, in DPG-Bench's CSV columns. Because every shape occurs once, the shape name
is an unambiguous entity name. The ``tuple`` column is machine-readable (the scorer answers from it):

- ``entity - whole (circle)``                     Is there a circle?             (root)
- ``attribute - color (circle, red)``             Is the circle red?             (child of the entity)
- ``attribute - size (circle, large)``            Is the circle large?
- ``attribute - style (circle, outline)``         Is the circle drawn as an outline?
- ``relation - spatial (circle, square, left of)`` Is the circle left of the square? (child of both)
- ``other - count (shapes, ==3)``                 Are there exactly three shapes? (root)
- ``global - background (grey)``                  Is the background grey?        (root)
"""

from __future__ import annotations

import re
from typing import Any

from reca_eval.shapeworld.palette import NUMBER_WORDS
from reca_eval.shapeworld.scene import Scene, clear_relation, scene_from_json

TUPLE_PATTERN = re.compile(r"^\s*(\w+)\s*-\s*(\w+)\s*\((.*)\)\s*$")
STYLE_QUESTION = {
    "solid": "Is the {shape} solid (filled in)?",
    "outline": "Is the {shape} drawn as an outline?",
}


def parse_tuple(text: str) -> tuple[str, str, list[str]]:
    """``"attribute - color (circle, red)"`` -> ("attribute", "color", ["circle", "red"])."""
    match = TUPLE_PATTERN.match(text)
    if not match:
        raise ValueError(f"tuple {text!r} is not of the form 'broad - detailed (arg, ...)'")
    broad, detailed, args = match.groups()
    return broad, detailed, [a.strip() for a in args.split(",")]


def scene_questions(scene: Scene | dict, item_id: str, text: str) -> list[dict[str, Any]]:
    scene = scene_from_json(scene)
    shapes = [o.shape for o in scene.objects]
    if len(set(shapes)) != len(shapes):
        raise ValueError(f"item {item_id}: DPG-style questions need distinct shapes, got {shapes}")
    rows: list[dict[str, Any]] = []

    def add(keywords: str, dependency: str, broad: str, detailed: str, args: list[str], question: str) -> int:
        rows.append(
            {
                "item_id": item_id,
                "text": text,
                "keywords": keywords,
                "proposition_id": len(rows) + 1,
                "dependency": dependency,
                "category_broad": broad,
                "category_detailed": detailed,
                "tuple": f"{broad} - {detailed} ({', '.join(args)})",
                "question_natural_language": question,
            }
        )
        return len(rows)

    entity_id = {}
    for obj in scene.objects:
        entity_id[obj.shape] = add(obj.shape, "0", "entity", "whole", [obj.shape], f"Is there a {obj.shape}?")
    for obj in scene.objects:
        parent = str(entity_id[obj.shape])
        add(
            f"{obj.shape},{obj.colour}",
            parent,
            "attribute",
            "color",
            [obj.shape, obj.colour],
            f"Is the {obj.shape} {obj.colour}?",
        )
        add(
            f"{obj.shape},{obj.size}",
            parent,
            "attribute",
            "size",
            [obj.shape, obj.size],
            f"Is the {obj.shape} {obj.size}?",
        )
        add(
            f"{obj.shape},{obj.style}",
            parent,
            "attribute",
            "style",
            [obj.shape, obj.style],
            STYLE_QUESTION[obj.style].format(shape=obj.shape),
        )
    objects = scene.objects
    for i, a in enumerate(objects):
        for b in objects[i + 1 :]:
            relation = clear_relation(a, b)
            if relation:
                add(
                    f"{a.shape},{b.shape}",
                    f"{entity_id[a.shape]},{entity_id[b.shape]}",
                    "relation",
                    "spatial",
                    [a.shape, b.shape, relation],
                    f"Is the {a.shape} {relation} the {b.shape}?",
                )
    count = len(objects)
    add(
        "shapes",
        "0",
        "other",
        "count",
        ["shapes", f"=={count}"],
        f"Are there exactly {NUMBER_WORDS.get(count, str(count))} shapes?",
    )
    add(
        scene.background,
        "0",
        "global",
        "background",
        [scene.background],
        f"Is the background {scene.background}?",
    )
    return rows
