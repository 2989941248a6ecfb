"""The statistics of the pre-registered plan (``book/preregistration.md``): exact tests for
a handful of seeds and bootstrap intervals, deterministic for fixed inputs.

With 5 seeds per arm the tests are exact: a two-sample permutation test enumerates all
C(n + m, n) relabellings, the Mann-Whitney test is that permutation test on mid-ranks, the
sign test is a binomial tail.  ``alternative`` names the direction the claim predicts:
"less" means the claim says ``x`` is smaller than ``y`` (or than ``c``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

ALTERNATIVES = ("less", "greater")
ALPHA = 0.05                 # the plan's significance level, one-sided, for every test
BOOTSTRAP_DRAWS = 10_000
PERMUTATION_DRAWS = 20_000   # Monte Carlo draws where exact enumeration is too large
SEED = 0                     # the resampling seed: intervals and Monte Carlo p-values are reproducible


@dataclass(frozen=True)
class Interval:
    """A point estimate and its ``level`` percentile-bootstrap interval [low, high]."""

    estimate: float
    low: float
    high: float
    level: float = 0.95

    def __str__(self) -> str:
        return f"{number(self.estimate)} [{number(self.low)}, {number(self.high)}]"


def number(x: float) -> str:
    """A value as the ledger prints it: thousands with separators (outer steps), else 3 digits."""
    if np.isfinite(x) and abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def _check(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative {alternative!r} is not one of {ALTERNATIVES}")


def _as_array(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float).ravel()
    if not len(a):
        raise ValueError(f"{name} is empty: a test needs at least one value per arm")
    if np.isnan(a).any():
        raise ValueError(f"{name} holds NaN: decide how a missing run counts before testing")
    return a


def midranks(values) -> np.ndarray:
    """Ranks 1..n of ``values`` (shape (n,)), ties sharing the mean of their ranks."""
    v = np.asarray(values, dtype=float)
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    sorted_v = v[order]
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _splits(n_total: int, n_x: int, draws: int, seed: int):
    """Index sets for the first arm: every one of the C(n_total, n_x) (exact) when there are at
    most ``draws`` of them, else ``draws`` random ones (Monte Carlo, seeded)."""
    if math.comb(n_total, n_x) <= draws:
        return list(itertools.combinations(range(n_total), n_x)), True
    rng = np.random.default_rng(seed)
    return [tuple(rng.choice(n_total, n_x, replace=False)) for _ in range(draws)], False


def permutation_test(x, y, alternative: str = "less", statistic: str = "mean",
                     draws: int = PERMUTATION_DRAWS, seed: int = SEED) -> float:
    """One-sided p of a two-sample permutation test on ``mean(x) - mean(y)`` (or the difference
    of medians, ``statistic="median"``): the fraction of relabellings of the pooled values whose
    difference is at least as extreme as the observed one (exact for C(n + m, n) <= ``draws``,
    else Monte Carlo with the observed labelling counted once)."""
    _check(alternative)
    x, y = _as_array(x, "x"), _as_array(y, "y")
    f = {"mean": np.mean, "median": np.median}[statistic]
    pooled = np.concatenate([x, y])
    sign = 1.0 if alternative == "greater" else -1.0
    observed = sign * (f(x) - f(y))
    splits, exact = _splits(len(pooled), len(x), draws, seed)
    mask = np.zeros(len(pooled), dtype=bool)
    hits = 0
    for idx in splits:
        mask[:] = False
        mask[list(idx)] = True
        d = sign * (f(pooled[mask]) - f(pooled[~mask]))
        hits += d >= observed - 1e-12 * max(1.0, abs(observed))
    return hits / len(splits) if exact else (hits + 1) / (len(splits) + 1)


def mann_whitney(x, y, alternative: str = "less") -> float:
    """One-sided exact p of the Mann-Whitney (Wilcoxon rank-sum) test: the permutation test on
    mid-ranks (ties handled exactly).  With 5 against 5 the smallest p is 1/252 = 0.004."""
    _check(alternative)
    x, y = _as_array(x, "x"), _as_array(y, "y")
    r = midranks(np.concatenate([x, y]))
    return permutation_test(r[:len(x)], r[len(x):], alternative, "mean", draws=10 ** 7)


def stratified_permutation_test(pairs, alternative: str = "less", draws: int = PERMUTATION_DRAWS,
                                seed: int = SEED) -> float:
    """One-sided p of a permutation test that relabels within each stratum only: ``pairs`` is a
    list of (x, y) arms; the statistic is the mean over strata of ``mean(x) - mean(y)``.  Exact
    when the product of the strata's relabellings is at most ``draws``, else Monte Carlo."""
    _check(alternative)
    strata = [(_as_array(x, "x"), _as_array(y, "y")) for x, y in pairs]
    sign = 1.0 if alternative == "greater" else -1.0

    def stat(parts):
        return sign * float(np.mean([a.mean() - b.mean() for a, b in parts]))

    observed = stat(strata)
    pooled = [(np.concatenate([x, y]), len(x)) for x, y in strata]
    total = math.prod(math.comb(len(p), n) for p, n in pooled)
    tol = 1e-12 * max(1.0, abs(observed))
    if total <= draws:
        choices = [list(itertools.combinations(range(len(p)), n)) for p, n in pooled]
        hits = 0
        for combo in itertools.product(*choices):
            parts = []
            for (p, _), idx in zip(pooled, combo):
                m = np.zeros(len(p), dtype=bool)
                m[list(idx)] = True
                parts.append((p[m], p[~m]))
            hits += stat(parts) >= observed - tol
        return hits / total
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(draws):
        parts = []
        for p, n in pooled:
            perm = rng.permutation(len(p))
            parts.append((p[perm[:n]], p[perm[n:]]))
        hits += stat(parts) >= observed - tol
    return (hits + 1) / (draws + 1)


def sign_test(x, c: float, alternative: str = "less") -> float:
    """One-sided exact p that the values ``x`` lie below (``"less"``) or above ``c``: the binomial
    tail of the count on the predicted side, ties with ``c`` dropped.  All 5 of 5 gives 1/32."""
    _check(alternative)
    x = _as_array(x, "x")
    x = x[x != c]
    k = int((x < c).sum() if alternative == "less" else (x > c).sum())
    n = len(x)
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n if n else 1.0


def fisher_exact(a: int, b: int, c: int, d: int, alternative: str = "greater") -> float:
    """One-sided exact p of Fisher's test on the table [[a, b], [c, d]] (rows: arms, columns:
    event / no event): "greater" says the first arm's event rate a / (a + b) is the larger."""
    _check(alternative)
    n1, n2, k = a + b, c + d, a + c

    def pmf(i):
        return math.comb(n1, i) * math.comb(n2, k - i) / math.comb(n1 + n2, k)

    lo, hi = max(0, k - n2), min(k, n1)
    tail = range(a, hi + 1) if alternative == "greater" else range(lo, a + 1)
    return min(1.0, sum(pmf(i) for i in tail))


def bootstrap_interval(x, statistic=np.median, level: float = 0.95, draws: int = BOOTSTRAP_DRAWS,
                       seed: int = SEED) -> Interval:
    """Percentile-bootstrap interval of ``statistic`` over the values ``x`` (resampled with
    replacement, ``draws`` times, seeded)."""
    x = _as_array(x, "x")
    rng = np.random.default_rng(seed)
    boots = np.array([statistic(x[rng.integers(0, len(x), len(x))]) for _ in range(draws)])
    q = (1 - level) / 2
    return Interval(float(statistic(x)), float(np.quantile(boots, q)), float(np.quantile(boots, 1 - q)), level)


def _bootstrap_two(x, y, combine, statistic, level, draws, seed) -> Interval:
    x, y = _as_array(x, "x"), _as_array(y, "y")
    rng = np.random.default_rng(seed)
    boots = np.array([combine(statistic(x[rng.integers(0, len(x), len(x))]),
                              statistic(y[rng.integers(0, len(y), len(y))])) for _ in range(draws)])
    q = (1 - level) / 2
    return Interval(float(combine(statistic(x), statistic(y))), float(np.quantile(boots, q)),
                    float(np.quantile(boots, 1 - q)), level)


def bootstrap_ratio(x, y, statistic=np.median, level: float = 0.95, draws: int = BOOTSTRAP_DRAWS,
                    seed: int = SEED) -> Interval:
    """Percentile-bootstrap interval of ``statistic(x) / statistic(y)`` for independent arms
    of positive values (each resampled with replacement on its own); ``y`` may be one constant."""
    return _bootstrap_two(x, y, lambda a, b: a / b, statistic, level, draws, seed)


def bootstrap_difference(x, y, statistic=np.median, level: float = 0.95, draws: int = BOOTSTRAP_DRAWS,
                         seed: int = SEED) -> Interval:
    """Percentile-bootstrap interval of ``statistic(x) - statistic(y)`` for independent arms."""
    return _bootstrap_two(x, y, lambda a, b: a - b, statistic, level, draws, seed)
