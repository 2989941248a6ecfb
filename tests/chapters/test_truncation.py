"""The truncation toy: the inner problem, momentum runs, Appendix A's gradient vs autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mplp.chapters.truncation import LATE, LandscapeRow, basin_reading, landscape, toy_estimates, verdicts
from mplp.chapters import truncation_toy
from mplp.chapters import truncation_lr


def test_toy_has_two_minima_and_consistent_derivatives():
    w = torch.linspace(-2, 5, 71, dtype=torch.float64).requires_grad_(True)
    (g,) = torch.autograd.grad(truncation_toy.toy_loss(w).sum(), w, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), w)
    assert torch.allclose(g, truncation_toy.toy_grad(w)) and torch.allclose(h, truncation_toy.toy_hess(w.detach()))
    assert truncation_toy.toy_grad(torch.tensor(0.0)) == 0 and truncation_toy.toy_hess(torch.tensor(0.0)) > 0
    w_glob = (21 + 57 ** 0.5) / 8
    assert abs(float(truncation_toy.toy_grad(torch.tensor(w_glob)))) < 1e-12 and truncation_toy.toy_loss(torch.tensor(w_glob)) < -3


def test_momentum_runs_match_torch_sgd():
    momenta = torch.tensor([0.0, 0.5, 0.9], dtype=torch.float64)
    traj = truncation_toy.momentum_trajectories(momenta, 30, lr=0.01)
    assert traj.shape == (3, 31) and (traj[:, 0] == truncation_toy.W0).all()
    for k, m in enumerate(momenta.tolist()):
        w = torch.tensor(truncation_toy.W0, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.SGD([w], lr=0.01, momentum=m)
        for _ in range(30):
            opt.zero_grad()
            truncation_toy.toy_loss(w).backward()
            opt.step()
        assert torch.allclose(w.detach(), traj[k, -1])
    assert torch.equal(truncation_toy.final_loss(momenta, 30, 0.01), truncation_toy.toy_loss(traj[:, -1]))


def test_appendix_a_formula_equals_autograd():
    lrs = torch.tensor([1e-3, 5e-3, 0.01, 0.02], dtype=torch.float64)
    r = truncation_toy.lr_gradients(lrs, [1, 2, 10, 50])
    assert torch.allclose(r.formula, r.autograd, rtol=1e-9, atol=1e-12)
    # one step: -<g_T, g_{T-1}> (Appendix A's closing remark)
    w1 = truncation_toy.W0 - lrs * truncation_toy.toy_grad(torch.tensor(truncation_toy.W0, dtype=torch.float64))
    assert torch.allclose(r.formula[:, 0], -truncation_toy.toy_grad(w1) * truncation_toy.toy_grad(torch.tensor(truncation_toy.W0, dtype=torch.float64)))
    with pytest.raises(ValueError, match="horizons must be >= 1"):
        truncation_toy.lr_gradients(lrs, [0])


def _problem(n=512, sizes=(8, 6, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, sizes[0], generator=g, dtype=torch.float64)
    y = (x[:, :3].argmax(1))
    return truncation_lr.AdamLrProblem(x, y, sizes, batch_size=32)


def test_adam_problem_matches_torch_adam_and_its_lr_gradient_matches_finite_differences():
    prob = _problem()
    st = prob.init(torch.Generator().manual_seed(1))
    theta = torch.tensor([-4.0], dtype=torch.float64)
    loss, new = prob.unroll(theta, st, 5)
    # the same 5 steps with torch.optim.Adam
    ps = [p.clone().requires_grad_(True) for p in st.params]
    opt = torch.optim.Adam(ps, lr=float(torch.exp(theta)), eps=1e-8)
    from mplp.core.optimizee import loss_value
    for k in range(5):
        x, y = prob._batch(st.order, k)
        opt.zero_grad()
        loss_value("xent", ps, x, y, "relu").backward()
        opt.step()
    assert all(torch.allclose(a, b) for a, b in zip(new.params, ps)) and new.cursor == 5 and new.t == 5
    # d loss / d log-lr by autograd through the unroll vs central differences
    from mplp.meta.estimators import TBPTT
    est = TBPTT().estimate(prob, theta, st, 5)
    h = 1e-5
    fd = (prob.unroll(theta + h, st, 5)[0] - prob.unroll(theta - h, st, 5)[0]) / (2 * h)
    assert torch.allclose(est.grad, fd.reshape(1), rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError, match="fewer than one batch"):
        truncation_lr.AdamLrProblem(prob.x[:10], prob.y[:10], (8, 3), batch_size=32)


def test_truncation_gradients_sum_to_their_cumulative_and_respect_k():
    prob = _problem()
    tg = truncation_lr.truncation_gradients(prob, 1e-3, N=20, k=5)
    assert list(tg.ends) == [5, 10, 15, 20] and np.allclose(np.cumsum(tg.grads), tg.cumulative)
    assert np.isfinite(tg.grads).all()
    with pytest.raises(ValueError, match="must divide"):
        truncation_lr.truncation_gradients(prob, 1e-3, N=20, k=3)


def test_outer_training_moves_the_lr_and_reports_its_cost():
    prob = _problem()
    grid = truncation_lr.lr_grid(prob, [1e-4, 1e-3, 1e-2, 1e-1], N=20, n_seeds=1)
    assert grid.best_lr in grid.lrs and grid.loss[0] > grid.loss.min()   # 1e-4 is too slow over 20 steps
    for est, k in (("tbptt", 5), ("pes", 5), ("es", 20)):
        tr = truncation_lr.outer_train(prob, est, k, N=20, n_problems=2, init_lr=1e-3, meta_lr=0.05, n_pairs=2)
        n = 2 * 20 // k
        assert tr.lr.shape == tr.inner_steps.shape == (n,) and tr.inner_steps[-1] == 40
        assert tr.lr[-1] != pytest.approx(1e-3) and np.isfinite(tr.lr).all()
        assert tr.inner_steps_per_update == (k if est == "tbptt" else 2 * 2 * k)
    # a loss that falls with the lr at these settings pushes the lr up under every estimator
    up = truncation_lr.outer_train(prob, "tbptt", 20, N=20, n_problems=3, init_lr=1e-4, meta_lr=0.1)
    assert up.lr[-1] > 1e-4
    with pytest.raises(ValueError, match="unknown estimator"):
        truncation_lr.outer_train(prob, "rl", 5, 20, 1)
    with pytest.raises(ValueError, match="k must equal N"):
        truncation_lr.outer_train(prob, "es", 5, 20, 1)


def test_momentum_toy_system_matches_the_vectorised_runs():
    toy = truncation_toy.MomentumToy(lr=0.02)
    momenta = torch.tensor([0.3, 0.8], dtype=torch.float64)
    ref = truncation_toy.final_loss(momenta, 50, 0.02)
    for k, m in enumerate(momenta):
        loss, (w, v) = toy.unroll(m.reshape(1), toy.init(), 50)
        assert torch.allclose(loss, ref[k])
    # two halves from the carried state give the same end point
    l1, s1 = toy.unroll(momenta[:1], toy.init(), 25)
    l2, _ = toy.unroll(momenta[:1], s1, 25)
    assert torch.allclose(l2, ref[0])


def test_landscape_rows_count_jumps_and_basins():
    m = torch.linspace(0, 0.99, 1000, dtype=torch.float64)     # fine enough that smooth changes are < 1
    rows = landscape(m, [10, 2000], lr=0.02)
    assert [r.T for r in rows] == [10, 2000]
    w = truncation_toy.momentum_trajectories(m, 2000, 0.02)[:, -1]
    assert rows[1].frac_global == pytest.approx(float(((w - 3.57).abs() < 0.3).double().mean()))
    assert rows[0].jumps == 0 < rows[1].jumps               # the pathology the chapter shows


def test_truncation_verdicts_from_constructed_results():
    rows = [LandscapeRow(10, 0, 5.0, 0.0), LandscapeRow(1000, 6, 500.0, 0.3)]
    lg = truncation_toy.LrGradient(torch.tensor([0.01]), [1, 100], torch.tensor([[1.0, 50.0]]), torch.tensor([[1.0, 50.0]]))
    tr = lambda lr: truncation_lr.OuterTrace("x", 1, np.array([1, 2]), np.array([1e-3, lr]), 0.0, 1)   # starts at 1e-3
    grid = truncation_lr.LrGrid(np.array([1e-3, 4e-3]), np.array([1.0, 0.5]), 4e-3)
    tg = lambda total: truncation_lr.TruncationGradients(10, 1e-3, np.array([10]), np.array([total]), np.array([total]))
    vs = verdicts(rows, lg, [2.0, 900.0], {"tbptt-10": tr(5e-4), "tbptt-1000": tr(3e-3), "pes-10": tr(5e-3)},
                  grid, 10, 1000, {10: tg(+0.4), 1000: tg(-0.1)})
    assert [v.holds for v in vs] == ["yes", "yes", "yes", "partly", "yes", "yes"]
    assert "positive later" in vs[3].claim and vs[3].partly_rule == "positive later, not negative early"
    assert "anti-correlated" in vs[4].claim and vs[4].seeds
    assert "PES" in vs[5].claim and f"(k = 10, {LATE})" in vs[5].test    # how the lr is read, not a number
    # the short truncation's lr below the full unroll's but rising from its start: the ordering alone
    rising = verdicts(rows, lg, [2.0, 900.0], {"tbptt-10": tr(2e-3), "tbptt-1000": tr(3e-3)}, grid, 10, 1000,
                      {10: tg(-0.4), 1000: tg(-0.1)})
    assert rising[2].holds == "partly" and "rises" in rising[2].partly_rule and rising[4].holds == "no"


def test_fig_3b_reading_of_the_toy_basins():
    """Low momenta end at w = 0, higher ones at 3.57 after a run ending at 0, larger ones cross the
    ridge (w = 1.68) more than once: the three patterns of Metz et al.'s Fig. 3b."""
    T = 6
    to_zero = np.linspace(-1.2, 0.0, T + 1)
    to_far = np.linspace(-1.2, 3.57, T + 1)
    swinging = np.array([-1.2, 3.0, 1.0, 3.5, 3.6, 3.57, 3.57])
    traj = np.stack([to_zero, to_zero, to_far, swinging])
    b = basin_reading([0.1, 0.5, 0.7, 0.9], traj)
    assert b["ends"] == [0, 0, 1, 1] and b["crossings"] == [0, 0, 1, 3]
    rows = [LandscapeRow(10, 0, 5.0, 0.0), LandscapeRow(1000, 6, 500.0, 0.3)]
    lg = truncation_toy.LrGradient(torch.tensor([0.01]), [1, 100], torch.tensor([[1.0, 50.0]]), torch.tensor([[1.0, 50.0]]))
    tr = lambda lr: truncation_lr.OuterTrace("x", 1, np.array([1, 2]), np.array([1e-3, lr]), 0.0, 1)
    grid = truncation_lr.LrGrid(np.array([1e-3, 4e-3]), np.array([1.0, 0.5]), 4e-3)
    traces = {"tbptt-10": tr(5e-4), "tbptt-1000": tr(3e-3)}
    v = verdicts(rows, lg, [2.0, 900.0], traces, grid, 10, 1000, basins=b)[1]
    assert "oscillate" in v.claim and v.holds == "yes"
    no_swing = basin_reading([0.1, 0.5, 0.7, 0.9], np.stack([to_zero, to_zero, to_far, to_far]))
    assert verdicts(rows, lg, [2.0, 900.0], traces, grid, 10, 1000, basins=no_swing)[1].holds == "partly"
    vs = verdicts(rows[::-1], lg, [900.0, 2.0],
                  {"tbptt-10": tr(3e-3), "tbptt-1000": tr(5e-4), "pes-10": tr(1e-4)}, grid, 10, 1000)
    assert [v.holds for v in vs] == ["no", "no", "no", "no"]
    three = [LandscapeRow(3, 0, 5.0, 0.0), LandscapeRow(30, 4, 50.0, 0.2), LandscapeRow(1000, 6, 500.0, 0.3)]
    rise_and_fall = verdicts(three, lg, [2.0, 900.0, 3.0], {"tbptt-10": tr(5e-4), "tbptt-1000": tr(3e-3)}, grid,
                             10, 1000)
    assert rise_and_fall[1].holds == "partly" and "T=30: 900" in rise_and_fall[1].evidence


def test_momentum_gradients_match_finite_differences():
    m = torch.tensor([0.2, 0.85], dtype=torch.float64)
    g = truncation_toy.momentum_gradients(m, 40, 0.02)
    h = 1e-6
    fd = (truncation_toy.final_loss(m + h, 40, 0.02) - truncation_toy.final_loss(m - h, 40, 0.02)) / (2 * h)
    assert torch.allclose(g, fd, rtol=1e-5)


def test_toy_estimates_agree_with_backprop_where_the_landscape_is_smooth():
    # at T = 10 the loss is smooth in the momentum: with a small sigma both estimators
    # must centre on the backprop gradient
    r = toy_estimates([0.3, 0.5], T=10, lr=0.02, sigma=1e-4, n_pairs=4, n_rep=5)
    assert r.es.shape == r.combined.shape == (2, 5)
    np.testing.assert_allclose(r.combined.mean(1), r.exact, rtol=1e-3)
    se = r.es.std(1, ddof=1) / np.sqrt(r.es.shape[1])                 # ES is noisy: judge it by its own error
    assert (np.abs(r.es.mean(1) - r.exact) <= 4.5 * se).all()


def test_late_lr_is_the_geometric_mean_of_the_last_third():
    steps = np.arange(1, 11)                                         # the last third: steps 7..10 (> 6.67)
    lr = np.array([1, 1, 1, 1, 1, 1, 2, 8, 8, 2], dtype=float)
    tr = truncation_lr.OuterTrace("tbptt", 1, steps, lr, 0.0, 1)
    assert tr.late_lr() == pytest.approx(4.0)
    assert tr.late_lr(frac=1.0) == pytest.approx(np.exp(np.log(lr).mean()))


def test_the_plans_truncation_rows_come_once_tranche_3_is_stored(tmp_path):
    """PM.1-PM.3 are read, never computed, by the chapter: none before ``tranche3`` stored every
    seed's reading, three confirmatory rows after."""
    from mplp.chapters.truncation import Figure4, confirmed_rows, tranche3
    from mplp.meta.source import Store

    fig4 = Figure4(0, 6, 20, 2, 0.05, 0.1, 2, Store(tmp_path), _problem=_problem())
    assert confirmed_rows(fig4, [5, 20], seeds=(1, 2)) == []
    readings = tranche3(fig4, [5, 20], seeds=(1, 2))
    assert all(np.isfinite([r.short_lr, r.full_lr, r.pes_lr, r.best_lr, r.truncated_sum, r.true_grad]).all()
               for r in readings)
    rows = confirmed_rows(fig4, [5, 20], seeds=(1, 2))
    assert [v.claim.split(":")[0] for v in rows] == ["PM.1", "PM.2", "PM.3"]
    assert all(v.stage == "confirmatory" and v.kind == "metz" and v.seeds == "2 seeds per estimator" for v in rows)
