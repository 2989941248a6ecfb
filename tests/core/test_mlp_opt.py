"""The per-parameter MLP optimizer (Metz et al. 2019) behind the learned-optimizer interface:
its 31 features, a known answer (weights that make it SGD) and its meta-gradient against
finite differences."""

import math

import torch

from mplp.core.config import MetaConfig, OptimizeeConfig
from mplp.core.mlp_opt import N_FEATURES, MLPOptimizer
from mplp.core.optimizee import init_params, loss_value

from helpers import meta_gradient_along, random_batch

OPT = OptimizeeConfig(sizes=(2, 3, 1), activation="tanh", loss="mse")
META = MetaConfig(K=3, T=9, S=1, outer_lr=1e-3)


def _batches(n, gen, B=4):
    b = [random_batch(OPT.sizes, "mse", B, gen) for _ in range(n)]
    return torch.stack([x for x, _ in b]), torch.stack([y for _, y in b])


def test_features_and_shapes():
    opt = MLPOptimizer(OPT)
    gen = torch.Generator().manual_seed(0)
    theta = opt.init_theta(gen, torch.float64)
    assert N_FEATURES == 31 and theta["w1"].shape == (31, 32) and theta["w2"].shape == (32, 2)
    params = init_params(OPT.sizes, gen, torch.float64)
    state = opt.init_state(params)
    assert [s.shape for s in state[len(params):]] == [(13, 5), (13, 5), ()]
    xs, ys = _batches(3, gen)
    r = opt.unroll(theta, state, xs, ys, META)
    assert r.losses.shape == (3,) and float(r.params[-1]) == 3          # the step counter
    g = torch.randn(13, generator=gen, dtype=torch.float64)
    f = opt.features(g, g, torch.ones(13, 5).double(), torch.ones(13, 5).double(), torch.tensor(0.0).double(),
                     [(0, 9), (9, 13)])
    assert f.shape == (13, 31)
    assert torch.allclose(f[:9, :22].pow(2).mean(0), torch.ones(22).double(), atol=1e-6)   # unit second moment per tensor


def test_with_fixed_weights_it_is_sgd():
    opt = MLPOptimizer(OPT, normalize=False)
    lr = 0.1
    theta = {k: torch.zeros_like(v) for k, v in opt.init_theta(torch.Generator(), torch.float64).items()}
    theta["w1"][0, 0], theta["w1"][0, 1] = 1.0, -1.0                     # relu(g), relu(-g)
    theta["w2"][0, 1], theta["w2"][1, 1] = lr / opt.lambda_lin, -lr / opt.lambda_lin
    gen = torch.Generator().manual_seed(1)
    params = init_params(OPT.sizes, gen, torch.float64)
    xs, ys = _batches(6, gen)
    got = opt.rollout(theta, opt.init_state(params), xs, ys).params[:len(params)]
    want = params
    for x, y in zip(xs, ys):
        p = [w.clone().requires_grad_(True) for w in want]
        g = torch.autograd.grad(loss_value("mse", p, x, y, "tanh"), p)
        want = [w - lr * gw for w, gw in zip(want, g)]
    assert all(torch.allclose(a, b, rtol=1e-12, atol=1e-14) for a, b in zip(got, want))


def test_the_meta_gradient_matches_finite_differences():
    opt = MLPOptimizer(OPT)
    gen = torch.Generator().manual_seed(2)
    theta = {k: 50 * v for k, v in opt.init_theta(gen, torch.float64).items()}     # steps large enough to matter
    state = opt.init_state(init_params(OPT.sizes, gen, torch.float64))
    xs, ys = _batches(3, gen)
    analytic, fd = meta_gradient_along(opt, theta, state, xs, ys, META, gen, h=1e-5)
    assert abs(analytic) > 1e-8 and math.isclose(analytic, fd, rel_tol=1e-5)
