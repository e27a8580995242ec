"""Every dataset by ``data.name``, in one place: `materialise` lays it out under a root (images + manifest, what
the ``fetch`` stage writes); `tada.data.decoded.load_task` reads any of them back as a `DomainTask` (what
``train``, ``evaluate`` and ``export`` read).

- ``synthetic_to_handwritten``: generated offline (`tada.data.default_task`), and the shift tasks generated from
  its two domains (`tada.data.shift_tasks`);
- ``folder``: the user's images (`tada.data.folder`);
- a benchmark (`tada.data.registry`): its archives downloaded, verified and extracted (`tada.data.download`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from tada.config import DataConfig
from tada.data.download import ensure_dataset
from tada.data.folder import read_folder_dataset
from tada.data.manifest import ManifestRow, write_dataset, write_samples
from tada.data.registry import get_dataset
from tada.data.samples import Sample
from tada.data.shift_tasks import SHIFT_TASKS, build_generated_task
from tada.data.task import stratified_split

__all__ = ["benchmark_splits", "hold_out_source", "materialise"]
SOURCE_SPLIT_SEED = 20190128  # the held-out source images of datasets without a source test split
Splits = dict[tuple[str, str], Sequence[Sample]]


def materialise(cfg: DataConfig, root: str | Path, log: Callable[[str], None] = print) -> list[ManifestRow]:
    """Lay the dataset named by ``cfg.name`` out under ``root`` as images + manifest (replaced whole, atomically):
    the generated default task, the user's folders, or a benchmark (downloaded and verified first)."""
    if cfg.name in SHIFT_TASKS:
        return write_dataset(build_generated_task(cfg), root)
    if cfg.name == "folder":
        splits, classes = read_folder_dataset(cfg.folder, log)
    else:
        splits, classes = benchmark_splits(cfg, log)
    return write_samples(hold_out_source(splits, cfg.source_val_fraction), classes, root, log)


def hold_out_source(splits: Splits, fraction: float) -> Splits:
    """Give a dataset without a source test split one: ``fraction`` of each source class (at least one image of a
    class with two or more), chosen with a fixed seed, is held out from training as ``("source", "test")`` for the
    source accuracy and the label-free validators."""
    if ("source", "test") in splits:
        return splits
    source = list(splits[("source", "train")])
    train, test = stratified_split(np.array([s.label for s in source]), fraction, SOURCE_SPLIT_SEED, min_test=1)
    held_out = {("source", "train"): [source[i] for i in train], ("source", "test"): [source[i] for i in test]}
    return held_out | {key: value for key, value in splits.items() if key != ("source", "train")}


def benchmark_splits(cfg: DataConfig, log: Callable[[str], None] = print) -> tuple[Splits, tuple[str, ...]]:
    """Download (or reuse) the archives ``data.source`` and ``data.target`` need; read the two domains."""
    spec = get_dataset(cfg.name)
    spec.check_domain("data.source", cfg.source)
    spec.check_domain("data.target", cfg.target)
    if cfg.source == cfg.target:
        raise ValueError(f"data.source and data.target are both {cfg.source!r}: adaptation needs two domains")
    cache = Path(cfg.cache_dir).expanduser()
    dirs: dict[str, Path] = {}
    for domain in (cfg.source, cfg.target):
        for archive in spec.archives(domain):
            if archive.filename in dirs:
                continue
            local = Path(cfg.archive_dir).expanduser() / archive.filename if cfg.archive_dir else None
            dirs[archive.filename] = ensure_dataset(
                [archive], cache / "archives", cache / "extracted" / spec.name / archive.filename,
                mirror=cfg.mirror, local_paths={archive.filename: local} if local and local.is_file() else None,
                log=log)
    source, target = spec.read(dirs, cfg.source, spec.classes), spec.read(dirs, cfg.target, spec.classes)
    splits: Splits = {("source", "train"): source.train}
    if source.test:
        splits[("source", "test")] = source.test
    if target.test:
        # The benchmark has a target test split: the training images go in unlabelled, as training sees them.
        splits[("target", "train")] = [dataclasses.replace(s, label=None) for s in target.train]
        splits[("target", "test")] = target.test
    else:
        splits[("target", "train")] = target.train  # labels kept for the transductive evaluation only
    return splits, spec.classes
