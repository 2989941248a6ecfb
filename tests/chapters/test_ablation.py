"""The §5.2 grid: configs per cell, summaries and verdicts on known curves, a tiny grid run."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from mplp.chapters import ablation
from mplp.chapters import ablation_grid
from mplp.core.config import ConfigError
from mplp.store import RunResult
from mplp.meta.source import Store

from helpers import tiny_config


def test_grid_has_eight_distinct_cells_sharing_validation():
    assert len(set(ablation_grid.GRID)) == 8
    cfgs = ablation.grid_configs(tiny_config(), n_seeds=3)
    flat = [c for cs in cfgs.values() for c in cs]
    assert len({c.hash() for c in flat}) == 24
    assert {c.validation for c in flat} == {tiny_config().validation}
    for cell, cs in cfgs.items():
        for seed, c in enumerate(cs):
            assert (c.seed, c.learner.message_size, c.learner.batch_norm, c.learner.learned_lr) == \
                (seed, cell.message_size, cell.batch_norm, cell.learned_lr)
            assert c.learner.lr == (ablation.LR_LEARNED_INIT if cell.learned_lr else ablation.LR_FIXED)


def test_bad_seed_count_is_a_config_error():
    with pytest.raises(ConfigError, match="n_seeds"):
        ablation.grid_configs(tiny_config(), 0)


def _run(losses, steps=None) -> RunResult:
    steps = np.arange(len(losses)) * 10 if steps is None else steps
    return RunResult(Path("."), tiny_config(), {"step": np.asarray(steps), "val_loss": np.asarray(losses, float)},
                     {}, {}, {})


def test_first_reach():
    s = np.array([0, 10, 20, 30])
    assert ablation_grid.first_reach(s, np.array([5.0, 4.0, 2.0, 1.0]), 2.0) == 20
    assert math.isnan(ablation_grid.first_reach(s, np.array([5.0, 4.0, 3.0, 3.0]), 2.0))


def test_summarise_counts_stuck_seeds_and_reach():
    runs = [_run([10, 10, 9.5, 9.6]),        # stuck: 9.6 >= 0.9 * 10
            _run([10, 8, 4, 2]),             # reaches 5 at step 20
            _run([10, 6, 5, 3])]             # reaches 5 at step 20
    s = ablation.summarise(ablation_grid.GRID[0], runs, level=5.0)
    assert (s.n_seeds, s.n_stuck, s.n_reached) == (3, 1, 2)
    assert s.final_median == 3 and (s.final_min, s.final_max) == (2, 9.6)
    assert s.steps_to_level == 20                      # median of (20, 20, never)
    geo = lambda v: float(np.exp(np.mean(np.log(v))))
    assert s.auc_median == pytest.approx(np.median([geo([10, 10, 9.5, 9.6]), geo([10, 8, 4, 2]), geo([10, 6, 5, 3])]))
    assert s.final_log_spread == pytest.approx(np.std(np.log([9.6, 2, 3])))
    most_never = ablation.summarise(ablation_grid.GRID[0], [runs[0], runs[0], runs[1]], level=5.0)
    assert math.isnan(most_never.steps_to_level)


def test_a_diverged_seed_counts_as_infinite_loss_not_as_nan():
    s = ablation.summarise(ablation_grid.GRID[0], [_run([10, 5]), _run([10, float("nan")]), _run([10, 6])], level=5.5)
    assert s.final_max == np.inf and s.final_median == 6 and s.n_stuck == 1 and s.final_log_spread == np.inf
    assert np.isfinite(s.auc_median)


def test_summarise_rejects_mismatched_steps():
    with pytest.raises(ValueError, match="validation steps differ"):
        ablation_grid.curves([_run([3, 2]), _run([3, 2], steps=[0, 7])])


def _rows(final, auc=None, stuck=0, spread=0.1, spikes=lambda c: (0.0,) * 5):
    """Summaries with final loss ``final(cell)``, mean loss ``auc(cell)``, ``stuck(cell)`` seeds on
    the plateau and per-seed ``spikes(cell)``; the 5 seeds' values spread 1 % around each value."""
    auc = auc or final

    def seeds(v):
        return tuple(v * (1 + 0.01 * k) for k in range(5))

    def n_stuck(c):
        return stuck(c) if callable(stuck) else stuck
    return {c: ablation.CellSummary(c, 5, final(c), final(c), final(c), auc(c), math.nan, 5, n_stuck(c),
                                    spread(c) if callable(spread) else spread,
                                    log_means=tuple(np.log(seeds(auc(c)))), spikes=spikes(c),
                                    exits=tuple(None if k < n_stuck(c) else 300 for k in range(5)),
                                    final_seeds=seeds(final(c))) for c in ablation_grid.GRID}


def _by_claim(vs):
    return {v.claim.split()[0] + v.claim.split()[1]: v.holds for v in vs}


def test_verdicts_on_a_grid_shaped_like_the_thesis():
    # BN halves the loss, |m| = 8 divides it by 4, learned lr helps 2x only at |m| = 8 without BN
    def final(c):
        v = 100.0 / (2 if c.batch_norm else 1) / (4 if c.message_size == 8 else 1)
        return v / (2 if (c.learned_lr and c.message_size == 8 and not c.batch_norm) else 1.1 if c.learned_lr else 1)
    unstable = lambda c: (0.3, 0.4, 0.5, 0.35, 0.45) if c.learned_lr else (0.0, 0.1, 0.05, 0.0, 0.02)
    stuck = lambda c: 0 if c.batch_norm else 2
    vs = ablation.verdicts(_rows(final, spikes=unstable, stuck=stuck), sgd=20.0, adam=5.0)
    assert [v.holds for v in vs] == ["yes"] * 6
    assert all(v.seeds for v in vs) and "p = " in vs[3].interval and "Fisher" in vs[5].interval


def test_verdicts_that_fail():
    # nothing helps: every cell equal, best cell worse than SGD, learned lr more stable
    stable = lambda c: (0.0,) * 5 if c.learned_lr else (0.3, 0.4, 0.5, 0.35, 0.45)
    vs = ablation.verdicts(_rows(lambda c: 50.0, spikes=stable), sgd=20.0, adam=5.0)
    assert [v.holds for v in vs] == ["no"] * 6   # "worse than Adam" alone is not "partly"


def test_pairs_with_both_arms_stuck_are_not_reached_in_both_directions():
    """The policy's symmetric rule: a pair whose two arms are both on the plateau counts
    neither for nor against a claim, whichever arm happens to be lower."""
    stuck_pair = lambda c: c.message_size == 1 and not c.learned_lr

    def auc(faster_in_stuck_pair):
        def f(c):
            if stuck_pair(c):
                return 40.0 if c.batch_norm == faster_in_stuck_pair else 50.0
            return 10.0 if c.batch_norm else 20.0
        return f
    stuck = lambda c: 4 if stuck_pair(c) else 0
    for direction in (True, False):       # BN faster or slower in the stuck pair: the same verdict
        v = ablation.verdicts(_rows(lambda c: 10.0, auc=auc(direction), stuck=stuck), sgd=20.0, adam=5.0)[0]
        assert v.holds == "partly" and v.test_outcome == "partly"
        assert v.partly_rule == "faster in 3 of 3 decided pairs, 1 of 4 pairs not reached"
    every = ablation.verdicts(_rows(lambda c: 10.0, auc=auc(True), stuck=4), sgd=20.0, adam=5.0)
    assert [v.holds for v in every] == ["not_reached", "not_reached", "not_reached", "no", "not_reached", "no"]
    assert ablation.verdicts(_rows(lambda c: 10.0, auc=auc(True), stuck=0), sgd=20.0, adam=5.0)[0].holds == "yes"


def test_final_loss_claims_wait_while_the_runs_still_fall():
    """Policy rule 1: |m| = 8 already 4x lower, but still falling short of the thesis' S."""
    final = lambda c: 100.0 / (4 if c.message_size == 8 else 1)
    rows = _rows(final)
    falling = {c: dataclasses.replace(s, falling=True, steps=3600) for c, s in rows.items()}
    assert ablation.verdicts(rows, sgd=200.0, adam=5.0)[1].holds == "yes"
    v = ablation.verdicts(falling, sgd=200.0, adam=5.0)[1]
    assert v.holds == "not_reached" and v.test_outcome == "undecided"
    at_budget = {c: dataclasses.replace(s, steps=ablation.THESIS_S) for c, s in falling.items()}
    assert ablation.verdicts(at_budget, sgd=200.0, adam=5.0)[1].holds == "yes"


def test_tiny_grid_trains_every_cell_as_a_population(tmp_path):
    base = tiny_config(**{"meta.S": 2, "validation.every": 2, "checkpoint_every": 1})
    out = ablation.train_grid(base, 2, Store(tmp_path), progress=False)
    assert set(out) == set(ablation_grid.GRID)
    for cell, runs in out.items():
        assert [r.config.seed for r in runs] == [0, 1]
        assert all(r.complete and r.config.learner.message_size == cell.message_size for r in runs)
        steps, L = ablation_grid.curves(runs)
        assert list(steps) == [0, 2] and L.shape == (2, 2) and np.isfinite(L).all()
    again = ablation.train_grid(base, 2, Store(tmp_path), progress=False)   # stored runs come back as they are
    assert all(np.array_equal(a.validation["val_loss"], b.validation["val_loss"])
               for cell in ablation_grid.GRID for a, b in zip(out[cell], again[cell]))


def test_common_level_and_table():
    first, second = ablation_grid.GRID[0], ablation_grid.GRID[1]
    runs = {first: [_run([10, 5]), _run([20, 5])], second: [_run([30, 1]), _run([40, 1])]}
    assert ablation.common_level(runs) == 0.5 * 25
    table = ablation.summary_table(runs, level=6.0)
    assert list(table) == [first, second] and table[second].steps_to_level == 10


def test_skipped_outer_updates_are_summed_over_seeds():
    runs = [_run([10, 5]), _run([10, 6])]
    runs[0].meta["skipped_outer_updates"] = 3
    runs[1].meta["skipped_outer_updates"] = 4
    assert ablation.summarise(ablation_grid.GRID[0], runs, level=1.0).skipped == 7


def test_a_seed_diverging_at_step_0_is_still_stuck():
    s = ablation.summarise(ablation_grid.GRID[0], [_run([2.3e9, 253, 252, 254, 253, 255])], level=1.0)
    assert s.n_stuck == 1


def test_longer_runs_replace_the_pairs_they_cover():
    """A pair of cells run longer is judged on the longer runs; the grid's other
    pairs stay; the best configuration may come from the longer runs."""
    rows = _rows(lambda c: 50.0, stuck=5)                                   # the grid: all on the plateau
    assert ablation.verdicts(rows, sgd=20.0, adam=5.0)[0].holds == "not_reached"
    c8, c8off, c1 = ablation_grid.DECISIVE_CELLS
    base = _rows(lambda c: 10.0 if c.batch_norm else 30.0, stuck=0)
    longer = {c: dataclasses.replace(base[c], steps=30_000) for c in ablation_grid.DECISIVE_CELLS}
    v = ablation.verdicts(rows, sgd=20.0, adam=5.0, longer=longer)
    assert v[0].holds == "partly" and v[0].partly_rule.startswith("faster in 1 of 1 decided pairs, 3 of 4")
    assert "8/learned at 30,000 steps" in v[0].evidence and ablation.DECISIVE_RULE_COMMIT in v[0].post_hoc
    assert "at 30,000 of 120,000 steps" in v[4].evidence and "|m|=8, BN on, lr learned" in v[4].evidence
    assert v[4].holds == "yes"                         # 10 < SGD's 20, settled, off the plateau
    assert "longer" not in ablation.verdicts(rows, sgd=20.0, adam=5.0)[0].post_hoc
    # longer runs chosen after shorter ones were seen: every verdict they feed says so
    after = ablation.verdicts(rows, sgd=20.0, adam=5.0, longer=longer, longer_after=30_000)
    note = "the longer runs were chosen after those of 30,000 steps were seen"
    assert [note in x.post_hoc for x in after] == [True, True, False, False, True, False]
    assert not any(note in x.post_hoc for x in v)


def test_the_decisive_runs_know_whether_they_were_chosen_after_shorter_ones_were_seen():
    from mplp.chapters import registry

    flat = lambda S: [c for cs in ablation.decisive_configs(S).values() for c in cs]
    assert registry.chosen_after(flat(ablation.DECISIVE_S)) is None                 # planned before any ran
    assert registry.chosen_after(flat(ablation.DECISIVE_LONGER_S)) == ablation.DECISIVE_S


def test_decisive_configs_use_the_codes_adam_and_three_seeds():
    cfgs = ablation.decisive_configs(30_000)
    assert list(cfgs) == list(ablation_grid.DECISIVE_CELLS)
    assert all(len(cs) == 3 and not cs[0].meta.adam_bias_correction and cs[0].meta.S == 30_000 for cs in cfgs.values())
