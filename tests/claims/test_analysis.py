import numpy as np
import pytest
import torch

from mplp.claims.analysis import choose_checkpoint

from mplp.claims.readings import agreement, learned_function, read_activation, record_input_ranges
from mplp.book.plotting import sgd_function
from mplp.meta.loop import train

from helpers import calibration, tiny_config

M1 = {"learner.message_size": 1, "learner.batch_norm": False, "learner.loss_inputs": "prediction_target"}


def test_checkpoint_rule_and_learned_functions(tmp_path):
    cfg = tiny_config(**M1, **{"meta.S": 8, "validation.every": 2, "snapshot_every": 4})
    run = train(cfg, tmp_path, progress=False)
    ck = choose_checkpoint(run)
    kept = {0, 4, 8}
    losses = dict(zip(run.validation["step"].astype(int), run.validation["val_loss"]))
    assert ck.step in kept and ck.val_loss == min(losses[s] for s in kept)
    fn = learned_function(ck.theta, "f")
    a = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    assert fn(a, a).shape == (1, 2)
    with pytest.raises(ValueError, match="batch-norm"):
        learned_function(ck.theta, "f", spec_batch_norm=True)


def test_recorded_ranges_cover_the_inputs(tmp_path):
    cfg = tiny_config(**M1, **{"meta.S": 2})
    run = train(cfg, tmp_path, progress=False)
    r = record_input_ranges(cfg, run.theta, n_tasks=2, per_call=64)
    assert set(r.ranges) == {"f", "g_lin", "g_loss", "g_relu"}
    for k, ((a0, a1), (b0, b1)) in r.ranges.items():
        assert a0 <= a1 and b0 <= b1
        s = r.samples[k]
        assert s.shape[1] == 2 and ((s[:, 0] >= a0) & (s[:, 0] <= a1)).mean() >= 0.9
    # g_loss inputs are [prediction, target]: targets are the sinewave values in [-a, a]
    assert r.ranges["g_loss"][1][1] <= 2.0


def test_agreement_sign_and_activation_reading():
    f = sgd_function("f")
    assert agreement(f, f, (-1, 1), (-1, 1)) == pytest.approx(1.0)
    assert agreement(f, lambda a, b: -f(a, b), (-1, 1), (-1, 1)) == pytest.approx(-1.0)
    r = read_activation(sgd_function("g_relu"), (-2, 2), (-3, 3), min_abs_m=0.5)
    assert np.allclose(r.derivative, (r.z > 0).astype(float))
    assert np.abs(r.antiderivative - r.relu).max() < 0.05      # the SGD g_relu integrates to ReLU


def test_fit_example_and_plateau(tmp_path):
    from mplp.claims.analysis import plateau_end
    from mplp.claims.readings import fit_example

    cfg = tiny_config(**M1, **{"meta.S": 2})
    run = train(cfg, tmp_path, progress=False)
    ex = fit_example(cfg, run.theta, seed=3, n=50)
    assert ex.x.shape == ex.target.shape == ex.after.shape == (50,)
    assert np.allclose(ex.target, ex.amplitude * np.sin(ex.x + ex.phase))
    assert ex.losses.shape == (cfg.meta.T,)
    steps = np.array([0, 10, 20, 30, 40])
    assert plateau_end(steps, np.array([10.0, 9.8, 8.5, 9.5, 7.0])) == 40
    assert plateau_end(steps, np.array([10.0, 9.8, 8.5, 8.0, 7.0])) == 20
    assert plateau_end(steps, np.array([10.0, 9.8, 9.9, 9.5, 9.7])) is None


def test_compare_panels():
    import matplotlib

    matplotlib.use("Agg")
    from mplp.book.plotting import compare_panels

    f = sgd_function("f")
    fig = compare_panels({"f": (f, f), "g_lin": (f, f)}, {"f": ((-1, 1), (-1, 1)), "g_lin": ((-1, 1), (-1, 1))}, n=5)
    assert len(fig.axes) == 4


def test_inner_comparison_starts_every_optimizer_from_the_same_inits():
    from mplp.claims.analysis import compare_inner_training
    from mplp.core.learners import init_theta
    from mplp.core.learners import learner_spec

    cfg = tiny_config(**{"task.name": "mnist", "task.subset": 320, "task.batch_size": 8,
                         "optimizee.sizes": (784, 6, 10), "optimizee.loss": "xent"})
    theta = init_theta(learner_spec(cfg), torch.Generator().manual_seed(0))
    cmp = compare_inner_training(cfg, theta, {"sgd": 0.1, "adam": 0.01}, n_inits=3, steps=2 * cfg.meta.T)
    assert set(cmp.loss) == set(cmp.accuracy) == {"mplp", "sgd", "adam"} and cmp.T == cfg.meta.T
    for name in cmp.loss:
        assert cmp.loss[name].shape == cmp.accuracy[name].shape == (3, 18)
        assert np.isfinite(cmp.loss[name]).all() and ((0 <= cmp.accuracy[name]) & (cmp.accuracy[name] <= 1)).all()
    # step 0 is before any update: identical inits and batch give identical loss and accuracy
    np.testing.assert_allclose(cmp.loss["sgd"][:, 0], cmp.loss["mplp"][:, 0], rtol=1e-5)
    np.testing.assert_array_equal(cmp.accuracy["adam"][:, 0], cmp.accuracy["mplp"][:, 0])
    assert not np.allclose(cmp.loss["sgd"][:, 1], cmp.loss["mplp"][:, 1])            # then they part
    assert not np.allclose(cmp.loss["mplp"][0], cmp.loss["mplp"][1])                  # the inits differ
    with pytest.raises(ValueError, match="validation split has 40 batches, fewer than T=41"):
        compare_inner_training(cfg, theta, {}, n_inits=1, steps=41)


def test_sinewave_verdicts_follow_the_policy():
    from mplp.claims.analysis import Checkpoint
    from mplp.chapters.sinewave import verdicts as sinewave_verdicts

    steps = np.arange(0, 1001, 100)
    kw = dict(thesis_plateau_end=500)       # a 1,000-step run standing for the thesis' 50k
    flat_then_down = np.array([50, 50, 49, 50, 49, 40, 30, 20, 15, 12, 10.0])
    ck = Checkpoint(1000, 10.0, {}, "")
    corr = {"f": -0.95, "g_lin": 0.9, "g_loss": -0.99, "g_relu": 0.85}
    v = sinewave_verdicts(steps, flat_then_down, ck, 18.0, 5.0, corr, calibration(corr), **kw)
    # worse than Adam: true, but the untrained optimizer (step 0: 50) is worse too; better than
    # SGD: true, but a final-loss claim on a run still falling short of the thesis' steps (rule 1)
    assert [x.holds for x in v] == ["yes", "not_reached", "trivial", "yes"] and "step 500" in v[0].evidence
    assert v[1].test_outcome == "yes"
    settled = np.array([50, 50, 49, 50, 40, 15, 15, 15, 15, 15, 15.0])
    assert sinewave_verdicts(steps, settled, ck, 18.0, 5.0, corr, calibration(corr), **kw)[1].holds == "yes"
    weak = {"f": -0.95, "g_lin": -0.1, "g_loss": 0.2, "g_relu": 0.85}    # one beyond chance, signs +
    assert sinewave_verdicts(steps, flat_then_down, ck, 18.0, 5.0, weak, calibration(weak), **kw)[3].holds == "partly"
    # correlations as strong as random learners give are not agreement
    assert sinewave_verdicts(steps, flat_then_down, ck, 18.0, 5.0, corr, calibration(corr, null=0.99),
                             **kw)[3].holds == "no"
    flat = {"f": 0.1, "g_lin": 0.9, "g_loss": -0.2, "g_relu": float("nan")}
    never = sinewave_verdicts(steps, np.full(11, 50.0), Checkpoint(0, 50.0, {}, ""), 18.0, 5.0, flat,
                              calibration(flat), **kw)
    assert [x.holds for x in never] == ["not_reached", "not_reached", "trivial", "not_reached"]
    assert [x.test_outcome for x in never] == ["undecided", "no", "yes", "no"]
    two = {"f": -0.9, "g_lin": 0.9}
    at_once = sinewave_verdicts(steps, np.array([50, 40] + [30.0] * 9), ck, 18.0, 11.0, two, calibration(two), **kw)
    assert [x.holds for x in at_once] == ["no", "yes", "no", "no"]    # ends too early; sign product negative


def test_a_diverging_first_validation_is_not_an_escape_from_the_plateau():
    from mplp.claims.analysis import initial_level, plateau_end

    steps = np.arange(8) * 100
    diverged_first = np.array([668.0, 229, 229, 228, 229, 229, 228, 228])
    assert initial_level(diverged_first) == 229 and plateau_end(steps, diverged_first) is None
    learns = np.array([230.0, 229, 228, 200, 150, 120, 100, 90])
    assert initial_level(learns) == 230 and plateau_end(steps, learns) == 300


def test_continuation_is_where_runs_were_extended_and_how_many_had_left_by_then():
    from pathlib import Path

    from mplp.store import RunResult
    from mplp.claims.analysis import Continuation, continuation

    def run(losses, resumes):
        v = {"step": np.arange(len(losses)) * 100, "val_loss": np.asarray(losses, float)}
        return RunResult(Path("."), tiny_config(), v, {}, {}, {"resumes": resumes})

    ext = [{"step": 300, "extended_from": "a"}]
    early, late = run([5, 4, 3, 3, 3, 3], ext), run([5, 5, 5, 5, 3, 3], ext)      # leave at 100 and at 400
    assert continuation([early, late]) == Continuation(300, 1, 2)
    assert continuation([early, run([5] * 6, [])]) is None and continuation([]) is None   # not every run continued
    assert continuation([early, late], counted=[late]).note("late") == \
        "the runs continued past 300 steps after they were seen there (0 of 1 late off the plateau)"


def test_crossings_give_the_first_drop_below_the_plateau_line_and_the_returns():
    from mplp.claims.analysis import Crossings, crossings, plateau_end

    steps, v = np.arange(6) * 100, np.array([10, 8, 9.5, 8, 20, 7.0])     # line at 9: below at 100, back at 200, 400
    assert crossings(steps, v) == Crossings(100, 2, 20.0) and plateau_end(steps, v) == 500
    assert crossings(steps, np.full(6, 10.0)) == Crossings(None, 0, None)


def test_checkpoint_within_a_window(tmp_path):
    cfg = tiny_config(**M1, **{"meta.S": 8, "validation.every": 2, "snapshot_every": 2})
    run = train(cfg, tmp_path, progress=False)
    ck = choose_checkpoint(run, window=(4, 6))
    losses = dict(zip(run.validation["step"].astype(int), run.validation["val_loss"]))
    assert ck.step in (4, 6) and ck.val_loss == min(losses[4], losses[6]) and "between steps 4 and 6" in ck.rule
    with pytest.raises(ValueError, match="in steps 20-30"):
        choose_checkpoint(run, window=(20, 30))


def test_a_diverged_validation_counts_as_the_worst_value_in_the_plateau_exit():
    """The plan: a non-finite validation loss counts as +inf in every quantity; NaN too, so a NaN
    inside the held window does not void the exit, and one at the start does not void the line."""
    from mplp.claims.analysis import plateau_exit

    steps = np.arange(0, 3000, 100)
    losses = np.r_[np.full(10, 50.0), np.full(20, 20.0)]          # exits at step 1,000
    assert plateau_exit(steps, losses, 500) == 1000
    spiked = losses.copy()
    spiked[12] = np.nan                                          # one diverged validation after the exit
    assert plateau_exit(steps, spiked, 500) == 1000 == plateau_exit(steps, np.where(np.isnan(spiked), np.inf, spiked), 500)
    early = losses.copy()
    early[2] = np.nan                                            # among the three that set the initial level
    assert plateau_exit(steps, early, 500) == 1000
