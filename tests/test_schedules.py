import math

import pytest

from tada.schedules import grl_coeff, lr_factor


def test_grl_coeff_ramps_from_zero_towards_max_over_the_warm_up():
    assert grl_coeff(0) == 0.0
    assert grl_coeff(1000) == pytest.approx(2 / (1 + math.exp(-1)) - 1)  # 0.46 after the warm-up
    assert grl_coeff(500, warmup=100, max_coeff=0.5) == pytest.approx(0.5 * (2 / (1 + math.exp(-5)) - 1))
    values = [grl_coeff(i) for i in range(0, 10_000, 500)]
    assert values == sorted(values) and values[-1] < 1.0


def test_lr_factor_is_the_annealing_formula():
    assert lr_factor(0) == 1.0
    assert lr_factor(10_000, gamma=0.001, beta=0.75) == pytest.approx(11 ** -0.75)
    assert lr_factor(300, gamma=0.005, beta=0.5) == pytest.approx((1 + 1.5) ** -0.5)


def test_at_the_papers_ten_thousand_iterations_they_are_the_papers_schedules_over_progress():
    for i in (0, 1234, 5000, 9999):
        p = i / 10_000
        assert lr_factor(i) == pytest.approx((1 + 10 * p) ** -0.75)
        assert grl_coeff(i) == pytest.approx(2 / (1 + math.exp(-10 * p)) - 1)
