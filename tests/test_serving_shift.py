import threading

import numpy as np
import pytest
from sklearn.covariance import ledoit_wolf as sklearn_ledoit_wolf

from tada.serving.shift import ShiftMonitor, calibrate, ledoit_wolf, shift_scores, whitening


def test_ledoit_wolf_matches_scikit_learn_with_dead_features():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 20)) @ rng.normal(size=(20, 20))
    x[:, 3] = 0.0  # a ReLU unit that never fires
    mean, covariance = ledoit_wolf(x)
    np.testing.assert_allclose(mean, x.mean(0))
    np.testing.assert_allclose(covariance, sklearn_ledoit_wolf(x)[0], atol=1e-10)
    assert np.linalg.eigvalsh(covariance).min() > 0  # invertible although feature 3 is constant


def test_whitening_gives_the_mahalanobis_distance():
    rng = np.random.default_rng(1)
    mean, covariance = ledoit_wolf(rng.normal(size=(100, 8)) @ rng.normal(size=(8, 8)))
    d = rng.normal(size=(5, 8)) - mean
    expected = np.einsum("ni,ij,nj->n", d, np.linalg.inv(covariance), d)
    np.testing.assert_allclose(((d @ whitening(covariance)) ** 2).sum(1), expected, rtol=1e-7)  # up to the 1e-9 jitter


def test_calibration_standardises_each_signal():
    rng = np.random.default_rng(2)
    signals = {"entropy": rng.gamma(2.0, 0.3, 500), "domain_probability": rng.normal(0.45, 0.05, 500),
               "feature_distance": rng.chisquare(4, 500) / 4}
    ref = calibrate(signals)
    assert ref["signals"] == ["domain_probability", "entropy", "feature_distance"]  # fixed order, not dict order
    values = np.stack([signals[s] for s in ref["signals"]], axis=1)
    scores = shift_scores(values, ref)
    assert np.mean(scores**2) == pytest.approx(1.0)  # RMS of z-scores over the calibration set
    assert ref["threshold"] == pytest.approx(np.quantile(scores, 0.99))
    assert (scores > ref["threshold"]).mean() == pytest.approx(0.01, abs=0.003)
    # by hand: z = (x - mean) / std per signal, score = sqrt(mean z^2)
    x = np.array([[0.95, 2.0, 30.0]])
    z = (x[0] - values.mean(0)) / values.std(0)
    assert shift_scores(x, ref)[0] == pytest.approx(np.sqrt(np.mean(z**2)))
    assert shift_scores(x, ref)[0] > 10 * ref["threshold"]


def test_a_constant_signal_does_not_divide_by_zero():
    ref = calibrate({"entropy": np.full(10, 0.3), "domain_probability": np.linspace(0.4, 0.6, 10)})
    assert np.isfinite(shift_scores(np.array([[0.5, 0.3]]), ref)).all()
    with pytest.raises(ValueError, match="no shift signal"):
        calibrate({"logits": np.zeros(3)})


def test_monitor_summarises_the_last_window_of_scores():
    monitor = ShiftMonitor(window=4, threshold=2.0)
    assert monitor.summary() == {"window": 4, "threshold": 2.0, "images": 0, "mean": None, "p50": None, "p95": None,
                                 "fraction_above": None}
    monitor.add([10.0, 10.0])  # pushed out of the window below
    monitor.add([1.0, 1.0, 3.0, 1.0])
    s = monitor.summary()
    assert s["images"] == 4 and s["mean"] == pytest.approx(1.5) and s["fraction_above"] == pytest.approx(0.25)
    assert s["p50"] == pytest.approx(1.0) and s["p95"] == pytest.approx(np.percentile([1, 1, 3, 1], 95))


def test_monitor_is_thread_safe():
    monitor = ShiftMonitor(window=100_000, threshold=1.0)
    threads = [threading.Thread(target=lambda: [monitor.add([2.0]) for _ in range(2000)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert monitor.summary()["images"] == 16_000
