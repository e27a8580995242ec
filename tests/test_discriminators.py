import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tada.models.discriminators import DomainDiscriminator, RegionDiscriminators


def reference_region_logits(disc: RegionDiscriminators, features: torch.Tensor) -> torch.Tensor:
    """Region k's discriminator applied on its own, as K separate MLPs would be (eval mode: no dropout)."""
    x = features.flatten(2).transpose(1, 2)
    cols = []
    for k in range(disc.num_regions):
        hidden = torch.relu(x[:, k] @ disc.weight1[k] + disc.bias1[k])
        hidden = torch.relu(hidden @ disc.weight2[k] + disc.bias2[k])
        cols.append(hidden @ disc.weight3[k] + disc.bias3[k])
    return torch.stack(cols, dim=1)


def test_batched_regions_equal_independent_discriminators():
    torch.manual_seed(0)
    disc = RegionDiscriminators(num_regions=6, in_channels=5, hidden=7).eval()
    f = torch.randn(4, 5, 2, 3)
    out = disc(f)
    assert out.shape == (4, 6)
    torch.testing.assert_close(out, reference_region_logits(disc, f))


def test_region_k_discriminator_gets_gradient_only_from_region_k_loss():
    torch.manual_seed(0)
    disc = RegionDiscriminators(num_regions=4, in_channels=8, hidden=32).eval()
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


def test_domain_discriminator_returns_one_logit_per_image():
    disc = DomainDiscriminator(in_features=8, hidden=16)
    assert disc(torch.randn(5, 8)).shape == (5,)
