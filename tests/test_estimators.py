"""`tada.estimators`: each estimate checked by hand on inputs small enough to know the answer."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tada import estimators as E
from tada.validators import softmax


def test_temperature_scaling_recovers_the_temperature_that_generated_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4000, 5))
    true_t = 2.5
    p = softmax(logits / true_t)
    labels = np.array([rng.choice(5, p=row) for row in p])
    assert E.fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.08)
    # A model that is always right wants the sharpest temperature allowed, never beyond the bound.
    assert E.fit_temperature(logits, logits.argmax(1)) == pytest.approx(E.TEMPERATURE_BOUNDS[0], rel=1e-3)


def test_average_confidence_and_doc_by_hand():
    src = np.log(np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.7, 0.3]]))
    labels = np.array([0, 1, 1, 0])  # 3 of 4 right; confidences .9 .6 .8 .7 -> .75
    tgt = np.log(np.array([[0.55, 0.45], [0.45, 0.55]]))  # average confidence .55
    assert E.average_confidence(src) == pytest.approx(0.75)
    assert E.doc(src, labels, tgt) == pytest.approx(0.75 - 0.75 + 0.55)


def test_mixup_partners_form_one_cycle_and_never_pair_an_image_with_itself():
    for n in (2, 3, 17):
        partners = E.mixup_pairs(n, seed=n)
        assert sorted(partners) == list(range(n)) and not (partners == np.arange(n)).any()
        seen, i = set(), 0
        while i not in seen:
            seen.add(i)
            i = partners[i]
        assert len(seen) == n
    assert (E.mixup_pairs(9) == E.mixup_pairs(9)).all()


def test_pseudo_target_accuracy_and_pseudocal_follow_the_pseudo_labels():
    target = np.array([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0], [3.0, 0.0]])
    mixed = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 2.0], [1.0, 0.0]])  # the third flips
    assert E.mixup_accuracy(target, mixed) == pytest.approx(0.75)
    estimate = E.pseudocal(target, mixed)
    assert 0.5 <= estimate <= E.average_confidence(target)  # one pseudo-error -> a softer temperature


def test_importance_weighting_by_hand_and_discriminator_odds():
    src = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    labels = np.array([0, 0, 0])  # right, wrong, right
    assert E.importance_weighted(np.array([1.0, 2.0, 1.0]), src, labels) == pytest.approx(0.5)
    assert E.importance_weighted(np.zeros(3), src, labels) == pytest.approx(2 / 3)  # no weight: unweighted
    assert E.discriminator_odds(np.array([0.0, np.log(3.0)])) == pytest.approx([1.0, 1 / 3])


def brute_force_transport(p: np.ndarray, counts: list[int]) -> float:
    """Every assignment of the N images to classes with ``counts`` images each: the cheapest mean ``1 - p_ik``."""
    n = len(p)
    labels = [k for k, c in enumerate(counts) for _ in range(c)]
    return min(np.mean([1 - p[i, k] for i, k in enumerate(perm)]) for perm in set(itertools.permutations(labels))
               ) if n else 0.0


def test_transport_cost_is_the_optimal_assignment():
    rng = np.random.default_rng(3)
    for _ in range(5):
        p = softmax(rng.normal(0, 2, (6, 3)))
        counts = [3, 2, 1]
        costs = E.transport_costs(p, np.array(counts, dtype=float))
        assert costs.mean() == pytest.approx(brute_force_transport(p, counts), abs=1e-9)
        assert E.cot(np.log(p), np.array(counts, dtype=float)) == pytest.approx(1 - costs.mean(), abs=1e-12)


def test_cot_sees_a_confident_model_whose_predicted_classes_drift():
    # Confident on every image, but all predicted as class 0 while the classes are balanced: confidence says ~1.0,
    # COT says at most half can be right.
    logits = np.tile([8.0, 0.0], (10, 1))
    assert E.average_confidence(logits) > 0.99
    assert E.cot(logits, np.array([1.0, 1.0])) == pytest.approx(0.5, abs=1e-3)


def test_cott_counts_target_images_below_the_source_threshold():
    src = np.log(np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]))
    labels = np.array([0, 0, 1, 1])  # 3 of 4 right
    assert E.cott(src, labels, src, np.array([1.0, 1.0])) == pytest.approx(0.75)  # on itself: its accuracy
    wrong = 1 - src.argmax(1)  # every label wrong: nothing is below the threshold
    assert E.cott(src, wrong, src, np.array([1.0, 1.0])) == 0.0
