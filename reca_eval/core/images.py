"""Reading images that some tool wrote: every failure becomes a reason string, never a deep traceback.

Only regular files are opened (a named pipe would block the run forever; a folder, a socket or a device
is not an image), and a file's header is read before its pixels: a wrong size or a decompression bomb is
a counted skip that costs a few hundred bytes of reading, not a full decode.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
# EXIF orientations that turn an image by 90 degrees: its upright size is its stored size transposed.
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
_EXIF_ORIENTATION = 0x0112


def png_bytes(image: Image.Image) -> bytes:
    """An image encoded as PNG (what every official layout stores)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _open_regular(path: Path) -> tuple[io.BufferedReader | None, str]:
    """``path`` opened for reading if it is a regular file (links followed); else (None, reason).

    Opened non-blocking and checked on the open descriptor, so a named pipe never blocks and a file
    swapped after a check is still judged by what was opened.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None, "missing file" if not os.path.islink(path) else "broken symlink"
    except OSError as exc:
        return None, f"unreadable file ({exc.strerror or type(exc).__name__})"
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = {stat.S_IFDIR: "a folder", stat.S_IFIFO: "a named pipe", stat.S_IFSOCK: "a socket"}.get(
            stat.S_IFMT(mode), "a device"
        )
        return None, f"not a regular file ({kind})"
    return os.fdopen(fd, "rb"), ""


def _size_reason(size: tuple[int, int], expected: tuple[int, int]) -> str:
    return f"wrong size {size[0]}x{size[1]}, expected {expected[0]}x{expected[1]}"


def load_rgb(
    path: Path, expected_size: tuple[int, int] | None = None, *, upright: bool = False
) -> tuple[Image.Image | None, str]:
    """Load ``path`` fully as RGB. Returns (image, "") or (None, reason) for a counted skip.

    Non-RGB modes (L, P, RGBA, I;16, CMYK, ...) are converted, not skipped: the official scripts do the
    same. ``expected_size`` is (width, height); a mismatch is a skip, since scorers' thresholds assume it,
    and it is read from the header before any pixel is decoded. ``upright`` turns the image by its EXIF
    orientation first (GenEval's official scorer does), and the size is checked on the upright image.
    Images over Pillow's pixel limit (``Image.MAX_IMAGE_PIXELS``) are skipped as decompression bombs.
    """
    path = Path(path)
    fh, why = _open_regular(path)
    if fh is None:
        return None, why
    try:
        with fh:
            # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that: both are bombs here. The
            # size is compared by hand rather than by turning the warning into an error: warning filters
            # are process-wide, and the edit benchmarks load images from several threads at once.
            with Image.open(fh) as im:
                size = im.size
                if Image.MAX_IMAGE_PIXELS and size[0] * size[1] > Image.MAX_IMAGE_PIXELS:
                    return None, f"decompression bomb ({size[0]}x{size[1]} pixels is over Pillow's limit)"
                if upright and im.getexif().get(_EXIF_ORIENTATION) in _TRANSPOSING_ORIENTATIONS:
                    size = (size[1], size[0])
                if expected_size is not None and size != tuple(expected_size):
                    return None, _size_reason(size, expected_size)
                im.load()  # force decoding now so truncated files fail here
                image = ImageOps.exif_transpose(im) if upright else im
                image = image.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return None, f"decompression bomb ({exc})"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        return None, f"unreadable image ({type(exc).__name__}: {exc})"
    except MemoryError:
        return None, "unreadable image (MemoryError: too large to decode)"
    if expected_size is not None and image.size != tuple(expected_size):
        return None, _size_reason(image.size, expected_size)
    return image, ""
