"""Image decoding for serving, with limits and errors a client can act on; the preprocessing after decoding is
training's own (`tada.preprocessing`), with the mode, sizes and normalisation read from the model's metadata, so a
served image reaches the network as the very same float32 tensor (a test compares them bit for bit).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from tada.preprocessing import normalise, to_array

__all__ = ["CorruptImageError", "ImageError", "ImageTooLargeError", "NotAnImageError", "decode", "load_file",
           "normalise", "to_array"]


class ImageError(ValueError):
    """An input that cannot be used as an image; ``code`` names the kind for clients and metrics."""

    code = "bad_image"


class NotAnImageError(ImageError):
    code = "not_an_image"


class CorruptImageError(ImageError):
    code = "corrupt_image"


class ImageTooLargeError(ImageError):
    code = "image_too_large"


def decode(data: bytes, max_pixels: int) -> Image.Image:
    """Decode ``data`` fully (so a truncated file fails here, not later), refusing images over ``max_pixels``.

    Raises:
        NotAnImageError: empty, or no image format recognises the bytes.
        ImageTooLargeError: width x height above ``max_pixels`` (checked before the pixels are decoded).
        CorruptImageError: a known format whose data is broken or truncated.
    """
    if not data:
        raise NotAnImageError("empty file, not an image")
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except UnidentifiedImageError:
        raise NotAnImageError(f"not an image: no image format recognises these {len(data)} bytes "
                              f"(starting {data[:8]!r})") from None
    except Image.DecompressionBombError as e:  # over twice Pillow's own limit
        raise ImageTooLargeError(f"image too large: {e}") from None
    except Exception as e:  # a header so broken that the format's own parser gives up
        raise CorruptImageError(f"corrupt image: {type(e).__name__}: {e}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLargeError(f"image too large: {width} x {height} pixels, at most {max_pixels} allowed")
    try:
        image.load()
    except Exception as e:  # truncated data, bad checksums, broken compressed streams: Pillow raises many types
        raise CorruptImageError(f"corrupt {image.format} image ({width} x {height}): {e}") from None
    return image


def load_file(path: str | Path, mode: str, size: int, max_pixels: int, load_size: int | None = None) -> np.ndarray:
    """Read and preprocess one file (`decode` errors name the file)."""
    data = Path(path).read_bytes()
    try:
        return to_array(decode(data, max_pixels), mode, size, load_size)
    except ImageError as e:
        raise type(e)(f"{path}: {e}") from None
