"""The book's MPLP is the thesis' MPLP: the dense, fast (eager and compiled) and population
paths, the outer Adam and the meta-trainer against tensors computed by the thesis' own
released code (``tests/data/golden_reduced.pt.xz``, made by ``tests/data/reduce_golden.py``
from SimonsThijs/MPLP @ 31403b7 run by hand).  Tolerance: ``peer.REL_TOL`` relative in
float64; tensors zero up to rounding on both sides follow ``peer.ZERO_TOL`` (see mplp.chapters.peer)."""

import math

import pytest
import torch

from mplp.chapters import peer
from mplp.core.fast import engine, use_engine
from mplp.tasks.families import BatchTask
from mplp.meta.trainer import InnerState, MetaTrainer

SINE = ("sine64", "sine64_reset")
MNIST = ("mnist64", "mnist64_beoff", "mnist64_reset")


@pytest.fixture(scope="module")
def cases():
    return peer.load_reference()


def failing(rows):
    return [r for r in rows if not r.ok]


def test_reference_holds_every_setting_and_names_its_source(cases):
    assert set(cases) == set(SINE + MNIST)
    for c in cases.values():
        assert "31403b7" in c.settings["source"] and c.settings["dtype"] == "float64"
        assert len(c.truncs) == 3
    # the resets are there: sine64_reset and mnist64_reset start a new inner problem at truncation 3
    assert [t.reset for t in cases["sine64_reset"].truncs] == [True, False, True]
    assert [t.reset for t in cases["mnist64_reset"].truncs] == [True, False, True]
    assert cases["mnist64"].truncs[0].be_term > 0 and cases["mnist64_beoff"].truncs[0].be_term == 0


def test_shipped_configs_follow_the_released_code(cases):
    for c in cases.values():
        cfg = peer.config_for(c)                     # raises naming every field that differs
        assert cfg.meta.adam_bias_correction is False


@pytest.mark.parametrize("name", SINE + ("mnist64",))
def test_dense_reference_path_is_the_thesis_code(cases, name):
    rows = peer.compare(cases[name], peer.replay(cases[name], "dense"), "dense")
    assert not failing(rows), failing(rows)[:5]
    assert sum(not r.zero for r in rows) > 40     # every tensor was compared, not only the zero ones


@pytest.fixture(params=["eager", "compiled"], scope="module")
def backend(request):
    got = use_engine(request.param)
    if request.param == "compiled" and "compiled" not in got:
        pytest.skip(f"torch.compile unavailable here ({got})")
    yield request.param
    use_engine("eager")


@pytest.mark.parametrize("name", SINE + MNIST)
def test_fast_path_is_the_thesis_code(cases, name, backend):
    if backend == "compiled" and name not in ("sine64", "mnist64"):
        pytest.skip("compiled engine: one case per task (each compiles its own graphs, about a minute)")
    assert f"steps {backend}" in engine()
    rows = peer.compare(cases[name], peer.replay(cases[name], "fast"), "fast")
    assert not failing(rows), failing(rows)[:5]


@pytest.mark.parametrize("group", [SINE, MNIST])
def test_population_path_is_the_thesis_code(cases, group):
    """One batched program for the group (MNIST: the term on, off and on with a reset, as
    chapter 3 batches its on/off runs)."""
    for name, reps in peer.replay_population([cases[n] for n in group]).items():
        rows = peer.compare(cases[name], reps, "population")
        assert not failing(rows), failing(rows)[:5]


def test_zero_tensors_are_zero_on_both_sides_and_named(cases):
    """The tolerance rule's other branch: under batch-norm the message learners' output biases
    get meta-gradients of ~1e-16 from the code; ours must be as small."""
    rows = peer.compare(cases["mnist64"], peer.replay(cases["mnist64"], "fast"), "fast")
    zero = {r.quantity for r in rows if r.zero}
    assert {"grad g_lin.b2", "grad g_act.relu.b2", "grad g_loss.xent.b2"} <= zero
    assert "grad f.b2" not in zero                 # the update's bias is not normalised away
    assert all(math.isnan(r.error) and r.ok for r in rows if r.zero)


@pytest.mark.parametrize("name", SINE + MNIST)
def test_outer_adam_reproduces_theta_after_adam(cases, name):
    rows = peer.compare_adam(cases[name], peer.config_for(cases[name]).meta)
    assert rows and not failing(rows), failing(rows)[:5]


def test_negative_controls_fail(cases):
    """Perturbed conventions are caught: Kingma & Ba's bias correction, Algorithm 2 as
    printed, Eq. 6's 2 pi e, the loss learner without the loss input."""
    meta = peer.config_for(cases["sine64"]).meta
    import dataclasses

    assert failing(peer.compare_adam(cases["sine64"], dataclasses.replace(meta, adam_bias_correction=True)))
    text = peer.compare(cases["sine64"], peer.replay(cases["sine64"], "fast", {"meta.unroll": "text"}), "fast")
    assert {r.quantity for r in failing(text)} >= {"total", "grad f.w1"}
    be = peer.compare(cases["mnist64"], peer.replay(cases["mnist64"], "fast", {"meta.be_formula": "text"}), "fast")
    bad = {r.quantity for r in failing(be)}
    assert "be_term" in bad and "grad f.w1" in bad
    assert not any(q.startswith("inner W") or q == "step_losses" for q in bad)   # the trajectory is unchanged
    with pytest.raises(peer.ReferenceError, match="learner.loss_inputs"):
        peer.config_for(dataclasses.replace(cases["sine64"], settings={**cases["sine64"].settings,
                                                                       "loss_inputs": "prediction_target"}))


@pytest.mark.parametrize("name", ["sine64", "mnist64"])
def test_meta_trainer_on_the_shipped_config_takes_the_codes_first_outer_step(cases, name):
    """``mplp train``'s outer step (MetaTrainer.outer_step: unroll, meta-gradient, Adam) from
    the golden theta0, inner init and batches lands on the code's theta_after_adam.  Entries
    whose meta-gradient is at rounding level (|g| < ZERO_TOL * max |g|: dead learner units,
    the normalised-away biases) are left out: Adam scales their rounding noise up to a
    step of the same order as any other, on both sides alike."""
    case = cases[name]
    t = case.truncs[0]
    cfg = peer.config_for(case)
    trainer = MetaTrainer(cfg, dtype=torch.float64)
    st = trainer.init_state()
    st.theta = {k: v.clone() for k, v in case.theta0.items()}
    task = BatchTask(t.xs.flatten(0, 1), t.ys.flatten(0, 1), cfg.task.batch_size)
    st.inner = InnerState([p.clone() for p in t.first], 0, 0, task)
    losses = trainer.outer_step(st)
    assert abs(losses["outer_loss"] - t.total) <= peer.REL_TOL * abs(t.total)
    G = max(float(g.abs().max()) for g in t.grads.values())
    checked = 0
    for k, ref in t.theta_after_adam.items():
        live = t.grads[k].abs() >= peer.ZERO_TOL * G
        step, ref_step = (st.theta[k] - case.theta0[k])[live], (ref - case.theta0[k])[live]
        if live.any():
            assert float((step - ref_step).abs().max()) <= peer.REL_TOL * float(ref_step.abs().max()), k
        checked += int(live.sum())
    assert checked > 0.75 * sum(v.numel() for v in case.theta0.values())
    assert st.adam.step == 1 and st.skipped == 0


def test_missing_reference_is_a_clear_error(tmp_path):
    with pytest.raises(peer.ReferenceError, match="missing"):
        peer.load_reference(tmp_path / "nope.pt.xz")


@pytest.mark.parametrize("config_name", ["sinewave_table3", "mnist_table5", "ablation", "sinewave_m8_bn"])
def test_every_shipped_config_takes_the_codes_outer_adam_steps(cases, config_name):
    """Each shipped config's outer Adam (betas, eps, clip, lr, no bias correction) applied to the
    code's meta-gradients lands on its theta_after_adam, chained over the three truncations."""
    from mplp.core import config

    meta = config.shipped(config_name).meta
    for name in ("sine64", "mnist64"):
        rows = peer.compare_adam(cases[name], meta)
        assert rows and not failing(rows), (config_name, failing(rows)[:3])
