import pytest
import torch

from tada.config import Config
from tada.losses import total_loss
from tada.methods import METHODS, build_model, get_method, loss_terms

EXPECTED_TERMS = {
    "source_only": {"source_ce"},
    "dann": {"source_ce", "global_adv"},
    "tada": {"source_ce", "local_adv", "global_adv", "entropy"},
    "tada_no_local": {"source_ce", "global_adv", "entropy"},
    "tada_no_global": {"source_ce", "local_adv", "global_adv"},
}


def small_config(method: str) -> Config:
    return Config().replace({
        "method.name": method, "model.bottleneck_dim": 16, "model.discriminator_hidden": 8,
        "model.region_discriminator_hidden": 8,
    })


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_switch_turns_exactly_the_right_terms_on(name):
    torch.manual_seed(0)
    model = build_model(small_config(name), num_classes=10, in_channels=1)
    method = get_method(name)
    assert (model.region_discriminators is not None) == method.local_attention
    assert (model.domain_discriminator is not None) == method.global_adversarial

    out = model(torch.randn(8, 1, 28, 28))
    assert (out.local_attention is not None) == method.local_attention
    terms = loss_terms(method, out, torch.randint(0, 10, (4,)))
    assert set(terms) == EXPECTED_TERMS[name]
    total = total_loss(terms, adversarial_weight=0.7, entropy_weight=0.2)
    expected = terms["source_ce"] + 0.2 * terms.get("entropy", 0) + 0.7 * (
        terms.get("local_adv", 0) + terms.get("global_adv", 0)
    )
    torch.testing.assert_close(total, expected)


def test_tada_entropy_is_weighted_by_global_attention_and_ablation_is_not():
    torch.manual_seed(0)
    model = build_model(small_config("tada"), num_classes=10, in_channels=1).eval()
    out = model(torch.randn(6, 1, 28, 28))
    weighted = loss_terms(get_method("tada"), out, torch.zeros(3, dtype=torch.long))["entropy"]
    from tada.losses import attentive_entropy
    from tada.models.attention import global_attention

    torch.testing.assert_close(weighted, attentive_entropy(out.logits, global_attention(out.domain_logits)))
    assert weighted > attentive_entropy(out.logits)  # m >= 1


def test_unknown_method_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="method.name must be one of source_only, dann, tada"):
        get_method("cdan")


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_parameter_gets_a_gradient_and_nothing_is_nan(name):
    torch.manual_seed(0)
    model = build_model(small_config(name), num_classes=10, in_channels=1)
    model.set_grl_coeff(0.5)
    out = model(torch.randn(8, 1, 28, 28))
    total_loss(loss_terms(get_method(name), out, torch.randint(0, 10, (4,))), 1.0, 0.1).backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"{name}: {pname} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{name}: {pname} has a non-finite gradient"
    assert torch.isfinite(out.logits).all()
