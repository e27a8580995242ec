"""Where a training process runs: its device, and its place among the processes of a torchrun launch.

Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank trains a replica wrapped in DistributedDataParallel (gloo on
CPUs, nccl on GPUs, one device per ``LOCAL_RANK``); only rank 0 logs and writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from tada.models.network import TadaNet


def is_main_process() -> bool:
    """Rank 0 of a torchrun launch, or a process on its own: the one that writes outputs and speaks for all."""
    return int(os.environ.get("RANK", "0")) == 0


def resolve_device(name: str) -> torch.device:
    """``auto``: the GPU when there is one; ``cuda`` without one is an error, not a silent fallback."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device is cuda, but torch sees no CUDA device: set train.device to auto or cpu")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


@dataclass
class DistributedContext:
    """The process's place under torchrun (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``), or a single process."""

    rank: int
    world_size: int
    device: torch.device
    group: bool

    @classmethod
    def from_env(cls, device_name: str) -> DistributedContext:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls(0, 1, resolve_device(device_name), False)
        import torch.distributed as td

        device = resolve_device(device_name)
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if not td.is_initialized():
            td.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(td.get_rank(), td.get_world_size(), device, True)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: TadaNet, sync_batchnorm: bool) -> torch.nn.Module:
        """What the training step calls: DistributedDataParallel around ``model`` under torchrun, else the model."""
        if not self.group:
            return model
        from torch.nn.parallel import DistributedDataParallel

        if sync_batchnorm and self.device.type == "cuda":  # SyncBatchNorm is GPU-only
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean over ranks of a logged scalar, so rank 0 logs the global batch's loss."""
        if not self.group:
            return value
        import torch.distributed as td

        value = value.clone()
        td.all_reduce(value)
        return value / self.world_size

    def barrier(self) -> None:
        if self.group:
            import torch.distributed as td

            td.barrier()

    def close(self) -> None:
        if self.group:
            import torch.distributed as td

            td.barrier()
            td.destroy_process_group()
