"""ShapeWorld's vocabulary: shapes, colours (fixed sRGB values), sizes, styles and background tones.

The ten colour names are GenEval's. Values are far apart in RGB (every pair of palette and background
colours is >= 85 apart, most > 100) so a nearest-colour lookup stays exact on clean renders and robust
on a model's slightly-off ones. Backgrounds are mid-light tints: far enough from white that a white
object stays visible, and far from every saturated colour.
"""

from __future__ import annotations

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "orange": (255, 128, 0),
    "yellow": (245, 230, 30),
    "green": (20, 150, 40),
    "blue": (30, 70, 230),
    "purple": (135, 40, 190),
    "pink": (255, 115, 200),
    "brown": (125, 70, 20),
    "black": (0, 0, 0),
    "white": (255, 255, 255),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "grey": (180, 180, 180),
    "sand": (205, 190, 160),
    "sky": (165, 195, 220),
    "mint": (175, 210, 185),
}
# Object side as a fraction of the image side; the renderer rounds it to an odd pixel count.
SIZES: dict[str, float] = {"small": 0.17, "medium": 0.25, "large": 0.35}
STYLES: tuple[str, ...] = ("solid", "outline")

# Rows of PALETTE_RGB: the colours, then the backgrounds (index >= len(COLOURS) means background).
PALETTE_NAMES: tuple[str, ...] = tuple(COLOURS) + tuple(BACKGROUNDS)
PALETTE_RGB: np.ndarray = np.array([*COLOURS.values(), *BACKGROUNDS.values()], dtype=np.int32)
N_OBJECT_COLOURS = len(COLOURS)

NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def plural(shape: str) -> str:
    return shape + "es" if shape.endswith("s") else shape + "s"
