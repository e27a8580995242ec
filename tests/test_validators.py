"""The label-free validators against hand computations on tiny inputs, and their direction (higher is better)."""

import math

import numpy as np
import pytest

from tada import validators as V

LOG2, LOG3 = math.log(2), math.log(3)


def logits_of(p: np.ndarray) -> np.ndarray:
    """Logits whose softmax is ``p`` (rows of positive probabilities)."""
    return np.log(np.asarray(p, dtype=np.float64))


def test_entropy_and_softmax_by_hand():
    assert V.entropy(np.array([[0.5, 0.5], [1.0, 0.0]])).tolist() == pytest.approx([LOG2, 0.0])
    assert V.softmax(np.array([[0.0, math.log(3)]]))[0].tolist() == pytest.approx([0.25, 0.75])
    assert V.softmax(np.array([[1000.0, 0.0]]))[0, 0] == 1.0  # no overflow


def test_source_accuracy():
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [5.0, 0.0]])
    assert V.source_accuracy(logits, np.array([0, 1, 1])) == pytest.approx(2 / 3)


def test_neg_entropy_and_info_max_by_hand():
    confident_diverse = logits_of([[0.98, 0.01, 0.01], [0.01, 0.98, 0.01], [0.01, 0.01, 0.98]])
    uniform = np.zeros((3, 3))
    collapsed = logits_of([[0.98, 0.01, 0.01]] * 3)
    h = -(0.98 * math.log(0.98) + 2 * 0.01 * math.log(0.01))
    assert V.neg_entropy(uniform) == pytest.approx(-LOG3)
    assert V.neg_entropy(confident_diverse) == pytest.approx(-h)
    # IM = H(mean p) - mean H(p): the mean of the three rows is uniform
    assert V.info_max(confident_diverse) == pytest.approx(LOG3 - h)
    assert V.info_max(uniform) == pytest.approx(0.0, abs=1e-12)
    assert V.info_max(collapsed) == pytest.approx(0.0, abs=1e-12)  # confident, but one class for everything
    assert V.neg_entropy(collapsed) == pytest.approx(-h)  # entropy alone cannot see the collapse


def test_snd_by_hand():
    # Three images, two with identical predictions and one orthogonal to both.
    p = np.array([[1.0, 1e-12], [1.0, 1e-12], [1e-12, 1.0]])
    t = 0.5
    # Image 0's neighbours: image 1 (cosine 1) and image 2 (cosine ~0): softmax([1/t, 0]) = [e^2, 1] / (e^2 + 1).
    a = math.exp(2) / (math.exp(2) + 1)
    h01 = -(a * math.log(a) + (1 - a) * math.log(1 - a))
    # Image 2's neighbours are both at cosine ~0: a uniform distribution over 2, entropy ln 2.
    assert V.snd(np.log(p), temperature=t) == pytest.approx((2 * h01 + LOG2) / 3, rel=1e-6)
    # chunking does not change the result
    x = np.random.default_rng(0).normal(size=(50, 4))
    assert V.snd(x, chunk=7) == pytest.approx(V.snd(x, chunk=1000))
    with pytest.raises(ValueError, match="at least 2"):
        V.snd(np.zeros((1, 3)))


def test_bnm_by_hand():
    one_hot = logits_of([[1 - 2e-12, 1e-12, 1e-12], [1e-12, 1 - 2e-12, 1e-12]])
    assert V.bnm(one_hot) == pytest.approx(1.0, rel=1e-6)  # two orthonormal rows: singular values 1, 1; / N = 2
    collapsed = logits_of([[1 - 2e-12, 1e-12, 1e-12]] * 2)
    assert V.bnm(collapsed) == pytest.approx(math.sqrt(2) / 2, rel=1e-6)  # rank 1: one singular value sqrt(2)
    assert V.bnm(np.zeros((4, 2))) == pytest.approx(math.sqrt(4 * 0.5) / 4)  # rows (1/2, 1/2): sigma = sqrt(N/2)


def test_dev_risk_by_hand():
    w = np.array([1.0, 2.0, 3.0])
    loss = np.array([1.0, 1.0, 0.0])
    wl = w * loss  # [1, 2, 0]
    cov = np.cov(wl, w)[0, 1]  # = -0.5
    eta = -cov / np.var(w, ddof=1)  # = 0.5
    assert V.dev_risk(w, loss) == pytest.approx(wl.mean() + eta * w.mean() - eta)
    assert V.dev_risk(w, loss) == pytest.approx(1.0 + 0.5 * 2 - 0.5)
    assert V.dev_risk(np.ones(3), loss) == pytest.approx(2 / 3)  # equal weights: the plain mean loss


def test_domain_odds_weighs_target_like_source_images_up():
    rng = np.random.default_rng(0)
    source = rng.normal(0.0, 1.0, size=(400, 2))
    target = rng.normal(1.5, 1.0, size=(400, 2))
    w = V.domain_odds(source, target, np.array([[-1.0, -1.0], [1.5, 1.5]]))
    assert w[1] > 10 * w[0]
    assert V.domain_odds(source, target, source).mean() == pytest.approx(1.0, abs=0.25)  # about 1 over the source


def test_devn_prefers_the_model_that_is_right_on_target_like_source_images():
    rng = np.random.default_rng(1)
    source_val = rng.normal(0.0, 1.0, size=(200, 2))
    target = rng.normal(2.0, 1.0, size=(200, 2))
    labels = np.zeros(200, dtype=int)
    near_target = source_val.sum(axis=1) > 1.0
    right_near_target = np.where(near_target[:, None], [[3.0, 0.0]], [[0.0, 3.0]])  # wrong far from the target
    right_far_from_target = -right_near_target + 3.0  # the mirror image: wrong near the target
    assert V.source_accuracy(right_near_target, labels) < 0.5 < V.source_accuracy(right_far_from_target, labels)
    good = V.devn(source_val, source_val, right_near_target, labels, target)
    bad = V.devn(source_val, source_val, right_far_from_target, labels, target)
    assert good > bad  # source accuracy alone would rank them the other way round


def test_class_ami():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    classes = np.repeat(np.arange(3), 30)
    features = centres[classes] + rng.normal(0, 0.5, size=(90, 2))
    agree = np.eye(3)[classes] * 5
    assert V.class_ami(features, agree) == pytest.approx(1.0)
    shuffled = np.eye(3)[rng.permutation(classes)] * 5
    assert abs(V.class_ami(features, shuffled)) < 0.1
    assert V.class_ami(features, np.tile([[5.0, 0.0, 0.0]], (90, 1))) == 0.0  # one class predicted: collapsed
    assert V.class_ami(features, agree) == V.class_ami(features, agree)  # deterministic


def test_atc_threshold_and_estimate_by_hand():
    # max confidences 0.9, 0.8, 0.7, 0.6 on four source images; two are misclassified -> t = 2nd-lowest+1 = 0.8
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    labels = np.array([0, 0, 1, 1])
    t = V.atc_threshold(np.log(p), labels, "max_confidence")
    assert t == pytest.approx(0.8)
    target = np.log(np.array([[0.95, 0.05], [0.85, 0.15], [0.75, 0.25], [0.55, 0.45], [0.5, 0.5]]))
    assert V.atc_estimate(target, t, "max_confidence") == pytest.approx(2 / 5)
    # on the source itself the estimate is the source accuracy
    assert V.atc_estimate(np.log(p), t, "max_confidence") == pytest.approx(V.source_accuracy(np.log(p), labels))
    # negative entropy orders these two-class predictions the same way
    t_ne = V.atc_threshold(np.log(p), labels, "negative_entropy")
    assert t_ne == pytest.approx(0.8 * math.log(0.8) + 0.2 * math.log(0.2))
    assert V.atc_estimate(target, t_ne) == pytest.approx(2 / 5)
    # every source image wrong: a threshold no image reaches (finite, so it can be written as JSON)
    t_none = V.atc_threshold(np.log(p), 1 - np.array([0, 0, 0, 0]), "max_confidence")
    assert math.isfinite(t_none) and V.atc_estimate(np.zeros((3, 2)) + [5.0, 0.0], t_none, "max_confidence") == 0.0
    with pytest.raises(ValueError, match="negative_entropy, max_confidence"):
        V.confidence_scores(p, "margin")


def test_score_all_is_higher_for_a_better_model_on_a_toy_shift():
    rng = np.random.default_rng(0)
    n, c = 120, 3
    labels = rng.integers(0, c, n)
    source_features = np.eye(c)[labels] * 4 + rng.normal(0, 0.3, (n, c))
    target_labels = rng.integers(0, c, n)
    target_features = np.eye(c)[target_labels] * 4 + rng.normal(0, 0.3, (n, c)) + 0.5
    good = {"logits": source_features * 2, "features": source_features, "labels": labels}
    noisy = {"logits": rng.normal(0, 0.1, (n, c)), "features": source_features, "labels": labels}
    scores_good = V.score_all(good, source_features, {"logits": target_features * 2, "features": target_features})
    scores_bad = V.score_all(noisy, source_features,
                             {"logits": rng.normal(0, 0.1, (n, c)), "features": target_features})
    assert set(scores_good) == {*V.VALIDATORS, "atc_threshold"}
    for name in ("source_accuracy", "neg_entropy", "info_max", "bnm", "devn", "class_ami"):
        assert scores_good[name] > scores_bad[name], name
    assert scores_good["estimated_target_accuracy"] > 0.9
