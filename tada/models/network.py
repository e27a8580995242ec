"""The TADA network: backbone -> local attention -> pooling -> bottleneck -> classifier (+ global discriminator).

One forward pass serves every method: the pieces a method does not use are simply not built (no region
discriminators without local attention, no global discriminator without an adversarial term), so source-only,
DANN and TADA share the same code path and the comparison is fair by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tada.models.attention import apply_residual_attention, local_attention
from tada.models.discriminators import DomainDiscriminator, RegionDiscriminators
from tada.models.dropout import Dropout
from tada.models.grl import GradientReversal


@dataclass(frozen=True)
class TadaOutput:
    """Everything one forward pass computes. Fields a model does not have are None.

    Attributes:
        logits: ``(B, num_classes)`` class logits.
        features: ``(B, bottleneck_dim)`` bottleneck features ``G_b(h)``.
        feature_map: ``(B, C, H, W)`` backbone map ``f`` before attention.
        region_logits: ``(B, K)`` region-discriminator logits ("region is from the source").
        local_attention: ``(B, K)`` ``w = 1 - H(sigmoid(region_logits))``.
        domain_logits: ``(B,)`` global-discriminator logits ("image is from the source").
    """

    logits: torch.Tensor
    features: torch.Tensor
    feature_map: torch.Tensor
    region_logits: torch.Tensor | None = None
    local_attention: torch.Tensor | None = None
    domain_logits: torch.Tensor | None = None


class TadaNet(nn.Module):
    """Backbone, optional local attention, bottleneck, classifier and optional global discriminator.

    Args:
        backbone: a module mapping ``(B, in, S, S)`` to ``(B, C, H, W)`` with ``out_channels`` set.
        feature_size: ``(H, W)`` of the backbone's map at the training image size (K = H * W).
        num_classes: C, the number of classes.
        bottleneck_dim: width of the bottleneck ``G_b``.
        bottleneck_dropout: dropout after the bottleneck.
        local_attention: build the K region discriminators and apply residual attention.
        global_discriminator: build the image-level discriminator ``G_d`` on the bottleneck.
        discriminator_hidden: hidden width of ``G_d``.
        region_discriminator_hidden: hidden width of each ``G_d^k``.
        discriminator_norm: ``"batchnorm"`` or ``"dropout"`` inside ``G_d`` (`DomainDiscriminator`).
        region_discriminator_norm: the same inside each ``G_d^k`` (`RegionDiscriminators`).
        discriminator_dropout: the dropout probability where a norm is ``"dropout"``.
        detach_local_attention: compute ``w`` from detached region logits (no gradient from the attention into the
            region discriminators); the paper is silent, TA3N does not detach.
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_size: tuple[int, int],
        num_classes: int,
        *,
        bottleneck_dim: int = 256,
        bottleneck_dropout: float = 0.5,
        local_attention: bool = True,
        global_discriminator: bool = True,
        discriminator_hidden: int = 1024,
        region_discriminator_hidden: int = 1024,
        discriminator_norm: str = "batchnorm",
        region_discriminator_norm: str = "dropout",
        discriminator_dropout: float = 0.5,
        detach_local_attention: bool = False,
    ) -> None:
        super().__init__()
        channels = backbone.out_channels
        self.backbone = backbone
        self.grl = GradientReversal()
        self.detach_local_attention = detach_local_attention
        self.region_discriminators = (
            RegionDiscriminators(
                feature_size[0] * feature_size[1], channels, region_discriminator_hidden, region_discriminator_norm,
                discriminator_dropout
            )
            if local_attention
            else None
        )
        self.bottleneck = nn.Sequential(
            nn.Linear(channels, bottleneck_dim),
            nn.BatchNorm1d(bottleneck_dim),
            nn.ReLU(inplace=True),
            Dropout(bottleneck_dropout),
        )
        self.classifier = nn.Linear(bottleneck_dim, num_classes)
        self.domain_discriminator = (
            DomainDiscriminator(bottleneck_dim, discriminator_hidden, discriminator_norm, discriminator_dropout)
            if global_discriminator
            else None
        )

    def forward(self, x: torch.Tensor) -> TadaOutput:
        """``x: (B, in, S, S)`` -> `TadaOutput`. Same fields in train and eval mode."""
        f = self.backbone(x)  # (B, C, H, W)
        region_logits = attention = None
        h = f
        if self.region_discriminators is not None:
            region_logits = self.region_discriminators(self.grl(f))  # (B, K)
            attention = local_attention(region_logits.detach() if self.detach_local_attention else region_logits)
            h = apply_residual_attention(f, attention)  # (B, C, H, W)
        features = self.bottleneck(h.mean(dim=(2, 3)))  # (B, bottleneck_dim)
        logits = self.classifier(features)
        domain_logits = None
        if self.domain_discriminator is not None:
            domain_logits = self.domain_discriminator(self.grl(features))  # (B,)
        return TadaOutput(logits, features, f, region_logits, attention, domain_logits)

    def set_grl_coeff(self, coeff: float) -> None:
        self.grl.coeff = coeff

    def param_groups(self, backbone_lr_mult: float, region_lr_mult: float = 1.0) -> list[dict]:
        """Optimizer groups, each with an ``lr_mult`` on the base (new-layer) learning rate.

        The backbone runs at ``backbone_lr_mult`` (0.1 when pretrained, as in the paper), the region
        discriminators at ``region_lr_mult``, every other new layer at 1. Empty groups are left out.
        """
        backbone = list(self.backbone.parameters())
        regions = list(self.region_discriminators.parameters()) if self.region_discriminators is not None else []
        taken = {id(p) for p in backbone + regions}
        groups = [
            {"params": backbone, "lr_mult": backbone_lr_mult, "name": "backbone"},
            {"params": regions, "lr_mult": region_lr_mult, "name": "region_discriminators"},
            {"params": [p for p in self.parameters() if id(p) not in taken], "lr_mult": 1.0, "name": "new_layers"},
        ]
        return [g for g in groups if g["params"]]
