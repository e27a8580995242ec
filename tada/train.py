"""One training loop for every method: iteration-based, over infinite source and target streams.

Read top to bottom: seed -> build -> for each step: set lr and GRL coefficient from progress, forward
``cat(source, target)``, the method's loss terms, one SGD step; evaluate at fixed intervals; report the last iterate
(no model selection on target test labels).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tada.config import Config, OptimConfig
from tada.data.loaders import BatchStream
from tada.data.task import DomainTask, crop_batch, uint8_to_input
from tada.evaluate import HeldOut, evaluate_heldout
from tada.io import atomic_path
from tada.losses import total_loss
from tada.methods import build_model, get_method, loss_terms
from tada.models.network import TadaNet
from tada.schedules import grl_coeff, lr_factor, progress


@dataclass
class TrainResult:
    """The trained model, the logged history and the evaluations.

    ``model`` is the last iterate, or with ``train.select`` the evaluation snapshot that scored best on that
    validator; ``final`` is its evaluation and ``last`` the last iterate's (the same row without selection).
    """

    model: TadaNet
    history: list[dict[str, float]] = field(default_factory=list)
    evaluations: list[dict[str, float]] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)  # rule, step and score of the chosen snapshot
    seconds: float = 0.0
    rank: int = 0  # under torchrun: only rank 0 writes outputs


def resolve_device(name: str) -> torch.device:
    """``auto``: the GPU when there is one; ``cuda`` without one is an error, not a silent fallback."""
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is cuda, but torch sees no CUDA device")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


def seed_everything(seed: int, deterministic: bool, num_threads: int) -> None:
    if deterministic:  # cuBLAS needs this for deterministic matrix products on the GPU
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic)
    if num_threads > 0:
        torch.set_num_threads(num_threads)


def build_optimizer(model: TadaNet, cfg: OptimConfig) -> torch.optim.SGD:
    """SGD over the model's parameter groups (backbone, region discriminators, new layers), each with its
    ``lr_mult`` on the new layers' learning rate."""
    return torch.optim.SGD(model.param_groups(cfg.backbone_lr_mult, cfg.region_lr_mult), lr=cfg.lr,
                           momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """``lr`` is the new layers' rate at this step; every group runs at ``lr * lr_mult``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"]


def train(
    config: Config,
    task: DomainTask,
    log: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``config.method.name`` on ``task``; ``log`` receives every logged row (losses and evaluations).

    With ``train.checkpoint_interval`` the complete state (weights, optimizer, step, the batch streams' positions and
    every random generator) is saved atomically every that many steps under ``train.checkpoint_dir/<fingerprint>``,
    and a run with the same fingerprint (same training params, same data) resumes from the latest one: the rows
    logged before the interruption are replayed to ``log`` and the run ends exactly as an uninterrupted one would.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the model is wrapped in DistributedDataParallel; ``train.batch_size`` is
    the global batch, split evenly over the ranks. Only rank 0 logs and writes checkpoints.
    """
    t = config.train
    method = get_method(config.method.name)
    dist = DistributedContext.from_env(t.device)
    if t.batch_size % dist.world_size:
        raise ValueError(f"train.batch_size ({t.batch_size}) must divide evenly over {dist.world_size} processes")
    seed_everything(t.seed, t.deterministic, t.num_threads)
    started = time.perf_counter()

    device = dist.device
    model = build_model(config, num_classes=len(task.classes), in_channels=task.in_channels)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = model.to(device)
    optimizer = build_optimizer(model, config.optim)
    net = dist.wrap(model, t.sync_batchnorm)  # what the step calls: DDP under torchrun, else the model itself
    generator = torch.Generator().manual_seed(t.seed)
    per_rank = t.batch_size // dist.world_size
    # uint8 as loaded (in memory or memory-mapped: 4x smaller than float); each batch is indexed out and converted
    # with `to_tensor`'s arithmetic
    source_x, target_x = task.source_train.images, task.target_train.images
    source_y = torch.from_numpy(task.source_train.labels)
    source = BatchStream(len(source_x), per_rank, generator, dist.rank, dist.world_size)
    target = BatchStream(len(target_x), per_rank, generator, dist.rank, dist.world_size)
    held_out = HeldOut.from_task(task, config.validators.max_images)  # uint8: converted batch by batch

    result = TrainResult(model)
    rows: list[dict[str, float]] = []  # everything logged, in order (replayed on resume)
    running: dict[str, torch.Tensor] = {}
    best: dict[str, Any] | None = None  # with train.select: step, score and weights of the best snapshot so far

    def emit(row: dict[str, float]) -> None:
        rows.append(row)
        if log and dist.is_main:
            log(row)

    store = CheckpointStore(Path(t.checkpoint_dir), training_fingerprint(config, task, dist.world_size)) \
        if t.checkpoint_interval else None
    first_step = 1
    if store is not None and (state := store.latest()) is not None:
        first_step = state["step"] + 1
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        source.load_state_dict(state["source_stream"])
        target.load_state_dict(state["target_stream"])
        running = {k: v.to(device) for k, v in state["running"].items()}
        best = state["best"]
        _set_rng_state(state["rng"], generator)
        for row in state["rows"]:
            if row.get("kind") == "train":
                result.history.append(row["row"])
            else:
                result.evaluations.append(row["row"])
            emit(row["row"])
        if dist.is_main:
            print(f"train: resumed from {store.path_for(state['step'])} (step {state['step']} of {t.iterations})",
                  flush=True)

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=t.precision == "bf16")
    kinds: list[str] = [("train" if "loss" in r else "eval") for r in rows]
    model.train()
    for step in range(first_step, t.iterations + 1):
        p = progress(step - 1, t.iterations)
        lr = config.optim.lr * lr_factor(p, config.optim.lr_alpha, config.optim.lr_beta)
        set_learning_rate(optimizer, lr)
        coeff = grl_coeff(p, config.method.grl_alpha, config.method.grl_max)
        model.set_grl_coeff(coeff)

        si, ti = source.next(), target.next()
        x = torch.cat([_batch(source_x, si, device, t.pin_memory), _batch(target_x, ti, device, t.pin_memory)])
        x = crop_batch(x, config.data.image_size, t.augment, generator)
        x, ys = x.to(device, non_blocking=True), source_y[si].to(device, non_blocking=True)
        if t.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            out = net(x)  # one pass, so BatchNorm sees both domains
            terms = loss_terms(method, out, ys, detach_global_attention=config.method.detach_global_attention)
            loss = total_loss(terms, config.method.adversarial_weight, config.method.entropy_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

        # Accumulate detached tensors; turn them into numbers only at the logging interval.
        for name, value in {"loss": loss, **terms}.items():
            running[name] = running.get(name, 0.0) + value.detach().float()
        if step % t.log_interval == 0 or step == t.iterations:
            count = t.log_interval if step % t.log_interval == 0 else step % t.log_interval
            row = {"step": step, "lr": lr, "grl_coeff": coeff}
            row |= {name: dist.mean(total / count).item() for name, total in running.items()}
            running = {}
            result.history.append(row)
            kinds.append("train")
            emit(row)
        if step % t.eval_interval == 0 or step == t.iterations:
            row = {"step": step, **evaluate_heldout(model, held_out, t.eval_batch_size, config.validators)}
            if t.select != "last" and (best is None or row[t.select] > best["score"]):  # label-free, never target
                best = {"step": step, "score": row[t.select],
                        "model": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}}
            result.evaluations.append(row)
            kinds.append("eval")
            emit(row)
        if store is not None and step % t.checkpoint_interval == 0 and step < t.iterations:
            if dist.is_main:
                store.save(step, {
                    "step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "source_stream": source.state_dict(), "target_stream": target.state_dict(),
                    "running": {k: v.detach().cpu() for k, v in running.items()}, "rng": _rng_state(generator),
                    "best": best,
                    "rows": [{"kind": k, "row": r} for k, r in zip(kinds, rows, strict=True)],
                })
            dist.barrier()

    if store is not None and dist.is_main:
        store.clear()  # the finished model is the stage's output; its checkpoints are no longer needed
    dist.close()
    result.model = model.cpu()  # checkpoints, evaluation and export are device-agnostic
    result.last = result.final = result.evaluations[-1]  # never the best one on target labels
    result.selection = {"rule": t.select, "step": t.iterations}
    if best is not None:
        result.model.load_state_dict(best["model"])
        result.final = next(row for row in result.evaluations if row["step"] == best["step"])
        result.selection = {"rule": t.select, "step": best["step"], "score": best["score"]}
    result.seconds = time.perf_counter() - started
    result.rank = dist.rank
    return result


def _batch(images: np.ndarray, idx: torch.Tensor, device: torch.device, pin: bool) -> torch.Tensor:
    """One batch of uint8 images as network input (page-locked for an asynchronous copy to the GPU)."""
    x = torch.from_numpy(images[idx.numpy()])  # fancy indexing copies just the batch, even from a memory map
    return uint8_to_input(x.pin_memory() if pin and device.type == "cuda" else x)


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generator": generator.get_state(),
    }


def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["generator"])


def training_fingerprint(config: Config, task: DomainTask, world_size: int) -> str:
    """What a checkpoint is valid for: every setting that shapes training (not where or how often checkpoints are
    written), the data itself, and the number of processes."""
    settings = config.to_dict()
    settings["train"] = {k: v for k, v in settings["train"].items() if k not in ("checkpoint_interval",
                                                                                  "checkpoint_dir")}
    relevant = {k: settings[k] for k in ("data", "model", "method", "optim", "train", "validators")}
    digest = hashlib.sha256(json.dumps({"config": relevant, "world_size": world_size}, sort_keys=True).encode())
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
        for stale in self.dir.glob(".step_*.tmp"):  # left by a process killed while writing
            if stale.stat().st_mtime < time.time() - 60:
                stale.unlink(missing_ok=True)

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class DistributedContext:
    """The process's place under torchrun (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``), or a single process."""

    rank: int
    world_size: int
    device: torch.device
    group: bool

    @classmethod
    def from_env(cls, device_name: str) -> DistributedContext:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls(0, 1, resolve_device(device_name), False)
        import torch.distributed as td

        device = resolve_device(device_name)
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if not td.is_initialized():
            td.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(td.get_rank(), td.get_world_size(), device, True)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: TadaNet, sync_batchnorm: bool) -> torch.nn.Module:
        if not self.group:
            return model
        from torch.nn.parallel import DistributedDataParallel

        if sync_batchnorm and self.device.type == "cuda":  # SyncBatchNorm is GPU-only
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean over ranks of a logged scalar, so rank 0 logs the global batch's loss."""
        if not self.group:
            return value
        import torch.distributed as td

        value = value.clone()
        td.all_reduce(value)
        return value / self.world_size

    def barrier(self) -> None:
        if self.group:
            import torch.distributed as td

            td.barrier()

    def close(self) -> None:
        if self.group:
            import torch.distributed as td

            td.barrier()
            td.destroy_process_group()
