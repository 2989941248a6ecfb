import numpy as np
import pytest

from mplp.claims import prereg
from mplp.claims.analysis import final_level, log_mean_loss, plateau_exit, rises_at, spike_fraction, tail_fraction


def curve(exit_at, S=120_000, every=300, start=250.0, end=100.0, spikes=(), dips=()):
    """A synthetic validation curve: flat at ``start`` until ``exit_at`` (None: never), then
    down to ``end``; ``spikes`` (step, value) after it and ``dips`` (step, value) on it."""
    steps = np.arange(0, S + 1, every)
    losses = np.full(len(steps), start)
    if exit_at is not None:
        after = steps >= exit_at
        losses[after] = end + (start - end) * np.exp(-(steps[after] - exit_at) / 5000) * 0.5
    for s, v in (*spikes, *dips):
        losses[steps == s] = v
    return steps, losses


def test_plateau_exit_ignores_spikes_after_it_and_dips_before_it():
    steps, losses = curve(30_000, spikes=[(90_000, 2.5e5), (91_200, 300.0)], dips=[(6_000, 100.0)])
    assert plateau_exit(steps, losses, window=2_400) == 30_000
    # the old rule (stays below for good) is moved by the spike
    from mplp.claims.analysis import plateau_end
    assert plateau_end(steps, losses) > 90_000
    # never leaving, or leaving too late to judge the window
    assert plateau_exit(*curve(None), window=2_400) is None
    assert plateau_exit(*curve(119_000), window=2_400) is None


def test_final_level_speed_and_spikes():
    steps, losses = curve(30_000, spikes=[(119_100, 1e4)])
    assert final_level(steps, losses, S=120_000) == pytest.approx(100.0, rel=1e-3)
    with pytest.raises(ValueError, match="last 10%"):
        final_level(steps[:10], losses[:10], S=120_000)
    fast, slow = curve(10_000)[1], curve(60_000)[1]
    assert log_mean_loss(fast) < log_mean_loss(slow)
    assert spike_fraction([1, 1, 3, 1, 0.5, 1.5]) == pytest.approx(2 / 5)   # 3 > 2 x 1, 1.5 > 2 x 0.5
    assert spike_fraction([5.0]) == 0.0
    # a diverged validation (NaN) is the worst value
    assert spike_fraction([1.0, float("nan")]) == 1.0 and log_mean_loss([1.0, float("nan")]) == np.inf
    assert final_level([0, 95, 100], [1.0, float("nan"), float("nan")], S=100) == np.inf


def test_exit_window_and_long_unpredictable_plateaus():
    d = prereg.exit_in_window([40_000, 50_000, 45_000, 60_000, 30_000], 300_000, 25_000, 100_000)
    assert d.outcome == "yes" and d.interval.low <= 45_000 <= d.interval.high
    d = prereg.exit_in_window([120_000, 130_000, 150_000, 140_000, 190_000], 300_000, 25_000, 100_000)
    assert d.outcome == "partly" and "within 2x" in d.rule
    assert prereg.exit_in_window([None] * 5, 300_000, 25_000, 100_000).outcome == "no"
    assert prereg.long_and_unpredictable([20_000, 80_000, None, 40_000, 30_000], 150_000, 15_000).outcome == "yes"
    assert prereg.long_and_unpredictable([20_000, 21_000, 22_000, 20_500, 21_500], 150_000, 15_000).rule == "long"
    assert prereg.long_and_unpredictable([1_000, 1_100, 1_050, 1_000, 1_200], 150_000, 15_000).outcome == "no"


def test_exit_within_a_limit_or_earlier_than_the_other_arm():
    on, off = [900, 1_200, 600, 1_500, 300], [30_000, None, 40_000, 25_000, None]
    assert prereg.exit_within(on, 150_000, 1_500).outcome == "yes"
    d = prereg.exit_within([9_000, 9_500, 8_000, 10_000, 7_000], 150_000, 1_500, compare=off)
    assert d.outcome == "partly" and d.p == pytest.approx(1 / 252)
    assert prereg.exit_within(off, 150_000, 1_500, compare=on).outcome == "no"


def test_below_baseline_needs_every_seed_with_five():
    assert prereg.below_baseline([10, 11, 12, 13, 14], 18.5).outcome == "yes"
    d = prereg.below_baseline([10, 11, 12, 13, 30], 18.5)
    assert d.outcome == "partly" and d.p == pytest.approx(6 / 32)
    assert prereg.below_baseline([20, 21, 22, 10, 11], 18.5).outcome == "no"


def test_within_factor_is_an_equivalence_test():
    assert prereg.within_factor([1.0, 1.02, 0.98, 1.01, 0.99], 1.0).outcome == "yes"
    assert prereg.within_factor([0.5, 1.0, 1.1, 2.0, 0.9], 1.0).outcome == "partly"
    assert prereg.within_factor([2.0, 2.1, 2.2, 1.9, 2.0], 1.0).outcome == "no"


def test_every_stratum_is_an_intersection_union_test():
    lo, hi = [1, 2, 3, 4, 5], [6, 7, 8, 9, 10]
    assert prereg.every_stratum({"a": (lo, hi), "b": (lo, hi)}).outcome == "yes"
    d = prereg.every_stratum({"a": (lo, hi), "b": ([1, 2, 3, 4, 9], [5, 6, 7, 8, 10])})
    assert d.outcome == "yes" or d.outcome == "partly"
    d = prereg.every_stratum({"a": (lo, hi), "b": ([5, 6, 7, 8, 9], [1, 2, 3, 4, 10])})
    assert d.outcome == "no"
    # "much lower": ratio 0.3 passes, ratio 0.8 does not, though both are significant
    much = prereg.every_stratum({"a": ([1, 2, 3, 4, 5], [10] * 5), "b": ([8, 8, 8, 8, 8], [10] * 5)},
                                max_ratio=0.5)
    assert much.outcome == "partly" and "1 of 2" in much.rule


def test_largest_in_and_stratified_shift():
    effects = {"8/off": ([5, 6, 7, 8, 9], [0, 1, 2, 3, 4]), "8/on": ([1, 2, 3, 4, 5], [0, 1, 2, 3, 4])}
    assert prereg.largest_in(effects, "8/off").outcome == "yes"
    assert prereg.largest_in(effects, "8/on").outcome == "no"
    pairs = {k: ([0.3, 0.4, 0.5, 0.35, 0.45], [0.0, 0.1, 0.05, 0.0, 0.02]) for k in "abcd"}
    d = prereg.stratified_shift(pairs, "greater")
    assert d.outcome == "yes" and d.p < 0.01
    flat = {k: ([0.1, 0.2, 0.3, 0.1, 0.2], [0.1, 0.2, 0.3, 0.2, 0.1]) for k in "ab"}
    assert prereg.stratified_shift(flat, "greater").outcome == "no"
    assert d.post_hoc == "" and "(on ranks)" not in d.evidence


def test_a_diverged_run_ranks_last_in_the_stratified_test():
    """Amendment A1: a +inf (or NaN) value in one arm makes the test run on mid-ranks within
    strata, so it counts as the worst value instead of deciding p alone; the row says so."""
    lower = {k: ([1.0, 1.1, 1.2, 1.3, 1.4], [2.0, 2.1, 2.2, 2.3, 2.4]) for k in "abcd"}
    clean = prereg.stratified_shift(lower, "less")
    assert clean.outcome == "yes" and clean.post_hoc == ""
    diverged = dict(lower, a=([1.0, 1.1, 1.2, 1.3, float("inf")], [2.0, 2.1, 2.2, 2.3, 2.4]))
    d = prereg.stratified_shift(diverged, "less")
    # on means the inf alone would make the statistic -inf and p = 1; ranked, three strata and
    # four of five in the fourth still point the claimed way
    assert d.outcome == "yes" and d.p < 0.01 and d.post_hoc == prereg.AMENDMENT_A1
    assert "(on ranks)" in d.evidence and "inf" in d.evidence
    nan = dict(lower, b=([1.0, 1.1, 1.2, 1.3, 1.4], [2.0, 2.1, float("nan"), 2.3, 2.4]))
    assert prereg.stratified_shift(nan, "less").post_hoc == prereg.AMENDMENT_A1
    worse = {k: ([float("inf")] * 5, [1.0] * 5) for k in "ab"}
    assert prereg.stratified_shift(worse, "less").outcome == "no"


def test_fewer_events_and_every_seed():
    assert prereg.fewer_events(0, 20, 8, 20).outcome == "yes"
    assert prereg.fewer_events(3, 20, 4, 20).outcome == "partly"
    assert prereg.fewer_events(4, 20, 3, 20).outcome == "no"
    assert prereg.every_seed([True] * 5, "rises").outcome == "yes"
    assert prereg.every_seed([True, True, True, False, None], "rises").outcome == "partly"
    assert prereg.every_seed([True] * 39 + [False], "left the plateau").outcome == "partly"
    assert prereg.every_seed([True, None, None, None, None], "rises").outcome == "undecided"


def test_some_run_lowest_of_and_smallest_in():
    assert prereg.some_run([False, True], "stuck").outcome == "yes"
    assert prereg.some_run([False, False], "stuck").outcome == "no"
    cells = {"best": [1, 2, 3, 4, 5], "next": [6, 7, 8, 9, 10], "worst": [20] * 5}
    assert prereg.lowest_of(cells, "best").outcome == "yes"
    assert prereg.lowest_of({**cells, "next": [2, 3, 4, 5, 6]}, "best").outcome == "partly"
    assert prereg.lowest_of(cells, "next").outcome == "no"
    effects = {"1/off": ([0.1, 0.0, 0.05, 0.02, 0.0], [0.0, 0.05, 0.1, 0.0, 0.02]),
               "8/off": ([5, 6, 7, 8, 9], [0, 1, 2, 3, 4])}
    assert prereg.smallest_in(effects, ["1/off"]).outcome == "yes"
    assert prereg.smallest_in(effects, ["8/off"]).outcome == "no"


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_a_tie_or_a_nan_effect_does_not_make_the_claimed_cell_first():
    """Amendment A4: the claimed cell needs the lowest median (largest effect) alone; a tie at +inf
    went to the cell named first, and an effect of inf - inf ranks last; marked post hoc only then."""
    inf = float("inf")
    tied = prereg.lowest_of({"best": [inf] * 5, "next": [inf] * 5, "worst": [inf] * 5}, "best")
    assert tied.outcome == "no" and tied.post_hoc == prereg.AMENDMENT_A4 and "(a tie)" in tied.evidence
    assert not prereg.lowest_of({"best": [1, 2, 3, 4, 5], "next": [6] * 5}, "best").post_hoc
    nan_first = {"8/off": ([inf] * 5, [inf] * 5), "8/on": ([5, 6, 7, 8, 9], [0, 1, 2, 3, 4])}
    d = prereg.largest_in(nan_first, "8/off")
    assert d.outcome == "no" and d.post_hoc == prereg.AMENDMENT_A4
    assert prereg.largest_in(nan_first, "8/on").outcome in ("yes", "partly")
    assert not prereg.largest_in({"a": ([5] * 5, [0] * 5), "b": ([1] * 5, [0] * 5)}, "a").post_hoc


def test_rises_at_and_tail_fraction():
    steps = np.arange(0, 10_000, 150)
    be = np.where(steps > 5_000, 1.5, 0.2)
    assert rises_at(steps, be, 5_000, 3_000) is True
    assert rises_at(steps, be[::-1], 5_000, 3_000) is False
    assert rises_at(steps, be, None, 3_000) is None and rises_at(steps, be, 0, 3_000) is None
    assert tail_fraction([10.0] + [5.0] * 8 + [0.1] * 1) == pytest.approx(0.01)


def test_above_baseline_mirrors_below():
    assert prereg.above_baseline([20, 21, 22, 23, 24], 18.5).outcome == "yes"
    assert prereg.above_baseline([20, 21, 22, 23, 10], 18.5).outcome == "partly"
    assert prereg.above_baseline([10, 11, 12, 13, 24], 18.5).outcome == "no"


def test_every_function_the_plan_names_exists():
    """book/preregistration.md names its tests and quantities; each must exist as named."""
    import importlib
    import re

    from mplp import paths

    text = (paths.repo_root() / "book" / "preregistration.md").read_text()
    # the page names modules as they were when it was written; its amendments say where they are now
    moved = {"analysis": "claims.analysis", "baselines": "meta.baselines", "prereg": "claims.prereg",
             "sinewave": "chapters.sinewave", "stats": "claims.stats", "longruns": "longruns"}
    amendments = text[text.index("## Amendments"):]
    assert all(f"`mplp.{new}`" in amendments for old, new in moved.items() if new != old)
    modules = "|".join(moved)
    named = set(re.findall(rf"`(?:mplp\.)?({modules})\.([A-Za-z_]+)", text))
    named |= {("prereg", f) for f in re.findall(r"`([a-z_]+)\(", text)}
    assert len(named) > 20
    for module, name in sorted(named):
        assert hasattr(importlib.import_module(f"mplp.{moved[module]}"), name), f"the plan names {module}.{name}"
