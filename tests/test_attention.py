import math

import torch

from tada.models.attention import (
    apply_residual_attention,
    binary_entropy_from_logits,
    domain_probability,
    global_attention,
    local_attention,
)


def entropy_by_hand(p: float) -> float:
    return -p * math.log(p) - (1 - p) * math.log(1 - p)


def test_binary_entropy_matches_hand_computation():
    logits = torch.tensor([-3.0, -0.5, 0.0, 0.8, 4.0], dtype=torch.float64)
    expected = [entropy_by_hand(1 / (1 + math.exp(-z))) for z in logits.tolist()]
    torch.testing.assert_close(binary_entropy_from_logits(logits), torch.tensor(expected, dtype=torch.float64))


def test_local_attention_is_one_minus_entropy_and_bounded():
    logits = torch.tensor([[0.0, 2.0], [-1.5, 50.0]], dtype=torch.float64)
    p = domain_probability(logits)
    expected = torch.tensor([[1 - entropy_by_hand(v) if 0 < v < 1 else 1.0 for v in row] for row in p.tolist()],
                            dtype=torch.float64)
    w = local_attention(logits)
    torch.testing.assert_close(w, expected)
    assert w[0, 0].item() == 1 - math.log(2)  # the discriminator is undecided: lowest attention

    extreme = local_attention(torch.linspace(-200, 200, 1001))
    assert torch.isfinite(extreme).all()
    assert extreme.min() >= 1 - math.log(2) - 1e-7 and extreme.max() <= 1.0


def test_residual_attention_is_one_plus_w_times_f():
    f = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    w = torch.tensor([[0.4, 0.5, 0.6, 0.7], [1.0, 0.9, 0.8, 0.31]])
    h = apply_residual_attention(f, w)
    for b in range(2):
        for k in range(4):
            i, j = divmod(k, 2)  # regions are row-major
            torch.testing.assert_close(h[b, :, i, j], (1 + w[b, k]) * f[b, :, i, j])


def test_global_attention_is_one_plus_entropy():
    logits = torch.tensor([0.0, 1.0, -2.0])
    expected = torch.tensor([1 + entropy_by_hand(1 / (1 + math.exp(-z))) for z in logits.tolist()])
    torch.testing.assert_close(global_attention(logits), expected)
