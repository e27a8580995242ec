import math

import pytest

from tada.schedules import grl_coeff, lr_factor, progress


def test_grl_coeff_ramps_from_zero_towards_max():
    assert grl_coeff(0.0) == 0.0
    assert grl_coeff(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert grl_coeff(0.5, alpha=10, max_coeff=0.5) == pytest.approx(0.5 * (2 / (1 + math.exp(-5)) - 1))
    values = [grl_coeff(p / 10) for p in range(11)]
    assert values == sorted(values) and values[-1] < 1.0


def test_lr_factor_is_the_annealing_formula():
    assert lr_factor(0.0) == 1.0
    assert lr_factor(1.0, alpha=10, beta=0.75) == pytest.approx(11 ** -0.75)
    assert lr_factor(0.3, alpha=5, beta=0.5) == pytest.approx((1 + 1.5) ** -0.5)


def test_progress_is_clipped_and_rejects_zero_iterations():
    assert progress(0, 10) == 0.0
    assert progress(5, 10) == 0.5
    assert progress(12, 10) == 1.0
    with pytest.raises(ValueError, match="iterations must be > 0"):
        progress(1, 0)
