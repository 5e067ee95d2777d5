"""Image decoding: bytes -> grayscale float32 with the longer side <= max_side (paper §3).

The paper shrinks every image so that neither side exceeds 500 px before
extracting descriptors. Decoding goes through Pillow; big JPEGs are decoded at
a reduced scale (1/2, 1/4 or 1/8) through Pillow's JPEG *draft* mode, so a
4,000 px photo never exists in memory at full size. An image whose header
announces more than ``max_pixels`` pixels (a decompression bomb such as a
30,000 x 30,000 PNG) is refused from its header alone, before any pixel data is
decoded.
"""

from __future__ import annotations

import io
import logging
import math
import struct
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageError

__all__ = ["load_image"]

logger = logging.getLogger(__name__)

_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def _label(name: str | None) -> str:
    return repr(name) if name is not None else "<bytes>"


def load_image(
    data: bytes,
    *,
    max_side: int = 500,
    max_pixels: int = 100_000_000,
    name: str | None = None,
) -> np.ndarray:
    """Decode image bytes to a grayscale float32 array no larger than ``max_side``.

    Parameters
    ----------
    data : bytes
        Encoded image (any format Pillow reads: JPEG, PNG, GIF, BMP, TIFF, ...).
    max_side : int, default 500
        Longer side of the result in pixels (paper §3: "neither side exceeds
        500 px"). Smaller images are not enlarged.
    max_pixels : int, default 100_000_000
        Width x height announced by the file header above which the image is
        refused before decoding (decompression-bomb guard).
    name : str, optional
        Name of the input (path or key) used in error messages.

    Returns
    -------
    image : ndarray of shape (H, W), float32
        Luma (ITU-R 601, Pillow mode ``"L"``) in [0, 1], ``max(H, W) <= max_side``.

    Raises
    ------
    ImageError
        Empty, corrupt, truncated or non-image input, or an image above
        ``max_pixels``. The message names ``name``.

    Notes
    -----
    Pillow's own refusal of images above 2 x ``Image.MAX_IMAGE_PIXELS``
    (about 179 M pixels) stays in force as a ceiling (changing it would be a
    process-wide side effect); ``max_pixels`` applies below it. JPEGs are
    decoded with ``Image.draft("L", size)``: libjpeg's DCT scaling
    picks the smallest of 1/1, 1/2, 1/4, 1/8 that keeps both sides at least as
    large as the target, and the remaining shrink is a Pillow bilinear
    (antialiased) resize.
    """
    label = _label(name)
    if max_side < 1:
        raise ImageError(f"max_side={max_side} for image {label}: use a positive number of pixels")
    if not data:
        raise ImageError(f"image {label} is empty (0 bytes): check the file or the download")
    try:
        with warnings.catch_warnings():
            # our own max_pixels check replaces Pillow's bomb heuristics
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise ImageError(
                    f"image {label} is {width}x{height} = {width * height} pixels, above "
                    f"max_pixels={max_pixels} (possible decompression bomb): raise max_pixels "
                    "if it is genuine"
                )
            if width < 1 or height < 1:
                raise ImageError(f"image {label} has size {width}x{height}: not a usable image")
            scale = min(1.0, max_side / max(width, height))
            target = (max(1, round(width * scale)), max(1, round(height * scale)))
            if img.format == "JPEG" and scale < 1.0:
                img.draft("L", (math.ceil(width * scale), math.ceil(height * scale)))
            img.load()
            img = _to_gray(img)
            if img.size != target:
                img = img.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0)
            out = np.asarray(img, dtype=np.float32)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(
            f"image {label} refused before decoding as a possible decompression bomb ({exc}); "
            f"lsic max_pixels={max_pixels}, and Pillow refuses above 2 x Image.MAX_IMAGE_PIXELS "
            "in any case"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(
            f"image {label} is not an image format Pillow can read: check the file"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError,
            struct.error) as exc:
        raise ImageError(
            f"image {label} could not be decoded ({type(exc).__name__}: {exc}): the file is "
            "corrupt, truncated or not an image"
        ) from None
    if img.mode == "F":
        out = np.clip(out, 0.0, 1.0)
    else:
        out = out / np.float32(255.0)
    logger.debug("decoded image %s: %dx%d -> %s", label, width, height, out.shape)
    return np.ascontiguousarray(out, dtype=np.float32)


def _to_gray(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to a single 8-bit, 16-bit or float channel."""
    if img.mode == "L":
        return img
    if img.mode in _HIGH_BIT_MODES or img.mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        if img.mode != "F":
            arr = arr / np.float32(65535.0)
        return Image.fromarray(np.clip(arr, 0.0, 1.0).astype(np.float32), mode="F")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # composite onto white so transparent regions have a defined value
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("L")
    return img.convert("L")
