"""The fast path against the dense reference: outputs, inner updates and meta-gradients."""


import pytest
import torch

from mplp.core.backward import apply_updates, dense_backward
from mplp.core.config import MetaConfig, OptimizeeConfig
from mplp.core import fast, kernels
from mplp.core.fast import engine, fast_backward, use_engine
from mplp.core.learners import LearnerSpec, NeuralLearners, init_theta
from mplp.core.optimizee import init_params
from mplp.core.unroll import unroll

from helpers import random_batch, rel_err

CASES = [("mse", (2, 6, 5, 1)), ("xent", (5, 6, 5, 4))]


def _problem(loss, sizes, m, bn, learned, seed=0, K=3, B=7):
    gen = torch.Generator().manual_seed(seed)
    opt = OptimizeeConfig(sizes, "relu", loss)
    spec = LearnerSpec(m, 6, ("relu",), loss, bn, learned, 0.05)
    theta = init_theta(spec, gen, torch.float64)
    params = init_params(sizes, gen, torch.float64)
    batches = [random_batch(sizes, loss, B, gen) for _ in range(K)]
    xs, ys = torch.stack([b[0] for b in batches]), torch.stack([b[1] for b in batches])
    return opt, spec, theta, params, xs, ys


@pytest.fixture(params=["eager", "compiled"], scope="module")
def backend(request):
    got = use_engine(request.param)
    if request.param == "compiled" and "compiled" not in got:
        pytest.skip(f"torch.compile unavailable here ({got})")
    yield got
    use_engine("eager")


def _compiled_too(backend, m, bn, learned):
    """Every case runs eagerly; compiling one graph per case would take minutes, so the
    compiled engine runs the cases that cover its static switches (batch-norm, learned lr)."""
    if "compiled" in backend and (m, bn, learned) not in ((1, False, False), (8, True, True)):
        pytest.skip("compiled engine: representative cases only")


@pytest.mark.parametrize("loss, sizes", CASES, ids=["mse", "xent"])
@pytest.mark.parametrize("m", [1, 8, 24])
@pytest.mark.parametrize("bn", [False, True], ids=["nobn", "bn"])
@pytest.mark.parametrize("learned", [False, True], ids=["fixedlr", "learnedlr"])
def test_fast_equals_dense(backend, loss, sizes, m, bn, learned):
    _compiled_too(backend, m, bn, learned)
    opt, spec, theta, params, xs, ys = _problem(loss, sizes, m, bn, learned)
    meta = MetaConfig(K=3, T=9, batch_entropy=True, be_threshold=2.0)
    out = {}
    for name, bw in (("dense", dense_backward), ("fast", fast_backward)):
        th = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
        res = unroll(NeuralLearners(th, spec), params, xs, ys, opt, meta, "full", bw)
        grads = torch.autograd.grad(res.total, list(th.values()))
        out[name] = (res, dict(zip(th, grads)))
    (rd, gd), (rf, gf) = out["dense"], out["fast"]
    assert rel_err(rf.losses, rd.losses) < 1e-5
    for a, b, p0 in zip(rf.params, rd.params, params):
        assert rel_err(a - p0, b - p0) < 1e-5                      # inner updates
    scale = max(float(g.abs().max()) for g in gd.values())
    for k in gd:                                                   # meta-gradients
        # entries whose true gradient vanishes (e.g. g_lin.b2 under batch-norm, which
        # removes a constant shift of all messages) are compared against the overall scale
        denom = max(float(gd[k].abs().max()), 1e-9 * scale)
        assert float((gf[k] - gd[k]).abs().max()) / denom < 1e-5, k


def test_population_equals_members_one_by_one():
    P = 3
    probs = [_problem("xent", (5, 6, 5, 4), 4, True, True, seed=s) for s in range(P)]
    spec = probs[0][1]
    stack = lambda items: torch.stack(items)
    theta = {k: stack([p[2][k] for p in probs]) for k in probs[0][2]}
    params = [stack([p[3][l] for p in probs]) for l in range(3)]
    xs, ys = stack([p[4][0] for p in probs]), stack([p[5][0] for p in probs])
    from mplp.core.optimizee import forward, loss_node

    cache = forward(params, xs, "relu")
    node = loss_node("xent", cache.output, ys)
    ups = fast_backward(NeuralLearners(theta, spec), params, cache, node, "relu", "xent")
    for i, pr in enumerate(probs):
        c = forward(pr[3], pr[4][0], "relu")
        n = loss_node("xent", c.output, pr[5][0])
        ref = dense_backward(NeuralLearners(pr[2], spec), pr[3], c, n, "relu", "xent")
        for a, b in zip(ups, ref):
            assert rel_err(a[i], b) < 1e-10
    new = apply_updates(params, ups, theta["lr"])
    assert new[0].shape == params[0].shape


def test_engine_is_reported():
    assert engine().startswith("kernels ")
    assert (" steps compiled" in engine()) or (" steps eager" in engine())
    with pytest.raises(ValueError, match="unknown step mode"):
        use_engine("triton")


def test_engine_choice_does_not_depend_on_the_calling_context():
    """Regression: the first fast-path call of a training run is the no-grad validation;
    the compile probe must still work there (it once fell back to eager silently)."""
    import os

    old = os.environ.get("MPLP_COMPILE")
    try:
        fast._ENGINE.update(step=None, reason="")
        os.environ["MPLP_COMPILE"] = "1"
        with torch.no_grad():
            got = fast.engine()
        assert "torch.compile unavailable: RuntimeError" not in got, got
    finally:
        if old is None:
            os.environ.pop("MPLP_COMPILE", None)
        else:
            os.environ["MPLP_COMPILE"] = old
        use_engine("eager")


def test_the_cpp_kernels_are_used_on_the_cpu():
    """The engine's CPU kernels are the C++ ones wherever g++ is there (CI included)."""
    assert kernels.backend() == "cpp", kernels.backend()
