"""One training loop for every method: iteration-based, over infinite source and target streams.

Read top to bottom: seed -> build -> for each step: one batch of ``cat(source, target)``, `train_step` (the lr and
GRL coefficient from progress, the method's loss terms, one SGD step); evaluate at fixed intervals; report the last
iterate, or with ``train.select`` the evaluation snapshot a label-free validator scores best (never target labels).
Resumable state, devices and processes live in `tada.checkpoint` and `tada.distributed`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tada.checkpoint import (
    CheckpointStore,
    rank_rng_state,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rank_rng_state,
    set_rng_state,
    training_fingerprint,
    warm_start,
)
from tada.config import Config
from tada.data.loaders import BatchStream
from tada.data.task import DomainTask, check_trainable, crop_batch, uint8_to_input
from tada.distributed import DistributedContext, is_main_process
from tada.evaluate import HeldOut, evaluate_heldout
from tada.io import write_json_atomic
from tada.losses import total_loss
from tada.methods import Method, build_model, get_method, loss_terms
from tada.models.network import TadaNet
from tada.optim import build_optimizer, set_learning_rate
from tada.schedules import grl_coeff, lr_factor


@dataclass(frozen=True)
class LogRow:
    """One logged row. ``kind`` is ``"train"`` (each loss term's mean over the logging interval, ``lr`` and
    ``grl_coeff``) or ``"eval"`` (`tada.evaluate.evaluate_heldout`'s metrics)."""

    kind: str
    step: int
    values: dict[str, float]

    def flat(self) -> dict[str, float]:
        return {"step": self.step, **self.values}


@dataclass
class TrainResult:
    """The trained model and everything logged, in order.

    ``model`` is the last iterate, or with ``train.select`` the snapshot that scored best on that validator;
    ``final`` is its evaluation and ``last`` the last iterate's (the same row without selection).
    """

    model: TadaNet
    log: list[LogRow] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)  # rule, step and score of the chosen snapshot
    seconds: float = 0.0
    init_from: dict[str, Any] | None = None  # train.init_from's lineage (`tada.checkpoint.warm_start`)

    @property
    def history(self) -> list[dict[str, float]]:
        return [row.flat() for row in self.log if row.kind == "train"]

    @property
    def evaluations(self) -> list[dict[str, float]]:
        return [row.flat() for row in self.log if row.kind == "eval"]

    def save(self, config: Config, task: DomainTask, model_path: str | Path, summary_path: str | Path) -> None:
        """The checkpoint and the summary (``final``, ``last_iterate``, ``selection``, every evaluation and the
        resolved config), each written atomically; under torchrun only rank 0 writes."""
        if not is_main_process():
            return
        save_checkpoint(model_path, self.model, config, task.classes, task.in_channels, step=self.selection["step"],
                        metrics=self.final, selection=self.selection, last_metrics=self.last)
        write_json_atomic(summary_path, {
            "method": config.method.name, "final": self.final, "last_iterate": self.last,
            "selection": self.selection, "evaluations": self.evaluations, "seconds": round(self.seconds, 2),
            "config_digest": config.digest(), "config": config.to_dict(),
            **({"init_from": self.init_from} if self.init_from else {}),
        })


@dataclass(frozen=True)
class StepStats:
    terms: dict[str, torch.Tensor]  # "loss" and each term of the method, detached
    lr: float
    grl_coeff: float


def train_step(net: torch.nn.Module, optimizer: torch.optim.Optimizer, config: Config, method: Method,
               x: torch.Tensor, source_labels: torch.Tensor, step: int) -> StepStats:
    """One optimisation step (``step`` counts from 1): set the learning rate and the GRL coefficient of this
    iteration, one forward pass over ``x = cat(source, target)`` (so BatchNorm sees both domains), the method's loss
    ``L_y + gamma * L_h + lambda * (L_l + L_g)``, backward, SGD. ``net`` is the model or its DDP wrapper."""
    model = getattr(net, "module", net)
    lr = config.optim.lr * lr_factor(step - 1, config.optim.lr_gamma, config.optim.lr_beta)
    set_learning_rate(optimizer, lr)
    coeff = grl_coeff(step - 1, config.method.grl_warmup, config.method.grl_max)
    model.set_grl_coeff(coeff)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=config.train.precision == "bf16"):
        out = net(x)
        terms = loss_terms(method, out, source_labels, detach_global_attention=config.method.detach_global_attention)
        loss = total_loss(terms, config.method.adversarial_weight, config.method.entropy_weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return StepStats({"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}}, lr, coeff)


def train(config: Config, task: DomainTask, log: Callable[[LogRow], None] | None = None,
          on_eval: Callable[[int, TadaNet], None] | None = None) -> TrainResult:
    """Train ``config.method.name`` on ``task``; ``log`` receives every `LogRow` as it is logged, and ``on_eval``
    the step and the model (in eval mode; it must leave it unchanged) at every evaluation, e.g. to keep what a
    benchmark needs of each snapshot.

    With ``train.checkpoint_interval`` the complete state is saved every that many steps (`CheckpointStore`) and a
    run with the same fingerprint (same training params, same data) resumes from the latest one: the rows logged
    before the interruption are replayed to ``log`` and the run ends exactly as an uninterrupted one would.
    Under ``torchrun`` ``train.batch_size`` is the global batch, split evenly over the ranks.
    """
    t = config.train
    method = get_method(config.method.name)
    check_trainable(task, t.batch_size)
    dist = DistributedContext.from_env(t.device)
    if t.batch_size % dist.world_size:
        raise ValueError(f"train.batch_size ({t.batch_size}) must divide evenly over {dist.world_size} processes")
    seed_everything(t.seed, t.deterministic, t.num_threads)
    started = time.perf_counter()
    device = dist.device
    model = build_model(config, num_classes=len(task.classes), in_channels=task.in_channels)
    lineage = warm_start(model, t.init_from, task.classes) if t.init_from else None
    model = model.to(device, memory_format=torch.channels_last if t.channels_last else torch.preserve_format)
    optimizer = build_optimizer(model, config.optim)
    net = dist.wrap(model, t.sync_batchnorm)
    generator = torch.Generator().manual_seed(t.seed)  # the batch order: the same on every rank
    augment = dist.own_random_streams(t.seed, generator)  # crops and flips (in one process: ``generator``)
    per_rank = t.batch_size // dist.world_size
    source_x, target_x = task.source_train.images, task.target_train.images  # uint8, in memory or memory-mapped
    source_y = torch.from_numpy(task.source_train.labels)
    streams = {name: BatchStream(len(images), per_rank, generator, dist.rank, dist.world_size)
               for name, images in (("source", source_x), ("target", target_x))}
    held_out = HeldOut.from_task(task, config.validators.max_images)
    result = TrainResult(model, init_from=lineage)
    running: dict[str, torch.Tensor] = {}  # detached sums of each term since the last log row
    best: dict[str, Any] | None = None  # with train.select: step, score and weights of the best snapshot so far

    def emit(kind: str, step: int, values: dict[str, float]) -> None:
        result.log.append(row := LogRow(kind, step, values))
        if log and dist.is_main:
            log(row)

    store = CheckpointStore(Path(t.checkpoint_dir), training_fingerprint(config, task, dist.world_size,
                                                                 lineage and lineage["sha256"])) \
        if t.checkpoint_interval else None
    first_step = 1
    if store is not None and (state := store.latest()) is not None:
        first_step = state["step"] + 1
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        for name, stream in streams.items():
            stream.load_state_dict(state["streams"][name])
        running, best = {k: v.to(device) for k, v in state["running"].items()}, state["best"]
        set_rng_state(state["rng"], generator)
        if dist.group:
            set_rank_rng_state(state["ranks"][dist.rank], augment)
        for row in state["log"]:
            emit(row["kind"], row["step"], row["values"])
        if dist.is_main:
            print(f"train: resumed from {store.path_for(state['step'])} (step {state['step']} of {t.iterations})",
                  flush=True)

    model.train()
    for step in range(first_step, t.iterations + 1):
        si, ti = streams["source"].next(), streams["target"].next()
        x = torch.cat([_batch(source_x, si, device, t.pin_memory), _batch(target_x, ti, device, t.pin_memory)])
        x = crop_batch(x, config.data.image_size, t.augment, augment).to(device, non_blocking=True)
        if t.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        stats = train_step(net, optimizer, config, method, x, source_y[si].to(device, non_blocking=True), step)

        for name, value in stats.terms.items():
            running[name] = running.get(name, 0.0) + value.float()
        if step % t.log_interval == 0 or step == t.iterations:
            count = t.log_interval if step % t.log_interval == 0 else step % t.log_interval
            emit("train", step, {"lr": stats.lr, "grl_coeff": stats.grl_coeff,
                                 **{name: dist.mean(total / count).item() for name, total in running.items()}})
            running = {}
        if step % t.eval_interval == 0 or step == t.iterations:
            dist.share_main_buffers(model)  # the ranks evaluate rank 0's model (the one written), each a share
            metrics = evaluate_heldout(model, held_out, t.eval_batch_size, config.validators, dist)
            if t.select != "last" and (best is None or metrics[t.select] > best["score"]):  # label-free only
                best = {"step": step, "score": metrics[t.select],
                        "model": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}}
            emit("eval", step, metrics)
            if on_eval is not None:
                model.eval()
                on_eval(step, model)
                model.train()
        if store is not None and step % t.checkpoint_interval == 0 and step < t.iterations:
            ranks = dist.gather(rank_rng_state(augment)) if dist.group else None
            if dist.is_main:
                store.save(step, {
                    "step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "streams": {name: stream.state_dict() for name, stream in streams.items()},
                    "running": {k: v.detach().cpu() for k, v in running.items()}, "rng": rng_state(generator),
                    "ranks": ranks,
                    "best": best, "log": [{"kind": r.kind, "step": r.step, "values": r.values} for r in result.log],
                })
            dist.barrier()

    if store is not None and dist.is_main:
        store.clear()  # the finished model is the stage's output; its checkpoints are no longer needed
    dist.close()
    result.model = model.cpu()  # checkpoints, evaluation and export are device-agnostic
    result.last = result.final = result.evaluations[-1]
    result.selection = {"rule": t.select, "step": t.iterations}
    if best is not None:
        result.model.load_state_dict(best["model"])
        result.final = next(row for row in result.evaluations if row["step"] == best["step"])
        result.selection = {"rule": t.select, "step": best["step"], "score": best["score"]}
    result.seconds = time.perf_counter() - started
    return result


def _batch(images: np.ndarray, idx: torch.Tensor, device: torch.device, pin: bool) -> torch.Tensor:
    """One batch of uint8 images as network input (page-locked for an asynchronous copy to the GPU)."""
    x = torch.from_numpy(images[idx.numpy()])  # fancy indexing copies just the batch, even from a memory map
    return uint8_to_input(x.pin_memory() if pin and device.type == "cuda" else x)
