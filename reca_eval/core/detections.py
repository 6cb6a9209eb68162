"""Detections: what any detector (Mask2Former, the exact ShapeWorld parser, ...) hands the rules.

Also the geometry the official GenEval rules apply to a detection -- relative position and the
colour crop -- because the ShapeWorld world (clear relations), the exact parser and the colour
classifier use the same definitions as the benchmark rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

# GenEval's position margin: a fraction of the two objects' summed extent on each axis.
POSITION_THRESHOLD = 0.1


@dataclass
class Detection:
    """One detected object. ``box`` is (x1, y1, x2, y2) in pixels; ``mask`` a boolean (H, W) array or None.

    ``attributes`` carries what a detector knows exactly (the ShapeWorld parser knows each object's
    colour and style); neural detectors leave it empty and the colour comes from a classifier.
    """

    box: tuple[float, float, float, float]
    score: float
    mask: np.ndarray | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


def relative_position(a: Detection, b: Detection) -> set[str]:
    """Where ``a`` lies relative to ``b``: a subset of RELATIONS (diagonals give two, overlap none).

    Each axis' centre offset is shrunk by a margin of POSITION_THRESHOLD x the two objects' summed
    extent on that axis, then divided by the *unshrunk* offset's length; a relation holds past 0.5.
    Image y grows downwards, so a negative dy means "above".
    """
    ax1, ay1, ax2, ay2 = (float(v) for v in a.box[:4])
    bx1, by1, bx2, by2 = (float(v) for v in b.box[:4])
    dx = (ax1 + ax2) / 2 - (bx1 + bx2) / 2
    dy = (ay1 + ay2) / 2 - (by1 + by2) / 2
    margin_x = POSITION_THRESHOLD * (abs(ax2 - ax1) + abs(bx2 - bx1))
    margin_y = POSITION_THRESHOLD * (abs(ay2 - ay1) + abs(by2 - by1))
    revised_dx = math.copysign(max(abs(dx) - margin_x, 0.0), dx)
    revised_dy = math.copysign(max(abs(dy) - margin_y, 0.0), dy)
    if abs(revised_dx) < 1e-3 and abs(revised_dy) < 1e-3:
        return set()
    norm = math.hypot(dx, dy)
    nx, ny = revised_dx / norm, revised_dy / norm
    relations = set()
    if nx < -0.5:
        relations.add("left of")
    if nx > 0.5:
        relations.add("right of")
    if ny < -0.5:
        relations.add("above")
    if ny > 0.5:
        relations.add("below")
    return relations


def crop_for_colour(image: Image.Image, det: Detection, bgcolor: str = "#999") -> Image.Image:
    """The region the colour classifier sees: the object's mask over a flat grey, cropped to its box.

    Masking out the background keeps a red wall from colouring a white car; the official default
    background is #999 (a neutral grey none of the colour prompts names).
    """
    image = image.convert("RGB")
    if det.mask is not None:
        mask = np.asarray(det.mask)
        if mask.shape != (image.height, image.width):
            raise ValueError(
                f"mask shape {mask.shape} does not match image size (H, W)={(image.height, image.width)}"
            )
        blank = Image.new("RGB", image.size, color=bgcolor)
        image = Image.composite(image, blank, Image.fromarray(mask.astype(bool)))
    return image.crop(tuple(det.box[:4]))
