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

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tada.data.task import DomainTask, ImageSet
from tada.io import replace_dir, staging_dir

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


def write_dataset(task: DomainTask, root: str | Path) -> list[ManifestRow]:
    """Write ``task``'s images and manifest under ``root``, replacing what was there only once all is written."""
    with staging_dir(root) as staging:
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
        with open(staging / MANIFEST, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            writer.writerows([getattr(r, c) for c in COLUMNS] for r in rows)
        (staging / CLASSES).write_text("".join(f"{c}\n" for c in task.classes))
        replace_dir(staging, root)
    return rows


def read_manifest(root: str | Path) -> tuple[list[ManifestRow], tuple[str, ...]]:
    """The manifest rows and class names of a materialised dataset, with a clear error for a missing or bad file."""
    root = Path(root)
    manifest, classes_file = root / MANIFEST, root / CLASSES
    for path in (manifest, classes_file):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run the fetch stage first (dvc repro fetch)")
    with open(manifest, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{manifest}: columns must be {', '.join(COLUMNS)}, got {reader.fieldnames}")
        rows = []
        for line, record in enumerate(reader, start=2):
            try:
                rows.append(ManifestRow(**{**record, "width": int(record["width"]), "height": int(record["height"])}))
            except (TypeError, ValueError) as e:
                raise ValueError(f"{manifest}, line {line}: {e}") from None
    classes = tuple(line.strip() for line in classes_file.read_text().splitlines() if line.strip())
    return rows, classes


def load_image(path: Path, mode: str, size: int) -> np.ndarray:
    """Decode one image as ``mode`` ("L" or "RGB") at ``size`` x ``size``."""
    with Image.open(path) as im:
        im = im.convert(mode)
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(im)


def load_task(root: str | Path, image_size: int, mode: str = "L") -> DomainTask:
    """A `DomainTask` from a materialised dataset; the target's training labels are never read."""
    root = Path(root)
    rows, classes = read_manifest(root)
    index = {c: i for i, c in enumerate(classes)}
    sets = {}
    for domain, split in SPLITS:
        selected = [r for r in rows if (r.domain, r.split) == (domain, split)]
        if not selected:
            raise ValueError(f"{root / MANIFEST}: no images for domain {domain!r}, split {split!r}")
        images = np.stack([load_image(root / r.path, mode, image_size) for r in selected])
        unlabelled = (domain, split) == ("target", "train")
        labels = None if unlabelled else np.array([index[r.label] for r in selected], dtype=np.int64)
        sets[(domain, split)] = ImageSet(images, labels)
    return DomainTask(classes, sets[("source", "train")], sets[("source", "test")],
                      sets[("target", "train")], sets[("target", "test")])
