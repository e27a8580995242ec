"""Evaluation: predictions, accuracy and attention statistics of a trained network."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tada import validators
from tada.config import ValidatorsConfig
from tada.data.task import DomainTask, ImageSet, center_crop, spaced, to_tensor
from tada.models.network import TadaNet

if TYPE_CHECKING:
    from tada.distributed import DistributedContext


@torch.no_grad()
def predict(model: TadaNet, images: torch.Tensor | np.ndarray, batch_size: int = 512) -> dict[str, torch.Tensor]:
    """Eval-mode forward over ``images``, float ``(N, C, H, W)`` or uint8 ``(N, H, W[, 3])`` (converted batch by
    batch, so a large or memory-mapped set is never all in memory as floats), in batches.

    Returns:
        ``logits (N, classes)``, ``features (N, bottleneck)`` and, where the model has them,
        ``local_attention (N, K)`` and ``domain_logits (N,)``.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start : start + batch_size]
        chunk = to_tensor(chunk) if isinstance(chunk, np.ndarray) else chunk
        out = model(chunk.to(device))
        for name in ("logits", "features", "local_attention", "domain_logits"):
            value = getattr(out, name)
            if value is not None:
                parts.setdefault(name, []).append(value.cpu())
    model.train(was_training)
    return {name: torch.cat(values) for name, values in parts.items()}


def predict_shared(model: TadaNet, images: np.ndarray, batch_size: int,
                   dist: DistributedContext | None = None) -> dict[str, torch.Tensor]:
    """`predict` with the images split between the processes of a torchrun launch: each rank predicts its own
    contiguous share and every rank gets all the outputs back, in image order (a single process: `predict`).

    Every rank must hold the same weights and buffers (`DistributedContext.share_main_buffers`), so the outputs are
    those of rank 0's model, each image's computed once."""
    if dist is None or dist.world_size == 1:
        return predict(model, images, batch_size)
    n = images.shape[0]
    own = predict(model, images[n * dist.rank // dist.world_size : n * (dist.rank + 1) // dist.world_size], batch_size)
    shares = [share for share in dist.gather(own) if share]  # a rank with no image (n < ranks) sends {}
    return {name: torch.cat([share[name] for share in shares]) for name in (shares[0] if shares else {})}


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1]."""
    return (logits.argmax(dim=1) == labels).float().mean().item()


@dataclass(frozen=True)
class HeldOut:
    """The images an evaluation scores, uint8 as loaded (see `HeldOut.from_task`).

    Attributes:
        source_val: labelled source images never trained on (source accuracy, DEV, ATC's threshold).
        source_train: a sample of the source training images (DEV's domain classifier).
        target: unlabelled target images (the validators): what a user without target labels has.
        target_test: labelled target test images, or None when the target has no labels.
    """

    source_val: ImageSet
    source_train: np.ndarray
    target: np.ndarray
    target_test: ImageSet | None

    @classmethod
    def from_task(cls, task: DomainTask, max_images: int) -> HeldOut:
        """The task's held-out splits, and at most ``max_images`` evenly spaced training images of each domain,
        centre-cropped to the network's input as evaluation sees them."""
        size = task.source_test.images.shape[1]
        return cls(task.source_test, center_crop(spaced(task.source_train.images, max_images), size),
                   center_crop(spaced(task.target_train.images, max_images), size), task.target_test)


def _domain_metrics(prefix: str, out: dict[str, torch.Tensor], labels: np.ndarray) -> dict[str, float]:
    metrics = {f"{prefix}_accuracy": accuracy(out["logits"], torch.from_numpy(labels))}
    if "local_attention" in out:
        metrics[f"{prefix}_mean_local_attention"] = out["local_attention"].mean().item()
    if "domain_logits" in out:
        metrics[f"{prefix}_mean_domain_probability"] = torch.sigmoid(out["domain_logits"]).mean().item()
    return metrics


def evaluate_heldout(model: TadaNet, held_out: HeldOut, batch_size: int, cfg: ValidatorsConfig,
                     dist: DistributedContext | None = None) -> dict[str, float]:
    """The held-out evaluation every caller shares (training's evaluations, the evaluate stage, the quality gate).

    Under torchrun (``dist``) the ranks share the predictions (`predict_shared`) and every rank returns the same
    metrics.

    Returns:
        ``source_accuracy`` and, where the model has them, ``source_mean_local_attention`` and
        ``source_mean_domain_probability``; the same three for ``target_`` when the target has labelled test
        images; every label-free validator of `tada.validators` (computed on the unlabelled target images, never
        with a target label) and ATC's ``atc_threshold``.
    """
    source = predict_shared(model, held_out.source_val.images, batch_size, dist)
    metrics = _domain_metrics("source", source, held_out.source_val.labels)
    if held_out.target_test is not None:
        metrics |= _domain_metrics("target", predict_shared(model, held_out.target_test.images, batch_size, dist),
                                   held_out.target_test.labels)
    target = predict_shared(model, held_out.target, batch_size, dist)
    source_train = predict_shared(model, held_out.source_train, batch_size, dist)
    scores = validators.score_all(
        {"logits": source["logits"].numpy(), "features": source["features"].numpy(),
         "labels": held_out.source_val.labels},
        source_train["features"].numpy(),
        {"logits": target["logits"].numpy(), "features": target["features"].numpy()},
        snd_temperature=cfg.snd_temperature, atc_score=cfg.atc_score)
    return metrics | {k: v for k, v in scores.items() if k != "source_accuracy"}  # the same number, computed above


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``(C, C)`` counts, rows = true class, columns = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def summary_metrics(metrics: dict[str, float], selection: dict[str, Any] | None = None) -> dict[str, Any]:
    """``reports/metrics.json``: the few numbers a person compares across runs (`evaluate_heldout`'s, regrouped).

    ``target_accuracy`` (only with labelled target test images), ``source_accuracy``, ATC's
    ``estimated_target_accuracy``, the other label-free ``validators`` (higher is better for each), and which
    snapshot was evaluated (``selection``: ``train.select`` and its step).
    """
    summary: dict[str, Any] = {k: metrics[k] for k in ("target_accuracy", "source_accuracy") if k in metrics}
    summary["estimated_target_accuracy"] = metrics["estimated_target_accuracy"]
    summary["validators"] = {k: metrics[k] for k in validators.VALIDATORS
                             if k not in ("source_accuracy", "estimated_target_accuracy")}
    if selection:
        summary["selection"] = selection
    return summary


@dataclass(frozen=True)
class EvaluationSet:
    """Predictions on the held-out source images and the target images an evaluation shows.

    ``target_labels`` is None for an unlabelled target without a test set: its training images are then shown
    (predictions, attention, features), just not scored.
    """

    source: dict[str, torch.Tensor]
    source_labels: np.ndarray
    target: dict[str, torch.Tensor]
    target_labels: np.ndarray | None
    target_images: np.ndarray

    @classmethod
    def predict(cls, model: TadaNet, task: DomainTask, batch_size: int) -> EvaluationSet:
        target = task.target_test if task.target_test is not None else ImageSet(
            center_crop(task.target_train.images, task.source_test.images.shape[1]), None)
        return cls(predict(model, task.source_test.images, batch_size), task.source_test.labels,
                   predict(model, target.images, batch_size), target.labels, target.images)


def evaluation_details(outputs: EvaluationSet, classes: tuple[str, ...]) -> dict[str, Any]:
    """``reports/evaluation.json``: per-class target accuracy, image counts, and (where the model has them) the
    local attention and domain probability per domain."""
    details: dict[str, Any] = {"source_images": int(len(outputs.source_labels)),
                               "target_images": int(len(outputs.target_images)),
                               "target_labelled": outputs.target_labels is not None}
    if outputs.target_labels is not None:
        matrix = confusion_matrix(outputs.target["logits"].argmax(1).numpy(), outputs.target_labels, len(classes))
        details["target_per_class_accuracy"] = {c: float(matrix[i, i] / max(matrix[i].sum(), 1))
                                                for i, c in enumerate(classes)}
    for name, key in (("local_attention", "local_attention"), ("domain_probability", "domain_logits")):
        if key in outputs.source:
            s, t = outputs.source[key], outputs.target[key]
            if key == "domain_logits":
                s, t = torch.sigmoid(s), torch.sigmoid(t)
            details[name] = {"source_mean": s.mean().item(), "target_mean": t.mean().item(),
                             "target_std": t.std().item()}
    return details
