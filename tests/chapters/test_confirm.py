"""The confirmatory rows: the plan's tests on synthetic runs shaped like the thesis, and a dry
run on the stored shorter runs (the functions the thesis-budget runs will be fed to)."""

from pathlib import Path

import numpy as np
import pytest

from mplp.chapters.ablation_grid import Cell, GRID
from mplp.chapters import confirm
from mplp.claims import prereg
from mplp.store import RunResult
from helpers import tiny_config

EVERY = 300


def _run(seed, exit_at, S, start=250.0, end=100.0, spike_at=None, entropy=None, be_term=None):
    """A stored-run stand-in: flat at ``start`` until ``exit_at`` (None: never), then ``end``."""
    steps = np.arange(0, S + 1, EVERY)
    losses = np.full(len(steps), start)
    if exit_at is not None:
        losses[steps >= exit_at] = end
    if spike_at is not None:
        losses[steps == spike_at] = 10 * start
    v = {"step": steps, "val_loss": losses, "entropy_l0": np.zeros(len(steps)),
         "entropy_l1": entropy if entropy is not None else (steps >= (exit_at or S + 1)).astype(float)}
    t = {"step": np.arange(10), "be_term": np.asarray(be_term if be_term is not None else np.zeros(10), float)}
    return RunResult(Path("."), tiny_config(seed=seed), v, t, {}, {})


def test_sinewave_rows_follow_the_plan():
    S = 30_000
    runs = [_run(s, 5_000 + 500 * s, S, start=55.0, end=15.0, spike_at=20_100) for s in range(5)]
    readings = [confirm.SinewaveReading(True, True)] * 5
    rows = confirm.sinewave_rows(runs, sgd=18.5, adam=5.1, S=S, readings=readings, lo=2_500, hi=10_000)
    assert [v.claim.split(":")[0] for v in rows] == [f"P1.{k}" for k in range(1, 8)]
    assert all(v.stage == "confirmatory" and v.seeds.startswith("5 seeds") for v in rows)
    got = {v.claim.split(":")[0]: v.holds for v in rows}
    # exits 5,000-7,000 in [2,500, 10,000]; a spike after every exit; 15 vs Adam 5.1 (step 0 already above:
    # trivial); 15 < SGD 18.5 in all 5; 15 within [12.5, 50]
    assert got == {"P1.1": "yes", "P1.2": "yes", "P1.3": "trivial", "P1.4": "yes", "P1.5": "yes", "P1.6": "yes",
                   "P1.7": "yes"}
    assert "p = 0.0312" in rows[3].interval
    # policy rule 2 on every row the untrained optimizer could pass: started at 50, inside "around 25"
    # within a factor 2, P1.5 is trivially true; started below SGD, so is P1.4
    low = [_run(s, 5_000 + 500 * s, S, start=50.0, end=15.0) for s in range(5)]
    got = {v.claim.split(":")[0]: v.holds for v in confirm.sinewave_rows(low, sgd=18.5, adam=5.1, S=S, lo=2_500,
                                                                        hi=10_000)}
    assert got["P1.5"] == "trivial" and got["P1.4"] == "yes"
    assert confirm.sinewave_rows(low, sgd=60.0, adam=5.1, S=S, lo=2_500, hi=10_000)[3].holds == "trivial"


def test_the_exit_check_measures_each_exit_from_the_plateau_not_a_high_step_0():
    """A step-0 validation 20 % above the plateau (under initial_level's 2x outlier line) makes the
    plan's exit the first validation; measured from the plateau's level, that run never exits."""
    S = 30_000
    runs = [_run(s, 5_000 + 500 * s, S, start=55.0, end=15.0, spike_at=20_100) for s in range(4)]
    stuck = _run(4, None, S, start=55.0)
    stuck.validation["val_loss"][0] = 66.0
    c = confirm.sinewave_exit_check(runs + [stuck], S=S, lo=2_500, hi=10_000)
    assert c.plan == [5_100, 5_700, 6_000, 6_600, 300] and c.first == [("", 4)]
    assert c.plateau == [5_100, 5_700, 6_000, 6_600, None]
    assert (c.readings["P1.1"].outcome, c.readings["P1.2"].outcome) == ("yes", "yes")   # the stuck run not judged
    plan = confirm.sinewave_rows(runs + [stuck], sgd=18.5, adam=5.1, S=S, lo=2_500, hi=10_000)
    assert plan[1].holds == "partly"                                 # the stuck run judged, with no spike after 300
    assert " [post hoc check, deciding nothing: measured from the plateau's own level" in plan[0].evidence
    assert "(the first validation after step 0 for seed 4): P1.1's test would still say yes (" in plan[0].evidence
    assert "P1.2's test would say yes (" in plan[1].evidence and plan[1].evidence.endswith(")]")   # the plan's: partly
    assert c.summary().startswith("post hoc, deciding nothing: measured from the plateau's own level")
    assert "P1.2's test would say yes (" in c.summary()
    quiet = confirm.sinewave_rows(runs, sgd=18.5, adam=5.1, S=S, lo=2_500, hi=10_000)[0].evidence
    assert "[post hoc check, deciding nothing: measured from" in quiet and "step 0 for" not in quiet


def test_the_grid_exit_check_reads_p2_3_p2_10_p2_16_from_the_plateau_level():
    """A step-0 validation 8 % above the plateau (under the 2x outlier line) puts the plan's line 2 %
    under the plateau, so a slow drift there is an early exit; from the plateau's level those BN
    runs are stuck, and only P2.3's post hoc reading changes."""
    S = 12_000

    def cell_runs(c):
        runs = [_run(s, 6_000 if c.message_size == 8 else None, S, start=250.0, end=100.0) for s in range(5)]
        for r in runs:
            if c.batch_norm:
                v = r.validation["val_loss"]
                v[0] = 270.0                                    # 8 % above the plateau
                v[(r.validation["step"] >= 600) & (v == 250.0)] = 240.0   # a 4 % drift: under 0.9 x 270
        return runs
    cells = {c: cell_runs(c) for c in GRID}
    check = confirm.grid_exit_check(cells, S)
    assert set(check.readings) == {"P2.3", "P2.10", "P2.16"} and not check.first
    assert check.plan.count(600) == 20 and 600 not in check.plateau        # every BN run "exits" at 600
    rows = {v.claim.split(":")[0]: v for v in confirm.grid_rows(cells, sgd=141.0, adam=10.0, S=S)}
    assert rows["P2.3"].test_outcome == "yes" and check.readings["P2.3"].outcome == "no"
    assert "P2.3's test would say no (" in rows["P2.3"].evidence and "P2.10's test would still say yes" in check.summary()
    assert all("post hoc check, deciding nothing" in rows[p].evidence for p in ("P2.3", "P2.10", "P2.16"))
    assert all("post hoc check" not in v.evidence for k, v in rows.items() if k not in ("P2.3", "P2.10", "P2.16"))


def test_the_adam_row_applies_policy_rule_2_by_its_own_test_and_marks_amendment_a3_where_it_differs():
    """P1.3 / P2.12: trivially true only if above_baseline on the step-0 validations says yes; when
    only the median of those is above Adam's (3 of 5), the row is decided by its test, post hoc (A3)."""
    from mplp.claims import prereg

    S = 30_000
    above = [_run(s, 5_000, S, start=55.0, end=15.0) for s in range(5)]
    mixed = [_run(s, 5_000, S, start=55.0 if s < 3 else 4.0, end=15.0) for s in range(5)]
    adam_all, adam_mixed = (confirm.best_cell_rows(r, sgd=18.5, adam=5.1, S=S)[0] for r in (above, mixed))
    assert adam_all.holds == "trivial" and not adam_all.post_hoc
    assert adam_mixed.holds == "yes" and adam_mixed.post_hoc == prereg.AMENDMENT_A3


def test_policy_rule_2_reads_p1_6_and_p1_7_at_theta_0_and_marks_amendment_a4_where_it_changes_a_label():
    S = 30_000
    runs = [_run(s, 5_000 + 500 * s, S, start=55.0, end=15.0) for s in range(5)]
    trained = [confirm.SinewaveReading(True, True)] * 5
    at_0 = [confirm.SinewaveReading(False, True)] * 5              # untrained: not like SGD, but SGD beats it
    rows = confirm.sinewave_rows(runs, sgd=18.5, adam=5.1, S=S, readings=trained, lo=2_500, hi=10_000,
                                 at_step_0=at_0)
    p16, p17 = rows[5:7]
    assert (p16.holds, p16.post_hoc) == ("yes", "") and "θ₀" in p16.test
    assert p16.evidence.endswith("at θ₀: every function beyond chance, signs agreeing: 0 of 5 judged runs (of 5); "
                                 "sign test p = 1")
    assert (p17.holds, p17.test_outcome, p17.post_hoc) == ("trivial", "yes", prereg.AMENDMENT_A4)
    # a reading that ranked a non-finite value last marks its row, whatever rule 2 says
    amended = [confirm.SinewaveReading(False, True, amended=("P1.6", "P1.7"))] + trained[1:]
    rows = confirm.sinewave_rows(runs, sgd=18.5, adam=5.1, S=S, readings=amended, lo=2_500, hi=10_000)
    assert [v.post_hoc == prereg.AMENDMENT_A4 for v in rows[5:7]] == [True, True]
    assert rows[5].holds == "partly" and rows[6].holds == "yes" and "θ₀" not in rows[5].test + rows[5].evidence
    only_p17 = [confirm.SinewaveReading(True, True, amended=("P1.7",))] * 5
    rows = confirm.sinewave_rows(runs, sgd=18.5, adam=5.1, S=S, readings=only_p17, lo=2_500, hi=10_000, at_step_0=at_0)
    assert [v.post_hoc for v in rows[5:7]] == ["", prereg.AMENDMENT_A4]         # marked once, not twice
    assert rows[0].interval.endswith("no p") and "no interval" in rows[1].interval


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_policy_rule_2_on_the_grid_runs_each_row_on_the_untrained_optimizers():
    """A4: BN cells that start (and stay) lower than the cells without it pass P2.1 untrained too:
    trivially true, post hoc; the rows on how meta-training moves never are."""
    S = 12_000
    cells = {c: [_run(s, None, S, start=(200.0 if c.batch_norm else 250.0) * (1 + 0.01 * s)) for s in range(5)]
             for c in GRID}
    rows = {v.claim.split(":")[0]: v for v in confirm.grid_rows(cells, sgd=141.0, adam=10.0, S=S)}
    assert rows["P2.1"].test_outcome == "yes" and rows["P2.1"].holds == "trivial"
    assert rows["P2.1"].post_hoc == prereg.AMENDMENT_A4 and "untrained" in rows["P2.1"].test
    assert rows["P2.10"].holds == "yes" and not rows["P2.10"].post_hoc       # stuck: no untrained value
    assert "untrained" not in rows["P2.3"].test and "untrained" not in rows["P2.16"].test
    assert all(not v.post_hoc for k, v in rows.items() if v.holds != "trivial")


def test_grid_rows_on_a_grid_shaped_like_the_thesis():
    S = 12_000

    def cell_runs(c):
        # BN leaves earlier, |m| = 8 ends 4x lower, the learned lr helps at |m| = 8 without BN
        exit_at = 1_200 if c.batch_norm else (6_000 if c.message_size == 8 else None)
        if c.learned_lr and c.message_size == 8 and not c.batch_norm:
            exit_at = 3_000
        end = 100.0 / (4 if c.message_size == 8 else 1) / (1.1 if c.learned_lr else 1) / (1.2 if c.batch_norm else 1)
        return [_run(s, exit_at, S, end=end * (1 + 0.01 * s), spike_at=9_000 if c.learned_lr else None)
                for s in range(5)]
    cells = {c: cell_runs(c) for c in GRID}
    rows = confirm.grid_rows(cells, sgd=141.0, adam=10.0, S=S)
    got = {v.claim.split(":")[0]: v.holds for v in rows}
    assert list(got) == [f"P2.{k}" for k in range(1, 17)]
    assert got["P2.3"] == "yes" and got["P2.7"] == "yes" and got["P2.8"] == "yes" and got["P2.11"] == "yes"
    assert got["P2.10"] == "yes" and got["P2.13"] == "yes" and got["P2.12"] == "trivial"
    assert got["P2.16"] == "partly"          # the |m| = 1 cells without BN never leave
    # the best cell decides P2.12-P2.13 on its own, as it does within the whole grid
    alone = confirm.best_cell_rows(cells[Cell(8, True, True)], sgd=141.0, adam=10.0, S=S)
    assert [(v.claim, v.holds, v.evidence) for v in alone] == [(v.claim, v.holds, v.evidence) for v in rows[11:13]]
    assert alone[0].seeds.startswith("5 seeds of the best cell")


def test_mnist_rows_follow_the_plan():
    S = 15_000
    steps = np.arange(0, S + 1, EVERY)
    off = [_run(s, e, S, start=230.0, end=100.0) for s, e in enumerate([3_000, 9_000, None, 6_000, None])]
    # with the term: out at 1,200 steps (the fourth validation; a drop within the first three would
    # make the step-0 validation count as a diverged start), later than 1 % of S, earlier than without
    on = [_run(s, 1_200, S, start=230.0, end=80.0, be_term=np.r_[1.0, np.full(9, 0.01)]) for s in range(5)]
    inner = [confirm.InnerReading(1.0, 1.0, 5.0, 0.3)] * 5
    rows = confirm.mnist_rows(off, on, S=S, inner=inner)
    # policy rule 2 at θ₀ (A4): an untrained MPLP far behind Adam fails P3.6 but passes P3.7 (further behind at 3T)
    at_0 = [confirm.InnerReading(50.0, 1.0, 50.0, 0.3)] * 5
    again = confirm.mnist_rows(off, on, S=S, inner=inner, at_step_0=at_0)
    assert [(v.holds, v.post_hoc) for v in again[5:7]] == [("yes", ""), ("trivial", prereg.AMENDMENT_A4)]
    got = {v.claim.split(":")[0]: v.holds for v in rows}
    assert got == {"P3.1": "yes", "P3.2": "yes", "P3.3": "yes", "P3.4": "partly", "P3.5": "yes", "P3.6": "yes",
                   "P3.7": "yes", "P3.8": "yes"}
    assert len(steps) == len(off[0].validation["step"])


@pytest.fixture(scope="module")
def studies():
    from mplp.book import report

    return {ch: report.chapter_study(ch, "cpu")[0] for ch in ("sinewave", "ablation", "mnist")}


def test_a_dry_run_of_the_plan_on_the_stored_shorter_runs(studies):
    """The functions the thesis-budget runs will be fed to, run on today's shorter runs with their
    own S: every row is made, labelled and carries its seeds and statistics."""
    sw, ab, mn = studies["sinewave"], studies["ablation"], studies["mnist"]
    rows = confirm.sinewave_rows(sw.long_runs["text"], sw.tuned["sgd"].best_metric, sw.tuned["adam"].best_metric,
                                 S=150_000)
    rows += confirm.grid_rows(ab.runs, ab.tuned["sgd"].best_metric, ab.tuned["adam"].best_metric,
                              S=int(ab.table[GRID[0]].steps))
    rows += confirm.mnist_rows(mn.long_runs[False], mn.long_runs[True], S=40_000)
    assert len(rows) == 5 + 16 + 6
    assert all(v.holds in ("yes", "partly", "no", "undecided", "trivial") and v.seeds for v in rows)


def test_chapter_2_reports_the_rows_the_best_cell_has_decided(tmp_path):
    """Once the best cell's five thesis-budget runs are finished, P2.12-P2.13 enter chapter 2's
    verdicts (and so the ledger) as confirmatory rows; before, nothing does."""
    from mplp.chapters.ablation import confirmed_rows
    from mplp.meta.source import Store
    from mplp.store import committed_root

    assert confirmed_rows(Store(tmp_path, read_only=True)) == []
    rows = confirmed_rows(Store(committed_root(), read_only=True))
    ids = [v.claim.split(":")[0] for v in rows]
    assert ids in (["P2.12", "P2.13"], [f"P2.{k}" for k in range(1, 17)])     # the best cell; every cell
    assert all(v.stage == "confirmatory" and "120,000 outer steps" in v.seeds for v in rows)


def test_chapter_2_decides_the_whole_grid_once_every_cell_is_finished(monkeypatch):
    """The best cell alone gives P2.12-P2.13; all eight cells give P2.1-P2.16 (the same two among them)."""
    from types import SimpleNamespace

    from mplp.chapters import ablation
    from mplp.chapters.ablation import GRID_ORDER, confirmed_rows

    S = 12_000
    cfgs = [[tiny_config(seed=s, **{"learner.message_size": c.message_size, "learner.batch_norm": c.batch_norm,
                                    "learner.learned_lr": c.learned_lr}) for s in range(5)] for c in GRID_ORDER]
    stored = {}

    def cell_runs(cell_cfgs):
        c = cell_cfgs[0].learner
        exit_at = 1_200 if c.batch_norm else (3_000 if c.message_size == 8 else None)
        end = 100.0 / (4 if c.message_size == 8 else 1) / (1.2 if c.batch_norm else 1)
        return [RunResult(Path("."), cfg, _run(k, exit_at, S, end=end * (1 + 0.01 * k)).validation, {}, {}, {})
                for k, cfg in enumerate(cell_cfgs)]

    store = SimpleNamespace(complete_run=lambda cfg: stored.get(cfg.hash()))
    best = SimpleNamespace(best_metric=141.0)
    monkeypatch.setattr(ablation.baselines, "tuned", lambda cfg, store: {"sgd": best, "adam": SimpleNamespace(best_metric=10.0)})
    assert confirmed_rows(store, cfgs, S) == [] and ablation.thesis_exit_check(store, cfgs, S) is None
    for cfg_cell in cfgs[:2]:                                 # the best cell and the next, in the plan's order
        stored.update({r.config.hash(): r for r in cell_runs(cfg_cell)})
    alone = confirmed_rows(store, cfgs, S)
    assert [v.claim.split(":")[0] for v in alone] == ["P2.12", "P2.13"]
    for cfg_cell in cfgs[2:]:
        stored.update({r.config.hash(): r for r in cell_runs(cfg_cell)})
    rows = confirmed_rows(store, cfgs, S)
    assert [v.claim.split(":")[0] for v in rows] == [f"P2.{k}" for k in range(1, 17)]
    assert [(v.claim, v.holds) for v in rows[11:13]] == [(v.claim, v.holds) for v in alone]
    assert {v.claim.split(":")[0]: v.holds for v in rows}["P2.8"] == "yes"     # |m| = 8 ends 4x lower everywhere
    check = ablation.thesis_exit_check(store, cfgs, S)
    assert set(check.readings) == {"P2.3", "P2.10", "P2.16"} and check.note("P2.3") in rows[2].evidence


def test_chapter_3_decides_once_all_ten_runs_are_finished(monkeypatch):
    """P3.1-P3.8 from the ten runs, with P3.6-P3.7 read at each term-on run's final meta-parameters."""
    import dataclasses
    from types import SimpleNamespace

    from mplp.chapters import mnist_be
    from mplp.claims.analysis import InnerComparison

    S, T = 15_000, 9
    arms = [[tiny_config(seed=s, **{"meta.batch_entropy": be}) for s in range(5)] for be in (False, True)]
    exits = {False: [3_000, 9_000, None, 6_000, None], True: [1_200] * 5}
    stored = {}
    for be, cfgs in zip((False, True), arms):
        for s, cfg in enumerate(cfgs):
            r = _run(s, exits[be][s], S, start=230.0, end=80.0 if be else 100.0,
                     be_term=np.r_[1.0, np.full(9, 0.01)] if be else None)
            stored[cfg.hash()] = dataclasses.replace(r, config=cfg)
    # Adam level with the MPLP at T, far below it at 3T: similar speed, then Adam ahead
    mplp = np.ones((20, 3 * T))
    adam = np.r_[np.ones(T), np.full(2 * T, 0.1)] * np.ones((20, 1))
    asked = []

    # the untrained MPLP (θ₀, policy rule 2): far behind Adam at T, and no further behind at 3T
    untrained = np.full((20, 3 * T), 50.0)

    def load_or_compute(experiment, key, compute, cls):
        asked.append((experiment, key))
        theta_0 = key.get("step") == 0
        return InnerComparison({"mplp": untrained if theta_0 else mplp, "adam": np.ones((20, 3 * T)) if theta_0 else adam},
                               {}, {"adam": key["adam_lr"]}, T)

    store = SimpleNamespace(complete_run=lambda cfg: stored.get(cfg.hash()), load_or_compute=load_or_compute)
    monkeypatch.setattr(mnist_be.baselines, "tuned", lambda cfg, store: {"adam": SimpleNamespace(best_lr=0.003)})
    monkeypatch.setattr(RunResult, "snapshots", lambda self: {0: {"w": 0.0}})
    missing = SimpleNamespace(complete_run=lambda cfg: None if cfg is arms[1][4] else stored[cfg.hash()])
    assert mnist_be.confirmed_rows(missing, arms, S) == []
    rows = mnist_be.confirmed_rows(store, arms, S)
    got = {v.claim.split(":")[0]: v.holds for v in rows}
    assert got == {"P3.1": "yes", "P3.2": "yes", "P3.3": "yes", "P3.4": "partly", "P3.5": "yes", "P3.6": "yes",
                   "P3.7": "yes", "P3.8": "yes"}
    assert [k["steps"] for e, k in asked] == [3 * T] * 10 and {k["adam_lr"] for e, k in asked} == {0.003}
    assert {k["config"] for e, k in asked} == {c.hash() for c in arms[1]}          # the runs with the term
    assert [e for e, k in asked] == ["mnist_inner_final"] * 5 + ["mnist_inner_untrained"] * 5


def test_truncation_rows_follow_the_plan():
    """PM.1-PM.3 per seed: the biased, anti-correlated case, then one seed whose PES lands 3x off."""
    good = confirm.TruncationReading(short_lr=1e-3, full_lr=8e-3, pes_lr=6e-3, best_lr=1e-2, truncated_sum=-0.4,
                                     true_grad=0.2)
    rows = confirm.truncation_rows([good] * 5)
    assert [v.claim.split(":")[0] for v in rows] == ["PM.1", "PM.2", "PM.3"]
    assert [v.holds for v in rows] == ["yes"] * 3 and all(v.kind == "metz" and v.stage == "confirmatory" for v in rows)
    assert rows[0].seeds == "5 seeds per estimator"
    off = confirm.TruncationReading(1e-3, 8e-3, 3.4e-2, 1e-2, 0.1, 0.2)     # PES 3.4x too high; same sign
    got = [v.holds for v in confirm.truncation_rows([good] * 3 + [off] * 2)]
    assert got == ["yes", "partly", "partly"]
    # above the full unroll's lr is no downward bias, whatever the distance
    assert not confirm.TruncationReading(2e-2, 8e-3, 1e-2, 1e-2, -1.0, 1.0).biased_down()
