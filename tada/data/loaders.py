"""Infinite, seeded batch streams for iteration-based training."""

from __future__ import annotations

from collections.abc import Iterator

import torch


def infinite_batches(
    *tensors: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Yield batches forever, reshuffling every epoch; all tensors are indexed together along dim 0.

    Every batch has exactly ``batch_size`` rows: the tail of one epoch is continued from the next permutation,
    so no sample is dropped and a dataset smaller than a batch still works.
    """
    n = tensors[0].shape[0]
    if n == 0:
        raise ValueError("cannot draw batches from an empty dataset")
    pending = torch.empty(0, dtype=torch.long)
    while True:
        while pending.numel() < batch_size:
            pending = torch.cat([pending, torch.randperm(n, generator=generator)])
        idx, pending = pending[:batch_size], pending[batch_size:]
        yield tuple(t[idx] for t in tensors)
