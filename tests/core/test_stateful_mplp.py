"""The stateful MPLP of Randazzo et al. (2020) behind the learned-optimizer interface: shapes,
members on a leading dimension, the calibration of its standardisation and output scale, the
hint loss, and the meta-gradient against finite differences."""

import math

import pytest
import torch

from mplp.core.config import MetaConfig, OptimizeeConfig
from mplp.core.learned_optimizer import LearnedOptimizer
from mplp.core.optimizee import init_params, loss_value
from mplp.core.stateful_mplp import StatefulMPLP

from helpers import meta_gradient_along, random_batch

OPT = OptimizeeConfig(sizes=(2, 3, 1), activation="relu", loss="mse")
META = MetaConfig(K=3, T=9, S=1, outer_lr=1e-3)
FIXED = lambda key: key.endswith(("in_mean", "in_std", "out_mean"))


def _batches(n, gen, sizes=OPT.sizes, B=4, loss="mse"):
    b = [random_batch(sizes, loss, B, gen) for _ in range(n)]
    return torch.stack([x for x, _ in b]), torch.stack([y for _, y in b])


def _setup(seed=0, opt=OPT, m=2, hidden=6):
    s = StatefulMPLP(opt, message_size=m, hidden=hidden)
    gen = torch.Generator().manual_seed(seed)
    theta = s.init_theta(gen, torch.float64)
    params = init_params(opt.sizes, gen, torch.float64)
    return s, gen, theta, params


def test_shapes_and_the_carried_state():
    s, gen, theta, params = _setup()
    assert isinstance(s, LearnedOptimizer) and s.carry == 6
    assert set(s.nodes()) == {"loss", "act0", "w0", "b0", "w1", "b1"}
    assert theta["w0.W_ux"].shape == (4, 6) and theta["w0.mx.w1"].shape == (4, 6) and theta["w0.mx.w2"].shape == (6, 3)
    state = s.init_state(params)
    # params, then the loss node's carries, the hidden layer's, and each layer's weights and biases
    assert [tuple(t.shape) for t in state[2:]] == [(1, 6), (3, 6), (2, 3, 6), (3, 6), (3, 1, 6), (1, 6)]
    xs, ys = _batches(3, gen)
    r = s.unroll(theta, state, xs, ys, META)
    assert r.losses.shape == (3,) and r.entropy.shape == (3, 1)
    assert [a.shape for a in r.params] == [a.shape for a in state]
    assert any(not torch.equal(a, b) for a, b in zip(r.params[2:], state[2:]))      # the carries moved


def test_members_on_a_leading_dimension_run_as_if_alone():
    """A population (theta, params and batches stacked) equals its members run one by one, each
    with its own calibrated constants."""
    s = StatefulMPLP(OPT, message_size=2, hidden=6)
    members = []
    for seed in (1, 2):
        gen = torch.Generator().manual_seed(seed)
        theta, params = s.init_theta(gen, torch.float64), init_params(OPT.sizes, gen, torch.float64)
        theta = s.calibrate(theta, [p[None] for p in params], *(t[:1] for t in _batches(1, gen)))
        members.append((theta, params, *_batches(3, gen)))
    assert not torch.equal(members[0][0]["w1.in_mean"], members[1][0]["w1.in_mean"])
    alone = [s.unroll(th, s.init_state(p), xs, ys, META) for th, p, xs, ys in members]
    theta = {k: torch.stack([m[0][k] for m in members]) for k in members[0][0]}
    params = [torch.stack(ps) for ps in zip(*(m[1] for m in members))]
    xs, ys = torch.stack([m[2] for m in members], 1), torch.stack([m[3] for m in members], 1)
    both = s.unroll(theta, s.init_state(params), xs, ys, META)
    for i, a in enumerate(alone):
        assert torch.allclose(both.total[i], a.total, rtol=1e-12)
        assert all(torch.allclose(x[i], y, rtol=1e-10, atol=1e-14) for x, y in zip(both.params, a.params))


def test_calibration_centres_the_inputs_and_the_first_updates():
    """After ``calibrate`` the calibration minibatch's GRU inputs are standardised (recorded mean
    and std), its mean update is zero, and each layer's scale is 0.2 times its weights' std."""
    s, gen, theta, _ = _setup(3)
    params = [torch.stack(ps) for ps in zip(*(init_params(OPT.sizes, gen, torch.float64) for _ in range(4)))]
    xs, ys = _batches(4, gen)                                   # four problems' first minibatches
    cal = s.calibrate(theta, params, xs, ys)
    assert set(cal) == set(theta) and all(torch.isfinite(v).all() for v in cal.values())
    assert not torch.equal(cal["w1.in_mean"], theta["w1.in_mean"]) and (cal["w1.in_std"] >= 1e-3).all()
    for l, w in enumerate(params):
        assert math.isclose(float(cal[f"scale{l}"]), 0.2 * float(w[..., :-1, :].std()), rel_tol=1e-12)
    _, new, _ = s.step(cal, s.init_state(params), xs, ys)
    for w_new, w in zip(new[:2], params):
        assert abs(float((w_new - w)[..., :-1, :].mean())) < 1e-12      # the weights' updates: mean zero
    # the recorded statistics standardise the rows they were recorded on
    record = {}
    s.step(cal, s.init_state(params), xs, ys, True, record)
    assert torch.allclose(record["w1.in_mean"], cal["w1.in_mean"]) and torch.allclose(record["loss.in_std"], cal["loss.in_std"])


def test_the_hint_loss_is_each_steps_loss_on_its_own_batch_after_its_update():
    s, gen, theta, params = _setup(4)
    xs, ys = _batches(3, gen)
    plain = s.unroll(theta, s.init_state(params), xs, ys, META)
    hinted = s.unroll(theta, s.init_state(params), xs, ys, MetaConfig(K=3, T=9, S=1, hint_weight=0.5))
    state, hints = s.init_state(params), 0.0
    for x, y in zip(xs, ys):
        _, state, _ = s.step(theta, state, x, y)
        hints += float(loss_value("mse", state[:2], x, y, "relu"))
    assert math.isclose(float(hinted.total - plain.total), 0.5 * hints, rel_tol=1e-10)
    assert torch.equal(hinted.outer, plain.outer)


@pytest.mark.parametrize("loss, sizes", [("mse", (2, 3, 1)), ("xent", (3, 4, 3))])
def test_the_meta_gradient_matches_finite_differences(loss, sizes):
    opt = OptimizeeConfig(sizes=sizes, activation="tanh", loss=loss)
    s, gen, theta, params = _setup(5, opt)
    theta = s.calibrate(theta, [p[None] for p in params], *(t[:1] for t in _batches(1, gen, sizes, loss=loss)))
    xs, ys = _batches(3, gen, sizes, loss=loss)
    meta = MetaConfig(K=3, T=9, S=1, hint_weight=0.3)
    analytic, fd = meta_gradient_along(s, theta, s.init_state(params), xs, ys, meta, gen, fixed=FIXED)
    assert math.isclose(analytic, fd, rel_tol=1e-6, abs_tol=1e-9)


def test_the_recorded_constants_get_no_meta_gradient():
    s, gen, theta, params = _setup(6)
    xs, ys = _batches(3, gen)
    leaf = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    grads = torch.autograd.grad(s.unroll(leaf, s.init_state(params), xs, ys, META).total, list(leaf.values()),
                                allow_unused=True)
    assert all((g is None) == FIXED(k) for k, g in zip(theta, grads))


def test_one_sample_by_hand_eq_4_and_5():
    """With a batch of one, the step is the nodes' GRUs wired as the paper says: each loss node's
    carry gives its output's message, each weight node's carry its update (scaled, centred), and
    the message into a hidden unit is the mean over the weights it feeds (Eq. 5)."""
    opt = OptimizeeConfig(sizes=(2, 3, 2), activation="relu", loss="mse")
    s, gen, theta, params = _setup(7, opt)
    theta = s.calibrate(theta, [p[None] for p in params], *(t[:1] for t in _batches(1, gen, opt.sizes, B=4)))
    state = s.init_state(params)
    xs, ys = _batches(1, gen, opt.sizes, B=1)
    x, y = xs[0], ys[0]                                            # (1, 2), (1, 2)
    _, new, _ = s.step(theta, state, x, y)
    m, one = s.message_size, torch.ones(1, dtype=x.dtype)
    gru = lambda name, row, c: s._gru(theta, name, row[None], c, (), None)[0]
    z0 = torch.cat([x[0], one]) @ params[0]
    h = torch.relu(z0)
    out = torch.cat([h, one]) @ params[1]
    el = (out - y[0]) ** 2 / 2
    msg_out = [gru("loss", torch.stack([el[j], out[j], y[0, j]]), state[2][j])[:m] for j in range(2)]
    w1, c_w1 = params[1], state[6]                                 # layer 1: weights (3 + 1, 2), carries (3, 2, C)
    for i in range(3):
        cs = [gru("w1", torch.cat([msg_out[j], h[i:i + 1], w1[i, j:j + 1]]), c_w1[i, j]) for j in range(2)]
        for j, c in enumerate(cs):                                 # Eq. 4 with B = 1: the update is the carry's slot
            upd = theta["scale1"] * (c[m] - theta["w1.out_mean"])
            assert torch.allclose(new[1][i, j] - w1[i, j], upd, rtol=1e-10, atol=1e-13)
        into_i = (cs[0][:m] + cs[1][:m]) / 2                       # Eq. 5: the mean over the two weights unit i feeds
        c_act = gru("act0", torch.cat([into_i, z0[i:i + 1]]), state[3][i])
        assert torch.allclose(new[3][i], c_act, rtol=1e-10, atol=1e-13)
