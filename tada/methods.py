"""Methods are rows of flags in one table; the training loop never branches on a method's name.

| method          | local attention + L_l | global discriminator + L_g | entropy L_h | L_h weighted by m = 1 + H(d) |
|-----------------|-----------------------|----------------------------|-------------|------------------------------|
| source_only     |                       |                            |             |                              |
| dann            |                       | x                          |             |                              |
| tada            | x                     | x                          | x           | x                            |
| tada_no_local   |                       | x                          | x           | x                            |
| tada_no_global  | x                     | x                          |             |                              |
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tada import config as config_module
from tada.config import Config
from tada.losses import attentive_entropy, global_adversarial, local_adversarial, source_cross_entropy
from tada.models.attention import global_attention
from tada.models.backbones import build_backbone, feature_shape
from tada.models.network import TadaNet, TadaOutput


@dataclass(frozen=True)
class Method:
    """Which parts of TADA a method uses.

    Attributes:
        local_attention: region discriminators, residual local attention and the local adversarial loss ``L_l``.
        global_adversarial: the global discriminator and its adversarial loss ``L_g`` (DANN).
        entropy: the entropy-minimisation term ``L_h``.
        entropy_attention: weight ``L_h`` per image by the global attention ``m = 1 + H(d)``.
    """

    name: str
    local_attention: bool
    global_adversarial: bool
    entropy: bool
    entropy_attention: bool

    def __post_init__(self) -> None:
        if self.entropy_attention and not (self.entropy and self.global_adversarial):
            raise ValueError(f"{self.name}: entropy attention needs the entropy term and the global discriminator")


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("source_only", local_attention=False, global_adversarial=False, entropy=False, entropy_attention=False),
        Method("dann", local_attention=False, global_adversarial=True, entropy=False, entropy_attention=False),
        Method("tada", local_attention=True, global_adversarial=True, entropy=True, entropy_attention=True),
        Method("tada_no_local", local_attention=False, global_adversarial=True, entropy=True, entropy_attention=True),
        Method("tada_no_global", local_attention=True, global_adversarial=True, entropy=False, entropy_attention=False),
    )
}
assert tuple(METHODS) == config_module.METHODS


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"method.name must be one of {', '.join(METHODS)}, got {name!r}")
    return METHODS[name]


def build_model(config: Config, num_classes: int, in_channels: int) -> TadaNet:
    """The network for ``config.method.name``: only the pieces the method uses are built."""
    method = get_method(config.method.name)
    m = config.model
    backbone = build_backbone(m.backbone, in_channels=in_channels, pretrained=m.pretrained, weights_path=m.weights_path)
    _, h, w = feature_shape(backbone, in_channels, config.data.image_size)
    return TadaNet(
        backbone,
        (h, w),
        num_classes,
        bottleneck_dim=m.bottleneck_dim,
        bottleneck_dropout=m.bottleneck_dropout,
        local_attention=method.local_attention,
        global_discriminator=method.global_adversarial,
        discriminator_hidden=m.discriminator_hidden,
        region_discriminator_hidden=m.region_discriminator_hidden,
        discriminator_norm=m.discriminator_norm,
        region_discriminator_norm=m.region_discriminator_norm,
        discriminator_dropout=m.discriminator_dropout,
        detach_local_attention=config.method.detach_local_attention,
    )


def loss_terms(
    method: Method,
    out: TadaOutput,
    source_labels: torch.Tensor,
    *,
    detach_global_attention: bool = False,
) -> dict[str, torch.Tensor]:
    """The loss terms ``method`` uses, for a forward pass over ``cat(source, target)``.

    Args:
        method: the flags.
        out: the network's output for the batch, the ``B_s`` source images first.
        source_labels: ``(B_s,)`` labels of the source images.
        detach_global_attention: treat ``m = 1 + H(d)`` as a constant weight.

    Returns:
        ``{"source_ce": ..., ["local_adv": ...], ["global_adv": ...], ["entropy": ...]}``, each a scalar.
    """
    n_source = source_labels.shape[0]
    is_source = torch.zeros(out.logits.shape[0], device=out.logits.device)
    is_source[:n_source] = 1.0
    terms = {"source_ce": source_cross_entropy(out.logits[:n_source], source_labels)}
    if method.local_attention:
        terms["local_adv"] = local_adversarial(out.region_logits, is_source)
    if method.global_adversarial:
        terms["global_adv"] = global_adversarial(out.domain_logits, is_source)
    if method.entropy:
        weights = None
        if method.entropy_attention:
            logits = out.domain_logits.detach() if detach_global_attention else out.domain_logits
            weights = global_attention(logits)
        terms["entropy"] = attentive_entropy(out.logits, weights)
    return terms
