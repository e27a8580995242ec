"""Schedules of the training protocol, as pure functions of the iteration ``i`` (0 at the first step).

Nothing here reads state: the loop passes the step and applies both schedules explicitly every step, so resuming
needs the step alone. Both run per iteration, as in the lab's research library (Transfer-Learning-Library), not per
fraction of the run: a short run behaves like the start of a long one instead of squeezing the whole annealing into
a few steps. At the paper's 10,000 iterations (Office-31), ``gamma = 0.001`` and ``warmup = 1000`` are exactly the
paper's ``(1 + 10 p)^-0.75`` and ``2 / (1 + exp(-10 p)) - 1`` over progress ``p``.
"""

from __future__ import annotations

import math


def grl_coeff(i: int, warmup: float = 1000.0, max_coeff: float = 1.0) -> float:
    """GRL warm-up: ``coeff(i) = max_coeff * (2 / (1 + exp(-i / warmup)) - 1)``.

    0 at the start, so the noisy early discriminators do not disturb the features; 0.46 * ``max_coeff`` after
    ``warmup`` iterations, 0.91 after three times as many.
    """
    return max_coeff * (2.0 / (1.0 + math.exp(-i / warmup)) - 1.0)


def lr_factor(i: int, gamma: float = 0.001, beta: float = 0.75) -> float:
    """Annealed learning-rate factor ``(1 + gamma * i) ** (-beta)``: ``lr_i = lr_0 * lr_factor(i)``."""
    return (1.0 + gamma * i) ** (-beta)
