import numpy as np
import pytest

from lorafleet.services.evaluator.compare import paired_bootstrap


def test_constant_difference_has_a_point_interval():
    d = paired_bootstrap([0.1, 0.2, 0.3], [0.3, 0.4, 0.5])
    assert d.mean == pytest.approx(0.2)
    assert d.low == pytest.approx(0.2) and d.high == pytest.approx(0.2)
    assert d.excludes_zero


def test_interval_brackets_the_mean_and_is_reproducible():
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 1, 60)
    adapter = np.clip(base + rng.normal(0.05, 0.2, 60), 0, 1)
    a = paired_bootstrap(base, adapter, seed=3)
    b = paired_bootstrap(base, adapter, seed=3)
    assert a == b
    assert a.low < a.mean < a.high
    assert a.confidence == 0.95 and a.problems == 60


def test_pairing_removes_between_problem_variance():
    # problems differ wildly in difficulty; the adapter adds 0.1 to each: paired CI is tight
    base = [0.0, 0.9, 0.1, 0.8, 0.2, 0.7] * 5
    adapter = [x + 0.1 for x in base]
    d = paired_bootstrap(base, adapter)
    assert d.high - d.low < 1e-9


def test_no_effect_interval_contains_zero():
    rng = np.random.default_rng(7)
    base = rng.integers(0, 2, 200).astype(float)
    adapter = rng.integers(0, 2, 200).astype(float)
    d = paired_bootstrap(base, adapter)
    assert d.low < 0 < d.high


def test_needs_paired_scores():
    with pytest.raises(ValueError, match="same problems"):
        paired_bootstrap([0.1], [0.1, 0.2])
    with pytest.raises(ValueError, match="at least one"):
        paired_bootstrap([], [])
