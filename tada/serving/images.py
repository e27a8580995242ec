"""Image decoding and preprocessing for serving: Pillow and numpy only, the same steps as training's evaluation.

Training reads an image with `tada.data.manifest.load_image` (PIL open -> ``convert(mode)`` -> bilinear resize to
``L x L`` if needed -> uint8 array), takes the central ``S x S`` window (`tada.data.task.center_crop`, when the
load size ``L`` is larger than the input size ``S``) and scales it with `tada.data.task.to_tensor`
(``pixel / 127.5 - 1``). This module repeats those steps call for call, with the mode, sizes and normalisation read
from the model's metadata, so a served image reaches the network as the very same float32 tensor (a test compares
them bit for bit).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


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


def to_array(image: Image.Image, mode: str, size: int, load_size: int | None = None) -> np.ndarray:
    """``load_image`` then ``center_crop`` on a decoded image: uint8 ``(S, S)`` for "L", ``(S, S, 3)`` for "RGB".

    The image is converted to ``mode``, resized to ``load_size`` (default ``size``) square if it is not already,
    and its central ``size x size`` window is returned.
    """
    load_size = load_size or size
    image = image.convert(mode)
    if image.size != (load_size, load_size):
        image = image.resize((load_size, load_size), Image.Resampling.BILINEAR)
    pixels = np.asarray(image)
    top = (load_size - size) // 2  # as center_crop: (h - size) // 2
    return pixels[top : top + size, top : top + size] if load_size != size else pixels


def load_file(path: str | Path, mode: str, size: int, max_pixels: int, load_size: int | None = None) -> np.ndarray:
    """Read and preprocess one file (`decode` errors name the file)."""
    data = Path(path).read_bytes()
    try:
        return to_array(decode(data, max_pixels), mode, size, load_size)
    except ImageError as e:
        raise type(e)(f"{path}: {e}") from None


def normalise(pixels: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """uint8 ``(N, S, S)`` or ``(N, S, S, 3)`` -> float32 ``(N, C, S, S)``, ``x = pixel * scale + offset``.

    Computed as ``pixel / (1 / scale) + offset`` in float32, the operations of ``to_tensor`` (``div_(127.5)``,
    ``sub_(1)``), so the result is bit-identical to training's, not merely within rounding.
    """
    x = pixels.astype(np.float32) / np.float32(1.0 / scale) + np.float32(offset)
    return x[:, None] if x.ndim == 3 else np.ascontiguousarray(x.transpose(0, 3, 1, 2))
