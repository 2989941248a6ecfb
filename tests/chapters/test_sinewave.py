"""Chapter 1's longer runs: their configs and the rule that judges claims 1-2 on them."""

import numpy as np
import pytest

from mplp.chapters import confirm, sinewave
from mplp.claims import analysis
from mplp.claims.analysis import Checkpoint

from helpers import calibration


def test_long_configs_are_the_texts_setting_and_the_scripts():
    cfgs = sinewave.long_configs(150_000, 100_000)
    text, script = cfgs["text"], cfgs["script"]
    assert [c.seed for c in text] == list(sinewave.LONG_SEEDS) and {c.meta.S for c in text} == {150_000}
    assert {c.learner.loss_inputs for c in text} == {"prediction_target"} and text[0].task.amplitude == (1.0, 1.0)
    assert script[0].learner.loss_inputs == "full" and script[0].task.amplitude == (1.0, 5.0)
    assert script[0].meta.S == 100_000 and not any(c.meta.adam_bias_correction for c in text + script)


def test_over_seeds_needs_a_majority_decided_and_agreement():
    assert sinewave._over_seeds(["yes", "undecided", "undecided"]) == "undecided"
    assert sinewave._over_seeds(["yes", "yes", "undecided"]) == "yes"
    assert sinewave._over_seeds(["no", "no", "no"]) == "no"
    assert sinewave._over_seeds(["yes", "no", "undecided"]) == "partly"


def test_claims_1_and_2_are_judged_on_the_longer_runs():
    steps = np.arange(0, 1001, 100)
    kw = dict(thesis_plateau_end=500, plateau_window=200)
    chapter_run = np.full(11, 50.0)                                        # the chapter's own run: flat
    leaves_at_500 = np.array([50, 50, 49, 50, 49, 40, 30, 20, 15, 12, 10.0])
    corr = {"f": -0.9, "g_lin": 0.9}
    cal = calibration(corr)
    ck = Checkpoint(1000, 10.0, {}, "")
    longer = [(steps, leaves_at_500, ck), (steps, leaves_at_500, ck), (steps, chapter_run, Checkpoint(0, 50.0, {}, ""))]
    v = sinewave.verdicts(steps, chapter_run, Checkpoint(0, 50.0, {}, ""), 18.0, 5.0, corr, cal, longer=longer, **kw)
    assert v[0].holds == "yes" and "plateau exits 500, 500, never (of 1,000 steps)" in v[0].evidence
    assert v[0].interval.startswith("median exit 500") and v[0].seeds.startswith("3 seeds")
    # 2 of 3 left, but their median curve still falls (12 -> 10): a final-loss claim is not reached (rule 1)
    assert v[1].holds == "not_reached" and v[1].test_outcome == "yes" and "median 10 vs SGD 18" in v[1].evidence
    assert "still falling at 1,000 of 300,000" in v[1].evidence and v[1].post_hoc.startswith(sinewave.FALLING_RULE_COMMIT)
    settled = np.array([50, 50, 49, 50, 40, 15, 15, 15, 15, 15, 15.0])      # leaves at 400, then flat
    v = sinewave.verdicts(steps, chapter_run, Checkpoint(0, 50.0, {}, ""), 18.0, 5.0, corr, cal, **kw,
                    longer=[(steps, settled, ck), (steps, settled, ck), (steps, chapter_run, ck)])
    assert v[1].holds == "yes" and "settled" in v[1].evidence
    early = np.array([50, 50, 40] + [30.0] * 8)                               # leaves at 200: before 250
    v = sinewave.verdicts(steps, chapter_run, ck, 18.0, 5.0, corr, cal, **kw,
                    longer=[(steps, early, ck), (steps, early, ck), (steps, chapter_run, ck)])
    assert v[0].holds == "partly" and v[0].partly_rule.startswith("median exit outside [250, 1,000]")
    # a spike after the exit does not move it (the old rule's end did)
    spiky = leaves_at_500.copy()
    spiky[8] = 500.0
    v = sinewave.verdicts(steps, chapter_run, ck, 18.0, 5.0, corr, cal, **kw,
                    longer=[(steps, spiky, ck), (steps, spiky, ck), (steps, chapter_run, ck)])
    assert v[0].holds == "yes" and "old rule (stays below for good, moved by later spikes): 900, 900" in v[0].evidence
    alone = sinewave.verdicts(steps, chapter_run, Checkpoint(0, 50.0, {}, ""), 18.0, 5.0, corr, cal, **kw)
    assert [x.holds for x in alone[:2]] == ["not_reached", "not_reached"]


@pytest.fixture(scope="module")
def cpu_study():
    from mplp.book import report

    return report.chapter_study("sinewave", "cpu")[0]


def test_the_script_run_is_read_against_sgd_tuned_on_its_own_task(cpu_study):
    st = cpu_study
    script = st.long_runs["script"][0].config
    assert tuple(script.task.amplitude) == (1.0, 5.0) and tuple(st.cfg.task.amplitude) == (1.0, 1.0)
    # amplitudes up to 5: the losses are on another scale than the text task's, so each panel has its own reference
    assert st.script_tuned["sgd"].best_metric > 2 * st.tuned["sgd"].best_metric


def test_claim_4_is_judged_on_the_longer_runs_that_left_the_plateau():
    steps = np.arange(0, 1001, 100)
    kw = dict(thesis_plateau_end=500, plateau_window=200)
    flat = np.full(11, 50.0)
    leaves = np.array([50, 50, 49, 50, 49, 40, 30, 20, 15, 12, 10.0])
    names = ("f", "g_lin")
    chapter_corr = {"f": 0.1, "g_lin": 0.2}                     # the chapter's run: on its plateau
    cal, ck = calibration(chapter_corr), Checkpoint(1000, 10.0, {}, "")
    agree = sinewave.SeedAgreement(0, 900, {"f": -0.9, "g_lin": -0.8}, {k: 0.3 for k in names})
    weak = sinewave.SeedAgreement(1, 900, {"f": -0.9, "g_lin": -0.1}, {k: 0.3 for k in names})
    chance = sinewave.SeedAgreement(2, 0, {"f": 0.9, "g_lin": 0.9}, {k: 0.95 for k in names})
    assert sinewave.resemble_outcome(agree.corr, agree.null_q) == "yes"
    assert sinewave.resemble_outcome(weak.corr, weak.null_q) == "partly"
    assert sinewave.resemble_outcome(chance.corr, chance.null_q) == "no"         # no stronger than random learners

    def claim4(curves, agreement):
        longer = [(steps, c, ck) for c in curves]
        return sinewave.verdicts(steps, flat, Checkpoint(0, 50.0, {}, ""), 18.0, 5.0, chapter_corr, cal,
                           longer=longer, long_agreement=agreement, **kw)[3]

    v = claim4([leaves, leaves, flat], [agree, agree, chance])
    assert v.holds == "yes" and "seed 2, step 0 (on its plateau): undecided" in v.evidence   # seed 2 not counted
    assert "chapter run: checkpoint f +0.10" in v.evidence and sinewave.LONG_AGREEMENT_RULE_COMMIT in v.test
    assert f"{sinewave.LONG_AGREEMENT_RULE_COMMIT}: judged on the longer runs" in v.post_hoc      # chosen after their exits
    mixed = claim4([leaves, leaves, flat], [agree, weak, chance])
    assert mixed.holds == "partly" and mixed.partly_rule.endswith("(yes, partly)")
    # only one seed left: not reached (a majority must have left), whatever its functions look like
    one = claim4([leaves, flat, flat], [agree, agree, agree])
    assert one.holds == "not_reached" and one.test_outcome == "undecided"
    # without the longer runs' agreement, the chapter's run alone decides (here: on its plateau)
    alone = sinewave.verdicts(steps, flat, Checkpoint(0, 50.0, {}, ""), 18.0, 5.0, chapter_corr, cal,
                        longer=[(steps, leaves, ck)] * 3, **kw)[3]
    assert alone.holds == "not_reached" and "longer runs" not in alone.evidence + alone.post_hoc
    with pytest.raises(ValueError, match="one per longer run"):
        claim4([leaves, leaves, flat], [agree])


def test_the_study_gives_the_longer_runs_plateau_ends_and_claim_4_per_seed(cpu_study):
    st = cpu_study
    ends, outcomes = st.long_plateau_ends(), st.long_outcomes()
    assert len(ends) == len(outcomes) == len(st.long_runs["text"]) and len(st.long_plateau_ends("script")) == 1
    claim4 = st.verdicts()[3]
    for a, e, o in zip(st.long_agreement, ends, outcomes):       # the verdict's evidence is these outcomes
        assert o == ("undecided" if e is None else sinewave.resemble_outcome(a.corr, a.null_q))
        assert f"seed {a.seed}, step {a.step:,}{'' if e is not None else ' (on its plateau)'}: {o}," in claim4.evidence
    pick = st.long_example()
    cks = st.long_checkpoints()
    left = [k for k, e in enumerate(ends) if e is not None]
    assert pick in (left or range(len(cks))) and all(cks[pick].val_loss <= cks[k].val_loss for k in left)


def test_without_longer_runs_the_study_has_no_per_seed_data():
    st = sinewave.SinewaveStudy(*[None] * 8)                     # profiles without longer runs (ci)
    assert st.long_plateau_ends() == [] and st.long_outcomes() == [] and st.long_example() is None


def test_a_note_on_the_longer_runs_marks_only_the_claims_judged_on_them():
    steps, flat = np.arange(0, 1001, 100), np.full(11, 50.0)
    leaves = np.array([50, 50, 49, 50, 49, 40, 30, 20, 15, 12, 10.0])
    corr, ck = {"f": -0.9, "g_lin": 0.9}, Checkpoint(1000, 10.0, {}, "")
    agree = [sinewave.SeedAgreement(k, 900, {"f": -0.9, "g_lin": -0.8}, {"f": 0.3, "g_lin": 0.3}) for k in range(3)]
    v = sinewave.verdicts(steps, flat, Checkpoint(0, 50.0, {}, ""), 18.0, 5.0, corr, calibration(corr),
                    thesis_plateau_end=500, longer=[(steps, leaves, ck)] * 3, long_agreement=agree, longer_note="NOTE")
    assert ["NOTE" in x.post_hoc for x in v] == [True, True, False, True]


def test_the_plans_rows_come_once_all_five_thesis_budget_runs_are_finished(tmp_path):
    """P1.1-P1.7 from five finished runs (tiny stand-ins for the thesis-budget ones, with the
    plan's S, checkpoint window and exit window scaled down); before the fifth finishes, none."""
    from mplp.meta.source import Store

    cfgs = [sinewave.chapter_config(s, 12, 4, 4, "prediction_target", [1.0, 1.0], False)
            .replace(**{"meta.T": 6, "meta.K": 3, "validation.n_runs": 2}) for s in range(5)]
    store = Store(tmp_path)
    store.train(cfgs[:4])
    kw = dict(cfgs=cfgs, S=12, window=(4, 8), lo=2, hi=6)
    assert sinewave.confirmed_rows(store, 2, **kw) == []
    store.train(cfgs[4:])
    rows = sinewave.confirmed_rows(store, 2, **kw)
    assert [v.claim.split(":")[0] for v in rows] == [f"P1.{k}" for k in range(1, 8)]
    assert all(v.stage == "confirmatory" and v.seeds == "5 seeds, 12 outer steps" for v in rows)
    assert [v.row for v in rows] == [v.claim.split(":")[0] for v in rows]
    assert confirm.in_words(rows[:2]) == f"P1.1 {rows[0].label}; P1.2 {rows[1].label}" and confirm.in_words([]) == ""
    # the plan's checkpoint of each run, as chapter 1 marks it; none while no run has reached the window
    runs = confirm.complete_runs(store, cfgs)
    assert [c.step for c in sinewave.thesis_checkpoints(runs, (4, 8))] == [
        analysis.choose_checkpoint(r, (4, 8)).step for r in runs]
    assert sinewave.thesis_checkpoints(runs, (100, 130)) == []
    # the readings (input ranges, inner training for 3T) are stored: a read-only store gives the same rows
    again = sinewave.confirmed_rows(Store(tmp_path, read_only=True), 2, **kw)
    assert [(v.claim, v.holds, v.evidence) for v in again] == [(v.claim, v.holds, v.evidence) for v in rows]
    inner = list((tmp_path / "sinewave_inner_checkpoint").iterdir())
    assert len(inner) == 10                                  # at the checkpoint and at θ₀


def test_a_run_without_a_finite_checkpoint_fails_p1_6_and_ranks_last_in_p1_7():
    """Amendment A4: no finite validation at a snapshot in the window is no checkpoint, not an error."""
    from types import SimpleNamespace

    def no_checkpoint(run, window):
        raise ValueError("no snapshot in steps 100,000-130,000 has a finite validation loss")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sinewave, "choose_checkpoint", no_checkpoint)
        reading = sinewave.thesis_reading(SimpleNamespace(snapshots=lambda: {110_000: {}}), 0.1, 2, None)
        assert reading == sinewave.confirm.SinewaveReading(False, True, amended=("P1.6", "P1.7"))
        with pytest.raises(ValueError, match="finite"):              # no snapshot in the window at all: an error
            sinewave.thesis_reading(SimpleNamespace(snapshots=lambda: {90_000: {}}), 0.1, 2, None)


def test_the_plans_sgd_reading_compares_the_last_tenth_of_3T():
    """P1.7's reading: tuned SGD below the MPLP in the mean inner loss of the last tenth of the 3T steps."""
    from types import SimpleNamespace

    from mplp.claims.analysis import InnerComparison

    T = 10
    mplp = np.tile(np.r_[np.full(27, 5.0), np.full(3, 1.0)], (4, 1))      # low only in the last tenth
    sgd = np.full((4, 3 * T), 2.0)
    cmp = InnerComparison({"mplp": mplp, "sgd": sgd}, {}, {"sgd": 0.1}, T)

    class OneStore:
        def load_or_compute(self, experiment, key, compute, cls):
            return cmp
    run = SimpleNamespace(config=sinewave.chapter_config(0, 12, 4, 4, "prediction_target", [1.0, 1.0], False)
                          .replace(**{"meta.T": T}))
    ck = Checkpoint(4, 1.0, {}, "")
    agreement = sinewave.SeedAgreement(0, 4, {"f": 0.9}, {"f": 0.5})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sinewave, "choose_checkpoint", lambda r, w: ck)
        mp.setattr(sinewave, "seed_agreement", lambda *a: agreement)
        reading = sinewave.thesis_reading(run, 0.1, 2, OneStore())
    assert reading == sinewave.confirm.SinewaveReading(True, False)       # SGD 2.0 is not below the MPLP's 1.0
    # a diverged MPLP inner loss counts as +inf (A4): SGD is below it
    cmp.loss["mplp"][0, -1] = np.nan
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sinewave, "choose_checkpoint", lambda r, w: ck)
        mp.setattr(sinewave, "seed_agreement", lambda *a: agreement)
        assert sinewave.thesis_reading(run, 0.1, 2, OneStore()) == sinewave.confirm.SinewaveReading(True, True, ("P1.7",))
