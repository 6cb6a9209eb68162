"""ShapeWorld scenes: a background tone and non-overlapping objects, reproducible from a seed.

Positions are object centres as fractions of the image side (y grows downwards, as in images), so
one scene renders at any resolution. Objects keep a gap of at least ``GAP`` (fraction of the side)
from each other and ``BORDER`` from the image edge, which keeps every object a separate connected
component after pixel rounding at 64 px and above.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any

from reca_eval.core.detections import Detection, relative_position
from reca_eval.shapeworld.palette import BACKGROUNDS, COLOURS, SHAPES, SIZES, STYLES

GAP = 0.06
BORDER = 0.04
MAX_PLACEMENT_TRIES = 2000
RELATION_SLACK = 0.02  # > one pixel at 64 px


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    style: str
    x: float  # centre, fraction of image width
    y: float  # centre, fraction of image height (downwards)

    @property
    def combo(self) -> tuple[str, str]:
        return (self.shape, self.colour)

    def attributes(self) -> tuple[str, str, str, str]:
        """What a parse must recover besides the position."""
        return (self.shape, self.colour, self.size, self.style)


@dataclass
class Scene:
    background: str
    objects: list[SceneObject] = field(default_factory=list)
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "background": self.background,
            "objects": [dataclasses.asdict(o) for o in self.objects],
        }


def scene_from_json(data: Any, where: str = "scene") -> Scene:
    """Build a :class:`Scene` from its JSON dict; errors name ``where`` and the offending key."""
    if isinstance(data, Scene):
        return data
    if not isinstance(data, dict):
        raise ValueError(f"{where}: a scene must be a JSON object, got {type(data).__name__}")
    for key in ("background", "objects"):
        if key not in data:
            raise ValueError(f"{where}: missing key {key!r}")
    if data["background"] not in BACKGROUNDS:
        raise ValueError(
            f"{where}: unknown background {data['background']!r} (known: {', '.join(BACKGROUNDS)})"
        )
    if not isinstance(data["objects"], list):
        raise ValueError(f"{where}: 'objects' must be a list")
    objects = []
    vocab = {"shape": SHAPES, "colour": tuple(COLOURS), "size": tuple(SIZES), "style": STYLES}
    for i, raw in enumerate(data["objects"]):
        here = f"{where}: objects[{i}]"
        if not isinstance(raw, dict):
            raise ValueError(f"{here} must be an object")
        for key, allowed in vocab.items():
            if raw.get(key) not in allowed:
                raise ValueError(f"{here}: {key} {raw.get(key)!r} not one of {', '.join(allowed)}")
        for key in ("x", "y"):
            value = raw.get(key)
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{here}: {key} must be a number in [0, 1], got {value!r}")
        objects.append(SceneObject(**{k: raw[k] for k in ("shape", "colour", "size", "style", "x", "y")}))
    seed = data.get("seed", 0)
    if not isinstance(seed, int):
        raise ValueError(f"{where}: seed must be an integer, got {seed!r}")
    return Scene(background=data["background"], objects=objects, seed=seed)


def normalised_box(obj: SceneObject) -> tuple[float, float, float, float]:
    half = SIZES[obj.size] / 2
    return (obj.x - half, obj.y - half, obj.x + half, obj.y + half)


def relations_between(a: SceneObject, b: SceneObject) -> set[str]:
    """GenEval's relation set of ``a`` relative to ``b`` (so captions and the scorer agree)."""
    # Scaled so GenEval's absolute 1e-3 dead zone is negligible, as it is on pixel boxes.
    box_a = tuple(v * 1000 for v in normalised_box(a))
    box_b = tuple(v * 1000 for v in normalised_box(b))
    return relative_position(Detection(box=box_a, score=1.0), Detection(box=box_b, score=1.0))


def clear_relation(a: SceneObject, b: SceneObject) -> str | None:
    """The one relation of ``a`` to ``b`` when exactly one holds (no diagonal), and still does with ``a``
    nudged by RELATION_SLACK along both axes, so pixel rounding at any resolution cannot change it."""
    found = relations_between(a, b)
    if len(found) != 1:
        return None
    for dx in (-RELATION_SLACK, RELATION_SLACK):
        for dy in (-RELATION_SLACK, RELATION_SLACK):
            if relations_between(dataclasses.replace(a, x=a.x + dx, y=a.y + dy), b) != found:
                return None
    return next(iter(found))


def _boxes_apart(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[2] + GAP <= b[0] or b[2] + GAP <= a[0] or a[3] + GAP <= b[1] or b[3] + GAP <= a[1]


def layout_is_valid(objects: list[SceneObject]) -> bool:
    """Every object inside the border and apart from every other by GAP."""
    boxes = [normalised_box(o) for o in objects]
    for box in boxes:
        if box[0] < BORDER or box[1] < BORDER or box[2] > 1 - BORDER or box[3] > 1 - BORDER:
            return False
    return all(_boxes_apart(boxes[i], boxes[j]) for i in range(len(boxes)) for j in range(i))


def random_position(size: str, rng: random.Random) -> tuple[float, float]:
    half = SIZES[size] / 2
    lo, hi = BORDER + half, 1 - BORDER - half
    # Rounded so that scene JSON stays short and stable across platforms.
    return round(rng.uniform(lo, hi), 4), round(rng.uniform(lo, hi), 4)


def _relations_hold(objects: list[SceneObject], relations) -> bool:
    n = len(objects)
    return all(clear_relation(objects[i], objects[j]) == rel for i, rel, j in relations if i < n and j < n)


class NoLayout(RuntimeError):
    """:func:`place_objects` found no layout (e.g. four large objects that the random search could not fit)."""


def place_objects(
    specs: list[tuple[str, str, str, str]],
    rng: random.Random,
    relations: list[tuple[int, str, int]] = (),
    fixed: list[SceneObject] = (),
) -> list[SceneObject]:
    """Positions for (shape, colour, size, style) specs: non-overlapping, satisfying every
    ``(i, relation, j)`` (object i is clearly ``relation`` of object j: see :func:`clear_relation`),
    and apart from the ``fixed`` objects. Raises :class:`NoLayout` when no layout is found."""
    # Sequential placement with restarts: far likelier than drawing the whole layout at once.
    for _ in range(MAX_PLACEMENT_TRIES // 20):
        objects: list[SceneObject] = []
        for spec in specs:
            for _ in range(100):
                candidate = SceneObject(*spec, *random_position(spec[2], rng))
                trial = objects + [candidate]
                if layout_is_valid(list(fixed) + trial) and _relations_hold(trial, relations):
                    objects = trial
                    break
            else:
                break
        if len(objects) == len(specs):
            return objects
    raise NoLayout(f"no valid layout for {len(specs)} objects with relations {list(relations)}")


def random_object_spec(rng: random.Random, combo: tuple[str, str] | None = None) -> tuple[str, str, str, str]:
    shape, colour = combo if combo is not None else (rng.choice(SHAPES), rng.choice(tuple(COLOURS)))
    return (shape, colour, rng.choice(tuple(SIZES)), rng.choice(STYLES))


def random_scene(
    seed: int, n_objects: int | None = None, combos: list[tuple[str, str]] | None = None
) -> Scene:
    """A scene drawn from ``seed`` alone: same seed, same scene.

    ``combos`` fixes each object's (shape, colour); otherwise they are drawn uniformly (training data
    should draw them with :func:`reca_eval.shapeworld.splits.sample_combo` instead)."""
    rng = random.Random(seed)
    if combos is None:
        count = n_objects if n_objects is not None else rng.randint(1, 4)
        specs = [random_object_spec(rng) for _ in range(count)]
    else:
        specs = [random_object_spec(rng, c) for c in combos]
    background = rng.choice(tuple(BACKGROUNDS))
    return Scene(background=background, objects=place_objects(specs, rng), seed=seed)
