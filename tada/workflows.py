"""Whole jobs built from the library's pieces, shared by the CLI, the DVC stages and the benchmarks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from tada.checkpoint import save_checkpoint
from tada.config import Config, DataConfig
from tada.data.download import ensure_dataset
from tada.data.folder import read_folder_dataset
from tada.data.manifest import ManifestRow, load_task, write_dataset, write_samples
from tada.data.registry import get_dataset
from tada.data.samples import Sample
from tada.data.task import SOURCE_SPLIT_SEED, DomainTask, build_default_task, stratified_split
from tada.io import write_json_atomic
from tada.train import train


def build_task(config: Config) -> DomainTask:
    """The task named by ``config.data.name``, generated in memory."""
    if config.data.name == "synthetic_to_handwritten":
        return build_default_task(config.data)
    raise ValueError(f"data.name: no task named {config.data.name!r}")


def fetch_dataset(config: Config, root: str | Path, log: Callable[[str], None] = print) -> list[ManifestRow]:
    """Materialise the dataset named by ``data.name`` as images + manifest under ``root`` (replaced whole,
    atomically): the generated default task, a benchmark (downloaded and verified first) or the user's folders."""
    if config.data.name == "synthetic_to_handwritten":
        return write_dataset(build_task(config), root)
    if config.data.name == "folder":
        splits, classes = read_folder_dataset(config.data.folder)
    else:
        splits, classes = benchmark_splits(config.data, log)
    return write_samples(hold_out_source(splits, config.data.source_val_fraction), classes, root, log)


def hold_out_source(
    splits: dict[tuple[str, str], Sequence[Sample]], fraction: float
) -> dict[tuple[str, str], Sequence[Sample]]:
    """Give a dataset without a source test split one: ``fraction`` of each source class (at least one image of a
    class with two or more), chosen with a fixed seed, is held out from training as ``("source", "test")`` for the
    source accuracy and the label-free validators."""
    if ("source", "test") in splits:
        return splits
    source = list(splits[("source", "train")])
    train, test = stratified_split(np.array([s.label for s in source]), fraction, SOURCE_SPLIT_SEED, min_test=1)
    held_out = {("source", "train"): [source[i] for i in train], ("source", "test"): [source[i] for i in test]}
    return held_out | {key: value for key, value in splits.items() if key != ("source", "train")}


def benchmark_splits(
    cfg: DataConfig, log: Callable[[str], None] = print
) -> tuple[dict[tuple[str, str], Sequence[Sample]], tuple[str, ...]]:
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
    splits: dict[tuple[str, str], Sequence[Sample]] = {("source", "train"): source.train}
    if source.test:
        splits[("source", "test")] = source.test
    if target.test:
        # The benchmark has a target test split: the training images go in unlabelled, as training sees them.
        splits[("target", "train")] = [Sample(None, path=s.path, image=s.image) for s in target.train]
        splits[("target", "test")] = target.test
    else:
        splits[("target", "train")] = target.train  # labels kept for the transductive evaluation only
    return splits, spec.classes


def load_fetched_task(config: Config, root: str | Path) -> DomainTask:
    """The task from a fetched dataset, images as ``data.color_mode`` at ``data.image_size``."""
    return load_task(root, config.data.image_size, config.data.color_mode, config.data.load_size,
                     config.data.num_workers, config.data.decoded_cache)


def train_and_save(
    config: Config,
    task: DomainTask,
    model_path: str | Path,
    metrics_path: str | Path,
    log: Callable[[dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """Train, then write the checkpoint and the metrics (both atomically). Returns the last-iterate metrics.

    Under torchrun every rank trains; only rank 0 writes.
    """
    result = train(config, task, log=log)
    if result.rank != 0:
        return result.final
    save_checkpoint(model_path, result.model, config, task.classes, task.in_channels,
                    step=result.selection["step"], metrics=result.final, selection=result.selection,
                    last_metrics=result.last)
    write_json_atomic(metrics_path, {
        "method": config.method.name,
        "final": result.final,  # the saved model: the last iterate, or the snapshot train.select chose
        "last_iterate": result.last,
        "selection": result.selection,
        "evaluations": result.evaluations,
        "seconds": round(result.seconds, 2),
        "config_digest": config.digest(),
        "config": config.to_dict(),
    })
    return result.final
