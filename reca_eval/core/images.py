"""Reading images that some tool wrote: every failure becomes a reason string, never a deep traceback."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def png_bytes(image: Image.Image) -> bytes:
    """An image encoded as PNG (what every official layout stores)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def load_rgb(path: Path, expected_size: tuple[int, int] | None = None) -> tuple[Image.Image | None, str]:
    """Load ``path`` fully as RGB. Returns (image, "") or (None, reason) for a counted skip.

    Non-RGB modes (L, P, RGBA, ...) are converted, not skipped: the official scripts do the same.
    ``expected_size`` is (width, height); a mismatch is a skip, since scorers' thresholds assume it.
    """
    path = Path(path)
    if not path.exists():
        return None, "missing file"
    try:
        with Image.open(path) as im:
            im.load()  # force decoding now so truncated files fail here
            image = im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return None, f"unreadable image ({type(exc).__name__}: {exc})"
    if expected_size is not None and image.size != tuple(expected_size):
        return (
            None,
            f"wrong size {image.size[0]}x{image.size[1]}, expected {expected_size[0]}x{expected_size[1]}",
        )
    return image, ""
