"""Infinite, seeded batch streams for iteration-based training: resumable, and split across ranks.

Images are loaded into memory once (`tada.data.manifest.load_task`, decoding in parallel threads); a step only
indexes those tensors, so there is no per-step worker pool to feed.
"""

from __future__ import annotations

from typing import Any

import torch


class BatchStream:
    """Index batches over ``n`` samples forever, reshuffling every epoch with ``generator``.

    Every global batch has exactly ``batch_size * world_size`` indices: the tail of one epoch is continued from the
    next permutation, so no sample is dropped and a dataset smaller than a batch still works. With several ranks,
    every rank draws the same global batch (same seed) and keeps its own slice of it, so the ranks together see
    exactly what one process with the global batch would see (a distributed sampler without padding).

    `state_dict` / `load_state_dict` capture the position (the unconsumed part of the current permutation); the
    generator's state is saved by whoever owns it.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, rank: int = 0, world_size: int = 1):
        if n == 0:
            raise ValueError("cannot draw batches from an empty dataset")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self.rank, self.world_size = rank, world_size
        self.pending = torch.empty(0, dtype=torch.long)

    def next(self) -> torch.Tensor:
        """This rank's ``batch_size`` indices of the next global batch."""
        size = self.batch_size * self.world_size
        while self.pending.numel() < size:
            self.pending = torch.cat([self.pending, torch.randperm(self.n, generator=self.generator)])
        batch, self.pending = self.pending[:size], self.pending[size:]
        return batch[self.rank * self.batch_size: (self.rank + 1) * self.batch_size]

    def state_dict(self) -> dict[str, Any]:
        return {"pending": self.pending.clone(), "n": self.n}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["n"] != self.n:
            raise ValueError(f"stream state is for {state['n']} samples, this dataset has {self.n}")
        self.pending = state["pending"].clone()
