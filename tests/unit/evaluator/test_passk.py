import itertools
from math import comb

import pytest

from lorafleet.services.evaluator.passk import mean_pass_at_k, pass_at_k


@pytest.mark.parametrize("n", [1, 2, 5, 10, 20, 200])
def test_matches_the_closed_form(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            expected = 1.0 - comb(n - c, k) / comb(n, k)
            assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12), (n, c, k)


def test_equals_the_chance_that_a_random_k_subset_holds_a_correct_sample():
    # Exhaustive: every k-subset of n samples with c correct ones.
    for n in range(1, 8):
        for c in range(n + 1):
            samples = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(samples, k))
                share = sum(any(s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(share)


def test_pass_at_1_is_the_share_correct_not_first_attempt():
    # the spec's "first of k attempts" would say 0 here when the first sample failed
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)


def test_edges_and_bad_input():
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 6, 5) == 1.0  # fewer than k wrong samples: any k-subset holds a correct one
    with pytest.raises(ValueError, match="n >= k"):
        pass_at_k(3, 1, 5)
    with pytest.raises(ValueError, match="between 0 and n"):
        pass_at_k(3, 4, 1)


def test_mean_over_problems():
    assert mean_pass_at_k([(10, 0), (10, 10), (10, 5)], 1) == pytest.approx(0.5)
    assert mean_pass_at_k([], 1) is None
