import pytest
import torch

from tada.models.dropout import Dropout, dropout


def test_zeroes_a_fraction_p_and_scales_the_rest_like_torch():
    torch.manual_seed(0)
    x = torch.ones(200_000)
    out = dropout(x, 0.3, training=True)
    kept = out != 0
    assert abs(1 - kept.float().mean().item() - 0.3) < 0.005
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / 0.7))
    assert abs(out.mean().item() - 1.0) < 0.01  # inverted dropout keeps the expectation, as nn.Dropout


def test_gradient_flows_through_kept_elements_only():
    torch.manual_seed(1)
    x = torch.randn(64, 32, requires_grad=True)
    out = dropout(x, 0.5, training=True)
    out.sum().backward()
    torch.testing.assert_close(x.grad, (out != 0).float() * 2.0)


def test_same_seed_same_mask_and_identity_in_eval():
    layer = Dropout(0.5)
    x = torch.randn(16, 16)
    torch.manual_seed(3)
    a = layer(x)
    torch.manual_seed(3)
    b = layer(x)
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert layer.eval()(x) is x
    assert dropout(x, 0.0, training=True) is x
    assert torch.equal(dropout(x, 1.0, training=True), torch.zeros_like(x))


def test_probability_out_of_range_is_refused():
    with pytest.raises(ValueError, match=r"\[0, 1\], got 1.5"):
        Dropout(1.5)
