"""Label-free validators: how good a model is on the target domain, judged without a single target label.

Every score is a pure function of what `tada.evaluate.predict` returns (class logits, bottleneck features) on three
image sets a user always has: the labelled source images held out from training (``source_val``), a sample of the
source training images (``source_train``, DEV's domain classifier only) and the unlabelled target images
(``target``). **Higher is better for every one of them** (losses and risks are negated), so a caller can rank
checkpoints or compare two models the same way for all.

- ``source_accuracy``: accuracy on held-out source images, the baseline every validator must beat.
- ``neg_entropy``: ``-mean_i H(p_i)``, confident target predictions.
- ``info_max``: ``H(mean_i p_i) - mean_i H(p_i)``, confident *and* diverse target predictions.
- ``snd``: soft neighbourhood density of the target predictions (Saito et al., ICCV 2021).
- ``bnm``: ``||P||_* / N``, the batch nuclear norm of the target predictions (Cui et al., CVPR 2020).
- ``devn``: minus the importance-weighted source validation loss, the weights from a domain classifier on the
  features and max-normalised (DEV: You et al., ICML 2019; DEVN: Musgrave et al., 2022).
- ``class_ami``: agreement of the predicted target classes with a k-means clustering of the target features
  (Musgrave et al., 2022).
- ``estimated_target_accuracy``: average thresholded confidence (ATC: Garg et al., ICLR 2022), the fraction of
  target images whose confidence reaches the threshold at which the source validation images' confidence matches
  their accuracy: an *estimate of the accuracy itself*.

Musgrave, Belongie and Lim (2022) found no validator best everywhere, and a simple one often as good as the fancy
ones: `benchmarks/validators.py` measures them all on the default task.
"""

from __future__ import annotations

import numpy as np

from tada import config as config_module

VALIDATORS = ("source_accuracy", "neg_entropy", "info_max", "snd", "bnm", "devn", "class_ami",
              "estimated_target_accuracy")
assert VALIDATORS == config_module.VALIDATORS
ATC_SCORES = ("negative_entropy", "max_confidence")
_SCORE_MAX = {"negative_entropy": 0.0, "max_confidence": 1.0}  # the largest value each score can take


def metric_value(metrics: dict, name: str) -> float | None:
    """``name`` from a metrics record (``reports/metrics.json``, where the validators sit under ``validators``, or a
    flat evaluation row); None when the record has no such number."""
    value = metrics.get(name, (metrics.get("validators") or {}).get(name))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64. ``(N, C)`` -> ``(N, C)``."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def entropy(p: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats of each row of probabilities. ``(N, C)`` -> ``(N,)``; ``0 log 0 = 0``."""
    p = np.asarray(p, dtype=np.float64)
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=-1)


def source_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of ``logits (N, C)`` against ``labels (N,)`` on held-out source images."""
    return float((np.asarray(logits).argmax(axis=1) == np.asarray(labels)).mean())


def neg_entropy(logits: np.ndarray) -> float:
    """``-1/N sum_i H(p_i)`` over target ``logits (N, C)``: 0 for one-hot predictions, ``-log C`` for uniform ones."""
    return float(-entropy(softmax(logits)).mean())


def info_max(logits: np.ndarray) -> float:
    """Information maximisation ``H(1/N sum_i p_i) - 1/N sum_i H(p_i)`` over target ``logits (N, C)``: the mutual
    information between an image and its predicted class. High for confident predictions spread over the classes;
    0 when every image gets the same distribution (a collapsed or untrained model)."""
    p = softmax(logits)
    return float(entropy(p.mean(axis=0)) - entropy(p).mean())


def snd(logits: np.ndarray, temperature: float = 0.05, chunk: int = 1024) -> float:
    """Soft neighbourhood density (Saito et al., ICCV 2021) of target ``logits (N, C)``, ``N >= 2``.

    With ``q_i = p_i / ||p_i||`` (softmax, L2-normalised), each image's similarities to the *other* images
    ``s_ij = q_i . q_j`` (j != i) become a distribution ``softmax_j(s_ij / temperature)``; SND is the mean entropy of
    these distributions. Dense neighbourhoods (clusters of similar predictions) give high entropy.
    """
    q = softmax(logits)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    n = len(q)
    if n < 2:
        raise ValueError("snd needs at least 2 target images")
    entropies = []
    for start in range(0, n, chunk):
        sim = q[start:start + chunk] @ q.T / temperature  # (rows, N)
        rows = np.arange(sim.shape[0])
        sim[rows, rows + start] = -np.inf  # not its own neighbour
        entropies.append(entropy(softmax(sim)))
    return float(np.concatenate(entropies).mean())


def bnm(logits: np.ndarray) -> float:
    """Batch nuclear norm ``||P||_* / N`` of the target predictions ``P = softmax(logits) (N, C)``: the sum of its
    singular values. Large when predictions are confident (large norms) and diverse (high rank)."""
    p = softmax(logits)
    return float(np.linalg.svd(p, compute_uv=False).sum() / len(p))


def domain_odds(source_features: np.ndarray, target_features: np.ndarray, query: np.ndarray) -> np.ndarray:
    """DEV's importance weights ``w(x) = n_s / n_t * P(target | x) / P(source | x)`` for ``query (M, D)``.

    The domain classifier is an L2-regularised logistic regression on standardised features, trained to tell
    ``source_features (N_s, D)`` from ``target_features (N_t, D)`` (deterministic: lbfgs, no sampling).
    Returns ``(M,)`` weights (their mean over the source is about 1 when the classifier is calibrated).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([source_features, target_features]).astype(np.float64)
    y = np.r_[np.zeros(len(source_features)), np.ones(len(target_features))]
    scaler = StandardScaler().fit(x)
    classifier = LogisticRegression(C=1.0, max_iter=1000).fit(scaler.transform(x), y)
    log_odds = classifier.decision_function(scaler.transform(np.asarray(query, dtype=np.float64)))
    return np.exp(np.clip(log_odds, -30, 30)) * len(source_features) / len(target_features)


def dev_risk(weights: np.ndarray, losses: np.ndarray) -> float:
    """DEV's risk estimate with its control variate (You et al., ICML 2019, Algorithm 1).

    ``weights (N,)`` importance weights and ``losses (N,)`` per-image losses of the source validation images:
    ``mean(w l) + eta * (mean(w) - 1)`` with ``eta = -Cov(w l, w) / Var(w)``, which cancels the variance the
    weights add.
    """
    weights, losses = np.asarray(weights, dtype=np.float64), np.asarray(losses, dtype=np.float64)
    weighted = weights * losses
    variance = np.var(weights, ddof=1)
    eta = -np.cov(weighted, weights)[0, 1] / variance if variance > 0 else 0.0
    return float(weighted.mean() + eta * weights.mean() - eta)


def devn(
    source_train_features: np.ndarray,
    source_val_features: np.ndarray,
    source_val_logits: np.ndarray,
    source_val_labels: np.ndarray,
    target_features: np.ndarray,
) -> float:
    """Minus DEVN: DEV's risk of the source validation cross-entropy, with the importance weights divided by their
    maximum (Musgrave et al., 2022, who found the normalised form more reliable).

    Args:
        source_train_features: ``(N_s, D)`` bottleneck features of source training images (domain classifier).
        source_val_features: ``(M, D)`` features of the held-out source images.
        source_val_logits: ``(M, C)`` their logits.
        source_val_labels: ``(M,)`` their labels.
        target_features: ``(N_t, D)`` features of unlabelled target images.
    """
    weights = domain_odds(source_train_features, target_features, source_val_features)
    weights = weights / weights.max()
    log_p = np.log(np.clip(softmax(source_val_logits), 1e-300, None))
    losses = -log_p[np.arange(len(source_val_labels)), np.asarray(source_val_labels)]
    return -dev_risk(weights, losses)


def class_ami(features: np.ndarray, logits: np.ndarray) -> float:
    """Adjusted mutual information between the predicted classes of target images and a k-means clustering of their
    ``features (N, D)`` (k = the number of classes predicted, centroids started at the predicted classes' means, so
    the result is deterministic). 0 when a single class is predicted (a collapsed model)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_mutual_info_score

    features = np.asarray(features, dtype=np.float64)
    predicted = np.asarray(logits).argmax(axis=1)
    classes = np.unique(predicted)
    if len(classes) < 2:
        return 0.0
    centroids = np.stack([features[predicted == c].mean(axis=0) for c in classes])
    clusters = KMeans(n_clusters=len(classes), init=centroids, n_init=1).fit_predict(features)
    return float(adjusted_mutual_info_score(predicted, clusters))


def confidence_scores(logits: np.ndarray, score: str = "negative_entropy") -> np.ndarray:
    """ATC's per-image score: ``negative_entropy`` ``-H(p)`` (ATC-NE, the better one in Garg et al.) or
    ``max_confidence`` ``max_j p_j``. ``(N, C)`` -> ``(N,)``."""
    p = softmax(logits)
    if score == "negative_entropy":
        return -entropy(p)
    if score == "max_confidence":
        return p.max(axis=1)
    raise ValueError(f"ATC score must be one of {', '.join(ATC_SCORES)}, got {score!r}")


def atc_threshold(logits: np.ndarray, labels: np.ndarray, score: str = "negative_entropy") -> float:
    """ATC's threshold ``t``, fitted on labelled held-out source images: the ``k``-th smallest score, ``k`` = the
    number of errors, so exactly as many source images score ``>= t`` as are classified correctly (without ties).
    When every source image is misclassified, just above the largest score possible (so the estimate is 0)."""
    scores = np.sort(confidence_scores(logits, score))
    errors = int((np.asarray(logits).argmax(axis=1) != np.asarray(labels)).sum())
    return float(scores[errors]) if errors < len(scores) else float(np.nextafter(_SCORE_MAX[score], np.inf))


def atc_estimate(logits: np.ndarray, threshold: float, score: str = "negative_entropy") -> float:
    """Estimated accuracy on unlabelled ``logits (N, C)``: the fraction scoring ``>= threshold``."""
    return float((confidence_scores(logits, score) >= threshold).mean())


def score_all(
    source_val: dict[str, np.ndarray],
    source_train_features: np.ndarray,
    target: dict[str, np.ndarray],
    *,
    snd_temperature: float = 0.05,
    atc_score: str = "negative_entropy",
) -> dict[str, float]:
    """Every validator, plus ATC's threshold.

    Args:
        source_val: ``logits (M, C)``, ``features (M, D)`` and ``labels (M,)`` of the held-out source images.
        source_train_features: ``(N_s, D)`` features of (a sample of) the source training images.
        target: ``logits (N, C)`` and ``features (N, D)`` of unlabelled target images.

    Returns:
        ``{name: score}`` for every name in `VALIDATORS`, and ``atc_threshold``.
    """
    threshold = atc_threshold(source_val["logits"], source_val["labels"], atc_score)
    scores = {
        "source_accuracy": source_accuracy(source_val["logits"], source_val["labels"]),
        "neg_entropy": neg_entropy(target["logits"]),
        "info_max": info_max(target["logits"]),
        "snd": snd(target["logits"], snd_temperature),
        "bnm": bnm(target["logits"]),
        "devn": devn(source_train_features, source_val["features"], source_val["logits"], source_val["labels"],
                     target["features"]),
        "class_ami": class_ami(target["features"], target["logits"]),
        "estimated_target_accuracy": atc_estimate(target["logits"], threshold, atc_score),
    }
    return {**scores, "atc_threshold": threshold}
