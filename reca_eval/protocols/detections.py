"""Detections: what any detector (Mask2Former, the exact ShapeWorld parser, ...) hands the protocols."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


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
