"""Gradient reversal layer (Ganin & Lempitsky, 2015).

Forward is the identity; backward multiplies the incoming gradient by ``-coeff``. The discriminators behind it
minimise their loss while the features in front of it maximise it: one optimizer realises the min-max game.
"""

from __future__ import annotations

import torch
from torch import nn


class _GradientReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad_output * -ctx.coeff, None  # one pass; exactly (-g) * c


def reverse_gradient(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """Identity in the forward pass, ``-coeff * grad`` in the backward pass.

    Args:
        x: any tensor.
        coeff: reversal strength (the GRL coefficient of the current step, see `tada.schedules.grl_coeff`).
    """
    return _GradientReverse.apply(x, coeff)


class GradientReversal(nn.Module):
    """Holds the current reversal coefficient; the training loop sets ``coeff`` explicitly each step.

    In eval mode it is a plain identity, so the inference graph (and the exported ONNX model) has no reversal in it.
    """

    def __init__(self, coeff: float = 1.0) -> None:
        super().__init__()
        self.coeff = coeff

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reverse_gradient(x, self.coeff) if self.training else x

    def extra_repr(self) -> str:
        return f"coeff={self.coeff}"
