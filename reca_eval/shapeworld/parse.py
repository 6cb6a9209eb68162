"""The exact ShapeWorld parser: pixels -> objects (shape, colour, size, style, box, confidence).

1. each pixel takes its nearest palette or background colour (exact on clean renders);
2. pixels of one object colour split into 8-connected components (``scipy.ndimage.label``);
   outlines of diamonds and triangles are only diagonally connected, hence 8 and not 4;
3. each component is compared with every (shape, style) template drawn at the component's own box
   size by the renderer's own code; the best intersection-over-union names shape and style and is the
   object's confidence (1.0 on clean renders, lower on a model's blurry or wrong-looking objects);
4. the size is the nearest nominal size for the box's side at this resolution.

Components smaller than ``min_object_area`` pixels are counted as noise (never silently dropped). An image
is parsed as a scene only when at least ``MIN_SCENE_FRACTION`` of its pixels are within
``READABLE_TOLERANCE`` of a world colour; otherwise it has no objects and no background
(``ParsedImage.scene`` is False): noise read pixel by pixel as the nearest colours falls into dozens of
blob "objects" that pass GenEval's and DPG's presence checks by chance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image
from scipy import ndimage

from reca_eval.shapeworld.palette import N_OBJECT_COLOURS, PALETTE_NAMES, PALETTE_RGB, SIZES
from reca_eval.shapeworld.render import TEMPLATE_KEYS, object_box, object_side, template_areas, template_stack
from reca_eval.shapeworld.scene import Scene, SceneObject, scene_from_json

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
# Smallest object the renderer draws at 64 px is an 11 px outline (~30 px); 8 px is safely below.
MIN_AREA_AT_64 = 8
# A pixel reads as a world colour within this many levels on every channel (the autoencoders' "pixels
# close" tolerance in trainers/pretrain_common.py).
READABLE_TOLERANCE = 40
# Most of a scene's pixels read as world colours (renders: all of them; the shipped bases' generations:
# two thirds or more); uniform or smoothed random noise: 15-45%.
MIN_SCENE_FRACTION = 0.5


@dataclass(eq=False)  # identity equality: the mask array has no truth value
class ParsedObject:
    shape: str
    colour: str
    size: str
    style: str
    box: tuple[int, int, int, int]  # x1, y1, x2, y2, exclusive ends
    confidence: float  # best template IoU in [0, 1]
    area: int
    mask: np.ndarray = field(repr=False)  # boolean (H, W)

    def attributes(self) -> tuple[str, str, str, str]:
        return (self.shape, self.colour, self.size, self.style)


@dataclass
class ParsedImage:
    objects: list[ParsedObject]
    background: str | None  # most common background tone; None when no pixel is a background tone
    width: int
    height: int
    exact_pixel_fraction: float  # pixels exactly equal to a palette or background colour
    noise_components: int  # components below the minimum area, not reported as objects
    noise_pixels: int
    readable_fraction: float = 1.0  # pixels within READABLE_TOLERANCE of a world colour

    @property
    def scene(self) -> bool:
        """Whether the image reads as a scene at all (else it has no objects and no background)."""
        return self.readable_fraction >= MIN_SCENE_FRACTION

    def by_shape(self) -> dict[str, list[ParsedObject]]:
        grouped: dict[str, list[ParsedObject]] = {}
        for obj in self.objects:
            grouped.setdefault(obj.shape, []).append(obj)
        return grouped


_PACKED_PALETTE = (PALETTE_RGB[:, 0] << 16) | (PALETTE_RGB[:, 1] << 8) | PALETTE_RGB[:, 2]
_SORT_ORDER = np.argsort(_PACKED_PALETTE)
_SORTED_PACKED = _PACKED_PALETTE[_SORT_ORDER]


def palette_indices(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest palette row per pixel (H, W) and whether the pixel matched it exactly (H, W)."""
    flat = rgb.reshape(-1, 3).astype(np.int32)
    packed = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
    # Fast path: a clean render's pixels are all exact palette colours (a sorted lookup).
    position = np.minimum(np.searchsorted(_SORTED_PACKED, packed), len(_SORTED_PACKED) - 1)
    exact = _SORTED_PACKED[position] == packed
    nearest = _SORT_ORDER[position]
    if not exact.all():
        off = ~exact
        dist = ((flat[off][:, None, :] - PALETTE_RGB[None, :, :]) ** 2).sum(-1)
        nearest[off] = dist.argmin(1)
    shape = rgb.shape[:2]
    return nearest.reshape(shape), exact.reshape(shape)


@lru_cache(maxsize=1024)
def size_name(side: int, resolution: int) -> str:
    return min(SIZES, key=lambda s: abs(object_side(s, resolution) - side))


def parse_array(rgb: np.ndarray, min_object_area: int | None = None) -> ParsedImage:
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB array, got shape {rgb.shape}")
    height, width = rgb.shape[:2]
    resolution = (height + width) / 2
    if min_object_area is None:
        min_object_area = max(1, round(MIN_AREA_AT_64 * (resolution / 64) ** 2))
    indices, exact = palette_indices(rgb)
    readable_fraction = readable_share(rgb, indices, exact)
    if readable_fraction < MIN_SCENE_FRACTION:
        return ParsedImage(
            objects=[],
            background=None,
            width=width,
            height=height,
            exact_pixel_fraction=float(exact.mean()),
            noise_components=0,
            noise_pixels=0,
            readable_fraction=readable_fraction,
        )
    counts = np.bincount(indices.ravel(), minlength=len(PALETTE_NAMES))
    background_counts = counts[N_OBJECT_COLOURS:]
    background = (
        PALETTE_NAMES[N_OBJECT_COLOURS + int(background_counts.argmax())] if background_counts.any() else None
    )
    objects: list[ParsedObject] = []
    noise_components = noise_pixels = 0
    # One labelling of everything that is not background; a component holding several colours
    # (objects touching, only in a model's output) is split by colour within its window.
    foreground = indices < N_OBJECT_COLOURS
    labels, _ = ndimage.label(foreground, structure=EIGHT_CONNECTED)
    pieces: list[tuple[int, tuple[slice, slice], np.ndarray]] = []
    for label_id, window in enumerate(ndimage.find_objects(labels), start=1):
        component = labels[window] == label_id
        colours = indices[window][component]
        first = int(colours[0])
        if (colours == first).all():
            pieces.append((first, window, component))
            continue
        for colour_index in np.unique(colours):
            sub_labels, _ = ndimage.label(
                component & (indices[window] == colour_index), structure=EIGHT_CONNECTED
            )
            for sub_id, sub_window in enumerate(ndimage.find_objects(sub_labels), start=1):
                y0, x0 = window[0].start, window[1].start
                abs_window = (
                    slice(y0 + sub_window[0].start, y0 + sub_window[0].stop),
                    slice(x0 + sub_window[1].start, x0 + sub_window[1].stop),
                )
                pieces.append((int(colour_index), abs_window, sub_labels[sub_window] == sub_id))
    for colour_index, window, component in pieces:
        area = int(component.sum())
        if area < min_object_area:
            noise_components += 1
            noise_pixels += area
            continue
        h, w = component.shape
        templates = template_stack(w, h)
        inter = (templates & component).sum(axis=(1, 2))
        union = template_areas(w, h) + area - inter
        iou = inter / union
        best = int(iou.argmax())
        shape, style = TEMPLATE_KEYS[best]
        y, x = window
        mask = np.zeros((height, width), dtype=bool)
        mask[window] = component
        objects.append(
            ParsedObject(
                shape=shape,
                colour=PALETTE_NAMES[colour_index],
                size=size_name(max(w, h), round(resolution)),
                style=style,
                box=(x.start, y.start, x.stop, y.stop),
                confidence=float(iou[best]),
                area=area,
                mask=mask,
            )
        )
    # Reading order (top to bottom, left to right) so that parses compare deterministically.
    objects.sort(key=lambda o: (o.box[1], o.box[0], o.shape, o.colour))
    return ParsedImage(
        objects=objects,
        background=background,
        width=width,
        height=height,
        exact_pixel_fraction=float(exact.mean()),
        noise_components=noise_components,
        noise_pixels=noise_pixels,
        readable_fraction=readable_fraction,
    )


def readable_share(rgb: np.ndarray, indices: np.ndarray, exact: np.ndarray) -> float:
    """The fraction of pixels within READABLE_TOLERANCE (on every channel) of their nearest world colour."""
    if exact.all():
        return 1.0
    off = ~exact
    distance = np.abs(rgb[off].astype(np.int16) - PALETTE_RGB[indices[off]].astype(np.int16)).max(-1)
    return float((int(exact.sum()) + int((distance <= READABLE_TOLERANCE).sum())) / exact.size)


def parse_image(image: Image.Image | np.ndarray, min_object_area: int | None = None) -> ParsedImage:
    """Parse a PIL image (any mode; converted to RGB) or an (H, W, 3) uint8 array."""
    if isinstance(image, Image.Image):
        rgb = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
    else:
        rgb = np.asarray(image)
    return parse_array(rgb, min_object_area)


ObjectKey = tuple[str, str, str, str, tuple[int, int, int, int]]


def expected_objects(scene: Scene | dict, resolution: int) -> list[ObjectKey]:
    """What an exact parse of ``scene`` rendered at ``resolution`` must report, in a canonical order."""
    scene = scene_from_json(scene)
    return sorted((*o.attributes(), object_box(o, resolution)) for o in scene.objects)


def parsed_keys(parsed: ParsedImage) -> list[ObjectKey]:
    return sorted((*o.attributes(), o.box) for o in parsed.objects)


def parse_differences(parsed: ParsedImage, scene: Scene | dict) -> list[str]:
    """Human-readable differences between a parse and a scene (empty: the parse is exact)."""
    scene = scene_from_json(scene)
    if parsed.width != parsed.height:
        return [f"image is {parsed.width}x{parsed.height}, scenes render square"]
    want, got = expected_objects(scene, parsed.width), parsed_keys(parsed)
    problems = [f"missing {k}" for k in want if k not in got] + [
        f"unexpected {k}" for k in got if k not in want
    ]
    if parsed.background != scene.background:
        problems.append(f"background {parsed.background} != {scene.background}")
    if parsed.noise_components:
        problems.append(f"{parsed.noise_components} noise component(s)")
    return problems


def scene_from_parse(parsed: ParsedImage, seed: int = 0) -> Scene:
    """The scene a parse describes (positions from box centres); for edit chains and debugging."""
    res = parsed.width
    objects = [
        SceneObject(
            o.shape,
            o.colour,
            o.size,
            o.style,
            round((o.box[0] + o.box[2]) / 2 / res, 4),
            round((o.box[1] + o.box[3]) / 2 / res, 4),
        )
        for o in parsed.objects
    ]
    return Scene(background=parsed.background or "grey", objects=objects, seed=seed)
