"""Target domain of the default task: scikit-learn's bundled handwritten digits (UCI optdigits test set).

1,797 images of 8x8 pixels with 17 grey levels, written by 43 people, bundled inside scikit-learn (no download).
They are brought to the common image size by bilinear interpolation.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def load_handwritten_digits(size: int) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 images, upsampled to ``(size, size)`` uint8 (white ink on black), and their int64 labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    raw = (bunch.images * (255.0 / 16.0)).round().astype(np.uint8)  # (1797, 8, 8), values 0..16 -> 0..255
    images = np.stack(
        [np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BILINEAR)) for im in raw]
    )
    return images, bunch.target.astype(np.int64)
