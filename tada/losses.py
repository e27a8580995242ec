"""The terms of TADA's objective, as pure functions (paper, Sections 1-3).

Domain labels: ``d = 1`` for source, ``0`` for target. Discriminators output logits; probabilities only appear
inside `binary_cross_entropy_with_logits` and `tada.models.attention`, so everything stays stable under autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def source_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``L_y``: mean cross-entropy on labelled source images. ``logits (B_s, C)``, ``labels (B_s,)`` -> scalar."""
    return F.cross_entropy(logits, labels)


def local_adversarial(region_logits: torch.Tensor, is_source: torch.Tensor) -> torch.Tensor:
    """``L_l = 1/(K n) sum_k sum_i BCE(G_d^k(f_i^k), d_i)``.

    Args:
        region_logits: ``(B, K)`` region-discriminator logits.
        is_source: ``(B,)`` domain labels, 1.0 source and 0.0 target.

    Returns:
        Scalar mean over all B * K region predictions.
    """
    targets = is_source.to(region_logits.dtype).unsqueeze(1).expand_as(region_logits)
    return F.binary_cross_entropy_with_logits(region_logits, targets)


def global_adversarial(domain_logits: torch.Tensor, is_source: torch.Tensor) -> torch.Tensor:
    """``L_g = 1/n sum_i BCE(G_d(G_b(h_i)), d_i)``. ``domain_logits (B,)``, ``is_source (B,)`` -> scalar."""
    return F.binary_cross_entropy_with_logits(domain_logits, is_source.to(domain_logits.dtype))


def prediction_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy ``-sum_j p_j log p_j`` of ``softmax(logits)``, in nats. ``(B, C)`` -> ``(B,)``."""
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


def attentive_entropy(logits: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``L_h = -1/n sum_i m_i sum_j p_ij log p_ij``, over source and target alike.

    Args:
        logits: ``(B, C)`` class logits.
        weights: ``(B,)`` global attention ``m_i = 1 + H(d_i)``; None weighs every image by 1 (plain entropy).

    Returns:
        Scalar.
    """
    entropy = prediction_entropy(logits)
    return (entropy if weights is None else weights * entropy).mean()


def total_loss(
    terms: dict[str, torch.Tensor], adversarial_weight: float, entropy_weight: float
) -> torch.Tensor:
    """``L_y + gamma * L_h + lambda * (L_l + L_g)`` over the terms present (keys ``source_ce``, ``entropy``,
    ``local_adv``, ``global_adv``). With the GRLs in place, minimising this realises the paper's min-max game."""
    weights = {
        "source_ce": 1.0,
        "entropy": entropy_weight,
        "local_adv": adversarial_weight,
        "global_adv": adversarial_weight,
    }
    unknown = set(terms) - set(weights)
    if unknown:
        raise KeyError(f"unknown loss terms {sorted(unknown)}")
    return sum(weights[name] * value for name, value in terms.items())
