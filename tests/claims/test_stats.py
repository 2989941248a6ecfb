import math

import numpy as np
import pytest

from mplp.claims import stats


def test_permutation_test_exact_on_a_tiny_example():
    # 6 relabellings of {1, 2, 3, 4} into two pairs; only {1, 2} has a mean difference <= -2
    assert stats.permutation_test([1, 2], [3, 4], "less") == pytest.approx(1 / 6)
    assert stats.permutation_test([1, 2], [3, 4], "greater") == pytest.approx(1.0)
    assert stats.permutation_test([3, 4], [1, 2], "greater") == pytest.approx(1 / 6)


def test_mann_whitney_exact_values():
    x, y = [1, 2, 3, 4, 5], [6, 7, 8, 9, 10]
    assert stats.mann_whitney(x, y, "less") == pytest.approx(1 / 252)
    # one swap at the border: U = 1 -> two relabellings as extreme
    assert stats.mann_whitney([1, 2, 3, 4, 6], [5, 7, 8, 9, 10], "less") == pytest.approx(2 / 252)
    # complete ties: nothing is extreme but everything is as extreme
    assert stats.mann_whitney([1, 1], [1, 1], "less") == pytest.approx(1.0)
    # invariant under any monotone map of the data
    assert stats.mann_whitney(np.exp(x), np.exp(y), "less") == stats.mann_whitney(x, y, "less")


def test_midranks_share_ties():
    assert stats.midranks([10, 20, 20, 30]).tolist() == [1, 2.5, 2.5, 4]


def test_sign_test_and_fisher():
    assert stats.sign_test([1, 2, 3, 4, 5], 10, "less") == pytest.approx(1 / 32)
    assert stats.sign_test([1, 2, 3, 4, 50], 10, "less") == pytest.approx(6 / 32)
    assert stats.sign_test([11, 12], 10, "less") == pytest.approx(1.0)
    assert stats.fisher_exact(0, 5, 5, 0, "less") == pytest.approx(1 / 252)
    assert stats.fisher_exact(5, 0, 0, 5, "greater") == pytest.approx(1 / 252)
    # the two one-sided p's of a table overlap in its own probability
    p_lo, p_hi = stats.fisher_exact(2, 3, 3, 2, "less"), stats.fisher_exact(2, 3, 3, 2, "greater")
    own = math.comb(5, 2) * math.comb(5, 3) / math.comb(10, 5)
    assert p_lo + p_hi == pytest.approx(1 + own)


def test_stratified_permutation_exact_and_monte_carlo():
    # two strata of one against one: 4 relabellings, one as extreme as observed
    assert stats.stratified_permutation_test([([0], [1]), ([0], [1])], "less") == pytest.approx(1 / 4)
    # Monte Carlo is seeded (deterministic) and close to the exact answer
    pairs = [(np.arange(5), np.arange(5) + 3.0), (np.arange(5), np.arange(5) + 1.0)]
    exact = stats.stratified_permutation_test(pairs, "less", draws=10 ** 6)
    mc = stats.stratified_permutation_test(pairs, "less", draws=2000)
    assert mc == stats.stratified_permutation_test(pairs, "less", draws=2000)
    assert abs(mc - exact) < 0.02


def test_bootstrap_interval_covers_the_median_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    hits = 0
    for i in range(100):
        x = rng.normal(3.0, 1.0, 25)
        iv = stats.bootstrap_interval(x, draws=1000, seed=i)
        assert iv.low <= iv.estimate <= iv.high
        hits += iv.low <= 3.0 <= iv.high
    assert 85 <= hits <= 100


def test_bootstrap_ratio_against_a_constant_and_determinism():
    iv = stats.bootstrap_ratio([2, 4, 6], [4.0])
    assert iv.estimate == pytest.approx(1.0) and iv.low >= 0.5 and iv.high <= 1.5
    assert stats.bootstrap_ratio([2, 4, 6], [1, 2]) == stats.bootstrap_ratio([2, 4, 6], [1, 2])


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="alternative"):
        stats.mann_whitney([1], [2], "two-sided")
    with pytest.raises(ValueError, match="NaN"):
        stats.sign_test([float("nan")], 1.0)
    with pytest.raises(ValueError, match="empty"):
        stats.bootstrap_interval([])
