import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from tada.models.discriminators import DomainDiscriminator, RegionDiscriminators


def reference_region_logits(disc: RegionDiscriminators, features: torch.Tensor) -> torch.Tensor:
    """Region k's discriminator applied on its own, as K separate MLPs would be: with BatchNorm, each region's own
    BatchNorm1d(hidden) (batch statistics in training); with dropout, in eval mode (no dropout)."""
    x = features.flatten(2).transpose(1, 2)
    h = disc.hidden

    def norm(z: torch.Tensor, layer: str, k: int) -> torch.Tensor:
        if disc.norm != "batchnorm":
            return z
        bn = getattr(disc, layer)
        part = slice(k * h, (k + 1) * h)
        return F.batch_norm(z, bn.running_mean[part].clone(), bn.running_var[part].clone(), bn.weight[part],
                            bn.bias[part], training=disc.training, eps=bn.eps)

    cols = []
    for k in range(disc.num_regions):
        hidden = torch.relu(norm(x[:, k] @ disc.weight1[k] + disc.bias1[k], "norm1", k))
        hidden = torch.relu(norm(hidden @ disc.weight2[k] + disc.bias2[k], "norm2", k))
        cols.append(hidden @ disc.weight3[k] + disc.bias3[k])
    return torch.stack(cols, dim=1)


def randomised(disc: RegionDiscriminators) -> RegionDiscriminators:
    """Non-trivial BatchNorm parameters and running statistics, so a wrong (region, unit) pairing shows."""
    for module in disc.modules():
        if isinstance(module, nn.BatchNorm1d):
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5), module.bias.uniform_(-0.5, 0.5)
                module.running_mean.uniform_(-1, 1), module.running_var.uniform_(0.5, 2)
    return disc


@pytest.mark.parametrize(("norm", "training"), [("batchnorm", True), ("batchnorm", False), ("dropout", False)])
def test_batched_regions_equal_independent_discriminators(norm, training):
    torch.manual_seed(0)
    disc = randomised(RegionDiscriminators(num_regions=6, in_channels=5, hidden=7, norm=norm)).train(training)
    f = torch.randn(4, 5, 2, 3)
    expected = reference_region_logits(disc, f)
    out = disc(f)
    assert out.shape == (4, 6)
    torch.testing.assert_close(out, expected)


def test_region_batchnorm_keeps_running_statistics_per_region_and_unit():
    torch.manual_seed(0)
    disc = RegionDiscriminators(num_regions=3, in_channels=4, hidden=5).train()
    f = torch.randn(8, 4, 1, 3)
    disc(f)
    x = f.flatten(2).transpose(1, 2)  # (B, K, C)
    first = torch.stack([x[:, k] @ disc.weight1[k] + disc.bias1[k] for k in range(3)], dim=1)  # (B, K, hidden)
    momentum = disc.norm1.momentum
    torch.testing.assert_close(disc.norm1.running_mean, momentum * first.mean(0).reshape(-1))


@pytest.mark.parametrize("norm", ["batchnorm", "dropout"])
def test_region_k_discriminator_gets_gradient_only_from_region_k_loss(norm):
    torch.manual_seed(0)
    disc = RegionDiscriminators(num_regions=4, in_channels=8, hidden=32, norm=norm).train(norm == "batchnorm")
    f = torch.randn(16, 8, 2, 2)
    for k in range(4):
        disc.zero_grad()
        disc(f)[:, k].sum().backward()
        for param in (disc.weight1, disc.bias1, disc.weight2, disc.bias2, disc.weight3, disc.bias3):
            grad_norm_per_region = param.grad.reshape(4, -1).abs().sum(dim=1)
            assert grad_norm_per_region[k] > 0
            others = torch.cat([grad_norm_per_region[:k], grad_norm_per_region[k + 1 :]])
            assert torch.all(others == 0), f"region {k}'s loss reached another region's {param.shape}"


class CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def ops_for(num_side: int) -> int:
    disc = RegionDiscriminators(num_regions=num_side * num_side, in_channels=4, hidden=8)
    f = torch.randn(2, 4, num_side, num_side, requires_grad=True)
    with CountOps() as counter:
        disc(f).sum().backward()
    return counter.count


def test_forward_and_backward_are_one_batched_operation_whatever_k():
    # A Python loop over regions would make the number of dispatched ops grow with K.
    assert ops_for(2) == ops_for(7) == ops_for(11)


@pytest.mark.parametrize("norm", ["batchnorm", "dropout"])
def test_domain_discriminator_returns_one_logit_per_image(norm):
    disc = DomainDiscriminator(in_features=8, hidden=16, norm=norm)
    assert disc(torch.randn(5, 8)).shape == (5,)
    kinds = [type(m).__name__ for m in disc.net]
    assert ("BatchNorm1d" in kinds) == (norm == "batchnorm") and ("Dropout" in kinds) == (norm == "dropout")


@pytest.mark.parametrize("cls", [DomainDiscriminator, RegionDiscriminators])
def test_an_unknown_norm_is_refused_by_name(cls):
    args = (8, 16) if cls is DomainDiscriminator else (4, 8, 16)
    with pytest.raises(ValueError, match="batchnorm, dropout.*'layernorm'"):
        cls(*args, norm="layernorm")
