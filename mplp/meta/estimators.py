"""Outer-gradient estimators behind one interface (Metz et al. 2019 §2-3; Vicol et al. 2021).

An *unrolled system* maps meta-parameters ``theta`` (a tensor, or a dict of tensors) and
an inner state to the loss of the next ``K`` inner steps and the state after them
(``system.unroll(theta, state, K) -> (loss, state)``).  A ``GradientEstimator`` turns one
truncation of it into an estimate of d loss / d theta, so a trainer never asks which
estimator it holds:

- ``TBPTT``: autograd through one truncation (biased for short truncations, §2.4);
- ``ES``: antithetic evolution strategies over one truncation (no backprop);
- ``PES``: persistent ES (Vicol et al. 2021): each particle keeps its own inner state and
  the sum of its perturbations, which removes the truncation bias;
- ``ReparamES``: Metz et al.'s variational estimator (§3, Eq. 1).

The ES family evaluates its perturbed members as one batch: ``theta``'s tensors gain a
leading member dimension.  A system may run such a batch at once (``unroll_batch``, with
``repeat`` / ``join`` / ``take`` on batched states); otherwise its members run one by one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch

from mplp.core.config import MetaConfig
from mplp.meta.outer import meta_gradient

Theta = torch.Tensor | dict[str, torch.Tensor]


class Unrolled(Protocol):
    def unroll(self, theta: Theta, state: Any, K: int) -> tuple[torch.Tensor, Any]: ...


@dataclass
class Estimate:
    """One outer-gradient estimate: ``grad`` (theta's structure), the unperturbed (or mean)
    ``loss`` and the inner steps it cost; ``state``: the unperturbed inner state after the
    truncation (None when the estimator does not carry one); ``memory``: what the estimator
    carries to the next truncation of the same inner problem; ``centre``: the index of the
    unperturbed member in the system's batched unroll (None: one plain unroll); for
    ``ReparamES`` the two parts and their estimated variances."""

    grad: Theta
    loss: float
    inner_steps: int
    state: Any = None
    memory: dict | None = None
    centre: int | None = None
    parts: dict[str, torch.Tensor] | None = None
    variances: dict[str, float] | None = None


class GradientEstimator(ABC):
    """d L / d theta, L the loss of the next K inner steps of ``system`` from ``state``.
    ``memory`` is the previous estimate's (None when a new inner problem starts)."""

    @abstractmethod
    def estimate(self, system: Unrolled, theta: Theta, state: Any, K: int, gen: torch.Generator | None = None,
                 memory: dict | None = None) -> Estimate: ...


# -- theta as a tree of tensors, and batched states with their per-member defaults ------
def tree_map(f: Callable, *trees: Theta) -> Theta:
    """``f`` over the tensors of one or more thetas of the same structure."""
    if isinstance(trees[0], dict):
        return {k: f(*(t[k] for t in trees)) for k in trees[0]}
    return f(*trees)


def _draw(theta: Theta, n: int, sigma: float, gen: torch.Generator) -> Theta:
    """``n`` perturbations ``sigma * N(0, I)`` on a leading dimension: tensor by tensor for a
    dict theta (all n at once), pair by pair for a tensor theta."""
    if isinstance(theta, dict):
        return {k: sigma * torch.randn((n,) + tuple(v.shape), generator=gen, dtype=v.dtype).to(v.device)
                for k, v in theta.items()}
    draws = [torch.randn(theta.shape, generator=gen, dtype=theta.dtype) for _ in range(n)]
    return sigma * torch.stack(draws).to(theta.device)


def _members(thetas: Theta) -> int:
    return next(iter(thetas.values())).shape[0] if isinstance(thetas, dict) else thetas.shape[0]


def unroll_batch(system, thetas: Theta, states, K: int) -> tuple[torch.Tensor, Any]:
    """Losses ``(M,)`` and states of the M members of ``thetas`` (no grad)."""
    with torch.no_grad():
        if hasattr(system, "unroll_batch"):
            return system.unroll_batch(thetas, states, K)
        out = [system.unroll(tree_map(lambda v: v[i], thetas), states[i], K) for i in range(_members(thetas))]
    return torch.stack([loss for loss, _ in out]), [s for _, s in out]


def _repeat(system, state, M: int):
    return system.repeat(state, M) if hasattr(system, "repeat") else [state] * M   # systems never modify a state


def _join(system, a, b):
    return system.join(a, b) if hasattr(system, "join") else list(a) + list(b)


def _take(system, states, index):
    return system.take(states, index) if hasattr(system, "take") else states[index]


def _check(sigma: float, n_pairs: int) -> None:
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0 (got {sigma})")
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1 (got {n_pairs})")


def _detach(state):
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, (list, tuple)):
        return type(state)(_detach(s) for s in state)
    return state


# -- the estimators -----------------------------------------------------------------------
class TBPTT(GradientEstimator):
    """Truncated backprop: the gradient of the next K steps' loss from the carried state."""

    def estimate(self, system, theta, state, K, gen=None, memory=None) -> Estimate:
        leaf = tree_map(lambda v: v.detach().requires_grad_(True), theta)
        with torch.enable_grad():
            loss, new = system.unroll(leaf, state, K)
            grad = meta_gradient(loss, leaf) if isinstance(leaf, dict) else torch.autograd.grad(loss, leaf)[0]
        return Estimate(tree_map(torch.detach, grad), float(loss.detach()), K, _detach(new))


@dataclass(frozen=True)
class ES(GradientEstimator):
    """Antithetic ES: ``sum_i (L(theta + e_i) - L(theta - e_i)) e_i / (2 sigma^2 n)``,
    e_i ~ N(0, sigma^2 I), every member unrolled from the same ``state``.  With ``carry``
    theta itself joins the batch and carries the inner state on."""

    sigma: float
    n_pairs: int
    carry: bool = False

    def __post_init__(self):
        _check(self.sigma, self.n_pairs)

    def _batch(self, theta: Theta, eps: Theta) -> Theta:
        extra = (lambda v: [v[None]]) if self.carry else (lambda v: [])
        return tree_map(lambda v, e: torch.cat([v + e, v - e] + extra(v)), theta, eps)

    def _grad(self, perturbation: Theta, losses: torch.Tensor) -> Theta:
        N = self.n_pairs
        diff = losses[:N] - losses[N:2 * N]
        return tree_map(lambda e: (e * diff.reshape((N,) + (1,) * (e.dim() - 1))).sum(0) / (2 * self.sigma ** 2 * N),
                        perturbation)

    def _result(self, system, grad, losses, new, K, memory=None) -> Estimate:
        N = self.n_pairs
        if self.carry:
            return Estimate(grad, float(losses[2 * N]), (2 * N + 1) * K, _take(system, new, 2 * N), memory, 2 * N)
        return Estimate(grad, float((losses[:N] + losses[N:2 * N]).sum()) / (2 * N), 2 * N * K, None, memory)

    def estimate(self, system, theta, state, K, gen=None, memory=None) -> Estimate:
        eps = _draw(theta, self.n_pairs, self.sigma, gen)
        thetas = self._batch(theta, eps)
        losses, new = unroll_batch(system, thetas, _repeat(system, state, _members(thetas)), K)
        return self._result(system, self._grad(eps, losses), losses, new, K)


@dataclass(frozen=True)
class PES(ES):
    """Persistent ES (Vicol et al. 2021, antithetic): ``memory`` holds each particle's inner
    state (``params``: the + members then the - members) and ``xi``, the sum of its
    perturbations; the estimate weighs the antithetic difference by ``xi`` instead of the
    last perturbation.  ``memory=None`` restarts every particle from ``state``."""

    def estimate(self, system, theta, state, K, gen=None, memory=None) -> Estimate:
        N = self.n_pairs
        eps = _draw(theta, N, self.sigma, gen)
        if memory is None:
            memory = {"params": _repeat(system, state, 2 * N), "xi": tree_map(torch.zeros_like, eps)}
        states = _join(system, memory["params"], _repeat(system, state, 1)) if self.carry else memory["params"]
        losses, new = unroll_batch(system, self._batch(theta, eps), states, K)
        xi = tree_map(torch.add, memory["xi"], eps)
        memory = {"params": _take(system, new, slice(0, 2 * N)), "xi": xi}
        return self._result(system, self._grad(xi, losses), losses, new, K, memory)


@dataclass(frozen=True)
class ReparamES(GradientEstimator):
    """Metz et al. (2019) §3: two unbiased estimators of the gradient of the smoothed loss
    ``E_e L(theta + sigma e)`` from the same antithetic samples, the reparameterisation one
    (mean of ``grad L(theta + sigma e)``) and ES, combined per coordinate with weights
    proportional to the inverse of their estimated variances (Eq. 1).  Tensor theta."""

    sigma: float
    n_pairs: int

    def __post_init__(self):
        _check(self.sigma, self.n_pairs)
        if self.n_pairs < 2:
            raise ValueError("reparam_es needs n_pairs >= 2 to estimate the variances")

    def estimate(self, system, theta, state, K, gen=None, memory=None) -> Estimate:
        n, sigma = self.n_pairs, self.sigma
        theta = theta.detach()
        rp, esg, losses = [], [], []
        for _ in range(n):
            e = torch.randn(theta.shape, generator=gen, dtype=theta.dtype)
            (lp, gp), (lm, gm) = (_value_and_grad(system, theta + sgn * sigma * e, state, K) for sgn in (1.0, -1.0))
            rp.append((gp + gm) / 2)                           # antithetic average of the pathwise gradients
            esg.append((lp - lm) * e / (2 * sigma))
            losses.append((lp + lm) / 2)
        rp_s, es_s = torch.stack(rp), torch.stack(esg)           # (n_pairs, P)
        g_rp, g_es = rp_s.mean(0), es_s.mean(0)
        v_rp = rp_s.var(0, unbiased=True) / n                     # variance of the mean, per coordinate
        v_es = es_s.var(0, unbiased=True) / n
        # inverse-variance weights written as v_es / (v_rp + v_es), stable when one variance
        # is zero (e.g. the antithetic pathwise gradient of a quadratic); equal weights if both are
        v_sum = v_rp + v_es
        w_rp = torch.where(v_sum > 0, v_es / v_sum.clamp_min(torch.finfo(theta.dtype).tiny),
                           torch.full_like(v_sum, 0.5))
        return Estimate(w_rp * g_rp + (1 - w_rp) * g_es, sum(losses) / n, 2 * n * K,
                        parts={"reparam": g_rp, "es": g_es},
                        variances={"reparam": float(v_rp.mean()), "es": float(v_es.mean())})


def _value_and_grad(system, theta: torch.Tensor, state, K: int) -> tuple[float, torch.Tensor]:
    leaf = theta.requires_grad_(True)
    with torch.enable_grad():
        loss, _ = system.unroll(leaf, state, K)
        (g,) = torch.autograd.grad(loss, leaf)
    return float(loss.detach()), g.detach()


def from_meta(meta: MetaConfig) -> GradientEstimator:
    """The estimator ``meta.estimator`` names, carrying the inner state on (a meta-trainer's)."""
    if meta.estimator == "tbptt":
        return TBPTT()
    return {"es": ES, "pes": PES}[meta.estimator](meta.es_sigma, meta.es_pairs, carry=True)
