"""Edit tasks on ShapeWorld scenes: an instruction and the exact target scene it asks for.

Objects are referred to by the shortest description that is unique in the scene ("the circle",
"the red circle", "the large red circle", ...). Positions asked for by an edit ("add ... left of the
square", "move ... above the cross") are relations, not coordinates; the target scene holds one
placement that satisfies them, and the scorer checks relations, not that exact placement.
"""

from __future__ import annotations

import dataclasses
import random

from reca_eval.shapeworld.captions import STYLE_WORDS, article
from reca_eval.shapeworld.palette import BACKGROUNDS, COLOURS, SHAPES, SIZES, STYLES
from reca_eval.shapeworld.scene import (
    BORDER,
    Scene,
    SceneObject,
    clear_relation,
    layout_is_valid,
    random_object_spec,
    random_position,
    relations_between,
)
from reca_eval.shapeworld.splits import sample_combo

SINGLE_EDITS = ("recolour", "remove", "add", "replace", "move", "resize", "restyle", "background")
EDIT_TYPES = SINGLE_EDITS + ("two-step",)
RELATIONS = ("left of", "right of", "above", "below")
# A move must shift the object's centre by more than this (fraction of the side), far beyond the
# scorer's position tolerance, so "moved" and "left in place" never look alike.
MIN_MOVE = 0.15


class EditNotPossible(Exception):
    """This edit type cannot be applied to this scene (e.g. nothing to remove); draw another."""


def reference(obj: SceneObject, scene: Scene) -> str:
    """Shortest unique description of ``obj`` among ``scene``'s objects, with "the"."""
    fields = [(), ("colour",), ("size", "colour"), ("size", "colour", "style")]
    for chosen in fields:

        def describe(o: SceneObject, chosen=chosen) -> tuple:
            return tuple(getattr(o, f) for f in chosen) + (o.shape,)

        if sum(describe(o) == describe(obj) for o in scene.objects) == 1:
            words = [STYLE_WORDS[obj.style] if f == "style" else getattr(obj, f) for f in chosen]
            return "the " + " ".join(words + [obj.shape])
    raise EditNotPossible(f"two identical objects {obj.attributes()} cannot be told apart")


def full_phrase(obj: SceneObject) -> str:
    phrase = f"{obj.size} {obj.colour} {STYLE_WORDS[obj.style]} {obj.shape}"
    return f"{article(phrase)} {phrase}"


def _replace(scene: Scene, index: int, new: SceneObject | None) -> Scene:
    objects = list(scene.objects)
    if new is None:
        del objects[index]
    else:
        objects[index] = new
    return Scene(background=scene.background, objects=objects, seed=scene.seed)


def _directed_position(
    size: str, anchor: SceneObject, relation: str, rng: random.Random
) -> tuple[float, float]:
    """A position drawn on the ``relation`` side of ``anchor``, roughly level with it (cheap to accept)."""
    x, y = random_position(size, rng)
    half = SIZES[size] / 2
    lo, hi = BORDER + half, 1 - BORDER - half
    level = rng.uniform(-0.08, 0.08)
    if relation in ("left of", "right of"):
        y = min(max(anchor.y + level, lo), hi)
        x = (
            rng.uniform(lo, max(lo, anchor.x))
            if relation == "left of"
            else rng.uniform(min(hi, anchor.x), hi)
        )
    else:
        x = min(max(anchor.x + level, lo), hi)
        y = rng.uniform(lo, max(lo, anchor.y)) if relation == "above" else rng.uniform(min(hi, anchor.y), hi)
    return round(x, 4), round(y, 4)


def _place_relative(spec, anchor: SceneObject, relation: str, others: list[SceneObject], rng) -> SceneObject:
    for _ in range(300):
        candidate = SceneObject(*spec, *_directed_position(spec[2], anchor, relation, rng))
        if layout_is_valid(others + [candidate]) and clear_relation(candidate, anchor) == relation:
            return candidate
    raise EditNotPossible(f"no room for {spec} {relation} {anchor.attributes()}")


def apply_edit(edit_type: str, scene: Scene, rng: random.Random) -> tuple[str, Scene]:
    """(instruction, target scene) for one single edit of ``scene``; EditNotPossible when it can't apply."""
    objects = scene.objects
    if edit_type == "background":
        new = rng.choice([b for b in BACKGROUNDS if b != scene.background])
        return f"Change the background to {new}.", dataclasses.replace(scene, background=new)
    if edit_type == "add":
        if not objects or len(objects) >= 4:
            raise EditNotPossible("add needs 1-3 existing objects")
        anchor = rng.choice(objects)
        relation = rng.choice(RELATIONS)
        new = _place_relative(
            random_object_spec(rng, sample_combo(rng)), anchor, relation, list(objects), rng
        )
        instruction = f"Add {full_phrase(new)} {relation} {reference(anchor, scene)}."
        return instruction, Scene(scene.background, list(objects) + [new], scene.seed)
    if not objects:
        raise EditNotPossible(f"{edit_type} needs an object")
    index = rng.randrange(len(objects))
    obj = objects[index]
    ref = reference(obj, scene)
    others = objects[:index] + objects[index + 1 :]
    if edit_type == "remove":
        return f"Remove {ref}.", _replace(scene, index, None)
    if edit_type == "recolour":
        colour = rng.choice([c for c in COLOURS if c != obj.colour])
        return f"Make {ref} {colour}.", _replace(scene, index, dataclasses.replace(obj, colour=colour))
    if edit_type == "replace":
        shape = rng.choice([s for s in SHAPES if s != obj.shape])
        colour = sample_combo(rng)[1] if rng.random() < 0.5 else obj.colour
        new = dataclasses.replace(obj, shape=shape, colour=colour)
        return f"Replace {ref} with {article(colour)} {colour} {shape}.", _replace(scene, index, new)
    if edit_type == "restyle":
        style = next(s for s in STYLES if s != obj.style)
        wording = "Draw {ref} as an outline only." if style == "outline" else "Fill in {ref} with its colour."
        return wording.format(ref=ref), _replace(scene, index, dataclasses.replace(obj, style=style))
    if edit_type == "resize":
        sizes = [s for s in SIZES if s != obj.size]
        rng.shuffle(sizes)
        for size in sizes:
            new = dataclasses.replace(obj, size=size)
            if layout_is_valid(others + [new]):
                return f"Make {ref} {size}.", _replace(scene, index, new)
        raise EditNotPossible("no room to resize")
    if edit_type == "move":
        if not others:
            raise EditNotPossible("move needs an anchor object")
        anchor = rng.choice(others)
        current = relations_between(obj, anchor)
        relation = rng.choice([r for r in RELATIONS if r not in current])
        for _ in range(20):
            new = _place_relative(obj.attributes(), anchor, relation, others, rng)
            if abs(new.x - obj.x) + abs(new.y - obj.y) > MIN_MOVE:
                return f"Move {ref} {relation} {reference(anchor, scene)}.", _replace(scene, index, new)
        raise EditNotPossible("no distinct place to move to")
    raise ValueError(f"unknown edit type {edit_type!r} (known: {', '.join(EDIT_TYPES)})")


def make_edit(edit_type: str, scene: Scene, rng: random.Random) -> tuple[str, Scene]:
    """Like :func:`apply_edit`, plus ``two-step``: two different single edits, the second on the first's result."""
    if edit_type != "two-step":
        return apply_edit(edit_type, scene, rng)
    first, second = rng.sample(SINGLE_EDITS, 2)
    instruction_1, middle = apply_edit(first, scene, rng)
    instruction_2, target = apply_edit(second, middle, rng)
    return f"{instruction_1[:-1]}, then {instruction_2[0].lower()}{instruction_2[1:]}", target
