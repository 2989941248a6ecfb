"""L2L (Andrychowicz et al. 2016) behind the learned-optimizer interface: shapes, the paper's
gradient preprocessing, a known answer (weights that make it SGD) and the meta-gradient
against finite differences."""

import math

import torch

from mplp.core.config import MetaConfig, OptimizeeConfig
from mplp.core.l2l import L2L
from mplp.core.learned_optimizer import LearnedOptimizer
from mplp.core.optimizee import init_params, loss_value

from helpers import meta_gradient_along, random_batch

OPT = OptimizeeConfig(sizes=(2, 3, 1), activation="tanh", loss="mse")
META = MetaConfig(K=3, T=9, S=1, outer_lr=1e-3)


def _batches(n, gen, sizes=OPT.sizes, B=4):
    b = [random_batch(sizes, "mse", B, gen) for _ in range(n)]
    return torch.stack([x for x, _ in b]), torch.stack([y for _, y in b])


def test_shapes_and_the_carried_state():
    l2l = L2L(OPT)
    gen = torch.Generator().manual_seed(0)
    theta = l2l.init_theta(gen, torch.float64)
    assert isinstance(l2l, LearnedOptimizer)
    assert theta["lstm0.w_in"].shape == (2, 80) and theta["lstm1.w_in"].shape == (20, 80)
    assert theta["out.w"].shape == (20, 1)
    params = init_params(OPT.sizes, gen, torch.float64)
    state = l2l.init_state(params)
    P = sum(p.numel() for p in params)                       # (2+1)*3 + (3+1)*1 = 13 coordinates
    assert len(state) == len(params) + 4 and state[-1].shape == (P, 20)
    xs, ys = _batches(3, gen)
    r = l2l.unroll(theta, state, xs, ys, META)
    assert r.losses.shape == (3,) and r.entropy.shape == (3, 1) and len(r.params) == len(state)
    assert [a.shape for a in r.params] == [a.shape for a in state]


def test_the_papers_preprocessing():
    l2l = L2L(OPT)
    g = torch.tensor([1.0, -2.0, 1e-6, -1e-6, 0.0], dtype=torch.float64)
    f = l2l.features(g)
    assert torch.allclose(f[:2, 0], torch.log(g[:2].abs()) / 10)
    assert torch.equal(f[:2, 1], torch.tensor([1.0, -1.0], dtype=torch.float64))
    assert torch.equal(f[2:, 0], -torch.ones(3).double()) and torch.allclose(f[2:, 1], math.exp(10) * g[2:])


def _sgd_weights(l2l: L2L, lr: float, eps: float = 1e-6) -> dict[str, torch.Tensor]:
    """Gates saturated open (input, output) and shut (forget), the cell fed eps * g on one unit:
    every tanh in its linear range, so the read-out is -lr * g to about (eps g)^2."""
    H = l2l.hidden
    theta = {k: torch.zeros_like(v) for k, v in l2l.init_theta(torch.Generator(), torch.float64).items()}
    for layer in range(l2l.layers):
        b = theta[f"lstm{layer}.b"]
        b[0:H], b[H:2 * H], b[3 * H:4 * H] = 50.0, -50.0, 50.0          # i open, f shut, o open
        theta[f"lstm{layer}.w_in"][0, 2 * H] = eps if layer == 0 else 1.0  # candidate of unit 0
    theta["out.w"][0, 0] = -lr / (eps * l2l.output_scale)
    return theta


def test_with_fixed_weights_it_is_sgd():
    l2l = L2L(OPT, preprocess=False)
    gen = torch.Generator().manual_seed(1)
    params = init_params(OPT.sizes, gen, torch.float64)
    xs, ys = _batches(6, gen)
    got = l2l.rollout(_sgd_weights(l2l, 0.1), l2l.init_state(params), xs, ys).params[:len(params)]
    want = params
    for x, y in zip(xs, ys):
        p = [w.clone().requires_grad_(True) for w in want]
        g = torch.autograd.grad(loss_value("mse", p, x, y, "tanh"), p)
        want = [w - 0.1 * gw for w, gw in zip(want, g)]
    assert all(torch.allclose(a, b, rtol=1e-9, atol=1e-12) for a, b in zip(got, want))


def test_the_exact_meta_gradient_matches_finite_differences():
    l2l = L2L(OPT, first_order=False)
    gen = torch.Generator().manual_seed(2)
    theta = l2l.init_theta(gen, torch.float64)
    state = l2l.init_state(init_params(OPT.sizes, gen, torch.float64))
    xs, ys = _batches(3, gen)
    analytic, fd = meta_gradient_along(l2l, theta, state, xs, ys, META, gen)
    assert math.isclose(analytic, fd, rel_tol=1e-6, abs_tol=1e-9)
    first = L2L(OPT)                                          # the paper's: second derivatives dropped
    leaf = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    approx = torch.autograd.grad(first.unroll(leaf, state, xs, ys, META).total, list(leaf.values()))
    assert all(torch.isfinite(a).all() for a in approx)
