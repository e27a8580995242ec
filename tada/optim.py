"""The optimizer of the training protocol: SGD over parameter groups, each with a multiplier on the annealed rate."""

from __future__ import annotations

import torch

from tada.config import OptimConfig
from tada.models.network import TadaNet


def build_optimizer(model: TadaNet, cfg: OptimConfig) -> torch.optim.SGD:
    """SGD over the model's parameter groups (backbone, region discriminators, new layers), each with its
    ``lr_mult`` on the new layers' learning rate."""
    return torch.optim.SGD(model.param_groups(cfg.backbone_lr_mult, cfg.region_lr_mult), lr=cfg.lr,
                           momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """``lr`` is the new layers' rate at this step; every group runs at ``lr * lr_mult``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"]
