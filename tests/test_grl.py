import torch

from tada.models.grl import GradientReversal, reverse_gradient


def test_forward_is_identity():
    x = torch.randn(4, 3)
    assert torch.equal(reverse_gradient(x, 0.7), x)
    assert torch.equal(GradientReversal(2.0)(x), x)


def test_backward_multiplies_gradient_by_minus_coeff():
    torch.manual_seed(0)
    w = torch.randn(3, 5)
    x = torch.randn(4, 3, requires_grad=True)
    (torch.tanh(x @ w) ** 2).sum().backward()
    plain = x.grad.clone()

    for coeff in (0.0, 0.3, 1.0, 2.5):
        x.grad = None
        (torch.tanh(reverse_gradient(x, coeff) @ w) ** 2).sum().backward()
        torch.testing.assert_close(x.grad, -coeff * plain)


def test_reversed_gradient_matches_finite_differences():
    torch.manual_seed(1)
    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    coeff = 0.4

    def f(v):
        return (v.sin() * v).sum()

    f(reverse_gradient(x, coeff)).backward()
    eps = 1e-6
    numeric = torch.stack(
        [(f(x.detach() + eps * e) - f(x.detach() - eps * e)) / (2 * eps) for e in torch.eye(5, dtype=torch.float64)]
    )
    torch.testing.assert_close(x.grad, -coeff * numeric, rtol=1e-6, atol=1e-8)


def test_module_uses_the_coefficient_set_on_it():
    layer = GradientReversal().train()
    layer.coeff = 0.25
    x = torch.ones(3, requires_grad=True)
    layer(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.full((3,), -0.25))


def test_eval_mode_is_a_plain_identity_with_no_reversal():
    layer = GradientReversal(1.0).eval()
    x = torch.ones(3, requires_grad=True)
    y = layer(x)
    assert y is x  # nothing in the graph: the exported inference model has no reversal node
