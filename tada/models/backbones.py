"""Backbones G_f: image -> last convolutional feature map ``(B, C, H, W)``, never pooled.

TADA's local attention sits between the feature map and the pooling, so every backbone here stops at its last
convolution (timm's ``forward_features``). Each one records ``out_channels`` and ``in_channels``; the number of
regions K = H * W follows from the input size and is measured by `feature_shape`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

BackboneFactory = Callable[..., nn.Module]
_REGISTRY: dict[str, BackboneFactory] = {}


def register(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    def wrap(factory: BackboneFactory) -> BackboneFactory:
        _REGISTRY[name] = factory
        return factory

    return wrap


def available_backbones() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def build_backbone(
    name: str, *, in_channels: int, pretrained: bool = False, weights_path: str | None = None
) -> nn.Module:
    """Build a registered backbone.

    Args:
        name: one of `available_backbones()`.
        in_channels: image channels (1 for grayscale, 3 for RGB).
        pretrained: load ImageNet weights through torchvision's weights API (ResNets only).
        weights_path: load the backbone's weights from this file instead (offline): a state dict of the
            torchvision model, as torchvision's own weight files are (its ``fc`` entries are ignored).
    """
    if name not in _REGISTRY:
        raise ValueError(f"model.backbone must be one of {available_backbones()}, got {name!r}")
    return _REGISTRY[name](in_channels=in_channels, pretrained=pretrained, weights_path=weights_path)


@torch.no_grad()
def feature_shape(backbone: nn.Module, in_channels: int, image_size: int) -> tuple[int, int, int]:
    """``(C, H, W)`` of the backbone's feature map for a square input of ``image_size`` pixels."""
    was_training = backbone.training
    backbone.eval()
    c, h, w = backbone(torch.zeros(1, in_channels, image_size, image_size)).shape[1:]
    backbone.train(was_training)
    return int(c), int(h), int(w)


def _scratch_only(name: str, pretrained: bool, weights_path: str | None) -> None:
    if pretrained or weights_path:
        raise ValueError(f"model.backbone {name!r} has no pretrained weights: set model.pretrained to false")


@register("lenet")
def lenet(*, in_channels: int, pretrained: bool = False, weights_path: str | None = None) -> nn.Module:
    """LeNet (conv20-conv50) for 28 px digits: 50 x 4 x 4 at 28 px (K = 16), 50 x 5 x 5 at 32 px.

    BatchNorm after each convolution keeps the feature map at unit scale from the first step, so the region
    discriminators, which read that map directly, can learn while the backbone is still random (without it their
    logits barely vary and L_l sits at ln 2). The fully connected layer of the original (fc500) is the bottleneck.
    """
    _scratch_only("lenet", pretrained, weights_path)
    net = nn.Sequential(
        nn.Conv2d(in_channels, 20, kernel_size=5),
        nn.BatchNorm2d(20),
        nn.MaxPool2d(2),
        nn.ReLU(inplace=True),
        nn.Conv2d(20, 50, kernel_size=5),
        nn.BatchNorm2d(50),
        nn.Dropout2d(0.5),
        nn.MaxPool2d(2),
        nn.ReLU(inplace=True),
    )
    net.in_channels, net.out_channels = in_channels, 50
    return net


@register("dtn")
def dtn(*, in_channels: int, pretrained: bool = False, weights_path: str | None = None) -> nn.Module:
    """The 3-conv "DTN" of the digits literature (64/128/256 with BN) for 32 px: 256 x 4 x 4 (K = 16)."""
    _scratch_only("dtn", pretrained, weights_path)
    layers: list[nn.Module] = []
    for cin, cout, drop in ((in_channels, 64, 0.1), (64, 128, 0.3), (128, 256, 0.5)):
        layers += [nn.Conv2d(cin, cout, 5, stride=2, padding=2), nn.BatchNorm2d(cout), nn.Dropout2d(drop)]
        layers.append(nn.ReLU(inplace=True))
    net = nn.Sequential(*layers)
    net.in_channels, net.out_channels = in_channels, 256
    return net


class ResNetFeatures(nn.Module):
    """A torchvision ResNet without its average pooling and fc: the ``layer4`` map (2048 x 7 x 7 for R-50 at 224)."""

    def __init__(self, resnet: nn.Module, in_channels: int) -> None:
        super().__init__()
        if in_channels != 3:
            raise ValueError(f"ResNet backbones take RGB images (3 channels), got {in_channels}")
        self.body = nn.Sequential(
            resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
            resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4,
        )
        self.in_channels, self.out_channels = in_channels, resnet.fc.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _resnet(arch: str, in_channels: int, pretrained: bool, weights_path: str | None) -> nn.Module:
    import torchvision

    weights = None
    if pretrained and not weights_path:
        weights = torchvision.models.get_model_weights(arch).DEFAULT  # downloads to torchvision's cache
    resnet = torchvision.models.get_model(arch, weights=weights)
    if weights_path:
        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(f"model.weights_path: no weights file at {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        try:
            missing, unexpected = resnet.load_state_dict(state, strict=False)
        except RuntimeError as e:
            raise ValueError(f"model.weights_path {path} does not fit {arch}: {e}") from None
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise ValueError(
                f"model.weights_path {path} does not fit {arch}: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
    return ResNetFeatures(resnet, in_channels)


for _arch in ("resnet18", "resnet34", "resnet50", "resnet101"):
    register(_arch)(
        lambda *, in_channels, pretrained=False, weights_path=None, _a=_arch: _resnet(
            _a, in_channels, pretrained, weights_path
        )
    )
