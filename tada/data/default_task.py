"""The default task, "synthetic -> handwritten digits", built offline from what installed packages ship: source =
digits rendered from matplotlib's fonts (`tada.data.synthetic`), target = scikit-learn's handwritten digits
(`tada.data.handwritten`). The target's labels are only ever used for its held-out test split."""

from __future__ import annotations

import numpy as np

from tada.config import DataConfig
from tada.data.handwritten import load_handwritten_digits
from tada.data.synthetic import RenderSpec, render_digits
from tada.data.task import DomainTask, ImageSet, stratified_split

TARGET_SPLIT_SEED = 20190127  # fixed for all runs: the target test split never moves with the run's seed


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
