"""A materialised dataset on disk: image files plus one manifest table describing them.

Layout under the data root::

    manifest.csv   path, domain, split, label, width, height, mode, sha256   (one row per image)
    classes.txt    the class names, one per line, in label-index order
    images/<domain>/<split>/<label or unlabeled>/<n>.png

``path`` is relative to the root. Target training images are written without a label: they are used unlabelled.
`write_dataset` builds the whole tree in a temporary directory and swaps it in, so an interrupted fetch never leaves
a half-written dataset behind.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from tada.data.samples import check_class_name, check_contained
from tada.io import NO_SPACE, no_space, read_text, replace_dir, staging_dir

if TYPE_CHECKING:
    from tada.data.samples import Sample
    from tada.data.task import DomainTask

COLUMNS = ("path", "domain", "split", "label", "width", "height", "mode", "sha256")
MANIFEST = "manifest.csv"
CLASSES = "classes.txt"
SPLITS = (("source", "train"), ("source", "test"), ("target", "train"), ("target", "test"))


@dataclass(frozen=True)
class ManifestRow:
    path: str
    domain: str
    split: str
    label: str  # "" when unlabelled
    width: int
    height: int
    mode: str
    sha256: str


def _encode_png(image: np.ndarray) -> tuple[bytes, Image.Image]:
    pil = Image.fromarray(image)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue(), pil


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)[-80:]


def _place(src: Path, dest: Path) -> None:
    """Hard-link ``src`` at ``dest`` (no copy of large datasets), or copy it across file systems."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def _describe(path: Path) -> tuple[int, int, str]:
    """``(width, height, mode)``; ``(0, 0, "")`` for a file that does not decode (the validate stage reports it)."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.width, im.height, im.mode
    except (OSError, ValueError, Image.DecompressionBombError):
        return 0, 0, ""


@contextlib.contextmanager
def _disk_space(root: str | Path) -> Iterator[None]:
    """A full disk while the dataset is laid out: `tada.io.no_space` naming ``root``, with what was free then."""
    try:
        yield
    except OSError as e:
        if e.errno not in NO_SPACE:
            raise
        raise no_space(root, fix="free space there (df -h), or lay the data out on a larger disk") from None


def write_samples(
    splits: dict[tuple[str, str], Sequence[Sample]],
    classes: Sequence[str],
    root: str | Path,
    log: Callable[[str], None] | None = None,
) -> list[ManifestRow]:
    """Materialise ``(domain, split) -> samples`` under ``root`` as files + manifest, replacing ``root`` whole.

    File samples keep their format and bytes (hard-linked when possible); in-memory samples are written as PNG.
    A file that does not decode is still listed (with width 0), so validation can report it by path. Before anything
    is copied, every file must lie inside its listing's root (`check_contained`) and every label be a usable class
    name (`check_class_name`): nothing from elsewhere on the machine reaches ``data/`` (and so DVC's cache).
    """
    for (domain, split), samples in splits.items():
        for sample in samples:
            check_contained(sample)
            if sample.label is not None:
                check_class_name(sample.label, sample.origin or f"{domain}/{split}")
    with staging_dir(root) as staging, _disk_space(root):
        rows = []
        for (domain, split), samples in splits.items():
            vanished = 0
            for i, sample in enumerate(samples):
                folder = f"images/{domain}/{split}/{sample.label or 'unlabeled'}"
                (staging / folder).mkdir(parents=True, exist_ok=True)
                if sample.image is not None:
                    rel = f"{folder}/{i:06d}.png"
                    data, pil = _encode_png(sample.image)
                    (staging / rel).write_bytes(data)
                    size = (pil.width, pil.height, pil.mode)
                else:
                    assert sample.path is not None
                    rel = f"{folder}/{i:06d}_{_safe_name(sample.path.name)}"
                    try:
                        if not sample.path.is_file():
                            raise FileNotFoundError(f"{domain}/{split}: image file {sample.path} not found")
                        _place(sample.path, staging / rel)  # a hard link: the bytes are ours from here on
                    except FileNotFoundError:
                        if not sample.volatile:
                            raise
                        vanished += 1
                        continue
                    data = (staging / rel).read_bytes()
                    size = _describe(staging / rel)
                rows.append(ManifestRow(rel, domain, split, sample.label or "", *size,
                                        hashlib.sha256(data).hexdigest()))
            if log:
                log(f"{domain}/{split}: {len(samples) - vanished} images" +
                    (f" ({vanished} deleted from the folder while it was read: left out)" if vanished else ""))
        _write_tables(staging, rows, classes)
        replace_dir(staging, root)
    return rows


def _write_tables(staging: Path, rows: list[ManifestRow], classes: Sequence[str]) -> None:
    with open(staging / MANIFEST, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows([getattr(r, c) for c in COLUMNS] for r in rows)
    (staging / CLASSES).write_text("".join(f"{c}\n" for c in classes))


def write_dataset(task: DomainTask, root: str | Path) -> list[ManifestRow]:
    """Write ``task``'s images and manifest under ``root``, replacing what was there only once all is written."""
    with staging_dir(root) as staging, _disk_space(root):
        rows = []
        sets = {("source", "train"): task.source_train, ("source", "test"): task.source_test,
                ("target", "train"): task.target_train, ("target", "test"): task.target_test}
        for (domain, split), image_set in sets.items():
            for i, image in enumerate(image_set.images):
                label = "" if image_set.labels is None else task.classes[int(image_set.labels[i])]
                rel = f"images/{domain}/{split}/{label or 'unlabeled'}/{i:05d}.png"
                data, pil = _encode_png(image)
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                (staging / rel).write_bytes(data)
                rows.append(ManifestRow(rel, domain, split, label, pil.width, pil.height, pil.mode,
                                        hashlib.sha256(data).hexdigest()))
        _write_tables(staging, rows, task.classes)
        replace_dir(staging, root)
    return rows


def read_manifest(root: str | Path) -> tuple[list[ManifestRow], tuple[str, ...]]:
    """The manifest rows and class names of a materialised dataset, with a clear error for a missing or bad file."""
    root = Path(root)
    manifest, classes_file = root / MANIFEST, root / CLASSES
    for path in (manifest, classes_file):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run the fetch stage first (dvc repro fetch)")
    reader = csv.DictReader(io.StringIO(read_text(manifest), newline=""))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise ValueError(f"{manifest}: columns must be {', '.join(COLUMNS)}, got {reader.fieldnames}")
    rows = []
    for line, record in enumerate(reader, start=2):
        try:
            rows.append(ManifestRow(**{**record, "width": int(record["width"]), "height": int(record["height"])}))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{manifest}, line {line}: {e}") from None
    classes = tuple(line.strip() for line in read_text(classes_file).splitlines() if line.strip())
    return rows, classes
