"""Estimators on a linear system whose full-unroll loss is quadratic in theta, so the
Gaussian-smoothed gradient equals the exact one: ES, PES and the combined estimator must
agree with autograd in expectation, within the sampling error computed here."""

from __future__ import annotations

import pytest
import torch

from mplp.meta.estimators import ES, PES, TBPTT, GradientEstimator, ReparamES, from_meta


class Linear:
    """s_{t+1} = A s_t + B theta; loss = sum_t |s_{t+1} - c|^2 (quadratic in theta)."""

    def __init__(self, d=3, p=2, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.A = 0.8 * torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]
        self.B = torch.randn(d, p, generator=g, dtype=torch.float64)
        self.c = torch.randn(d, generator=g, dtype=torch.float64)
        self.s0 = torch.randn(d, generator=g, dtype=torch.float64)

    def init(self, gen):
        return self.s0

    def unroll(self, theta, s, K):
        loss = theta.new_zeros(())
        for _ in range(K):
            s = self.A @ s + self.B @ theta
            loss = loss + ((s - self.c) ** 2).sum()
        return loss, s


THETA = torch.tensor([0.3, -0.2], dtype=torch.float64)
T, K = 12, 3


def exact(system):
    est = TBPTT().estimate(system, THETA, system.s0, T)
    return est.grad


def within(samples: torch.Tensor, target: torch.Tensor, z: float = 4.5) -> bool:
    """Sample mean within z standard errors (computed from the samples) of the target."""
    se = samples.std(0) / samples.shape[0] ** 0.5
    return bool(((samples.mean(0) - target).abs() <= z * se + 1e-9).all())


def test_tbptt_over_the_full_horizon_is_exact_and_truncations_are_biased():
    sys_ = Linear()
    leaf = THETA.clone().requires_grad_(True)
    loss, _ = sys_.unroll(leaf, sys_.s0, T)
    assert torch.allclose(exact(sys_), torch.autograd.grad(loss, leaf)[0])
    s, total = sys_.s0, torch.zeros(2, dtype=torch.float64)
    for _ in range(T // K):
        est = TBPTT().estimate(sys_, THETA, s, K)
        s = est.state
        total += est.grad
    assert (total - exact(sys_)).abs().max() > 0.1 * exact(sys_).abs().max()   # truncation bias


def test_es_is_unbiased():
    sys_, gen = Linear(), torch.Generator().manual_seed(1)
    samples = torch.stack([ES(0.05, 4).estimate(sys_, THETA, sys_.s0, T, gen).grad for _ in range(400)])
    assert within(samples, exact(sys_))


def test_pes_summed_over_truncations_is_unbiased_where_tbptt_is_not():
    sys_, gen = Linear(), torch.Generator().manual_seed(2)
    pes = PES(sigma=0.05, n_pairs=4)
    samples = []
    for _ in range(400):
        memory, total = None, 0
        for _ in range(T // K):          # a new inner problem: memory None restarts the particles
            est = pes.estimate(sys_, THETA, sys_.s0, K, gen, memory)
            memory, total = est.memory, total + est.grad
        samples.append(total)
    samples = torch.stack(samples)
    assert within(samples, exact(sys_))


def test_combined_estimator_is_unbiased_and_weights_by_variance():
    sys_, gen = Linear(), torch.Generator().manual_seed(3)
    ests = [ReparamES(0.05, 4).estimate(sys_, THETA, sys_.s0, T, gen) for _ in range(200)]
    assert within(torch.stack([e.grad for e in ests]), exact(sys_))
    # on a quadratic the antithetic pathwise gradient is exact (zero variance): the
    # combination takes it whole
    e = ests[0]
    assert e.variances["reparam"] < 1e-12 < e.variances["es"]
    assert torch.allclose(e.grad, e.parts["reparam"])


def test_combined_estimator_is_a_convex_combination_on_a_non_quadratic_loss():
    class Quartic(Linear):
        def unroll(self, theta, s, K):
            loss, s = super().unroll(theta, s, K)
            return loss + (theta ** 4).sum() * 50, s
    sys_ = Quartic()
    e = ReparamES(0.2, 8).estimate(sys_, THETA, sys_.s0, T, torch.Generator().manual_seed(4))
    lo = torch.minimum(e.parts["reparam"], e.parts["es"])
    hi = torch.maximum(e.parts["reparam"], e.parts["es"])
    assert ((lo - 1e-9 <= e.grad) & (e.grad <= hi + 1e-9)).all() and 0 < e.variances["reparam"] < e.variances["es"]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="sigma must be > 0"):
        ES(0.0, 2)
    with pytest.raises(ValueError, match="n_pairs must be >= 1"):
        PES(0.1, 0)
    with pytest.raises(ValueError, match="n_pairs >= 2"):
        ReparamES(0.1, 1)


class Batched(Linear):
    """The same system running every member of a batch at once, as the meta-trainer's does."""

    def unroll_batch(self, thetas, states, K):
        s, loss = torch.stack(states), 0
        for _ in range(K):
            s = s @ self.A.T + thetas @ self.B.T
            loss = loss + ((s - self.c) ** 2).sum(-1)
        return loss, list(s)


@pytest.mark.parametrize("method", [ES(0.05, 3, carry=True), PES(0.05, 3, carry=True)])
def test_a_batched_system_gives_the_member_by_member_estimate_and_carries_the_state(method):
    """``unroll_batch`` is only a faster route: the same estimate as member by member, and
    with ``carry`` the unperturbed member's state is the plain unroll's."""
    one, many = Linear(), Batched()
    a = method.estimate(one, THETA, one.s0, K, torch.Generator().manual_seed(5))
    b = method.estimate(many, THETA, many.s0, K, torch.Generator().manual_seed(5))
    assert torch.allclose(a.grad, b.grad, rtol=1e-12, atol=1e-12) and a.centre == b.centre == 6
    plain_loss, plain_state = one.unroll(THETA, one.s0, K)
    assert torch.allclose(b.state, plain_state) and b.loss == pytest.approx(float(plain_loss))


def test_estimators_share_one_interface_and_the_meta_config_names_them():
    from helpers import tiny_config
    for name, cls in (("tbptt", TBPTT), ("es", ES), ("pes", PES)):
        est = from_meta(tiny_config(**{"meta.estimator": name}).meta)
        assert isinstance(est, GradientEstimator) and type(est) is cls
        assert name == "tbptt" or est.carry
