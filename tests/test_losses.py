import math

import torch

from tada.losses import (
    attentive_entropy,
    global_adversarial,
    local_adversarial,
    prediction_entropy,
    source_cross_entropy,
    total_loss,
)


def bce(logit: float, target: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def test_source_cross_entropy_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 1.0]])
    labels = torch.tensor([0, 2])
    expected = (-math.log(softmax([2.0, 0.0, -1.0])[0]) - math.log(softmax([0.5, 0.5, 1.0])[2])) / 2
    assert source_cross_entropy(logits, labels).item() == pytest_approx(expected)


def test_local_adversarial_averages_over_regions_and_images():
    region_logits = torch.tensor([[0.5, -1.0, 2.0], [0.0, 1.5, -0.3]])
    is_source = torch.tensor([1.0, 0.0])
    expected = sum(bce(z, 1.0) for z in (0.5, -1.0, 2.0)) + sum(bce(z, 0.0) for z in (0.0, 1.5, -0.3))
    assert local_adversarial(region_logits, is_source).item() == pytest_approx(expected / 6)


def test_global_adversarial_by_hand():
    logits = torch.tensor([1.2, -0.4, 0.3])
    is_source = torch.tensor([1.0, 1.0, 0.0])
    expected = (bce(1.2, 1) + bce(-0.4, 1) + bce(0.3, 0)) / 3
    assert global_adversarial(logits, is_source).item() == pytest_approx(expected)


def test_attentive_entropy_weights_each_image():
    logits = torch.tensor([[1.0, 0.0], [0.0, 0.0], [3.0, -1.0]])
    weights = torch.tensor([1.5, 1.0, 1.2])
    ent = [-sum(p * math.log(p) for p in softmax(row)) for row in logits.tolist()]
    torch.testing.assert_close(prediction_entropy(logits), torch.tensor(ent))
    expected = sum(w * h for w, h in zip([1.5, 1.0, 1.2], ent, strict=True)) / 3
    assert attentive_entropy(logits, weights).item() == pytest_approx(expected)
    assert attentive_entropy(logits).item() == pytest_approx(sum(ent) / 3)


def test_total_is_ly_plus_gamma_lh_plus_lambda_adversarial():
    terms = {name: torch.tensor(v) for name, v in
             {"source_ce": 1.0, "entropy": 2.0, "local_adv": 0.5, "global_adv": 0.25}.items()}
    assert total_loss(terms, adversarial_weight=0.8, entropy_weight=0.1).item() == pytest_approx(
        1.0 + 0.1 * 2.0 + 0.8 * (0.5 + 0.25)
    )
    assert total_loss({"source_ce": torch.tensor(1.5)}, 1.0, 0.1).item() == 1.5


def pytest_approx(value):
    import pytest

    return pytest.approx(value, rel=1e-6, abs=1e-7)
