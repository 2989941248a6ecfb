"""Outer-gradient estimators for unrolled optimization (Metz et al. 2019 §2-3; Vicol et al. 2021).

An *unrolled system* maps meta-parameters ``theta (P,)`` and an inner state to the sum
of the inner losses over the next ``K`` steps and the state after them
(``system.unroll(theta, state, K) -> (loss, state)``); ``system.init(gen)`` draws a
fresh inner state.  Estimators of d loss / d theta:

- ``tbptt``: autograd through one truncation (biased for short truncations, §2.4);
- ``es``: antithetic evolution strategies over one unroll (unbiased for the Gaussian-
  smoothed loss; no backprop);
- ``PES``: persistent ES over a sequence of truncations (Vicol et al. 2021): each
  particle keeps its inner state and the sum of its perturbations, which removes the
  truncation bias;
- ``reparam_es``: Metz et al.'s variational estimator (§3, Eq. 1): reparameterisation and
  ES gradients of the smoothed loss, combined by inverse-variance weighting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch


class Unrolled(Protocol):
    def init(self, gen: torch.Generator) -> Any: ...

    def unroll(self, theta: torch.Tensor, state: Any, K: int) -> tuple[torch.Tensor, Any]: ...


@dataclass
class Estimate:
    """One outer-gradient estimate: ``grad (P,)``, the unperturbed or mean ``loss``, the
    inner steps it cost (forward and, for tbptt / reparam, backward), and for the
    combined estimator the two parts and their estimated variances."""

    grad: torch.Tensor
    loss: float
    inner_steps: int
    parts: dict[str, torch.Tensor] | None = None
    variances: dict[str, float] | None = None


def _check(sigma: float, n_pairs: int) -> None:
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0 (got {sigma})")
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1 (got {n_pairs})")


def tbptt(system: Unrolled, theta: torch.Tensor, state: Any, K: int) -> tuple[Estimate, Any]:
    """Truncated backprop: the gradient of the next K steps' loss from the carried state."""
    leaf = theta.detach().requires_grad_(True)
    with torch.enable_grad():
        loss, new = system.unroll(leaf, state, K)
        (g,) = torch.autograd.grad(loss, leaf)
    return Estimate(g.detach(), float(loss.detach()), K), _detach(new)


def es(system: Unrolled, theta: torch.Tensor, state: Any, K: int, sigma: float, n_pairs: int,
       gen: torch.Generator) -> Estimate:
    """Antithetic ES: ``mean_i (L(theta + sigma e_i) - L(theta - sigma e_i)) e_i / (2 sigma)``,
    e_i ~ N(0, I); every evaluation unrolls K steps from the same ``state``."""
    _check(sigma, n_pairs)
    theta = theta.detach()
    g = torch.zeros_like(theta)
    total = 0.0
    with torch.no_grad():
        for _ in range(n_pairs):
            e = torch.randn(theta.shape, generator=gen, dtype=theta.dtype)
            lp, _ = system.unroll(theta + sigma * e, state, K)
            lm, _ = system.unroll(theta - sigma * e, state, K)
            g += (lp - lm) * e / (2 * sigma)
            total += float(lp + lm) / 2
    return Estimate(g / n_pairs, total / n_pairs, 2 * n_pairs * K)


class PES:
    """Persistent evolution strategies (Vicol et al. 2021, antithetic).

    ``n_pairs`` particle pairs each carry their own inner state (+ and - copies) and
    ``xi``, the sum of all perturbations applied to them so far.  Per truncation:
    ``g = mean_i xi_i (L(theta + e_i; s_i+) - L(theta - e_i; s_i-)) / (2 sigma^2)``,
    e_i ~ N(0, sigma^2 I).  ``reset()`` restarts every particle from a fresh inner state.
    """

    def __init__(self, system: Unrolled, n_pairs: int, sigma: float, gen: torch.Generator):
        _check(sigma, n_pairs)
        self.system, self.n, self.sigma, self.gen = system, n_pairs, sigma, gen
        self.states: list[tuple[Any, Any]] = []
        self.xi: list[torch.Tensor] = []

    def reset(self, theta: torch.Tensor, state: Any = None) -> None:
        """Restart every particle pair from ``state`` (default: a fresh ``system.init``) with xi = 0."""
        s = self.system.init(self.gen) if state is None else state
        self.states = [(s, s) for _ in range(self.n)]    # systems never modify a state in place
        self.xi = [torch.zeros_like(theta) for _ in range(self.n)]

    def step(self, theta: torch.Tensor, K: int) -> Estimate:
        if not self.states:
            self.reset(theta)
        theta = theta.detach()
        g = torch.zeros_like(theta)
        total = 0.0
        with torch.no_grad():
            for i in range(self.n):
                e = self.sigma * torch.randn(theta.shape, generator=self.gen, dtype=theta.dtype)
                sp, sm = self.states[i]
                lp, sp = self.system.unroll(theta + e, sp, K)
                lm, sm = self.system.unroll(theta - e, sm, K)
                self.states[i] = (sp, sm)
                self.xi[i] = self.xi[i] + e
                g += self.xi[i] * (lp - lm) / (2 * self.sigma ** 2)
                total += float(lp + lm) / 2
        return Estimate(g / self.n, total / self.n, 2 * self.n * K)


def reparam_es(system: Unrolled, theta: torch.Tensor, state: Any, K: int, sigma: float, n_pairs: int,
               gen: torch.Generator) -> Estimate:
    """Metz et al. (2019) §3: two unbiased estimators of the gradient of the smoothed loss
    ``E_e L(theta + sigma e)`` from the same antithetic samples, the reparameterisation
    one (mean of ``grad L(theta + sigma e)``) and ES, combined per coordinate with weights
    proportional to the inverse of their estimated variances (Eq. 1)."""
    _check(sigma, n_pairs)
    if n_pairs < 2:
        raise ValueError("reparam_es needs n_pairs >= 2 to estimate the variances")
    theta = theta.detach()
    rp, esg, losses = [], [], []
    for _ in range(n_pairs):
        e = torch.randn(theta.shape, generator=gen, dtype=theta.dtype)
        pair = []
        for sgn in (1.0, -1.0):
            leaf = (theta + sgn * sigma * e).requires_grad_(True)
            with torch.enable_grad():
                loss, _ = system.unroll(leaf, state, K)
                (g,) = torch.autograd.grad(loss, leaf)
            pair.append((float(loss.detach()), g.detach()))
        (lp, gp), (lm, gm) = pair
        rp.append((gp + gm) / 2)                           # antithetic average of the pathwise gradients
        esg.append((lp - lm) * e / (2 * sigma))
        losses.append((lp + lm) / 2)
    rp_s, es_s = torch.stack(rp), torch.stack(esg)           # (n_pairs, P)
    g_rp, g_es = rp_s.mean(0), es_s.mean(0)
    v_rp = rp_s.var(0, unbiased=True) / n_pairs               # variance of the mean, per coordinate
    v_es = es_s.var(0, unbiased=True) / n_pairs
    # inverse-variance weights written as v_es / (v_rp + v_es), stable when one variance
    # is zero (e.g. the antithetic pathwise gradient of a quadratic); equal weights if both are
    v_sum = v_rp + v_es
    w_rp = torch.where(v_sum > 0, v_es / v_sum.clamp_min(torch.finfo(theta.dtype).tiny), torch.full_like(v_sum, 0.5))
    g = w_rp * g_rp + (1 - w_rp) * g_es
    return Estimate(g, sum(losses) / n_pairs, 2 * n_pairs * K, {"reparam": g_rp, "es": g_es},
                    {"reparam": float(v_rp.mean()), "es": float(v_es.mean())})


def _detach(state):
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, (list, tuple)):
        return type(state)(_detach(s) for s in state)
    return state
