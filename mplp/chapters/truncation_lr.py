"""Figure 4 of Metz et al. (2019), §2.4: learning Adam's learning rate on an MLP classifier with
truncated unrolls (truncated BPTT, ES, PES), and the true-gradient references."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mplp.chapters.truncation_toy import DTYPE
from mplp.core.config import MetaConfig
from mplp.meta.baselines import adam_step
from mplp.meta.outer import adam_init, adam_update
from mplp.core.optimizee import init_params
from mplp.core.optimizee import forward, loss_node
from mplp.meta.estimators import ES, PES, TBPTT

@dataclass
class InnerAdamState:
    """Inner state of ``AdamLrProblem``: MLP params, Adam moments, step count and the
    data stream (a permutation of the training set and a cursor into it)."""

    params: list[torch.Tensor]
    m: list[torch.Tensor]
    v: list[torch.Tensor]
    t: int
    order: torch.Tensor
    cursor: int


class AdamLrProblem:
    """An MLP classifier trained by Adam with lr = exp(theta[0]) (Metz et al. 2019 §2.4).

    ``unroll(theta, state, K)`` runs K Adam steps on consecutive minibatches and returns
    the mean of their losses (each before its update) and the new state; differentiable
    w.r.t. theta through the whole unroll (second order through the gradients).
    x: ``(N, n_in)``, y: ``(N,)`` labels.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, sizes: tuple[int, ...], batch_size: int = 128,
                 activation: str = "relu", betas=(0.9, 0.999), eps: float = 1e-8):
        if x.shape[0] < batch_size:
            raise ValueError(f"the dataset has {x.shape[0]} examples, fewer than one batch of {batch_size}")
        self.x, self.y, self.sizes, self.B = x, y, tuple(sizes), batch_size
        self.activation, self.betas, self.eps = activation, betas, eps

    def init(self, gen: torch.Generator) -> InnerAdamState:

        params = init_params(self.sizes, gen, self.x.dtype)
        zeros = [torch.zeros_like(p) for p in params]
        return InnerAdamState(params, zeros, [z.clone() for z in zeros], 0, torch.randperm(len(self.x), generator=gen), 0)

    def _batch(self, order: torch.Tensor, cursor: int):
        n = len(self.x) // self.B
        i = order[(cursor % n) * self.B:(cursor % n + 1) * self.B]
        return self.x[i], self.y[i]

    def unroll(self, theta: torch.Tensor, state: InnerAdamState, K: int) -> tuple[torch.Tensor, InnerAdamState]:

        lr = torch.exp(theta[0])
        params, m, v, t = state.params, state.m, state.v, state.t
        differentiable = theta.requires_grad
        total = theta.new_zeros(())
        for k in range(K):
            x, y = self._batch(state.order, state.cursor + k)
            with torch.enable_grad():
                # differentiable: keep the graph from earlier steps (state params become leaves)
                ps = [p if differentiable and p.requires_grad else p.detach().requires_grad_(True)
                      for p in params]
                loss = loss_node("xent", forward(ps, x, self.activation).output, y).value
                grads = torch.autograd.grad(loss, ps, create_graph=differentiable)
            if not differentiable:
                loss, grads = loss.detach(), [g.detach() for g in grads]
            t += 1
            params, m, v = adam_step(ps, grads, m, v, t, lr, self.betas, self.eps)
            total = total + loss
        new = InnerAdamState([p.detach() for p in params], [a.detach() for a in m], [c.detach() for c in v], t,
                        state.order, state.cursor + K)
        return total / K, new


@dataclass
class TruncationGradients:
    """Fig. 4b-c: the outer-gradient (d mean loss / d log lr) of every truncation of
    length k along one inner run at a fixed lr; ``ends (n,)`` inner step at which each
    truncation ends, ``grads (n,)`` their gradients, ``cumulative (n,)`` running sums."""

    k: int
    lr: float
    ends: np.ndarray
    grads: np.ndarray
    cumulative: np.ndarray


def _check_truncation(k: int, N: int) -> None:
    if k < 1 or N % k:
        raise ValueError(f"the truncation length k={k} must divide the number of inner steps N={N}")


def truncation_gradients(problem, lr: float, N: int, k: int, seed: int = 0) -> TruncationGradients:
    """Run one inner problem for N steps at ``lr``, taking the truncated gradient of each
    of its N / k truncations (the lr is not updated)."""

    _check_truncation(k, N)
    theta = torch.tensor([float(np.log(lr))], dtype=DTYPE)
    state = problem.init(torch.Generator().manual_seed(seed))
    grads = []
    for _ in range(N // k):
        est = TBPTT().estimate(problem, theta, state, k)
        state = est.state
        grads.append(float(est.grad[0]))
    g = np.asarray(grads)
    return TruncationGradients(k, lr, np.arange(1, N // k + 1) * k, g, np.cumsum(g))


@dataclass
class OuterTrace:
    """Fig. 4a: the learned lr over outer training; ``inner_steps (U,)`` inner steps
    taken (the x-axis), ``lr (U,)`` after each outer update, ``grad_var`` the mean
    squared deviation of the estimates from their mean (a variance estimate)."""

    estimator: str
    k: int
    inner_steps: np.ndarray
    lr: np.ndarray
    grad_var: float
    inner_steps_per_update: int

    def late_lr(self, frac: float = 1 / 3) -> float:
        """Geometric mean of the learned lr over the last ``frac`` of outer training (by
        inner steps): robust to where a noisy (PES) or sawtooth (short truncations) trace stops."""
        keep = self.inner_steps >= (1 - frac) * self.inner_steps.max()
        return float(np.exp(np.log(self.lr[keep]).mean()))


def outer_train(problem, estimator: str, k: int, N: int, n_problems: int, init_lr: float = 1e-3,
                meta_lr: float = 0.01, seed: int = 0, sigma: float = 0.1, n_pairs: int = 4) -> OuterTrace:
    """Outer-train log lr with Adam over ``n_problems`` inner problems of N steps each.

    ``estimator``: "tbptt" (one update per truncation of k steps), "pes" (persistent ES over
    the same truncations, particles restarted with each inner problem) or "es" (antithetic
    ES over full unrolls: k must equal N).  sigma and n_pairs: the ES / PES perturbations.
    """

    if estimator not in ("tbptt", "pes", "es"):
        raise ValueError(f"unknown estimator {estimator!r}; expected 'tbptt', 'pes' or 'es'")
    _check_truncation(k, N)
    if estimator == "es" and k != N:
        raise ValueError(f"es unrolls whole inner problems: k must equal N (got k={k}, N={N})")
    gen = torch.Generator().manual_seed(seed)
    theta = {"log_lr": torch.tensor([float(np.log(init_lr))], dtype=DTYPE)}
    adam = adam_init(theta)
    meta = MetaConfig(outer_lr=meta_lr, beta1=0.9, beta2=0.999, eps=1e-8, grad_clip=float("inf"),
                      adam_bias_correction=True)      # a standard Adam, as Metz et al.
    lrs, steps, gs = [], [], []
    method = TBPTT() if estimator == "tbptt" else (PES if estimator == "pes" else ES)(sigma, n_pairs)
    for _ in range(n_problems):
        state, memory = problem.init(gen), None         # PES' particles restart with each inner problem
        for _ in range(N // k):
            est = method.estimate(problem, theta["log_lr"], state, k, gen, memory)
            state, memory = est.state, est.memory
            gs.append(float(est.grad[0]))
            theta, adam = adam_update(theta, {"log_lr": est.grad}, adam, meta)
            steps.append(adam.step * k)
            lrs.append(float(torch.exp(theta["log_lr"][0])))
    garr = np.asarray(gs)
    return OuterTrace(estimator, k, np.asarray(steps), np.asarray(lrs), float(garr.var()),
                      k if estimator == "tbptt" else 2 * n_pairs * k)


@dataclass
class LrGrid:
    """The grid-search reference of Fig. 4a: mean training loss over N inner steps
    (mean over seeds) for each lr, and the best lr."""

    lrs: np.ndarray
    loss: np.ndarray
    best_lr: float


def lr_grid(problem, lrs, N: int, n_seeds: int = 3, seed: int = 0) -> LrGrid:
    """Mean training loss over N steps at each fixed lr (Fig. 4a's optimum)."""
    lrs = np.asarray(lrs, dtype=float)
    out = np.zeros(len(lrs))
    for s in range(n_seeds):
        for i, lr in enumerate(lrs):
            state = problem.init(torch.Generator().manual_seed(seed + s))
            loss, _ = problem.unroll(torch.tensor([float(np.log(lr))], dtype=DTYPE), state, N)
            out[i] += float(loss) / n_seeds
    finite = np.isfinite(out)
    if not finite.any():
        raise RuntimeError("every learning rate of the grid diverged")
    best = float(lrs[finite][np.argmin(out[finite])])
    return LrGrid(lrs, out, best)
