"""A domain-adaptation task: labelled source images, unlabelled target images, and held-out test splits; and how
its uint8 images become network input (crops, flips, scaling)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tada.preprocessing import DIVISOR, OFFSET, center_crop

__all__ = ["DomainTask", "ImageSet", "center_crop", "check_trainable", "crop_batch", "spaced", "stratified_split",
           "to_tensor", "uint8_to_input"]


@dataclass(frozen=True)
class ImageSet:
    """``images``: ``(N, H, W)`` or ``(N, H, W, 3)`` uint8; ``labels``: ``(N,)`` int64, or None when unlabelled."""

    images: np.ndarray
    labels: np.ndarray | None

    def __post_init__(self) -> None:
        if self.labels is not None and len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class DomainTask:
    classes: tuple[str, ...]
    source_train: ImageSet
    source_test: ImageSet
    target_train: ImageSet  # unlabelled
    target_test: ImageSet | None  # None: the target has no labels at all, nothing on it can be scored

    @property
    def in_channels(self) -> int:
        return 1 if self.source_train.images.ndim == 3 else self.source_train.images.shape[-1]


def check_trainable(task: DomainTask, batch_size: int) -> None:
    """Refuse a task no model can be adapted on, before any training: fewer than two source classes with images
    (a one-class "classifier" is confidently right about everything, and the gate would promote it), or a batch
    (``batch_size`` source + ``batch_size`` target images per step) larger than either training split."""
    present = np.unique(task.source_train.labels) if task.source_train.labels is not None else np.array([])
    if len(present) < 2:
        names = ", ".join(task.classes[int(c)] for c in present) or "none"
        raise ValueError(f"the source training images have {len(present)} class(es) ({names}): a classifier needs "
                         "labelled images of at least two classes")
    for what, images in (("source", task.source_train), ("target", task.target_train)):
        if batch_size > len(images):
            raise ValueError(f"train.batch_size ({batch_size}) is larger than the {what} training split "
                             f"({len(images)} images): each step takes train.batch_size images of each domain, so "
                             f"lower it to at most {len(images)}")


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int, min_test: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` with ``round(test_fraction * n_c)`` test images of every class c (at least
    ``min_test`` of a class that has more than that many), sorted."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(test_fraction * idx.size))
        n_test = max(n_test, min_test) if idx.size > min_test else n_test
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W[, 3])`` -> float32 ``(N, C, H, W)`` scaled to [-1, 1] (a memory-mapped, read-only array is
    read into memory first)."""
    return uint8_to_input(torch.from_numpy(images if images.flags.writeable else np.array(images)))


def uint8_to_input(images: torch.Tensor) -> torch.Tensor:
    """`to_tensor` for a uint8 tensor (e.g. one batch indexed out of the images kept in memory):
    ``pixel / 127.5 - 1`` (`tada.preprocessing`, the serving side's `normalise` bit for bit)."""
    x = images.float().div_(DIVISOR).add_(OFFSET)
    return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()


def spaced(images: np.ndarray, count: int) -> np.ndarray:
    """At most ``count`` images, evenly spaced over ``images`` (all of them, as they are, when there are fewer): a
    deterministic sample that covers a dataset stored in class or file order."""
    if len(images) > count:
        images = images[np.linspace(0, len(images) - 1, count).round().astype(int)]
    return images


def crop_batch(x: torch.Tensor, size: int, augment: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, C, size, size)``: a random window and a random horizontal flip per image when
    ``augment`` (the ResNet training protocol), else the central window."""
    b, _, h, w = x.shape
    if augment:
        tops = torch.randint(0, h - size + 1, (b,), generator=generator).tolist()
        lefts = torch.randint(0, w - size + 1, (b,), generator=generator).tolist()
        x = torch.stack([x[i, :, t: t + size, left: left + size] for i, (t, left) in enumerate(zip(tops, lefts,
                                                                                                  strict=True))])
        flip = torch.rand(b, generator=generator) < 0.5
        return torch.where(flip[:, None, None, None], x.flip(-1), x)
    top, left = (h - size) // 2, (w - size) // 2
    return x[:, :, top: top + size, left: left + size]
