"""``data.name: folder``: the user's own source and target images.

Each of ``data.folder.source``, ``.target`` and ``.target_test`` is either

- a directory in ImageFolder layout, ``<class name>/<image>``; for the target, a directory of images without class
  folders is read as unlabelled, or
- a CSV (or plain list) file of ``path,label`` rows, paths relative to the file; the label may be left empty for the
  target, and a first row ``path,label`` is a header.

The classes are the source's labels, sorted. Files are taken as they are (any size, grayscale or colour); a file
that does not decode is listed anyway, so that the validate stage names it instead of the pipeline crashing on it.

A flat, unlabelled target directory may be one that is still being written to, such as ``tada serve --capture``'s
(`tada.serving.capture`): it is read as a snapshot. A file whose name starts with a dot is never taken: capture
writes each image under such a name and renames it into place when it is whole, as rsync does, so a file still
being written is never read (write into the folder the same way). ``data.folder.target_recent`` keeps the newest
N and ``data.folder.target_since`` those modified since a time (production drifts); a file deleted before it is
laid out (capture keeps a byte budget, oldest first) is left out. The manifest written by ``fetch`` records
exactly the files used, with their SHA-256.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

from tada.config import FolderConfig, since_timestamp
from tada.data.samples import IMAGE_SUFFIXES, Sample, check_class_name, check_contained
from tada.io import read_text


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def snapshot(folder: Path, recent: int = 0, since: float | None = None) -> tuple[list[Path], dict[str, int]]:
    """The images of a flat folder that may be written to while it is read: those modified at or after ``since``
    (a timestamp), the ``recent`` newest of them (0: all), oldest first; and how many were left out for each
    reason."""
    dated, counts = [], {"before_since": 0, "older_than_recent": 0}
    for path in _images_in(folder):
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:  # deleted since it was listed
            continue
        if since is not None and mtime < since:
            counts["before_since"] += 1
        else:
            dated.append((mtime, path.name, path))
    dated.sort()
    if recent and len(dated) > recent:
        counts["older_than_recent"] = len(dated) - recent
        dated = dated[-recent:]
    return [path for _, _, path in dated], counts


def read_csv_listing(path: Path) -> list[tuple[int, str, str | None]]:
    """``(line, path, label)`` of each ``path[,label]`` row of a CSV or whitespace-free list file; a header row
    ``path,label`` is skipped."""
    rows = []
    for number, record in enumerate(csv.reader(io.StringIO(read_text(path), newline="")), start=1):
        if not record or not record[0].strip() or record[0].lstrip().startswith("#"):
            continue
        if number == 1 and record[0].strip().lower() == "path":
            continue
        if len(record) > 2:
            raise ValueError(f"{path}, line {number}: expected 'path' or 'path,label', got {len(record)} fields")
        label = record[1].strip() if len(record) == 2 and record[1].strip() else None
        rows.append((number, record[0].strip(), label))
    return rows


def read_listing(spec: str, key: str, *, labels_required: bool, recent: int = 0, since: float | None = None,
                 log=None) -> list[Sample]:
    """The images named by one of ``data.folder.*`` (a directory or a CSV/list file); a flat directory of unlabelled
    images is read as a `snapshot` (``recent``, ``since``)."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{key}: {path} does not exist (expected a directory of class folders or a CSV file "
                                f"of path,label)")
    if path.is_dir():
        classes = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        loose = _images_in(path)
        if classes and loose:
            raise ValueError(f"{key}: {path} has both class folders ({classes[0].name}, ...) and images directly in "
                             f"it ({loose[0].name}, ...): use one layout")
        if classes:
            empty = [c.name for c in classes if not _images_in(c)]
            if empty:  # a class without images would vanish from the class list without a word
                raise ValueError(f"{key}: the class folder {path / empty[0]} has no images (suffixes "
                                 f"{', '.join(sorted(IMAGE_SUFFIXES))}); add some or remove the folder"
                                 + (f" (also empty: {', '.join(empty[1:])})" if len(empty) > 1 else ""))
            for c in classes:
                check_class_name(c.name, f"{key}: class folder {c}")
            samples = [Sample(c.name, path=p, root=path, origin=f"{key}: {p}") for c in classes
                       for p in _images_in(c)]
        elif labels_required:
            raise ValueError(f"{key}: {path} has no class folders; labelled images must be laid out as "
                             f"<class name>/<image>")
        else:
            files, left_out = snapshot(path, recent, since)
            samples = [Sample(None, path=p, volatile=True, root=path, origin=f"{key}: {p}") for p in files]
            if log is not None and any(left_out.values()):
                log(f"{key}: {len(files)} images of {path} taken, left out: "
                    + ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in left_out.items() if n))
    else:
        samples = []
        for number, name, label in read_csv_listing(path):
            origin = f"{key}: {path}, line {number}"
            if label is None and labels_required:
                raise ValueError(f"{origin}: {name} has no label (every row needs path,label)")
            if label is not None:
                check_class_name(label, origin)
            samples.append(Sample(label, path=path.parent / name, root=path.parent, origin=origin))
        for sample in samples:  # before anything else looks at the files: a listing names only its own images
            check_contained(sample)
        missing = [s.path for s in samples if not s.path.is_file()]
        if missing:
            raise FileNotFoundError(f"{key}: {path} lists {len(missing)} file(s) that do not exist, e.g. {missing[0]}")
    if not samples:
        raise ValueError(f"{key}: no images found in {path}")
    for sample in samples:  # a folder's symbolic links too (a listing's were checked before it was read)
        check_contained(sample)
    return samples


def read_folder_dataset(cfg: FolderConfig, log=None) -> tuple[dict[tuple[str, str], list[Sample]], tuple[str, ...]]:
    """``(domain, split) -> samples`` and the class list for the user's data."""
    for key in ("source", "target"):
        if not getattr(cfg, key):
            raise ValueError(f"data.folder.{key} must be set for data.name: folder (a directory or a CSV file)")
    source = read_listing(cfg.source, "data.folder.source", labels_required=True)
    since = None if cfg.target_since is None else since_timestamp(cfg.target_since)
    target = read_listing(cfg.target, "data.folder.target", labels_required=False, recent=cfg.target_recent,
                          since=since, log=log)
    shared = {s.path.resolve() for s in source} & {s.path.resolve() for s in target}
    if shared:
        raise ValueError(f"data.folder.source and data.folder.target name {len(shared)} of the same images (e.g. "
                         f"{min(shared)}): the target must be other images than the labelled source")
    classes = tuple(sorted({s.label for s in source if s.label}))
    if len(classes) < 2:
        raise ValueError(f"data.folder.source: {cfg.source} has {len(classes)} class ({', '.join(classes)}): a "
                         "classifier needs labelled images of at least two classes")
    splits = {("source", "train"): source, ("target", "train"): target}
    if cfg.target_test:
        splits[("target", "test")] = read_listing(cfg.target_test, "data.folder.target_test", labels_required=True)
        splits[("target", "train")] = [dataclasses.replace(s, label=None) for s in target]  # unlabelled
    elif any(s.label for s in target) and not all(s.label for s in target):
        raise ValueError("data.folder.target: label every target image or none of them (partly labelled)")
    return splits, classes
