"""Domain discriminators. Both return logits ("comes from the source domain"); losses use BCE-with-logits.

`DomainDiscriminator` is DANN's image-level discriminator G_d. `RegionDiscriminators` holds the K region-level
discriminators G_d^1..G_d^K, each with its own weights, evaluated as ONE batched operation: the per-region weights
are stacked into ``(K, in, out)`` tensors and applied as batched matrix products, never a Python loop over regions.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from tada.models.dropout import Dropout

NORMS = ("batchnorm", "dropout", "none")  # "none": BatchNorm folded into the weights (`folded`), for inference


def _bn_scale_shift(bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``x * scale + shift`` per channel (running statistics)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


class DomainDiscriminator(nn.Module):
    """Linear(in, hidden) -> [norm] -> ReLU -> Linear(hidden, hidden) -> [norm] -> ReLU -> Linear(hidden, 1).

    ``norm="batchnorm"``: BatchNorm after each hidden Linear (the lab's research library, Transfer-Learning-Library);
    ``norm="dropout"``: Dropout after each hidden ReLU instead (the original DANN and the paper's protocol);
    ``norm="none"``: neither (what `folded` returns).

    Args:
        in_features: width of its input (the bottleneck).
        hidden: hidden width (1024 in DANN).
        norm: ``"batchnorm"`` or ``"dropout"``.
        dropout: the dropout probability with ``norm="dropout"``.
    """

    def __init__(self, in_features: int, hidden: int = 1024, norm: str = "batchnorm", dropout: float = 0.5) -> None:
        super().__init__()
        _check_norm(norm)
        layers: list[nn.Module] = []
        for width_in in (in_features, hidden):
            layers.append(nn.Linear(width_in, hidden))
            if norm == "batchnorm":
                layers += [nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
            elif norm == "dropout":
                layers += [nn.ReLU(inplace=True), Dropout(dropout)]
            else:
                layers.append(nn.ReLU(inplace=True))
        self.net = nn.Sequential(*layers, nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_features)`` -> ``(B,)`` logits."""
        return self.net(x).squeeze(-1)

    @torch.no_grad()
    def folded(self) -> DomainDiscriminator:
        """A copy with ``norm="none"`` (``Linear -> ReLU -> Linear -> ReLU -> Linear``) computing the same eval-mode
        function: each BatchNorm folded into the Linear before it, dropout (identity in eval) left out."""
        linears, i = [], 0
        while i < len(self.net):
            module = self.net[i]
            if isinstance(module, nn.Linear):
                linear = copy.deepcopy(module)
                if i + 1 < len(self.net) and isinstance(self.net[i + 1], nn.BatchNorm1d):
                    scale, shift = _bn_scale_shift(self.net[i + 1])
                    linear.weight.mul_(scale.unsqueeze(1))
                    linear.bias.mul_(scale).add_(shift)
                linears.append(linear)
            i += 1
        out = DomainDiscriminator(linears[0].in_features, linears[0].out_features, "none")
        for k, linear in zip((0, 2, 4), linears, strict=True):
            out.net[k] = linear
        return out.train(self.training)


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"discriminator norm must be one of {', '.join(NORMS)}, got {norm!r}")


class RegionDiscriminators(nn.Module):
    """K independent three-layer discriminators, one per spatial region of a ``C x H x W`` feature map.

    Region k's discriminator has the same architecture as `DomainDiscriminator` and its own parameters, stored as
    slice k of ``weight1 (K, C, hidden)``, ``weight2 (K, hidden, hidden)``, ``weight3 (K, hidden)`` (BatchNorm: its
    own statistics and affine parameters per region and unit). Each slice is initialised like an `nn.Linear` of the
    same shape. The K of them run as batched matrix products over ``(K, B, ·)`` tensors, never a loop over regions.

    Args:
        num_regions: K = H * W.
        in_channels: C, the channel count of the feature map.
        hidden: hidden width of every region discriminator.
        norm: ``"batchnorm"`` or ``"dropout"``, as `DomainDiscriminator`.
        dropout: the dropout probability with ``norm="dropout"``.
    """

    def __init__(self, num_regions: int, in_channels: int, hidden: int = 1024, norm: str = "batchnorm",
                 dropout: float = 0.5) -> None:
        super().__init__()
        _check_norm(norm)
        self.num_regions, self.in_channels, self.hidden, self.norm = num_regions, in_channels, hidden, norm
        self.weight1 = nn.Parameter(torch.empty(num_regions, in_channels, hidden))
        self.bias1 = nn.Parameter(torch.empty(num_regions, hidden))
        self.weight2 = nn.Parameter(torch.empty(num_regions, hidden, hidden))
        self.bias2 = nn.Parameter(torch.empty(num_regions, hidden))
        self.weight3 = nn.Parameter(torch.empty(num_regions, hidden))
        self.bias3 = nn.Parameter(torch.empty(num_regions))
        if norm == "batchnorm":  # one unit per (region, hidden unit): K * hidden BatchNorm channels per layer
            self.norm1, self.norm2 = nn.BatchNorm1d(num_regions * hidden), nn.BatchNorm1d(num_regions * hidden)
        elif norm == "dropout":
            self.dropout = Dropout(dropout)
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

    def _hidden(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, norm: str) -> torch.Tensor:
        """One hidden layer of every region: ``(K, B, in)`` -> ``(K, B, hidden)``."""
        x = torch.bmm(x, weight) + bias.unsqueeze(1)
        if self.norm == "batchnorm":
            k, b, h = x.shape
            x = getattr(self, norm)(x.transpose(0, 1).reshape(b, k * h)).view(b, k, h).transpose(0, 1)
            return torch.relu(x)
        if self.norm == "dropout":
            return self.dropout(torch.relu(x))
        return torch.relu(x)

    @torch.no_grad()
    def folded(self) -> RegionDiscriminators:
        """A copy with ``norm="none"`` computing the same eval-mode function: each region's BatchNorm folded into its
        weights and biases (no Transpose/Reshape/BatchNorm left in an exported graph), dropout left out."""
        out = RegionDiscriminators(self.num_regions, self.in_channels, self.hidden, "none")
        out.load_state_dict({k: v for k, v in self.state_dict().items() if not k.startswith("norm")})
        if self.norm == "batchnorm":
            for weight, bias, bn in ((out.weight1, out.bias1, self.norm1), (out.weight2, out.bias2, self.norm2)):
                scale, shift = (t.view(self.num_regions, self.hidden) for t in _bn_scale_shift(bn))  # (K, hidden)
                weight.mul_(scale.unsqueeze(1))
                bias.mul_(scale).add_(shift)
        return out.train(self.training)

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
        x = features.flatten(2).permute(2, 0, 1).contiguous()  # (K, B, C); bmm would copy every slice of a view
        x = self._hidden(x, self.weight1, self.bias1, "norm1")  # (K, B, hidden)
        x = self._hidden(x, self.weight2, self.bias2, "norm2")  # (K, B, hidden)
        return (torch.bmm(x, self.weight3.unsqueeze(2)).squeeze(2) + self.bias3.unsqueeze(1)).t()  # (B, K)

    def extra_repr(self) -> str:
        return f"num_regions={self.num_regions}, in_channels={self.in_channels}, hidden={self.hidden}, norm={self.norm}"
