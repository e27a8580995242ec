"""Shift score: how far an image's adaptation signals are from those of the target domain the model adapted to.

Three per-image signals come out of the exported graph (`tada.export.InferenceGraph`):

- ``domain_probability`` ``d = sigmoid(G_d(G_b(h)))``, the global discriminator's "this is a source image". TADA
  trains the features to fool it, so on target images it settles on a narrow band near 0.5; its value on inputs
  unlike both domains is arbitrary, which is why it is compared with its target band and never with 0.5.
- ``entropy`` ``H(p) = -sum_j p_j log p_j`` of the class probabilities, in nats (blank or washed-out images).
- ``feature_distance`` ``D = (f - mu)^T Sigma^-1 (f - mu) / dim``: the squared Mahalanobis distance of the
  bottleneck features ``f = G_b(h)`` from the target images' feature distribution (``mu``, Ledoit-Wolf ``Sigma``,
  fitted on the unlabelled target training images), per dimension (~1 on them). It catches what the discriminator
  cannot: noise, inverted or rotated images land far from the aligned features while the classifier stays confident.

At export, each signal's mean ``m_j`` and standard deviation ``s_j`` are measured on held-out target images (the
calibration set) and stored in the model's metadata. The shift score of an image is the root mean square of its
standardised signals::

    score = sqrt( 1/J sum_j ((x_j - m_j) / s_j)^2 )

so the calibration images score 1 on average (``mean(score^2) = 1``) and the score grows with the distance from
the target domain in any signal, in either direction. The default alert threshold is the calibration set's 99th
percentile: about 1 % of target traffic exceeds it; a window where far more does has drifted.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tada.serving.window import RollingWindow

SIGNALS = ("domain_probability", "entropy", "feature_distance")  # in this order, those the model has
MIN_STD = 1e-6  # a constant signal (an untrained discriminator) must not divide by zero


def ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(p,)`` and Ledoit-Wolf shrunk covariance ``(p, p)`` of ``x (n, p)`` (as ``sklearn.covariance``).

    ``Sigma = (1 - a) S + a tr(S)/p I``, ``S`` the maximum-likelihood covariance and ``a`` the shrinkage that
    minimises the expected Frobenius error (Ledoit & Wolf, 2004). Well conditioned even when ``n`` is close to ``p``
    or features are dead (always 0 after the ReLU).
    """
    x = np.asarray(x, dtype=np.float64)
    n, p = x.shape
    mean = x.mean(axis=0)
    xc = x - mean
    cov = xc.T @ xc / n
    mu = np.trace(cov) / p
    x2 = xc**2
    delta = (np.sum(cov**2) - 2 * mu * np.trace(cov) + p * mu**2) / p  # ||S - mu I||_F^2 / p
    beta = (np.sum(x2.T @ x2) / n - np.sum(cov**2)) / (p * n)  # estimated error of S
    shrinkage = 0.0 if delta == 0 else min(beta, delta) / delta
    shrunk = (1 - shrinkage) * cov + shrinkage * mu * np.eye(p)
    return mean, shrunk


def whitening(covariance: np.ndarray) -> np.ndarray:
    """``W (p, p)`` with ``||(f - mu) W||^2 = (f - mu)^T Sigma^-1 (f - mu)``: ``W = L^-T`` for ``Sigma = L L^T``."""
    p = covariance.shape[0]
    jitter = 1e-9 * max(np.trace(covariance) / p, 1e-12)  # all-constant features still give a finite W
    lower = np.linalg.cholesky(covariance + jitter * np.eye(p))
    return np.linalg.inv(lower).T


def calibrate(signals: dict[str, np.ndarray], quantile: float = 0.99) -> dict[str, Any]:
    """The shift reference stored in the model: per-signal mean and std on the calibration images, and the score
    quantiles there. ``signals``: name -> ``(N,)`` values of the signals the model has."""
    names = [s for s in SIGNALS if s in signals]
    if not names:
        raise ValueError(f"no shift signal among {sorted(signals)}; expected some of {', '.join(SIGNALS)}")
    values = np.stack([np.asarray(signals[s], dtype=np.float64) for s in names], axis=1)  # (N, J)
    reference: dict[str, Any] = {
        "signals": names,
        "mean": values.mean(axis=0).tolist(),
        "std": np.maximum(values.std(axis=0), MIN_STD).tolist(),
        "calibration_images": int(values.shape[0]),
    }
    scores = shift_scores(values, reference)
    reference["quantiles"] = {f"p{q}": float(np.percentile(scores, q)) for q in (50, 95, 99)}
    reference["threshold"] = float(np.quantile(scores, quantile))
    return reference


def shift_scores(values: np.ndarray, reference: dict[str, Any]) -> np.ndarray:
    """``values (N, J)`` (the reference's signals, in its order) -> ``(N,)`` shift scores (see the module doc)."""
    z = (np.asarray(values, dtype=np.float64) - np.asarray(reference["mean"])) / np.asarray(reference["std"])
    return np.sqrt(np.mean(z**2, axis=1))


class ShiftMonitor(RollingWindow[float]):
    """The shift scores of the last ``window`` images, summarised for /metrics and /health. Thread-safe."""

    def __init__(self, window: int, threshold: float) -> None:
        super().__init__(window, "shift")
        self.threshold = threshold

    def add(self, scores: np.ndarray | list[float]) -> None:
        super().add([float(s) for s in scores])

    def summary(self) -> dict[str, float | int | None]:
        """``images`` in the window, ``mean``, ``p50``, ``p95`` and ``fraction_above`` the threshold (None when
        empty), with ``window`` and ``threshold``."""
        scores = np.array(self.snapshot(), dtype=np.float64)
        summary: dict[str, float | int | None] = {"window": self.window, "threshold": self.threshold,
                                                  "images": int(scores.size)}
        empty = scores.size == 0
        summary["mean"] = None if empty else float(scores.mean())
        summary["p50"] = None if empty else float(np.percentile(scores, 50))
        summary["p95"] = None if empty else float(np.percentile(scores, 95))
        summary["fraction_above"] = None if empty else float((scores > self.threshold).mean())
        return summary
