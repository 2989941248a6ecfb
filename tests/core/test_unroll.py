import torch

from mplp.core.config import MetaConfig, OptimizeeConfig
from mplp.core.learners import LearnerSpec, NeuralLearners, SGDLearners, init_theta
from mplp.core.optimizee import init_params
from mplp.core.unroll import inner_step, outer_metric, rollout, unroll

OPT = OptimizeeConfig(sizes=(1, 6, 5, 1), activation="relu", loss="mse")
SPEC = LearnerSpec(2, 8, ("relu",), "mse", True, True, 0.05)


def _setup(K=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = init_params(OPT.sizes, gen, torch.float64)
    xs = torch.rand(K, 8, 1, generator=gen, dtype=torch.float64) * 10 - 5
    ys = torch.sin(xs)
    theta = {k: v.requires_grad_(True) for k, v in init_theta(SPEC, gen, torch.float64).items()}
    return params, xs, ys, theta


def test_code_convention_drops_first_loss_and_updates_every_step():
    params, xs, ys, theta = _setup()
    L = NeuralLearners(theta, SPEC)
    res = unroll(L, params, xs, ys, OPT, MetaConfig(K=4, T=8, unroll="code"))
    assert torch.allclose(res.outer, res.losses[1:].sum())
    p = params
    for x, y in zip(xs, ys):
        p = inner_step(L, p, x, y, OPT).params
    assert all(torch.allclose(a, b) for a, b in zip(res.params, p))


def test_text_convention_sums_all_and_skips_last_update():
    params, xs, ys, theta = _setup()
    L = NeuralLearners(theta, SPEC)
    res = unroll(L, params, xs, ys, OPT, MetaConfig(K=4, T=8, unroll="text"))
    assert torch.allclose(res.outer, res.losses.sum())
    p = params
    for x, y in zip(xs[:3], ys[:3]):
        p = inner_step(L, p, x, y, OPT).params
    assert all(torch.allclose(a, b) for a, b in zip(res.params, p))


def test_first_loss_does_not_depend_on_theta():
    params, xs, ys, theta = _setup(K=1)
    res = unroll(NeuralLearners(theta, SPEC), params, xs, ys, OPT, MetaConfig(K=1, T=8, unroll="text"))
    assert res.losses.shape == (1,) and not res.outer.requires_grad


def test_batch_entropy_term_is_algorithm_2():
    params, xs, ys, theta = _setup()
    L = NeuralLearners(theta, SPEC)
    meta = MetaConfig(K=4, T=8, batch_entropy=True, be_threshold=5.0)  # high p: penalty active
    res = unroll(L, params, xs, ys, OPT, meta)
    pen = (5.0 - res.entropy).clamp_min(0).mean(1)          # per step, mean over layers
    assert torch.allclose(res.be_term, 2 * pen.mean() * res.losses[-1])
    assert torch.allclose(res.total, res.outer + res.be_term)
    g = torch.autograd.grad(res.be_term, [theta["f.w1"]])[0]
    assert g.abs().sum() > 0                                 # the term trains theta
    off = unroll(L, params, xs, ys, OPT, MetaConfig(K=4, T=8))
    assert off.be_term.item() == 0.0 and torch.allclose(off.outer, res.outer)


def test_rollout_with_sgd_learners_lowers_the_loss():
    gen = torch.Generator().manual_seed(5)
    params = init_params(OPT.sizes, gen, torch.float64)
    x = torch.rand(8, 1, generator=gen, dtype=torch.float64) * 10 - 5
    xs, ys = x.expand(200, 8, 1), (0.3 * x + 1).expand(200, 8, 1)
    r = rollout(SGDLearners(0.05, "mse", 1), params, xs, ys, OPT)
    assert r.losses.shape == (200,) and r.entropy.shape == (200, 2)
    assert r.losses[-1] < 0.1 * r.losses[0]


def test_outer_metric():
    c = torch.tensor([[3.0, 2.0, 1.0]])
    assert outer_metric(c, "code").item() == 3.0 and outer_metric(c, "text").item() == 6.0


def test_batch_of_one_logs_nan_entropy_instead_of_failing():
    gen = torch.Generator().manual_seed(6)
    params = init_params(OPT.sizes, gen, torch.float64)
    xs = torch.rand(3, 1, 1, generator=gen, dtype=torch.float64)
    r = rollout(SGDLearners(0.05, "mse", 1), params, xs, torch.sin(xs), OPT)
    assert r.entropy.shape == (3, 2) and torch.isnan(r.entropy).all()


def test_meta_gradient_matches_finite_differences_in_random_directions():
    """The unroll's meta-gradient (batch-norm, learned lr; dense and fast backward) against
    central differences of the outer objective, float64, 4 random directions.  The update
    clamp and ReLU kinks make the objective piecewise smooth: a step of 1e-6 stays inside one
    piece here.  (The batch-entropy term is left out: it multiplies by the *detached* last
    loss, as the released code does, so its meta-gradient is not the objective's derivative.)"""
    from mplp.core.backward import dense_backward
    from mplp.core.fast import fast_backward

    params, xs, ys, theta = _setup(K=5, seed=3)
    meta = MetaConfig(K=5, T=10, unroll="code")
    gen = torch.Generator().manual_seed(11)
    for backward in (dense_backward, fast_backward):
        objective = lambda th: unroll(NeuralLearners(th, SPEC), params, xs, ys, OPT, meta, "full", backward).total
        leaf = {k: v.detach().clone().requires_grad_(True) for k, v in theta.items()}
        grads = torch.autograd.grad(objective(leaf), list(leaf.values()))
        for _ in range(4):
            d = {k: torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in theta.items()}
            h = 1e-6
            with torch.no_grad():
                up = objective({k: v.detach() + h * d[k] for k, v in theta.items()})
                down = objective({k: v.detach() - h * d[k] for k, v in theta.items()})
            fd = float((up - down) / (2 * h))
            ad = float(sum((g * d[k]).sum() for g, k in zip(grads, leaf)))
            assert abs(fd - ad) <= 1e-6 * max(1.0, abs(ad)), (backward.__name__, fd, ad)


def test_sgd_kind_closed_form_is_the_dense_message_passing():
    """The positive control's backward (Table 2 in closed form, population dims) equals the dense
    message passing with the Table 2 learners, for MSE and cross-entropy."""
    from mplp.core.backward import dense_backward, sgd_backward
    from mplp.core.optimizee import forward, loss_node

    gen = torch.Generator().manual_seed(5)
    for opt, y_of in ((OPT, lambda x: torch.sin(x)),
                      (OptimizeeConfig(sizes=(3, 7, 4), activation="tanh", loss="xent"),
                       lambda x: torch.randint(0, 4, (x.shape[0],), generator=gen))):
        params = init_params(opt.sizes, gen, torch.float64)
        x = torch.randn(9, opt.sizes[0], generator=gen, dtype=torch.float64)
        y = y_of(x)
        cache = forward(params, x, opt.activation)
        node = loss_node(opt.loss, cache.output, y)
        ref = dense_backward(SGDLearners(0.1, opt.loss, opt.sizes[-1]), params, cache, node, opt.activation, opt.loss)
        got = sgd_backward(None, params, cache, node, opt.activation, opt.loss)
        assert all(torch.allclose(a, b, rtol=1e-12, atol=1e-14) for a, b in zip(got, ref))
        # with a leading population dimension, each member is its own problem
        P = [torch.stack([p, 2 * p]) for p in params]
        cache2 = forward(P, x.expand(2, *x.shape), opt.activation)
        node2 = loss_node(opt.loss, cache2.output, y.expand(2, *y.shape))
        both = sgd_backward(None, P, cache2, node2, opt.activation, opt.loss)
        assert all(torch.allclose(b[0], a, rtol=1e-12, atol=1e-14) for a, b in zip(got, both))
