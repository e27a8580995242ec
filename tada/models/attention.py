"""Transferable attention: the entropy of a domain discriminator's prediction as a weight (paper, Sections 1-2).

A region (or image) whose domain the discriminator cannot tell is transferable. With ``d = sigmoid(logit)`` and
the binary entropy ``H(d) = -d log d - (1 - d) log(1 - d)`` (natural log, so ``0 <= H <= ln 2``):

* local attention of region k: ``w^k = 1 - H(d^k)``, in ``[1 - ln 2, 1]``;
* residual attended features: ``h^k = (1 + w^k) * f^k``;
* global attention of an image: ``m = 1 + H(d)``, in ``[1, 1 + ln 2]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def domain_probability(logits: torch.Tensor) -> torch.Tensor:
    """Probability that the input comes from the source domain: ``sigmoid(logits)``. Same shape as ``logits``."""
    return torch.sigmoid(logits)


def binary_entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Binary entropy ``H(sigmoid(z))`` in nats, computed stably from the logit ``z``.

    ``H = softplus(z) - z * sigmoid(z)``, which is finite for any ``z`` (no ``log(0)``). Same shape as ``logits``.
    """
    return F.softplus(logits) - logits * torch.sigmoid(logits)


def local_attention(region_logits: torch.Tensor) -> torch.Tensor:
    """Local attention ``w^k = 1 - H(d^k)`` from region-discriminator logits.

    Args:
        region_logits: ``(B, K)`` logits, one per region.

    Returns:
        ``(B, K)`` weights in ``[1 - ln 2, 1]``.
    """
    return 1.0 - binary_entropy_from_logits(region_logits)


def apply_residual_attention(features: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """Residual attention ``h = (1 + w) * f`` (so a wrong attention map can not wipe features out).

    Args:
        features: ``(B, C, H, W)`` feature map.
        attention: ``(B, H * W)`` local attention, regions in row-major order.

    Returns:
        ``(B, C, H, W)`` attended features.
    """
    b, _, h, w = features.shape
    return features * (1.0 + attention.view(b, 1, h, w))


def global_attention(domain_logits: torch.Tensor) -> torch.Tensor:
    """Global attention ``m = 1 + H(d)`` of each image from the global discriminator's logits ``(B,)`` -> ``(B,)``."""
    return 1.0 + binary_entropy_from_logits(domain_logits)
