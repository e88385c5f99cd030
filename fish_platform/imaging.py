"""Decoding, validation and resizing of fish images.

One implementation shared by the Spark dataset job, training-time checks and the
serving path, so a photo is turned into model input the same way everywhere.
"""

from __future__ import annotations

import hashlib
import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

# Pillow's own bomb guard warns at ~89 MP and errors at twice that; we enforce our own limit.
from fish_platform.contract import DEFAULT_MAX_PIXELS

RESAMPLE = Image.Resampling.BILINEAR


class InvalidImage(ValueError):
    """The bytes are not a usable image. ``reason`` is a short machine-friendly code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode and fully load ``data`` as an RGB image, or raise :class:`InvalidImage`.

    The pixel limit is checked from the header, before any pixel is decoded, so a
    decompression bomb costs nothing. ``load()`` forces a full decode, which is what
    catches truncated files (``Image.open`` only reads the header).
    """
    if not data:
        raise InvalidImage("empty", "the file has no bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width <= 0 or height <= 0:
                raise InvalidImage("bad_dimensions", f"{width}x{height}")
            if width * height > max_pixels:
                raise InvalidImage(
                    "too_many_pixels", f"{width}x{height} exceeds the limit of {max_pixels:,} pixels"
                )
            image.load()
    except InvalidImage:
        raise
    except UnidentifiedImageError as exc:
        raise InvalidImage("not_an_image", "the bytes are not a recognised image format") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage("too_many_pixels", str(exc)) from exc
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise InvalidImage("corrupt", str(exc) or type(exc).__name__) from exc
    if image.mode != "RGB":
        image = image.convert("RGBA").convert("RGB") if "transparency" in image.info else image.convert("RGB")
    return image


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """Resize to ``size`` x ``size`` (stretching, as the Kaggle-trained original did)."""
    if image.size == (size, size):
        return image
    return image.resize((size, size), RESAMPLE)


def to_model_input(data: bytes, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Bytes -> ``(size, size, 3)`` uint8 array, exactly as the dataset job prepares images."""
    return np.asarray(resize_square(decode_image(data, max_pixels), size), dtype=np.uint8)


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
