"""Evaluation: predictions, accuracy and attention statistics of a trained network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from tada.config import EvaluateConfig
from tada.data.task import DomainTask, ImageSet, center_crop, to_tensor
from tada.models.network import TadaNet


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


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1]."""
    return (logits.argmax(dim=1) == labels).float().mean().item()


def evaluate(model: TadaNet, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 512) -> dict[str, float]:
    """Accuracy, plus mean local attention and mean domain probability where the model has them."""
    out = predict(model, images, batch_size)
    metrics = {"accuracy": accuracy(out["logits"], labels)}
    if "local_attention" in out:
        metrics["mean_local_attention"] = out["local_attention"].mean().item()
    if "domain_logits" in out:
        metrics["mean_domain_probability"] = torch.sigmoid(out["domain_logits"]).mean().item()
    return metrics


def heldout_accuracy(model: TadaNet, task: DomainTask, batch_size: int = 512) -> dict[str, float]:
    """``source_accuracy`` and ``target_accuracy`` on the task's held-out splits, as in `evaluation_report`."""
    metrics = {}
    for name, split in (("source_accuracy", task.source_test), ("target_accuracy", task.target_test)):
        if split is None:
            continue
        logits = predict(model, split.images, batch_size)["logits"]
        metrics[name] = accuracy(logits, torch.from_numpy(split.labels))
    return metrics


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``(C, C)`` counts, rows = true class, columns = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def evaluation_report(
    model: TadaNet, task: DomainTask, cfg: EvaluateConfig, seed: int, figures_dir: str | Path, method: str
) -> dict[str, Any]:
    """Held-out metrics of a trained model, and the figures: confusion matrix, t-SNE, attention maps.

    Returns the metrics: source and target accuracy, per-class target accuracy, and (where the model has them)
    attention and domain-probability statistics.
    """
    from tada import figures

    figures_dir = Path(figures_dir)
    classes = task.classes
    # An unlabelled target without a test set is still shown (predictions, attention, features), just not scored.
    target_set = task.target_test if task.target_test is not None else ImageSet(
        center_crop(task.target_train.images, task.source_test.images.shape[1]), None)
    source_x, target_x = task.source_test.images, target_set.images  # uint8: `predict` converts batch by batch
    source_y, target_y = task.source_test.labels, target_set.labels
    src, tgt = predict(model, source_x, cfg.batch_size), predict(model, target_x, cfg.batch_size)
    target_pred = tgt["logits"].argmax(1).numpy()
    metrics: dict[str, Any] = {
        "source_accuracy": accuracy(src["logits"], torch.from_numpy(source_y)),
        "source_images": int(len(source_y)),
        "target_images": int(len(target_x)),
        "target_labelled": target_y is not None,
    }
    if target_y is not None:
        matrix = confusion_matrix(target_pred, target_y, len(classes))
        metrics["target_accuracy"] = accuracy(tgt["logits"], torch.from_numpy(target_y))
        metrics["target_per_class_accuracy"] = {c: float(matrix[i, i] / max(matrix[i].sum(), 1))
                                                for i, c in enumerate(classes)}
        matrix_title = f"target confusion matrix ({method})"
    else:
        matrix = confusion_matrix(src["logits"].argmax(1).numpy(), source_y, len(classes))
        matrix_title = f"source confusion matrix ({method}; the target is unlabelled)"
    for name, key in (("local_attention", "local_attention"), ("domain_probability", "domain_logits")):
        if key in src:
            s, t = src[key], tgt[key]
            if key == "domain_logits":
                s, t = torch.sigmoid(s), torch.sigmoid(t)
            metrics[name] = {"source_mean": s.mean().item(), "target_mean": t.mean().item(),
                             "target_std": t.std().item()}

    figures.confusion_matrix_figure(matrix, classes, matrix_title, figures_dir / "confusion_matrix.png")
    shown_labels = target_y if target_y is not None else target_pred  # colour unlabelled points by prediction
    rng = np.random.default_rng(seed)
    pick_s = rng.choice(len(source_y), min(cfg.tsne_points, len(source_y)), replace=False)
    pick_t = rng.choice(len(target_y), min(cfg.tsne_points, len(target_y)), replace=False)
    features = torch.cat([src["features"][pick_s], tgt["features"][pick_t]]).numpy()
    from sklearn.manifold import TSNE

    perplexity = min(cfg.tsne_perplexity, (len(features) - 1) / 3)
    embedding = TSNE(perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)
    is_source = np.arange(len(features)) < len(pick_s)
    figures.tsne_figure(embedding, is_source, np.concatenate([source_y[pick_s], shown_labels[pick_t]]),
                        f"t-SNE of bottleneck features ({method})", figures_dir / "tsne.png")

    count = min(cfg.attention_images, len(target_x))
    shown = np.linspace(0, len(target_x) - 1, count).round().astype(int)
    attention = None
    if "local_attention" in tgt:
        with torch.no_grad():
            h, w = model.eval().backbone(to_tensor(target_x[:1])).shape[2:]
        attention = tgt["local_attention"][shown].view(count, h, w).numpy()
    if target_y is not None:
        captions = [f"{classes[target_y[i]]} -> {classes[target_pred[i]]}" for i in shown]
        title = "local attention on target images (true -> predicted)"
    else:
        captions = [f"-> {classes[target_pred[i]]}" for i in shown]
        title = "local attention on unlabelled target images (predicted)"
    figures.attention_figure(target_set.images[shown], attention, captions, title, figures_dir / "attention.png")
    return metrics

