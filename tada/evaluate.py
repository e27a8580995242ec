"""Evaluation: predictions, accuracy and attention statistics of a trained network."""

from __future__ import annotations

import torch

from tada.models.network import TadaNet


@torch.no_grad()
def predict(model: TadaNet, images: torch.Tensor, batch_size: int = 512) -> dict[str, torch.Tensor]:
    """Eval-mode forward over ``images (N, C, H, W)`` in batches.

    Returns:
        ``logits (N, classes)``, ``features (N, bottleneck)`` and, where the model has them,
        ``local_attention (N, K)`` and ``domain_logits (N,)``.
    """
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, images.shape[0], batch_size):
        out = model(images[start : start + batch_size])
        for name in ("logits", "features", "local_attention", "domain_logits"):
            value = getattr(out, name)
            if value is not None:
                parts.setdefault(name, []).append(value)
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
