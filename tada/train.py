"""One training loop for every method: iteration-based, over infinite source and target streams.

Read top to bottom: seed -> build -> for each step: set lr and GRL coefficient from progress, forward
``cat(source, target)``, the method's loss terms, one SGD step; evaluate at fixed intervals; report the last iterate
(no model selection on target test labels).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from tada.config import Config, OptimConfig
from tada.data.loaders import infinite_batches
from tada.data.task import DomainTask, crop_batch, to_tensor
from tada.evaluate import evaluate
from tada.losses import total_loss
from tada.methods import build_model, get_method, loss_terms
from tada.models.network import TadaNet
from tada.schedules import grl_coeff, lr_factor, progress


@dataclass
class TrainResult:
    """The trained model (last iterate), the logged history and the final evaluation."""

    model: TadaNet
    history: list[dict[str, float]] = field(default_factory=list)
    evaluations: list[dict[str, float]] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


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


def evaluate_task(model: TadaNet, tensors: dict[str, torch.Tensor], batch_size: int) -> dict[str, float]:
    """Source and target test metrics, keys prefixed ``source_`` / ``target_``."""
    metrics = {}
    for domain in ("source", "target"):
        if f"{domain}_x" not in tensors:  # an unlabelled target without a test set: nothing to score
            continue
        for name, value in evaluate(model, tensors[f"{domain}_x"], tensors[f"{domain}_y"], batch_size).items():
            metrics[f"{domain}_{name}"] = value
    return metrics


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
    """Train ``config.method.name`` on ``task``; ``log`` receives every logged row (losses and evaluations)."""
    t = config.train
    method = get_method(config.method.name)
    seed_everything(t.seed, t.deterministic, t.num_threads)
    started = time.perf_counter()

    device = resolve_device(t.device)
    model = build_model(config, num_classes=len(task.classes), in_channels=task.in_channels).to(device)
    optimizer = build_optimizer(model, config.optim)
    generator = torch.Generator().manual_seed(t.seed)
    source = infinite_batches(
        to_tensor(task.source_train.images), torch.from_numpy(task.source_train.labels),
        batch_size=t.batch_size, generator=generator,
    )
    target = infinite_batches(to_tensor(task.target_train.images), batch_size=t.batch_size, generator=generator)
    held_out = {"source_x": to_tensor(task.source_test.images), "source_y": torch.from_numpy(task.source_test.labels)}
    if task.target_test is not None:
        held_out |= {"target_x": to_tensor(task.target_test.images),
                     "target_y": torch.from_numpy(task.target_test.labels)}

    result = TrainResult(model)
    running: dict[str, torch.Tensor] = {}
    model.train()
    for step in range(1, t.iterations + 1):
        p = progress(step - 1, t.iterations)
        lr = config.optim.lr * lr_factor(p, config.optim.lr_alpha, config.optim.lr_beta)
        set_learning_rate(optimizer, lr)
        coeff = grl_coeff(p, config.method.grl_alpha, config.method.grl_max)
        model.set_grl_coeff(coeff)

        (xs, ys), (xt,) = next(source), next(target)
        x = crop_batch(torch.cat([xs, xt]), config.data.image_size, t.augment, generator)
        x, ys = x.to(device, non_blocking=True), ys.to(device, non_blocking=True)
        out = model(x)  # one pass, so BatchNorm sees both domains
        terms = loss_terms(method, out, ys, detach_global_attention=config.method.detach_global_attention)
        loss = total_loss(terms, config.method.adversarial_weight, config.method.entropy_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

        # Accumulate detached tensors; turn them into numbers only at the logging interval.
        for name, value in {"loss": loss, **terms}.items():
            running[name] = running.get(name, 0.0) + value.detach()
        if step % t.log_interval == 0 or step == t.iterations:
            count = t.log_interval if step % t.log_interval == 0 else step % t.log_interval
            row = {"step": step, "lr": lr, "grl_coeff": coeff}
            row |= {name: (total / count).item() for name, total in running.items()}
            running = {}
            result.history.append(row)
            if log:
                log(row)
        if step % t.eval_interval == 0 or step == t.iterations:
            row = {"step": step, **evaluate_task(model, held_out, t.eval_batch_size)}
            result.evaluations.append(row)
            if log:
                log(row)

    result.model = model.cpu()  # checkpoints, evaluation and export are device-agnostic
    result.final = result.evaluations[-1]  # the last iterate, never the best one on target labels
    result.seconds = time.perf_counter() - started
    return result
