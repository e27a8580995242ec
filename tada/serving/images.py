"""Image decoding for serving, with limits and errors a client can act on; the preprocessing after decoding is
training's own (`tada.preprocessing`), with the mode, sizes and normalisation read from the model's metadata, so a
served image reaches the network as the very same float32 tensor (a test compares them bit for bit).
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from tada.preprocessing import normalise, to_array

__all__ = ["CorruptImageError", "DecodeBudget", "DecodeBusyError", "ImageError", "ImageTooLargeError",
           "NotAnImageError", "UnsupportedImageError", "decode", "decoded_bytes", "finish", "load_file", "normalise",
           "open_image", "prepare", "to_array"]


class ImageError(ValueError):
    """An input that cannot be used as an image; ``code`` names the kind for clients and metrics."""

    code = "bad_image"


class NotAnImageError(ImageError):
    code = "not_an_image"


class CorruptImageError(ImageError):
    code = "corrupt_image"


class ImageTooLargeError(ImageError):
    code = "image_too_large"


class UnsupportedImageError(ImageError):
    code = "unsupported_image"


class DecodeBusyError(ImageError):
    code = "decode_busy"


def open_image(data: bytes | BinaryIO, max_pixels: int) -> Image.Image:
    """Read an image's header (its pixels stay undecoded), refusing one over ``max_pixels``; ``data`` is the encoded
    bytes or a binary file opened for reading (only the header is read from it).

    Raises:
        NotAnImageError: empty, or no image format recognises the bytes.
        ImageTooLargeError: width x height above ``max_pixels``.
        CorruptImageError: a header so broken that the format's own parser gives up.
    """
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    if isinstance(data, bytes) and not data:
        raise NotAnImageError("empty file, not an image")
    try:
        image = Image.open(stream)
    except UnidentifiedImageError:
        stream.seek(0)
        start = stream.read(8)
        if not start:
            raise NotAnImageError("empty file, not an image") from None
        these = f"these {len(data)} bytes" if isinstance(data, bytes) else "its bytes"
        raise NotAnImageError(f"not an image: no image format recognises {these} (starting {start!r})") from None
    except Image.DecompressionBombError as e:  # over twice Pillow's own limit
        raise ImageTooLargeError(f"image too large: {e}") from None
    except Exception as e:
        raise CorruptImageError(f"corrupt image: {type(e).__name__}: {e}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLargeError(f"image too large: {width} x {height} pixels, at most {max_pixels} allowed")
    return image


def finish(image: Image.Image) -> Image.Image:
    """Decode the pixels of an `open_image` (so a truncated file fails here, not later); `CorruptImageError`."""
    try:
        image.load()
    except Exception as e:  # truncated data, bad checksums, broken compressed streams: Pillow raises many types
        raise CorruptImageError(f"corrupt {image.format} image ({image.width} x {image.height}): {e}") from None
    return image


def decode(data: bytes | BinaryIO, max_pixels: int) -> Image.Image:
    """`open_image` then `finish`: the decoded image, or an `ImageError` saying why not."""
    return finish(open_image(data, max_pixels))


def prepare(image: Image.Image, mode: str, size: int, load_size: int | None = None) -> np.ndarray:
    """`to_array` (training's preprocessing), with a failure to convert the image (a mode Pillow decodes but cannot
    convert, e.g. a CIE-LAB TIFF) as this image's `UnsupportedImageError`."""
    try:
        return to_array(image, mode, size, load_size)
    except Exception as e:
        raise UnsupportedImageError(f"unsupported {image.format} image (mode {image.mode}): cannot convert it to "
                                    f"{mode}: {type(e).__name__}: {e}") from None


def decoded_bytes(image: Image.Image) -> int:
    """What decoding ``image`` and converting it takes in memory, about: Pillow keeps 4 bytes per pixel for most
    modes and a converted copy, resized, is made next to it."""
    return 2 * 4 * image.width * image.height


class DecodeBudget:
    r"""A process-wide bound on the memory held by images being decoded at once: each decode `hold`\ s its
    `decoded_bytes` until its pixels are preprocessed (small), and waits while others hold the rest. Thread-safe.

    A 65 kB PNG can decode to a 4096 x 4096 RGBA image (64 MiB); 40 of them at once took the service from 0.5 to
    1.7 GB. With a budget, concurrent requests decode in turn instead.
    """

    def __init__(self, max_bytes: int, wait: float = 30.0) -> None:
        if max_bytes < 1:
            raise ValueError(f"the decode budget must be >= 1 byte, got {max_bytes}")
        self.max_bytes, self.wait = max_bytes, wait
        self.used = self.peak = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        """Hold ``nbytes`` of the budget (at most all of it: one image over the budget still decodes alone)."""
        nbytes = min(nbytes, self.max_bytes)
        with self._cond:
            if not self._cond.wait_for(lambda: self.used + nbytes <= self.max_bytes, timeout=self.wait):
                raise DecodeBusyError(f"the service is decoding {self.used} bytes of images already (its budget is "
                                      f"{self.max_bytes}); not decoded within {self.wait:g} s: retry later")
            self.used += nbytes
            self.peak = max(self.peak, self.used)
        try:
            yield
        finally:
            with self._cond:
                self.used -= nbytes
                self._cond.notify_all()


def load_file(path: str | Path, mode: str, size: int, max_pixels: int, load_size: int | None = None) -> np.ndarray:
    r"""Read and preprocess one file, reading no more of it than the image needs (a 2 GiB file that is not an image
    is refused from its first bytes); `ImageError`\ s name the file."""
    try:
        with open(path, "rb") as f:
            return prepare(decode(f, max_pixels), mode, size, load_size)
    except ImageError as e:
        raise type(e)(f"{path}: {e}") from None
