"""Evaluation figures as PNG files (matplotlib's Agg backend, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tada.io import atomic_path

if TYPE_CHECKING:
    from tada.config import EvaluateConfig
    from tada.evaluate import EvaluationSet


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


def tsne_figure(embedding: np.ndarray, is_source: np.ndarray, labels: np.ndarray, classes: tuple[str, ...],
                title: str, path: str | Path) -> None:
    """2-D t-SNE of bottleneck features: colour = domain (left), colour = class (right, with its legend; ``labels``
    index ``classes``)."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    for mask, name, colour in ((is_source, "source", "tab:blue"), (~is_source, "target", "tab:red")):
        left.scatter(*embedding[mask].T, s=5, alpha=0.6, c=colour, label=name)
    left.legend(markerscale=3, title="domain")
    left.set_title("by domain")
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for index in np.unique(labels):
        shown = labels == index
        right.scatter(*embedding[shown].T, s=5, alpha=0.6, color=cmap(index % cmap.N), label=classes[index])
    if len(classes) <= 40:
        right.legend(markerscale=3, title="class", fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5),
                     ncol=1 + len(classes) // 20)
    right.set_title("by class (target: true label, or prediction when unlabelled)")
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


def evaluation_figures(outputs: EvaluationSet, classes: tuple[str, ...], cfg: EvaluateConfig, seed: int,
                       figures_dir: str | Path, method: str) -> None:
    """The evaluate stage's figures: ``confusion_matrix.png`` (target, or source when the target is unlabelled),
    ``tsne.png`` (source vs target bottleneck features) and ``attention.png`` (local attention on target images, as
    the paper's Figures 2-3)."""
    from tada.evaluate import confusion_matrix

    figures_dir = Path(figures_dir)
    target_pred = outputs.target["logits"].argmax(1).numpy()
    source_y, target_y = outputs.source_labels, outputs.target_labels
    if target_y is not None:
        matrix = confusion_matrix(target_pred, target_y, len(classes))
        matrix_title = f"target confusion matrix ({method})"
    else:
        matrix = confusion_matrix(outputs.source["logits"].argmax(1).numpy(), source_y, len(classes))
        matrix_title = f"source confusion matrix ({method}; the target is unlabelled)"
    confusion_matrix_figure(matrix, classes, matrix_title, figures_dir / "confusion_matrix.png")

    shown_labels = target_y if target_y is not None else target_pred  # colour unlabelled points by prediction
    rng = np.random.default_rng(seed)
    pick_s = rng.choice(len(source_y), min(cfg.tsne_points, len(source_y)), replace=False)
    pick_t = rng.choice(len(shown_labels), min(cfg.tsne_points, len(shown_labels)), replace=False)
    features = np.concatenate([outputs.source["features"][pick_s].numpy(), outputs.target["features"][pick_t].numpy()])
    from sklearn.manifold import TSNE

    perplexity = min(cfg.tsne_perplexity, (len(features) - 1) / 3)
    embedding = TSNE(perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)
    is_source = np.arange(len(features)) < len(pick_s)
    tsne_figure(embedding, is_source, np.concatenate([source_y[pick_s], shown_labels[pick_t]]), classes,
                f"t-SNE of bottleneck features ({method})", figures_dir / "tsne.png")

    images = outputs.target_images
    count = min(cfg.attention_images, len(images))
    shown = np.linspace(0, len(images) - 1, count).round().astype(int)
    attention = None
    if "local_attention" in outputs.target:
        side = int(round(outputs.target["local_attention"].shape[1] ** 0.5))  # square inputs: a square region grid
        attention = outputs.target["local_attention"][shown].view(count, side, side).numpy()
    if target_y is not None:
        captions = [f"{classes[target_y[i]]} -> {classes[target_pred[i]]}" for i in shown]
        title = "local attention on target images (true -> predicted)"
    else:
        captions = [f"-> {classes[target_pred[i]]}" for i in shown]
        title = "local attention on unlabelled target images (predicted)"
    attention_figure(images[shown], attention, captions, title, figures_dir / "attention.png")
