"""Generated tasks beyond the default one, each a different kind of shift, all built offline from the default task's
two domains (digits rendered from matplotlib's fonts, scikit-learn's handwritten digits):

- ``handwritten_to_synthetic``: the reverse direction. Source: the handwritten digits (their fixed test split is the
  source test set); target: rendered digits.
- ``synthetic_to_heavy_synthetic``: heavier rendering. Source: the rendered digits; target: digits rendered with
  `HEAVY_RENDER` (more rotation, thicker strokes, more blur and noise), from other seeds.
- ``synthetic_to_inverted_handwritten``: an appearance change. The default task with every target image inverted
  (black ink on white).
- ``synthetic_to_handwritten_label_shift``: a label shift. The default task with the target's classes (training and
  test images alike) thinned to `LABEL_SHIFT_RATIO` proportions: the classes in a fixed shuffled order, each
  ``LABEL_SHIFT_RATIO`` times as frequent as the next, so the most frequent class is 13 times the rarest (the
  source is balanced).

They exist for the benchmarks that must not be tuned on one task (`benchmarks/accuracy_estimation.py`) and are
``data.name`` choices like the default, so any of them runs through ``dvc repro``. Every target label is used only
for the target's test split, as in the default task.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tada.config import DataConfig
from tada.data.default_task import TARGET_SPLIT_SEED, build_default_task
from tada.data.handwritten import load_handwritten_digits
from tada.data.synthetic import RenderSpec, render_digits
from tada.data.task import DomainTask, ImageSet, stratified_split

CLASSES = tuple(str(d) for d in range(10))
RENDERED_TARGET_PER_CLASS = (150, 60)  # training (unlabelled) and test images per digit of a rendered target
HEAVY_RENDER = RenderSpec(height=(0.5, 0.95), stroke=(0.0, 2.0), rotation=35.0, translation=0.12, blur=1.5,
                          noise=0.2)
LABEL_SHIFT_RATIO = 0.75  # each class's share of the next one's, in the shuffled order below
LABEL_SHIFT_ORDER_SEED = 20190129


def _render_spec(cfg: DataConfig) -> RenderSpec:
    r = cfg.render
    return RenderSpec(r.height, r.stroke, r.rotation, r.translation, r.blur, r.noise)


def _rendered(cfg: DataConfig, spec: RenderSpec, stream: int) -> tuple[ImageSet, ImageSet]:
    """A rendered target: training and test images from two seeds of their own (``stream`` keeps them apart from
    the default task's source seeds, which use the first two of ``cfg.generation_seed``'s)."""
    seeds = np.random.SeedSequence([cfg.generation_seed, stream]).generate_state(2)
    train_n, test_n = RENDERED_TARGET_PER_CLASS
    xs, ys = render_digits(train_n, cfg.image_size, spec, int(seeds[0]))
    xt, yt = render_digits(test_n, cfg.image_size, spec, int(seeds[1]))
    return ImageSet(xs, ys), ImageSet(xt, yt)


def handwritten_to_synthetic(cfg: DataConfig) -> DomainTask:
    images, labels = load_handwritten_digits(cfg.image_size)
    train, test = stratified_split(labels, cfg.target_test_fraction, TARGET_SPLIT_SEED)
    target_train, target_test = _rendered(cfg, _render_spec(cfg), stream=1)
    return DomainTask(CLASSES, ImageSet(images[train], labels[train]), ImageSet(images[test], labels[test]),
                      ImageSet(target_train.images, None), target_test)


def synthetic_to_heavy_synthetic(cfg: DataConfig) -> DomainTask:
    task = build_default_task(cfg)
    target_train, target_test = _rendered(cfg, HEAVY_RENDER, stream=2)
    return DomainTask(CLASSES, task.source_train, task.source_test, ImageSet(target_train.images, None),
                      target_test)


def synthetic_to_inverted_handwritten(cfg: DataConfig) -> DomainTask:
    task = build_default_task(cfg)
    return DomainTask(CLASSES, task.source_train, task.source_test, ImageSet(255 - task.target_train.images, None),
                      ImageSet(255 - task.target_test.images, task.target_test.labels))


def label_shift_proportions() -> np.ndarray:
    """``(10,)`` target class proportions (sum 1): ``LABEL_SHIFT_RATIO ** rank`` in a fixed shuffled class order."""
    order = np.random.default_rng(LABEL_SHIFT_ORDER_SEED).permutation(len(CLASSES))
    weights = np.empty(len(CLASSES))
    weights[order] = LABEL_SHIFT_RATIO ** np.arange(len(CLASSES))
    return weights / weights.sum()


def _thin(images: np.ndarray, labels: np.ndarray, proportions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The largest subset of ``images`` with classes in ``proportions`` (each class's first images, in order)."""
    counts = np.bincount(labels, minlength=len(proportions))
    total = np.min(counts / proportions)  # the most images every class can supply at these proportions
    keep = np.concatenate([np.flatnonzero(labels == c)[: int(np.floor(total * p))]
                           for c, p in enumerate(proportions)])
    keep.sort()
    return images[keep], labels[keep]


def synthetic_to_handwritten_label_shift(cfg: DataConfig) -> DomainTask:
    images, labels = load_handwritten_digits(cfg.image_size)
    train, test = stratified_split(labels, cfg.target_test_fraction, TARGET_SPLIT_SEED)
    task = build_default_task(cfg)
    p = label_shift_proportions()
    target_train, _ = _thin(images[train], labels[train], p)
    target_test = ImageSet(*_thin(images[test], labels[test], p))
    return DomainTask(CLASSES, task.source_train, task.source_test, ImageSet(target_train, None), target_test)


SHIFT_TASKS: dict[str, Callable[[DataConfig], DomainTask]] = {
    "synthetic_to_handwritten": build_default_task,
    "handwritten_to_synthetic": handwritten_to_synthetic,
    "synthetic_to_heavy_synthetic": synthetic_to_heavy_synthetic,
    "synthetic_to_inverted_handwritten": synthetic_to_inverted_handwritten,
    "synthetic_to_handwritten_label_shift": synthetic_to_handwritten_label_shift,
}


def build_generated_task(cfg: DataConfig) -> DomainTask:
    """The generated task ``cfg.name`` (the default task or one of the shift tasks), deterministic given ``cfg``."""
    try:
        return SHIFT_TASKS[cfg.name](cfg)
    except KeyError:
        raise ValueError(f"data.name: {cfg.name!r} is not a generated task ({', '.join(SHIFT_TASKS)})") from None
