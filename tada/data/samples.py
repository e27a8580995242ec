"""Images as datasets hand them over before they are materialised under ``data/`` (`tada.data.manifest`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tada.preprocessing import IMAGE_SUFFIXES

__all__ = ["IMAGE_SUFFIXES", "DomainData", "Sample", "check_class_name", "check_contained"]


@dataclass(frozen=True)
class Sample:
    """One image: a file (``path``) or pixels in memory (``image``, uint8 HxW or HxWx3), with its label.

    A file names the ``root`` it must lie under (the listing's folder, the extracted archive) and where it was
    listed (``origin``, e.g. ``user_data/source.csv, line 3``): `check_contained` refuses it, before anything is
    copied, when it resolves (symbolic links followed) to a file outside that root.
    """

    label: str | None
    path: Path | None = None
    image: np.ndarray | None = None
    volatile: bool = False  # a file that may vanish before it is laid out (a capture evicting): then left out
    root: Path | None = None
    origin: str | None = None


def check_contained(sample: Sample) -> None:
    """Raise ValueError unless the file ``sample.path`` lies inside ``sample.root`` once both are resolved (a
    listing naming ``../../etc/passwd``, an absolute path elsewhere, or a symbolic link out of the folder)."""
    if sample.path is None:
        return
    where = sample.origin or str(sample.path)
    if sample.root is None:
        raise ValueError(f"{where}: {sample.path} has no root to be checked against (a dataset reader must give "
                         "every file the folder it belongs to)")
    root, resolved = sample.root.resolve(), sample.path.resolve()
    if not resolved.is_relative_to(root):
        raise ValueError(f"{where}: {sample.path} resolves to {resolved}, outside {root}: a listing may only name "
                         f"images under its own folder (nothing outside it is copied into data/)")


_UNSAFE = set('/\\:*?"<>|')


def check_class_name(name: str, where: str) -> None:
    """Raise ValueError unless ``name`` can be a class: a folder name under ``data/images/<domain>/<split>/`` on
    every system (not empty, not ``.`` or ``..``, no path separator, control character or leading/trailing space)."""
    bad = (not name or name in (".", "..") or name != name.strip() or any(c in _UNSAFE for c in name)
           or any(ord(c) < 32 or ord(c) == 127 for c in name))
    if bad:
        raise ValueError(f"{where}: {name!r} is not a usable class name: it becomes a folder name, so it must not "
                         "be empty, '.' or '..', have leading or trailing spaces, or contain / \\ : * ? \" < > | or "
                         "control characters")


@dataclass(frozen=True)
class DomainData:
    train: tuple[Sample, ...]
    test: tuple[Sample, ...] | None = None  # None: no split defined; the labelled train images are evaluated on
