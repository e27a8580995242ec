"""Images as datasets hand them over before they are materialised under ``data/`` (`tada.data.manifest`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tada.preprocessing import IMAGE_SUFFIXES

__all__ = ["IMAGE_SUFFIXES", "DomainData", "Sample"]


@dataclass(frozen=True)
class Sample:
    """One image: a file (``path``) or pixels in memory (``image``, uint8 HxW or HxWx3), with its label."""

    label: str | None
    path: Path | None = None
    image: np.ndarray | None = None
    volatile: bool = False  # a file that may vanish before it is laid out (a capture evicting): then left out


@dataclass(frozen=True)
class DomainData:
    train: tuple[Sample, ...]
    test: tuple[Sample, ...] | None = None  # None: no split defined; the labelled train images are evaluated on
