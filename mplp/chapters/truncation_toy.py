"""The truncation toy of Metz et al. (2019), §2.3 and Figure 3.

Inner loss ``l(w) = (w - 4)(w - 3) w^2`` (local minimum at w = 0, global at w ~ 3.57),
from ``w0 = -1.2``, trained by SGD with momentum; the outer parameter is the momentum
(Fig. 3b-c) or the learning rate (§2.3, Appendix A).  Everything is vectorised over a
leading dimension of outer parameters and runs in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

W0 = -1.2
DTYPE = torch.float64


def toy_loss(w: torch.Tensor) -> torch.Tensor:
    """l(w) = (w - 4)(w - 3) w^2."""
    return (w - 4) * (w - 3) * w ** 2


def toy_grad(w: torch.Tensor) -> torch.Tensor:
    """l'(w) = 4 w^3 - 21 w^2 + 24 w."""
    return 4 * w ** 3 - 21 * w ** 2 + 24 * w


def toy_hess(w: torch.Tensor) -> torch.Tensor:
    """l''(w) = 12 w^2 - 42 w + 24."""
    return 12 * w ** 2 - 42 * w + 24


def momentum_step(momentum, w: torch.Tensor, v: torch.Tensor, lr: float):
    """One step of SGD with momentum on the toy: ``v <- m v + l'(w)``, ``w <- w - lr v``."""
    v = momentum * v + toy_grad(w)
    return w - lr * v, v


def momentum_trajectories(momenta: torch.Tensor, T: int, lr: float, w0: float = W0) -> torch.Tensor:
    """SGD with momentum on the toy, one run per momentum: ``v <- m v + l'(w)``,
    ``w <- w - lr v``.  Returns ``w (M, T + 1)`` including ``w0``; diverged runs give inf/nan."""
    m = torch.as_tensor(momenta, dtype=DTYPE)
    w = torch.full_like(m, w0)
    v = torch.zeros_like(m)
    out = [w]
    with torch.no_grad():
        for _ in range(T):
            w, v = momentum_step(m, w, v, lr)
            out.append(w)
    return torch.stack(out, 1)


def momentum_gradients(momenta: torch.Tensor, T: int, lr: float, w0: float = W0) -> torch.Tensor:
    """d l(w_T) / d momentum for each momentum ``(M,)``, by backprop through the T steps."""
    m = torch.as_tensor(momenta, dtype=DTYPE).clone().requires_grad_(True)
    w = torch.full_like(m, w0)
    v = torch.zeros_like(m)
    with torch.enable_grad():
        for _ in range(T):
            w, v = momentum_step(m, w, v, lr)
        (g,) = torch.autograd.grad(toy_loss(w).sum(), m)
    return g.detach()


def final_loss(momenta: torch.Tensor, T: int, lr: float, w0: float = W0) -> torch.Tensor:
    """``l(w_T)`` for each momentum ``(M,)`` (Fig. 3c)."""
    return toy_loss(momentum_trajectories(momenta, T, lr, w0)[:, -1])


class MomentumToy:
    """The toy as an unrolled system for the estimators: theta = [momentum], state =
    (w, v); ``unroll`` runs K steps of SGD with momentum at a fixed ``lr`` and returns the
    loss at the end, l(w_K) (the objective of Fig. 3c)."""

    def __init__(self, lr: float, w0: float = W0):
        self.lr, self.w0 = lr, w0

    def init(self, gen=None):
        return (torch.tensor(self.w0, dtype=DTYPE), torch.tensor(0.0, dtype=DTYPE))

    def unroll(self, theta: torch.Tensor, state, K: int):
        w, v = state
        for _ in range(K):
            w, v = momentum_step(theta[0], w, v, self.lr)
        return toy_loss(w), (w, v)


@dataclass
class LrGradient:
    """The outer-gradient d l(w_T) / d lr of T steps of plain gradient descent on the toy,
    by Appendix A's formula and by autograd, for each lr and T."""

    lrs: torch.Tensor          # (L,)
    horizons: list[int]
    formula: torch.Tensor      # (L, len(horizons))
    autograd: torch.Tensor     # (L, len(horizons))


def appendix_a_gradient(lr: torch.Tensor, T: int, w0: float = W0) -> torch.Tensor:
    """Metz et al. (2019) Appendix A: ``<g_T, -sum_i prod_{j=i+1}^{T-1} (1 - lr H_j) g_i>``
    for gradient descent ``w <- w - lr l'(w)`` on the toy; ``lr (L,)`` -> ``(L,)``."""
    lr = torch.as_tensor(lr, dtype=DTYPE)
    w = torch.full_like(lr, w0)
    gs, hs = [], []
    for _ in range(T):
        gs.append(toy_grad(w))
        hs.append(toy_hess(w))
        w = w - lr * gs[-1]
    gT = toy_grad(w)
    if T == 0:
        return torch.zeros_like(lr)
    g, h = torch.stack(gs, 1), torch.stack(hs, 1)                   # (L, T)
    factors = 1 - lr[:, None] * h                                    # (L, T): (1 - lr H_j)
    # suffix products: P_i = prod_{j=i+1}^{T-1} factors_j  (P_{T-1} = 1)
    ones = torch.ones_like(lr)[:, None]
    rev = torch.cumprod(torch.flip(torch.cat([factors[:, 1:], ones], 1), [1]), 1)
    P = torch.flip(rev, [1])                                         # (L, T)
    return gT * -(P * g).sum(1)


def autograd_lr_gradient(lr: torch.Tensor, T: int, w0: float = W0) -> torch.Tensor:
    """The same derivative by backpropagation through the T steps."""
    leaf = torch.as_tensor(lr, dtype=DTYPE).clone().requires_grad_(True)
    w = torch.full_like(leaf, w0)
    with torch.enable_grad():
        for _ in range(T):
            w = w - leaf * toy_grad(w)
        (g,) = torch.autograd.grad(toy_loss(w).sum(), leaf)
    return g.detach()


def lr_gradients(lrs, horizons: list[int], w0: float = W0) -> LrGradient:
    """``appendix_a_gradient`` and ``autograd_lr_gradient`` over a grid of lrs and horizons."""
    lrs = torch.as_tensor(lrs, dtype=DTYPE)
    if any(T < 1 for T in horizons):
        raise ValueError(f"horizons must be >= 1 (got {horizons})")
    f = torch.stack([appendix_a_gradient(lrs, T, w0) for T in horizons], 1)
    a = torch.stack([autograd_lr_gradient(lrs, T, w0) for T in horizons], 1)
    return LrGradient(lrs, list(horizons), f, a)
