"""L2L's own-paper setting (Andrychowicz et al. 2016, §3.1): the quadratics, the unrolled
system the estimators see, the tuned baselines, and a short meta-training that learns."""

import numpy as np
import torch

from mplp.chapters import l2l_quadratics as q
from mplp.tasks.quadratics import sample


def test_the_quadratics_gradient_is_the_autograd_one():
    problem = sample(3, 10, torch.Generator().manual_seed(0), torch.float64)
    w = torch.randn(3, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64).requires_grad_(True)
    (g,) = torch.autograd.grad(problem.loss(w).sum(), w)
    assert torch.allclose(problem.grad(w.detach()), g)


def test_baselines_descend_and_adam_is_bias_corrected():
    problem = sample(8, 10, torch.Generator().manual_seed(2))
    start = [problem.y.new_zeros(problem.y.shape)]
    sgd = q.curve(q.sgd(1e-3), problem, start)
    assert sgd.shape == (q.STEPS + 1, 8) and (sgd[-1] < sgd[0]).all()
    delta, _ = q.adam(0.1)(torch.full((1, 10), 5.0), [])
    assert torch.allclose(delta, torch.full((1, 10), -0.1), rtol=1e-6)        # first step: -lr sign(g)


def test_a_short_meta_training_lowers_the_outer_loss_and_the_study_compares():
    st = q.study(S=60, n_problems=32, n_test=16)
    assert set(st.curves) == {"L2L", "SGD", "Adam"} and set(st.lrs) == {"SGD", "Adam"}
    assert all(c.shape == (q.STEPS + 1,) and np.isfinite(c).all() for c in st.curves.values())
    assert st.outer.shape == (60,) and st.outer[-10:].mean() < 0.5 * st.outer[:10].mean()
    assert all(f.shape == (16,) and np.isclose(f.mean(), st.curves[k][-1]) for k, f in st.finals.items())
