"""The thesis' correctness oracle (§4.2, Table 2, Appendices A and C): MPLP with the
hand-derived learners *is* SGD.  K MPLP inner steps through the dense message-passing
backward must equal K steps of plain SGD computed with torch.autograd."""

import pytest
import torch

from mplp.core.backward import dense_backward
from mplp.core.config import OptimizeeConfig
from mplp.core.learners import SGDLearners
from mplp.core.optimizee import init_params, loss_value
from mplp.core.unroll import inner_step

from helpers import random_batch, rel_err

ARCHS = [(3, 5, 4), (2, 7, 6, 3), (4, 9, 8, 7, 5, 3)]  # the last is deeper than three layers
K, LR = 5, 0.05


def sgd_steps(params, batches, opt):
    for x, y in batches:
        p = [w.clone().requires_grad_(True) for w in params]
        g = torch.autograd.grad(loss_value(opt.loss, p, x, y, opt.activation), p)
        params = [w - LR * gw for w, gw in zip(params, g)]
    return params


def mplp_steps(params, batches, opt):
    learners = SGDLearners(LR, opt.loss, opt.sizes[-1])
    for x, y in batches:
        params = inner_step(learners, params, x, y, opt, "full", dense_backward).params
    return params


@pytest.mark.parametrize("sizes", ARCHS, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("loss", ["mse", "xent"])
@pytest.mark.parametrize("B", [1, 32])
def test_mplp_with_table2_learners_is_sgd(sizes, activation, loss, B):
    gen = torch.Generator().manual_seed(hash((sizes, activation, loss, B)) % 2**31)
    opt = OptimizeeConfig(sizes=sizes, activation=activation, loss=loss)
    params = init_params(sizes, gen, dtype=torch.float64)
    batches = [random_batch(sizes, loss, B, gen) for _ in range(K)]
    ref = sgd_steps(params, batches, opt)
    got = mplp_steps(params, batches, opt)
    moved = max(float((r - p).abs().max()) for r, p in zip(ref, params))
    assert moved > 1e-3, "SGD did not move the weights: the comparison would be vacuous"
    for l, (g, r, p0) in enumerate(zip(got, ref, params)):
        # compare the displacements, not the weights: a stricter test of the updates
        err = rel_err(g - p0, r - p0)
        assert err < 1e-6, f"layer {l}: MPLP's update differs from SGD's by {err:.3g}"


def test_sigmoid_activation_is_sgd_too():
    gen = torch.Generator().manual_seed(3)
    opt = OptimizeeConfig(sizes=(3, 6, 4), activation="sigmoid", loss="mse")
    params = init_params(opt.sizes, gen, dtype=torch.float64)
    batches = [random_batch(opt.sizes, "mse", 8, gen) for _ in range(K)]
    for g, r, p0 in zip(mplp_steps(params, batches, opt), sgd_steps(params, batches, opt), params):
        assert rel_err(g - p0, r - p0) < 1e-6


def test_wrong_learner_breaks_equivalence():
    """Guard against a vacuous oracle: negating g_lin must make MPLP differ from SGD."""
    gen = torch.Generator().manual_seed(4)
    opt = OptimizeeConfig(sizes=(3, 6, 5, 2), activation="tanh", loss="mse")
    params = init_params(opt.sizes, gen, dtype=torch.float64)
    batches = [random_batch(opt.sizes, "mse", 8, gen) for _ in range(K)]

    class Broken(SGDLearners):
        @staticmethod
        def g_lin(rows):
            return -rows[:, :1] * rows[:, 1:2]

    learners = Broken(LR, "mse", 2)
    p = params
    for x, y in batches:
        p = inner_step(learners, p, x, y, opt).params
    ref = sgd_steps(params, batches, opt)
    errs = [rel_err(a - p0, r - p0) for a, r, p0 in zip(p, ref, params)]
    assert errs[1] > 1.0, errs      # one sign flip upstream: the update points the wrong way
