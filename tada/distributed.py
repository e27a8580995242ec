"""Where a training process runs: its device, and its place among the processes of a torchrun launch.

Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank trains a replica wrapped in DistributedDataParallel (gloo on
CPUs, nccl on GPUs, one device per ``LOCAL_RANK``); the ranks share each evaluation (`tada.evaluate.predict_shared`);
only rank 0 logs and writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
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

    def own_random_streams(self, seed: int, shared: torch.Generator) -> torch.Generator:
        """Give this rank its own random draws; return the generator its crops and flips come from.

        Every rank is seeded alike (`tada.checkpoint.seed_everything`) so the replicas start equal and ``shared``
        (the batch order, which all ranks must agree on) stays in step. Left like that, rank 1's image i would get
        the same dropout mask, crop and flip as rank 0's image i in every step: the global batch's draws would not
        be independent, as they are in one process. So under torchrun the global torch generator (dropout, CPU and
        CUDA) is re-seeded from ``(seed, rank)`` and the crops get a generator of their own; a single process is
        left exactly as it was (``shared`` draws its crops too), so its runs do not change."""
        if not self.group:
            return shared
        dropout_seed, augment_seed = (int(s) for s in np.random.SeedSequence([seed, self.rank]).generate_state(2))
        torch.manual_seed(dropout_seed)
        return torch.Generator().manual_seed(augment_seed)

    def share_main_buffers(self, model: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm running statistics), before the ranks evaluate together.

        DistributedDataParallel keeps the parameters equal on every rank and sends rank 0's buffers at the start of
        each forward, but each rank then updates its running statistics with its own share of the batch: after a
        step they differ, and the model written is rank 0's. Training is unaffected (the next forward sends rank
        0's buffers again)."""
        if not self.group:
            return
        import torch.distributed as td

        for buffer in model.buffers():
            td.broadcast(buffer, src=0)

    def gather(self, value: object) -> list[object]:
        """``value`` of every rank, in rank order (``[value]`` in a single process)."""
        if not self.group:
            return [value]
        import torch.distributed as td

        gathered: list[object] = [None] * self.world_size
        td.all_gather_object(gathered, value)
        return gathered

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
