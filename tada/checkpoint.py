"""Checkpoints: the trained model's file, and the resumable state of a training run in progress.

* `save_checkpoint` / `load_checkpoint`: the weights with the resolved configuration, class names and step.
* `CheckpointStore`: ``<root>/<fingerprint>/step_<n>.pt``, the complete state of a run every
  ``train.checkpoint_interval`` steps (weights, optimizer, batch streams, every random generator), so a killed run
  resumes bit-identically; `training_fingerprint` says which run a state belongs to.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tada.allocator import retain_freed_memory
from tada.config import Config, config_from_dict
from tada.data.decoded import load_task
from tada.data.task import DomainTask
from tada.io import atomic_path, clean_stale
from tada.methods import build_model
from tada.models.network import TadaNet

FORMAT_VERSION = 1


def save_checkpoint(
    path: str | Path,
    model: TadaNet,
    config: Config,
    classes: tuple[str, ...],
    in_channels: int,
    step: int,
    metrics: dict[str, float] | None = None,
    selection: dict[str, Any] | None = None,
    last_metrics: dict[str, float] | None = None,
) -> None:
    """Write atomically: a killed save leaves the previous checkpoint intact.

    ``metrics`` are the evaluation of these weights (step ``step``); with ``train.select``, ``selection`` says how
    they were chosen and ``last_metrics`` is the last iterate's evaluation."""
    payload = {
        "format_version": FORMAT_VERSION,
        "model": model.state_dict(),
        "config": config.to_dict(),
        "classes": list(classes),
        "in_channels": in_channels,
        "step": step,
        "metrics": metrics or {},
        "selection": selection or {"rule": "last", "step": step},
        "last_metrics": last_metrics or metrics or {},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path) -> tuple[TadaNet, Config, dict[str, Any]]:
    """Rebuild the network from the stored configuration and load its weights (no weight download)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, empty or not a checkpoint: torch raises many types
        reason = (str(e).split(". ")[0].splitlines() or ["no data"])[0]  # torch's messages run for lines
        raise ValueError(f"{path} is not a readable checkpoint ({type(e).__name__}: {reason}; empty, truncated or "
                         f"overwritten?): restore it with `dvc checkout {path}` or retrain with `dvc repro train`") \
            from None
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        found = payload.get("format_version") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path}: checkpoint format {found}, expected {FORMAT_VERSION}: retrain with "
                         "`dvc repro train`")
    config = config_from_dict(payload["config"])
    offline = dataclasses.replace(config.model, pretrained=False, weights_path=None)
    model = build_model(
        dataclasses.replace(config, model=offline), len(payload["classes"]), payload["in_channels"]
    )
    model.load_state_dict(payload["model"])
    model.eval()
    return model, config, payload


def warm_start(model: TadaNet, path: str | Path, classes: tuple[str, ...]) -> dict[str, Any]:
    """Load the weights of the checkpoint at ``path`` (``train.init_from``) into ``model`` before training. The
    checkpoint must have the same classes and architecture. Returns the lineage: the path as given, the resolved
    file, its SHA-256, its step and the release it belongs to (``release.json`` beside it), if any."""
    resolved = Path(path).resolve()
    source, _, payload = load_checkpoint(path)
    if tuple(payload["classes"]) != tuple(classes):
        raise ValueError(f"train.init_from: {path} was trained on the classes {payload['classes']}, the data has "
                         f"{list(classes)}: a warm start needs the same classes")
    try:
        model.load_state_dict(source.state_dict())
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise ValueError(f"train.init_from: {path} has another architecture than model.* ({first}): a warm start "
                         "needs the same backbone and widths") from None
    digest = hashlib.sha256(resolved.read_bytes()).hexdigest()
    record = resolved.parent / "release.json"
    release = None
    if record.is_file():
        with contextlib.suppress(ValueError, OSError):
            release = json.loads(record.read_text(encoding="utf-8")).get("release")
    return {"path": str(path), "resolved": str(resolved), "sha256": digest, "step": payload["step"],
            "release": release}


def load_trained(path: str | Path, data_root: str | Path) -> tuple[TadaNet, Config, dict[str, Any], DomainTask]:
    """`load_checkpoint`, and the dataset materialised under ``data_root`` loaded as the model was trained on it
    (its ``data`` params). The classes must be the model's."""
    model, config, payload = load_checkpoint(path)
    task = load_task(data_root, config.data)
    if tuple(payload["classes"]) != task.classes:
        raise ValueError(f"{path} was trained on the classes {payload['classes']}; the data under {data_root} has "
                         f"{list(task.classes)}")
    return model, config, payload, task


def seed_everything(seed: int, deterministic: bool, num_threads: int) -> None:
    """Seed Python, NumPy and torch; deterministic algorithms on or off; torch's intra-op threads (0: as is); the
    C allocator keeps freed memory for the next step (`tada.allocator`)."""
    retain_freed_memory()
    if deterministic:  # cuBLAS needs this for deterministic matrix products on the GPU
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic)
    # With deterministic algorithms torch also fills every new, uninitialised tensor (with NaN), so that code reading
    # memory it never wrote is caught. Nothing here reads such memory (the same weights bit for bit, tested), and the
    # fill cost ~100 calls and several per cent of a LeNet step.
    torch.utils.deterministic.fill_uninitialized_memory = False
    if num_threads > 0:
        torch.set_num_threads(num_threads)


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every random generator a training run draws from: Python, NumPy, torch (CPU and CUDA) and ``generator``."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generator": generator.get_state(),
    }


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    """Put back what `rng_state` captured."""
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["generator"])


def rank_rng_state(augment: torch.Generator) -> dict[str, Any]:
    """What a torchrun rank draws from on its own (`tada.distributed.DistributedContext.own_random_streams`): the
    global torch generator (dropout; CPU and CUDA) and its crop generator. Rank 0 saves every rank's."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "augment": augment.get_state()}


def set_rank_rng_state(state: dict[str, Any], augment: torch.Generator) -> None:
    """Put back what `rank_rng_state` captured on this rank."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    augment.set_state(state["augment"])


def training_fingerprint(config: Config, task: DomainTask, world_size: int, init_sha256: str | None = None) -> str:
    """What a training state is valid for: every setting that shapes training (not where or how often checkpoints
    are written), the data itself, and the number of processes (under torchrun also that each rank's own random
    state is in it: checkpoints from before the ranks drew their own are not resumed)."""
    settings = config.to_dict()
    settings["train"] = {k: v for k, v in settings["train"].items() if k not in ("checkpoint_interval",
                                                                                  "checkpoint_dir")}
    relevant = {k: settings[k] for k in ("data", "model", "method", "optim", "train", "validators")}
    identity = {"config": relevant, "world_size": world_size, **({"rng": "per rank"} if world_size > 1 else {}),
                **({"init_sha256": init_sha256} if init_sha256 else {})}  # a warm start's weights, not only its path
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    for image_set in (task.source_train, task.target_train, task.source_test, task.target_test):
        if image_set is not None:
            digest.update(np.ascontiguousarray(image_set.images).tobytes())
            if image_set.labels is not None:
                digest.update(image_set.labels.tobytes())
    return digest.hexdigest()[:16]


class CheckpointStore:
    """``<root>/<fingerprint>/step_<n>.pt``, each written atomically; the two latest are kept."""

    KEEP = 2

    def __init__(self, root: Path, fingerprint: str):
        self.dir = root / fingerprint

    def path_for(self, step: int) -> Path:
        return self.dir / f"step_{step:08d}.pt"

    def _steps(self) -> list[Path]:
        return sorted(self.dir.glob("step_*.pt")) if self.dir.is_dir() else []

    def latest(self) -> dict[str, Any] | None:
        for path in reversed(self._steps()):
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - a damaged file: fall back to the previous checkpoint
                print(f"train: ignoring unreadable checkpoint {path} ({type(e).__name__}: {e})", flush=True)
        return None

    def save(self, step: int, state: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path_for(step)) as tmp:
            torch.save(state, tmp)
        for old in self._steps()[: -self.KEEP]:
            old.unlink(missing_ok=True)
        clean_stale(self.dir, "step_*")  # any step's temporary left by a process killed while writing it

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
