"""Detections: what any detector (Mask2Former, the exact ShapeWorld parser, ...) hands the rules.

Also the geometry the official GenEval rules apply to a detection -- relative position and the
colour crop -- because the ShapeWorld world (clear relations), the exact parser and the colour
classifier use the same definitions as the benchmark rules.
"""

from __future__ import annotations

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

    Every step runs in float32, as GenEval's does on the detector's float32 boxes (numpy keeps a
    float32 array float32 against Python-float constants, which it rounds to float32): a ratio that
    lands exactly on 0.5 in one precision can fall on either side of it in the other.
    """
    box_a = np.asarray(a.box[:4], dtype=np.float32)
    box_b = np.asarray(b.box[:4], dtype=np.float32)
    two = np.float32(2)
    offset = (box_a[:2] + box_a[2:]) / two - (box_b[:2] + box_b[2:]) / two
    extent = np.abs(box_a[2:] - box_a[:2]) + np.abs(box_b[2:] - box_b[:2])
    margin = np.float32(POSITION_THRESHOLD) * extent
    shrunk = np.maximum(np.abs(offset) - margin, np.float32(0)) * np.sign(offset)
    if bool((np.abs(shrunk) < np.float32(1e-3)).all()):
        return set()
    dx, dy = offset
    norm = np.sqrt(dx * dx + dy * dy)  # float32 scalars: each product and the sum rounded to float32
    nx, ny = (shrunk / norm).tolist()
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
