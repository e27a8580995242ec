"""Whole jobs built from the library's pieces, shared by the CLI, the DVC stages and the benchmarks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tada.checkpoint import save_checkpoint
from tada.config import Config
from tada.data.manifest import ManifestRow, load_task, write_dataset
from tada.data.task import DomainTask, build_default_task
from tada.io import write_json_atomic
from tada.train import train


def build_task(config: Config) -> DomainTask:
    """The task named by ``config.data.name``, generated in memory."""
    if config.data.name == "synthetic_to_handwritten":
        return build_default_task(config.data)
    raise ValueError(f"data.name: no task named {config.data.name!r}")


def fetch_dataset(config: Config, root: str | Path) -> list[ManifestRow]:
    """Materialise the task's images and manifest under ``root`` (replaced whole, atomically)."""
    return write_dataset(build_task(config), root)


def load_fetched_task(config: Config, root: str | Path) -> DomainTask:
    """The task from a fetched dataset, images as ``data.color_mode`` at ``data.image_size``."""
    return load_task(root, config.data.image_size, config.data.color_mode)


def train_and_save(
    config: Config,
    task: DomainTask,
    model_path: str | Path,
    metrics_path: str | Path,
    log: Callable[[dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """Train, then write the checkpoint and the metrics (both atomically). Returns the last-iterate metrics."""
    result = train(config, task, log=log)
    save_checkpoint(model_path, result.model, config, task.classes, task.in_channels,
                    step=config.train.iterations, metrics=result.final)
    write_json_atomic(metrics_path, {
        "method": config.method.name,
        "final": result.final,
        "evaluations": result.evaluations,
        "seconds": round(result.seconds, 2),
        "config_digest": config.digest(),
        "config": config.to_dict(),
    })
    return result.final
