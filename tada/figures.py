"""Evaluation figures as PNG files (matplotlib's Agg backend, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tada.io import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)


def confusion_matrix_figure(matrix: np.ndarray, classes: tuple[str, ...], title: str, path: str | Path) -> None:
    """Row-normalised confusion matrix (rows: true class) with the counts written in the cells."""
    plt = _pyplot()
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * n, 0.8 + 0.45 * n))
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set(xticks=range(n), yticks=range(n), xticklabels=classes, yticklabels=classes,
           xlabel="predicted", ylabel="true", title=title)
    if n <= 31:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    _save(fig, path)


def tsne_figure(embedding: np.ndarray, is_source: np.ndarray, labels: np.ndarray, title: str,
                path: str | Path) -> None:
    """2-D t-SNE of bottleneck features: colour = domain (left), colour = class (right)."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5))
    for mask, name, colour in ((is_source, "source", "tab:blue"), (~is_source, "target", "tab:red")):
        left.scatter(*embedding[mask].T, s=5, alpha=0.6, c=colour, label=name)
    left.legend(markerscale=3)
    left.set_title("by domain")
    right.scatter(*embedding.T, s=5, alpha=0.6, c=labels, cmap="tab10" if labels.max() < 10 else "tab20")
    right.set_title("by class")
    for ax in (left, right):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    _save(fig, path)


def attention_figure(images: np.ndarray, attention: np.ndarray | None, captions: list[str], title: str,
                     path: str | Path) -> None:
    """Images with their local attention map (K = H x W regions, upsampled) overlaid, as the paper's Figs. 2-3.

    ``images``: ``(N, S, S)`` or ``(N, S, S, 3)`` uint8; ``attention``: ``(N, H, W)`` in [1 - ln 2, 1], or None for a
    method without local attention (the images are shown with that said in the title).
    """
    plt = _pyplot()
    n = len(images)
    cols = min(8, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows + 0.4), squeeze=False)
    if attention is not None:  # the shared colour range of the shown maps, so small differences are visible
        low, high = float(attention.min()), float(max(attention.max(), attention.min() + 1e-6))
    overlay = None
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        image = images[i]
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
        if attention is not None:
            size = image.shape[0]
            overlay = ax.imshow(attention[i], cmap="jet", alpha=0.45, vmin=low, vmax=high, interpolation="bilinear",
                                extent=(-0.5, size - 0.5, size - 0.5, -0.5))
        ax.set_title(captions[i], fontsize=7)
    if overlay is not None:
        fig.colorbar(overlay, ax=axes, shrink=0.8, label="w = 1 - H(d)")
    fig.suptitle(title if attention is not None else f"{title}\n(this method has no local attention)")
    _save(fig, path)
