"""Domain discriminators. Both return logits ("comes from the source domain"); losses use BCE-with-logits.

`DomainDiscriminator` is DANN's image-level discriminator G_d. `RegionDiscriminators` holds the K region-level
discriminators G_d^1..G_d^K, each with its own weights, evaluated as ONE batched operation: the per-region weights
are stacked into ``(K, in, out)`` tensors and applied with `torch.einsum`, never a Python loop over regions.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class DomainDiscriminator(nn.Module):
    """Linear(in, hidden) -> ReLU -> Dropout -> Linear(hidden, hidden) -> ReLU -> Dropout -> Linear(hidden, 1).

    Args:
        in_features: width of its input (the bottleneck).
        hidden: hidden width (1024 in DANN).
        dropout: dropout probability after each hidden layer.
    """

    def __init__(self, in_features: int, hidden: int = 1024, dropout: float = 0.5) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_features)`` -> ``(B,)`` logits."""
        return self.net(x).squeeze(-1)


class RegionDiscriminators(nn.Module):
    """K independent three-layer discriminators, one per spatial region of a ``C x H x W`` feature map.

    Region k's discriminator has the same architecture as `DomainDiscriminator` and its own parameters, stored as
    slice k of ``weight1 (K, C, hidden)``, ``weight2 (K, hidden, hidden)``, ``weight3 (K, hidden)``. Each slice is
    initialised like an `nn.Linear` of the same shape.

    Args:
        num_regions: K = H * W.
        in_channels: C, the channel count of the feature map.
        hidden: hidden width of every region discriminator.
        dropout: dropout probability after each hidden layer.
    """

    def __init__(self, num_regions: int, in_channels: int, hidden: int = 1024, dropout: float = 0.5) -> None:
        super().__init__()
        self.num_regions, self.in_channels, self.hidden = num_regions, in_channels, hidden
        self.weight1 = nn.Parameter(torch.empty(num_regions, in_channels, hidden))
        self.bias1 = nn.Parameter(torch.empty(num_regions, hidden))
        self.weight2 = nn.Parameter(torch.empty(num_regions, hidden, hidden))
        self.bias2 = nn.Parameter(torch.empty(num_regions, hidden))
        self.weight3 = nn.Parameter(torch.empty(num_regions, hidden))
        self.bias3 = nn.Parameter(torch.empty(num_regions))
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases, per region.
        for weight, bias, fan_in in (
            (self.weight1, self.bias1, self.in_channels),
            (self.weight2, self.bias2, self.hidden),
            (self.weight3, self.bias3, self.hidden),
        ):
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(weight, -bound, bound)
            nn.init.uniform_(bias, -bound, bound)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Region logits for a feature map.

        Args:
            features: ``(B, C, H, W)`` with ``H * W == num_regions``.

        Returns:
            ``(B, K)`` logits, regions in row-major order.
        """
        b, c, h, w = features.shape
        if h * w != self.num_regions or c != self.in_channels:
            raise ValueError(
                f"RegionDiscriminators built for {self.num_regions} regions of {self.in_channels} channels, "
                f"got a feature map of shape {tuple(features.shape)}"
            )
        x = features.flatten(2).transpose(1, 2)  # (B, K, C)
        x = torch.relu(torch.einsum("bkc,kch->bkh", x, self.weight1) + self.bias1)  # (B, K, hidden)
        x = self.dropout(x)
        x = torch.relu(torch.einsum("bkh,khg->bkg", x, self.weight2) + self.bias2)  # (B, K, hidden)
        x = self.dropout(x)
        return torch.einsum("bkg,kg->bk", x, self.weight3) + self.bias3  # (B, K)

    def extra_repr(self) -> str:
        return f"num_regions={self.num_regions}, in_channels={self.in_channels}, hidden={self.hidden}"
