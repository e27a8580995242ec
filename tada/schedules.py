"""Schedules of the training protocol, as pure functions of training progress ``p`` in [0, 1].

Nothing here reads state: the loop computes ``p = step / iterations`` and applies both schedules explicitly every
step, so resuming needs the step alone.
"""

from __future__ import annotations

import math


def progress(step: int, iterations: int) -> float:
    """Training progress ``p = step / iterations`` clipped to [0, 1]."""
    if iterations <= 0:
        raise ValueError(f"iterations must be > 0, got {iterations}")
    return min(max(step / iterations, 0.0), 1.0)


def grl_coeff(p: float, alpha: float = 10.0, max_coeff: float = 1.0) -> float:
    """GRL warm-up ramp: ``coeff(p) = max_coeff * (2 / (1 + exp(-alpha * p)) - 1)``.

    Starts at 0 so the noisy early discriminators do not disturb the features, and approaches ``max_coeff``.
    """
    return max_coeff * (2.0 / (1.0 + math.exp(-alpha * p)) - 1.0)


def lr_factor(p: float, alpha: float = 10.0, beta: float = 0.75) -> float:
    """Annealed learning-rate factor ``(1 + alpha * p) ** (-beta)``: lr_p = lr_0 * lr_factor(p)."""
    return (1.0 + alpha * p) ** (-beta)
