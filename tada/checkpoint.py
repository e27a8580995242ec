"""Checkpoints carry the weights, the resolved configuration, the class names and the step."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from tada.config import Config, config_from_dict
from tada.io import atomic_path
from tada.methods import build_model
from tada.models.network import TadaNet

FORMAT_VERSION = 1


def save_checkpoint(
    path: str | Path,
    model: TadaNet,
    config: Config,
    classes: tuple[str, ...],
    in_channels: int,
    step: int,
    metrics: dict[str, float] | None = None,
    selection: dict[str, Any] | None = None,
    last_metrics: dict[str, float] | None = None,
) -> None:
    """Write atomically: a killed save leaves the previous checkpoint intact.

    ``metrics`` are the evaluation of these weights (step ``step``); with ``train.select``, ``selection`` says how
    they were chosen and ``last_metrics`` is the last iterate's evaluation."""
    payload = {
        "format_version": FORMAT_VERSION,
        "model": model.state_dict(),
        "config": config.to_dict(),
        "classes": list(classes),
        "in_channels": in_channels,
        "step": step,
        "metrics": metrics or {},
        "selection": selection or {"rule": "last", "step": step},
        "last_metrics": last_metrics or metrics or {},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path) -> tuple[TadaNet, Config, dict[str, Any]]:
    """Rebuild the network from the stored configuration and load its weights (no weight download)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {payload.get('format_version')}, expected {FORMAT_VERSION}")
    config = config_from_dict(payload["config"])
    offline = dataclasses.replace(config.model, pretrained=False, weights_path=None)
    model = build_model(
        dataclasses.replace(config, model=offline), len(payload["classes"]), payload["in_channels"]
    )
    model.load_state_dict(payload["model"])
    model.eval()
    return model, config, payload
