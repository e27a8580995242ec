"""How an image file becomes the network's input, written once for training (`tada.data`) and serving
(`tada.serving`): Pillow and NumPy only, never torch, so the serving install can use it.

PIL open -> ``convert(mode)`` -> bilinear resize to ``L x L`` (the load size) -> uint8 array -> the central
``S x S`` window (``L > S``: evaluation's crop; training crops at random instead) -> ``x = pixel / 127.5 - 1``.

16-bit grayscale images (Pillow's ``I;16`` modes, and ``I``) are scaled to 8 bits first (the top 8 bits of each
pixel): Pillow's own conversion clips every value above 255, so a 16-bit photo would come out almost white. CMYK
images go through Pillow's CMYK -> RGB conversion. Training, evaluation and serving all call `resized`, so they
see the same pixels; which modes a dataset may hold is the validate stage's ``validate.image_modes``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm",
                            ".pbm"})  # image files found in folders (a file named explicitly is read whatever it is)
DIVISOR, OFFSET = 127.5, -1.0  # x = pixel / DIVISOR + OFFSET: uint8 [0, 255] -> [-1, 1]
NORMALISATION = {"scale": 1 / DIVISOR, "offset": OFFSET}  # as the exported model's metadata records it


def resized(image: Image.Image, mode: str, size: int) -> np.ndarray:
    """``image`` converted to ``mode`` and resized (bilinear) to ``size x size`` if it is not: uint8 ``(size, size)``
    for "L", ``(size, size, 3)`` for "RGB"."""
    if image.mode.startswith("I;16") or image.mode == "I":
        wide = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        image = Image.fromarray((wide >> 8).astype(np.uint8), "L")
    image = image.convert(mode)
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image)


def center_crop(images: np.ndarray, size: int) -> np.ndarray:
    """The central ``size x size`` window of uint8 ``(N, H, W[, 3])`` images (as they are if already that size)."""
    h, w = images.shape[1:3]
    if (h, w) == (size, size):
        return images
    top, left = (h - size) // 2, (w - size) // 2
    return images[:, top: top + size, left: left + size]


def to_array(image: Image.Image, mode: str, size: int, load_size: int | None = None) -> np.ndarray:
    """Evaluation's preprocessing of a decoded image: `resized` to ``load_size`` (default ``size``), then the
    central ``size x size`` window."""
    return center_crop(resized(image, mode, load_size or size)[None], size)[0]


def normalise(pixels: np.ndarray, scale: float = NORMALISATION["scale"],
              offset: float = NORMALISATION["offset"]) -> np.ndarray:
    """uint8 ``(N, S, S)`` or ``(N, S, S, 3)`` -> float32 ``(N, C, S, S)``, ``x = pixel * scale + offset``.

    Computed as ``pixel / (1 / scale) + offset`` in float32, the operations of training's
    `tada.data.task.uint8_to_input`, so the result is bit-identical to training's, not merely within rounding.
    """
    x = pixels.astype(np.float32) / np.float32(1.0 / scale) + np.float32(offset)
    return x[:, None] if x.ndim == 3 else np.ascontiguousarray(x.transpose(0, 3, 1, 2))
