"""Chapter 6: one trainer for four learned optimizers (configs differ in the learner only), the
paper profile reusing the plan's thesis-budget MPLP runs, the queue's order, the questions'
rules on made-up curves, the cost probe, and Randazzo et al.'s sinusoid check."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mplp.chapters import learned_optimizers as lo
from mplp.chapters import mnist_be, randazzo_sinusoid, sinewave
from mplp.chapters.profiles import load_profile


def _shared(cfg):
    d = cfg.to_dict()
    d["meta"].pop("hint_weight")
    return {k: d[k] for k in ("optimizee", "task", "meta", "validation", "seed")}


@pytest.mark.parametrize("task", lo.TASKS)
def test_the_optimizers_differ_only_in_their_learner(task):
    st = lo.settings(load_profile("learned_optimizers", "cpu"))[task]
    cfgs = lo.configs(st)
    for name in lo.NAMES:
        assert [c.seed for c in cfgs[name]] == list(lo.SEEDS)
        assert [_shared(c) for c in cfgs[name]] == [_shared(c) for c in cfgs["MPLP"]]
    assert [cfgs[n][0].learner.kind for n in lo.NAMES] == ["neural", "l2l", "mlp-optimizer", "stateful-mplp"]
    assert cfgs["stateful MPLP"][0].meta.hint_weight == 1.0 and cfgs["L2L"][0].meta.hint_weight == 0.0
    assert cfgs["stateful MPLP"][0].learner.message_size == lo.STATEFUL_MESSAGE[task]


def test_the_paper_profile_reuses_the_plans_thesis_budget_mplp_runs():
    p = load_profile("learned_optimizers", "paper")
    sets = lo.settings(p)
    sine = lo.configs(sets["sinewave"], p["seeds"], ("MPLP",))["MPLP"]
    mnist = lo.configs(sets["mnist"], p["seeds"], ("MPLP",))["MPLP"]
    assert [c.hash() for c in sine] == [c.hash() for c in sinewave.thesis_runs()[:3]]
    assert [c.hash() for c in mnist] == [c.hash() for c in mnist_be.thesis_runs()[1][:3]]     # the term on


def test_the_queue_puts_the_longest_population_first_and_trains_what_the_profile_says():
    p = load_profile("learned_optimizers", "cpu")
    pops = lo.plan(p)
    assert {c.learner.kind for c in pops[0]} == {"stateful-mplp"} and pops[0][0].task.name == "sinewave"
    assert pops[-1][0].experiment == "randazzo_sinusoid"
    assert not any(c.task.name == "mnist" and c.learner.kind == "stateful-mplp" for pop in pops for c in pop)
    assert len(pops) == 4 + 3 + 1 and lo.trained_names("mnist", {**p, "mnist_stateful": True}) == lo.NAMES


def _task(curves: dict[str, list[list[float]]], S: int = 1000, running: str = "") -> lo.TaskResults:
    def run(name, c):
        done = name != running
        steps = np.linspace(0, S if done else S // 2, len(c))
        return SimpleNamespace(validation={"step": steps, "val_loss": np.array(c, float)}, finished=done,
                               meta={"status": "complete" if done else "running", "steps_done": int(steps[-1])})
    runs = {name: [run(name, c) for c in cs] for name, cs in curves.items()}
    return lo.TaskResults(lo.Setting("sinewave", S, S // 10, 200), runs, {}, {}, None)


FLAT = [10.0] * 11
EARLY = [10.0] + [5.0] * 10            # leaves the plateau at the first validation after step 0
LATE = [10.0] * 6 + [5.0] * 5


@pytest.mark.parametrize("mplp, other, answer", [
    ([[4.0] * 11] * 3, [[5.0] * 11] * 3, "yes"),
    ([[5.0] * 11] * 3, [[5.0] * 11] * 3, "yes"),                 # equal medians: reached
    ([[6.25] * 11] * 3, [[5.0] * 11] * 3, "partly"),              # exactly 1.25 times
    ([[6.3] * 11] * 3, [[5.0] * 11] * 3, "no"),
    ([[float("nan")] * 11] * 3, [[float("nan")] * 11] * 3, "undecided")])
def test_question_1_compares_median_final_losses(mplp, other, answer):
    v = lo._q1("sinewave", _task({"MPLP": mplp, "L2L": other}), "L2L")
    assert v.holds == answer and v.kind == "question"
    assert v.label.startswith({"undecided": "not decidable"}.get(answer, answer))


@pytest.mark.parametrize("stateful, stateless, answer", [
    ([EARLY] * 3, [FLAT] * 3, "yes"),
    ([EARLY, EARLY, FLAT], [LATE, FLAT, FLAT], "partly"),
    ([FLAT] * 3, [EARLY] * 3, "no"),
    ([FLAT] * 3, [FLAT] * 3, "undecided")])
def test_question_2_compares_plateau_exits(stateful, stateless, answer):
    v = lo._q2("sinewave", _task({"MPLP": stateless, "stateful MPLP": stateful}))
    assert v.holds == answer


def test_the_plateau_levels_show_where_each_mplp_began_and_ended():
    tr = _task({"MPLP": [FLAT, FLAT, LATE], "stateful MPLP": [[10.0] * 10 + [9.5]] * 3})
    assert tr.levels("MPLP") == (10.0, 10.0) and tr.levels("stateful MPLP") == (10.0, 9.5)
    st = lo.LearnedOptimizersStudy({"sinewave": tr}, None, 0, None, None)
    assert lo._plateau_levels(st) == ("sinewave: stateful MPLP from 10 to 9.5 (exit line 9), "
                                      "MPLP from 10 to 10 (exit line 9)")
    tr.runs["stateful MPLP"][0].finished = False
    assert lo._plateau_levels(st) == "no task with both finished in this profile"


def test_the_cost_probe_times_outer_steps_and_counts_only_trained_numbers():
    from helpers import tiny_config

    cfg = tiny_config(**{"learner.kind": "stateful-mplp", "learner.hidden": 6, "learner.batch_norm": False,
                         "learner.learned_lr": False, "learner.message_size": 2})
    c = lo.measure_cost(cfg, steps=1)
    trainer_theta = lo.MetaTrainer(cfg).init_state().theta
    assert c.ms_per_step > 0 and c.steps == 1
    assert c.n_theta == sum(v.numel() for k, v in trainer_theta.items() if not k.endswith(lo.FIXED)) < \
        sum(v.numel() for v in trainer_theta.values())


def test_randazzos_setting_and_its_evaluation():
    cfg = randazzo_sinusoid.config(S=10, seed=0)
    assert (cfg.meta.K, cfg.meta.T, cfg.meta.unroll, cfg.meta.hint_weight) == (6, 6, "text", 1.0)
    assert cfg.task.batch_size == 10 and cfg.task.amplitude == (0.1, 0.5) and cfg.optimizee.sizes == (1, 20, 20, 1)
    theta = lo.MetaTrainer(cfg).init_state().theta
    c = randazzo_sinusoid.evaluate(cfg, theta, n=8, lrs=(0.01, 0.1))
    assert c.mplp.shape == c.adam.shape == c.adam_tuned.shape == (8, randazzo_sinusoid.STEPS + 1)
    assert np.allclose(c.mplp[:, 0], c.adam[:, 0])                   # the same tasks and initialisations
    # the zero output's loss is A^2 mean(sin^2) / 2 over the grid: about A^2 / 4
    assert np.all((c.zero > 0.1 ** 2 / 4 * 0.8) & (c.zero < 0.5 ** 2 / 4 * 1.2))
    assert c.tuned_lr in (0.01, 0.1) and c.ratio("zero") > 0 and np.isfinite(c.ratio("adam"))


def test_a_question_whose_runs_still_train_is_not_decided():
    tr = _task({"MPLP": [FLAT] * 3, "stateful MPLP": [EARLY] * 3, "L2L": [FLAT] * 3}, running="stateful MPLP")
    q2 = lo._q2("sinewave", tr)
    assert q2.holds == "not_reached" and "stateful MPLP at 500" in q2.evidence
    assert lo._q1("sinewave", tr, "L2L").holds != "not_reached"         # its runs are complete
    tr.costs = {n: lo.Cost(1.0, 10, 1) for n in lo.NAMES}
    row = next(r for r in tr.table() if r["optimizer"] == "stateful MPLP")
    assert row["outer steps"] == 500 and np.isnan(row["final loss"]) and np.isnan(tr.finals("stateful MPLP")).all()


def _study(quad_finals: dict, sin: dict, finished: bool = True) -> lo.LearnedOptimizersStudy:
    q = lo.l2l_quadratics.QuadraticStudy({k: np.array([1.0, f.mean()]) for k, f in quad_finals.items()},
                                         {"SGD": 0.1, "Adam": 0.1}, np.zeros(3), quad_finals)
    c = randazzo_sinusoid.SinusoidCheck(sin["mplp"], sin["adam"], sin["adam"], 0.01, [0.01], sin["zero"])
    run = SimpleNamespace(config=randazzo_sinusoid.config(S=10, seed=0), finished=finished,
                          meta={"steps_done": 10 if finished else 4, "status": "complete" if finished else "running"})
    return lo.LearnedOptimizersStudy({}, q, 10, c, run)


def test_the_own_paper_verdicts_follow_their_rules():
    n = 20
    best, worse = np.full(n, 1.0), np.full(n, 2.0)
    curves = lambda final: np.tile(np.linspace(1.0, final, 6), (n, 1))
    good = {"mplp": curves(0.01), "adam": curves(0.05), "zero": np.full(n, 0.03)}
    st = _study({"L2L": best * 0.5, "SGD": worse, "Adam": best}, good)
    l2l, randazzo = st.verdicts()[:2]
    assert (l2l.holds, l2l.kind, randazzo.holds, randazzo.kind) == ("yes", "andrychowicz", "yes", "randazzo")
    st = _study({"L2L": best * 1.5, "SGD": worse, "Adam": best},            # below SGD only
                {**good, "mplp": curves(0.04)})                              # below Adam, not by half
    l2l, randazzo = st.verdicts()[:2]
    assert (l2l.holds, randazzo.holds) == ("partly", "partly")
    st = _study({"L2L": worse * 2, "SGD": worse, "Adam": best}, {**good, "mplp": curves(0.06)})
    assert [v.holds for v in st.verdicts()[:2]] == ["no", "no"]
    # by half below Adam, but not below half of the zero output: it does not fit the task
    st = _study({"L2L": best * 0.5, "SGD": worse, "Adam": best}, {**good, "adam": curves(0.1), "zero": np.full(n, 0.015)})
    assert st.verdicts()[1].holds == "partly"
    # a run still training is shown as it stands and decides nothing yet
    v = _study({"L2L": best * 0.5, "SGD": worse, "Adam": best}, good, finished=False).verdicts()[1]
    assert (v.holds, v.test_outcome) == ("not_reached", "yes") and "4 of 10 outer steps" in v.evidence


def test_the_stateful_mplp_is_meta_trained_by_truncated_bptt_only():
    from helpers import tiny_config
    from mplp.core.config import ConfigError

    with pytest.raises(ConfigError, match="meta.estimator: 'stateful-mplp' is meta-trained by truncated BPTT only"):
        tiny_config(**{"learner.kind": "stateful-mplp", "learner.batch_norm": False, "learner.learned_lr": False,
                       "meta.estimator": "es"})
