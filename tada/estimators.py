"""Estimators of a model's accuracy on unlabelled target images: what "estimated target accuracy" can be computed
from. Each is a pure function of predictions a user always has (the labelled held-out source images, the unlabelled
target images, and the model's predictions on a pseudo-target made from them); `benchmarks/accuracy_estimation.py`
measures them all on five kinds of shift and picks the product's default without tuning it on the task it is scored
on.

- ``average_confidence``: ``1/N sum_i max_k p_ik`` (Hendrycks & Gimpel, 2017), the baseline; with a temperature
  fitted on the source images (`fit_temperature`, Guo et al., 2017) it is ``source_ts``.
- ``doc``: the source accuracy minus the drop in average confidence from source to target (difference of
  confidences, Guillory et al., ICCV 2021).
- ``pseudocal``: the average confidence at the temperature that calibrates a *pseudo-target*: target images mixed
  pairwise (``lam x_i + (1 - lam) x_j``, `mixup_pairs`) and labelled with the pseudo-label of the dominant image
  (PseudoCal, Hu et al., ICML 2024). ``mixup_accuracy`` is the pseudo-target's own accuracy under those labels.
- ``importance_weighted``: the source validation accuracy with each image weighted by ``p(target | x) / p(source |
  x)`` (importance weighting as in DEV, You et al., ICML 2019; IW-GAE, Joo & Klabjan, ICML 2024, refine it per
  group), the odds from a domain classifier on the features (`tada.validators.domain_odds`) or the model's own
  domain discriminator.
- ``cot`` / ``cott``: one minus the optimal-transport cost from the target's softmax vectors to one-hot labels
  distributed as the source's classes, and its thresholded form (confidence optimal transport, Lu et al., NeurIPS
  2023): unlike the confidences, it sees a predicted class distribution that drifts from the true one.
- ``atc``: `tada.validators.atc_estimate` (Garg et al., ICLR 2022).

Every function takes numpy arrays and returns an accuracy in [0, 1].
"""

from __future__ import annotations

import numpy as np

from tada.validators import softmax

TEMPERATURE_BOUNDS = (0.05, 20.0)  # a fitted temperature is clipped here: beyond, the fit has no information left
MIXUP_LAMBDA = 0.65  # PseudoCal's mix ratio: the dominant image keeps 65 % (the paper's default)


def confidences(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``max_k softmax(z_i / T)_k`` of ``logits (N, C)`` -> ``(N,)``."""
    return softmax(np.asarray(logits, dtype=np.float64) / temperature).max(axis=1)


def average_confidence(logits: np.ndarray, temperature: float = 1.0) -> float:
    """The mean of `confidences`: the accuracy a calibrated model would have."""
    return float(confidences(logits, temperature).mean())


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature scaling (Guo et al., ICML 2017): the ``T`` in `TEMPERATURE_BOUNDS` minimising the mean negative
    log-likelihood of ``labels (N,)`` under ``softmax(logits / T)``, ``logits (N, C)``. Deterministic (bounded
    Brent search on ``log T``)."""
    from scipy.optimize import minimize_scalar

    labels = np.asarray(labels, dtype=np.int64)
    lo, hi = np.log(TEMPERATURE_BOUNDS)
    found = minimize_scalar(lambda log_t: _nll(logits, labels, float(np.exp(log_t))), bounds=(lo, hi),
                            method="bounded", options={"xatol": 1e-4})
    return float(np.exp(found.x))


def source_ts(source_logits: np.ndarray, source_labels: np.ndarray, target_logits: np.ndarray) -> float:
    """Average target confidence at the temperature that calibrates the held-out source images."""
    return average_confidence(target_logits, fit_temperature(source_logits, source_labels))


def doc(source_logits: np.ndarray, source_labels: np.ndarray, target_logits: np.ndarray) -> float:
    """Difference of confidences: ``acc_S - (AC_S - AC_T)``, clipped to [0, 1]."""
    acc = float((np.asarray(source_logits).argmax(1) == np.asarray(source_labels)).mean())
    return float(np.clip(acc - average_confidence(source_logits) + average_confidence(target_logits), 0.0, 1.0))


def mixup_pairs(count: int, seed: int = 0) -> np.ndarray:
    """``(count,)`` partners ``j(i)`` for mixing image ``i``: each image's successor in a fixed random cycle through
    all of them (own generator, so evaluating never moves the training's random streams), never itself when
    ``count > 1``."""
    order = np.random.default_rng(seed).permutation(count)
    partners = np.empty(count, dtype=np.int64)
    partners[order] = np.roll(order, -1)
    return partners


def pseudocal(target_logits: np.ndarray, mixed_logits: np.ndarray) -> float:
    """PseudoCal's estimate: the average target confidence at the temperature fitted on the pseudo-target.

    Args:
        target_logits: ``(N, C)`` on the target images ``x_i``.
        mixed_logits: ``(N, C)`` on ``lam * x_i + (1 - lam) * x_j(i)`` (`mixup_pairs`, ``lam > 0.5``), each labelled
            with ``x_i``'s pseudo-label ``argmax target_logits[i]``.
    """
    labels = np.asarray(target_logits).argmax(1)
    return average_confidence(target_logits, fit_temperature(mixed_logits, labels))


def mixup_accuracy(target_logits: np.ndarray, mixed_logits: np.ndarray) -> float:
    """The pseudo-target's accuracy: how often a mixed image is predicted as its dominant image's pseudo-label."""
    return float((np.asarray(mixed_logits).argmax(1) == np.asarray(target_logits).argmax(1)).mean())


def importance_weighted(weights: np.ndarray, source_logits: np.ndarray, source_labels: np.ndarray) -> float:
    """Self-normalised importance-weighted source accuracy ``sum_i w_i 1[correct_i] / sum_i w_i`` over the held-out
    source images, ``weights (M,)`` their density ratios ``p_T(x) / p_S(x)`` (up to a constant)."""
    weights = np.asarray(weights, dtype=np.float64)
    correct = np.asarray(source_logits).argmax(1) == np.asarray(source_labels)
    total = weights.sum()
    return float((weights * correct).sum() / total) if total > 0 else float(correct.mean())


def discriminator_odds(domain_logits: np.ndarray) -> np.ndarray:
    """``p(target | x) / p(source | x)`` from the global discriminator's ``domain_logits (M,)`` (it outputs
    ``logit p(source | x)``, trained on equal source and target batches, so no prior ratio)."""
    return np.exp(-np.clip(np.asarray(domain_logits, dtype=np.float64), -30, 30))


def transport_costs(probabilities: np.ndarray, label_marginal: np.ndarray) -> np.ndarray:
    """Each image's share of the optimal transport cost from ``probabilities (N, C)`` (uniform mass) to the one-hot
    vectors ``e_k`` weighted by ``label_marginal (C,)``, with the cost ``||p - e_k||_inf = 1 - p_k``.

    Returns ``(N,)``: image ``i``'s expected cost under the optimal plan (``N`` times its row of the plan times the
    costs); their mean is the transport cost ``W``. Exact (HiGHS' linear program on the ``N x C`` plan)."""
    from scipy.optimize import linprog
    from scipy.sparse import csr_array, hstack, vstack
    from scipy.sparse import eye as sparse_eye

    p = np.asarray(probabilities, dtype=np.float64)
    n, c = p.shape
    marginal = np.asarray(label_marginal, dtype=np.float64)
    marginal = marginal / marginal.sum()
    cost = 1.0 - p
    rows = csr_array((np.ones(n * c), (np.repeat(np.arange(n), c), np.arange(n * c))), shape=(n, n * c))
    columns = hstack([sparse_eye(c, format="csr")] * n, format="csr")
    plan = linprog(cost.ravel(), A_eq=vstack([rows, columns], format="csr"),
                   b_eq=np.r_[np.full(n, 1.0 / n), marginal], bounds=(0, None), method="highs")
    if plan.status != 0:
        raise RuntimeError(f"the transport problem did not solve: {plan.message}")
    return (plan.x.reshape(n, c) * cost).sum(axis=1) * n


def cot(target_logits: np.ndarray, label_marginal: np.ndarray) -> float:
    """COT: ``1 - W(P_target softmax, sum_k pi_k delta_{e_k})`` with ``pi = label_marginal`` (the source's classes;
    `transport_costs`)."""
    return float(1.0 - transport_costs(softmax(target_logits), label_marginal).mean())


def cott(source_logits: np.ndarray, source_labels: np.ndarray, target_logits: np.ndarray,
         label_marginal: np.ndarray) -> float:
    """COTT: the fraction of target images whose transport cost stays below the threshold at which the held-out
    source images' costs (transported to the same label marginal) leave exactly as many below it as are classified
    correctly (ATC's rule, applied to the transport costs)."""
    source_costs = np.sort(transport_costs(softmax(source_logits), label_marginal))
    correct = int((np.asarray(source_logits).argmax(1) == np.asarray(source_labels)).sum())
    if correct == 0:
        return 0.0
    threshold = source_costs[correct - 1]
    return float((transport_costs(softmax(target_logits), label_marginal) <= threshold).mean())
