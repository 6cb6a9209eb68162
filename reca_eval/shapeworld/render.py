"""Deterministic, aliasing-free rendering of ShapeWorld scenes.

Every pixel takes exactly one palette colour (no antialiasing), so the parser can recover a clean
render exactly. Shapes are drawn from pixel-centre tests inside the object's box; the same
functions make the parser's templates, so render and parse agree by construction.

Geometry: an object's side is its size fraction times the resolution, rounded to an odd pixel count
(so shapes are symmetric about a centre pixel); its box is (x1, y1, x2, y2) with exclusive ends,
centre (x1 + x2) / 2, as GenEval's centre/size arithmetic expects.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image
from scipy import ndimage

from reca_eval.shapeworld.palette import BACKGROUNDS, COLOURS, SHAPES, SIZES, STYLES
from reca_eval.shapeworld.scene import Scene, SceneObject, scene_from_json

DEFAULT_RESOLUTION = 64
CROSS_ARM = 0.3  # half arm width / half side: 3, 5, 7 px arms at 64 px, hollow when outlined
TEMPLATE_KEYS: tuple[tuple[str, str], ...] = tuple((s, st) for s in SHAPES for st in STYLES)


def object_side(size: str, resolution: int) -> int:
    side = SIZES[size] * resolution
    return 2 * int(np.floor((side - 1) / 2 + 0.5)) + 1


def outline_thickness(width: int, height: int) -> int:
    return max(1, int(np.floor(min(width, height) / 10 + 0.5)))


def object_box(obj: SceneObject, resolution: int) -> tuple[int, int, int, int]:
    side = object_side(obj.size, resolution)
    x1 = int(np.floor(obj.x * resolution - side / 2 + 0.5))
    y1 = int(np.floor(obj.y * resolution - side / 2 + 0.5))
    return (x1, y1, x1 + side, y1 + side)


@lru_cache(maxsize=4096)
def shape_template(shape: str, style: str, width: int, height: int) -> np.ndarray:
    """Boolean (height, width) mask of ``shape`` filling a width x height box; cached, read-only."""
    if shape not in SHAPES or style not in STYLES:
        raise ValueError(f"unknown shape/style {shape!r}/{style!r}")
    # Pixel-centre coordinates relative to the box centre; a and b are the half extents to pixel edges.
    a, b = width / 2, height / 2
    px = np.arange(width) - (width - 1) / 2
    py = (np.arange(height) - (height - 1) / 2)[:, None]
    if shape == "square":
        mask = np.ones((height, width), dtype=bool)
    elif shape == "circle":
        mask = (px / a) ** 2 + (py / b) ** 2 <= 1.0
    elif shape == "diamond":
        mask = np.abs(px) / a + np.abs(py) / b <= 1.0 + 1e-9
    elif shape == "triangle":
        # Apex up; the max() keeps one or two apex pixels at any width parity.
        half_width = np.maximum(a * (py + b) / (2 * b), 0.5)
        mask = np.abs(px) <= half_width + 1e-9
    else:  # cross
        mask = (np.abs(px) <= CROSS_ARM * a) | (np.abs(py) <= CROSS_ARM * b)
    mask = np.broadcast_to(mask, (height, width)).copy()
    if style == "outline":
        inner = ndimage.binary_erosion(mask, iterations=outline_thickness(width, height), border_value=0)
        mask &= ~inner
    mask.flags.writeable = False
    return mask


@lru_cache(maxsize=4096)
def template_stack(width: int, height: int) -> np.ndarray:
    """All (shape, style) templates at one box size, stacked in TEMPLATE_KEYS order: (K, H, W)."""
    stack = np.stack([shape_template(s, st, width, height) for s, st in TEMPLATE_KEYS])
    stack.flags.writeable = False
    return stack


@lru_cache(maxsize=4096)
def template_areas(width: int, height: int) -> np.ndarray:
    areas = template_stack(width, height).sum(axis=(1, 2))
    areas.flags.writeable = False
    return areas


def render_array(scene: Scene | dict, resolution: int = DEFAULT_RESOLUTION) -> np.ndarray:
    """(H, W, 3) uint8 render of ``scene`` (a Scene or its JSON dict)."""
    scene = scene_from_json(scene)
    if resolution < 32:
        raise ValueError(f"resolution {resolution} too small: shapes need >= 32 px to stay distinct")
    canvas = np.empty((resolution, resolution, 3), dtype=np.uint8)
    canvas[...] = BACKGROUNDS[scene.background]
    for obj in scene.objects:
        x1, y1, x2, y2 = object_box(obj, resolution)
        if x1 < 0 or y1 < 0 or x2 > resolution or y2 > resolution:
            raise ValueError(f"object {obj} leaves the {resolution}px canvas (box {x1, y1, x2, y2})")
        mask = shape_template(obj.shape, obj.style, x2 - x1, y2 - y1)
        canvas[y1:y2, x1:x2][mask] = COLOURS[obj.colour]
    return canvas


def render_scene(scene: Scene | dict, resolution: int = DEFAULT_RESOLUTION) -> Image.Image:
    return Image.fromarray(render_array(scene, resolution), mode="RGB")
