"""A domain-adaptation task: labelled source images, unlabelled target images, and held-out test splits.

The default task, "synthetic -> handwritten digits", is built offline from what installed packages ship:
source = digits rendered from matplotlib's fonts (`tada.data.synthetic`), target = scikit-learn's handwritten
digits (`tada.data.handwritten`). The target's labels are only ever used for its held-out test split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tada.config import DataConfig
from tada.data.handwritten import load_handwritten_digits
from tada.data.synthetic import RenderSpec, render_digits
from tada.preprocessing import DIVISOR, OFFSET, center_crop

__all__ = ["DomainTask", "ImageSet", "build_default_task", "center_crop", "crop_batch", "spaced", "stratified_split",
           "to_tensor", "uint8_to_input"]

TARGET_SPLIT_SEED = 20190127  # fixed for all runs: the target test split never moves with the run's seed
SOURCE_SPLIT_SEED = 20190128  # the held-out source images of datasets without a source test split


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


def build_default_task(cfg: DataConfig) -> DomainTask:
    """Synthetic (fonts) -> handwritten digits, deterministic given ``cfg.generation_seed``."""
    r = cfg.render
    spec = RenderSpec(r.height, r.stroke, r.rotation, r.translation, r.blur, r.noise)
    # Two independent streams, so changing the test size does not change the training images.
    seeds = np.random.SeedSequence(cfg.generation_seed).generate_state(2)
    xs, ys = render_digits(cfg.source_train_per_class, cfg.image_size, spec, int(seeds[0]))
    xs_test, ys_test = render_digits(cfg.source_test_per_class, cfg.image_size, spec, int(seeds[1]))
    xt, yt = load_handwritten_digits(cfg.image_size)
    train_idx, test_idx = stratified_split(yt, cfg.target_test_fraction, TARGET_SPLIT_SEED)
    return DomainTask(
        classes=tuple(str(d) for d in range(10)),
        source_train=ImageSet(xs, ys),
        source_test=ImageSet(xs_test, ys_test),
        target_train=ImageSet(xt[train_idx], None),
        target_test=ImageSet(xt[test_idx], yt[test_idx]),
    )


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
