"""L2L in its own paper's setting (Andrychowicz et al. 2016, §3.1 and Fig. 2): meta-trained on
10-dimensional quadratics (100 steps from w = 0, truncations of 20, outer Adam), compared on
fresh quadratics with SGD and Adam at their best learning rates from a grid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mplp.core.config import MetaConfig, OptimizeeConfig
from mplp.core.l2l import L2L
from mplp.meta.baselines import adam_step
from mplp.meta.estimators import TBPTT
from mplp.meta.outer import adam_init, adam_update
from mplp.tasks.quadratics import Quadratics, sample

DIM, STEPS, TRUNCATION = 10, 100, 20
LR_GRID = tuple(float(x) for x in np.logspace(-4, 0, 17))


@dataclass
class QuadraticSystem:
    """``n`` quadratics optimized by an L2L as an unrolled system for the estimators: the state
    is ``[w (n, d)]`` then the L2L's carries; the loss is the sum over steps of the mean ``f``."""

    l2l: L2L
    problem: Quadratics

    def init_state(self) -> list[torch.Tensor]:
        w = self.problem.y.new_zeros(self.problem.y.shape)
        return [w] + [w.new_zeros((*w.shape, self.l2l.hidden))] * (2 * self.l2l.layers)

    def unroll(self, theta, state, K: int):
        w, carries, total = state[0], state[1:], 0
        d = w.shape[-1]
        for _ in range(K):
            total = total + self.problem.loss(w).mean()
            delta, carries = self.l2l.update(theta, self.problem.grad(w.detach()), w, carries, [(0, d)])
            w = w + delta
        return total, [w] + carries


@dataclass
class QuadraticStudy:
    """Fig. 2's comparison: mean loss curves ``(STEPS + 1,)`` on the test quadratics of the
    meta-trained L2L and of SGD and Adam at their best learning rates (``lrs``), each one's
    final loss per test quadratic ``finals (n_test,)``, and the L2L's outer loss per outer
    step ``outer (S,)``."""

    curves: dict[str, np.ndarray]
    lrs: dict[str, float]
    outer: np.ndarray
    finals: dict[str, np.ndarray]


def l2l(hidden: int = 20) -> L2L:
    """Andrychowicz et al.'s optimizer: two LSTM layers of 20 units, preprocessed gradients."""
    return L2L(OptimizeeConfig(sizes=(DIM, 1)), hidden=hidden)


def meta_train(S: int, n_problems: int = 128, outer_lr: float = 3e-3, seed: int = 0) -> tuple[dict, np.ndarray]:
    """Meta-train an L2L by truncated BPTT over batches of ``n_problems`` quadratics (a new
    batch every ``STEPS`` steps); returns ``theta`` and the outer loss per outer step."""
    gen = torch.Generator().manual_seed(seed)
    opt = l2l()
    theta = opt.init_theta(gen)
    adam = adam_init(theta)
    meta = MetaConfig(outer_lr=outer_lr, grad_clip=float("inf"), eps=1e-8, adam_bias_correction=True)
    outer, state, system = [], None, None
    for s in range(S):
        if s % (STEPS // TRUNCATION) == 0:                  # a new batch of quadratics from w = 0
            system = QuadraticSystem(opt, sample(n_problems, DIM, gen))
            state = system.init_state()
        est = TBPTT().estimate(system, theta, state, TRUNCATION)
        state = est.state
        theta, adam = adam_update(theta, est.grad, adam, meta)
        outer.append(est.loss)
    return theta, np.asarray(outer)


@torch.no_grad()
def curve(update, problem: Quadratics, state: list[torch.Tensor]) -> np.ndarray:
    """``f`` of every problem ``(STEPS + 1, n)`` at steps ``0 .. STEPS`` under ``update(g, state) -> (delta, state)``."""
    w, rest, out = state[0], state[1:], []
    for _ in range(STEPS):
        out.append(problem.loss(w).double().numpy())
        delta, rest = update(problem.grad(w), rest)
        w = w + delta
    out.append(problem.loss(w).double().numpy())
    return np.stack(out)


def sgd(lr: float):
    return lambda g, rest: (-lr * g, rest)


def adam(lr: float):
    """Bias-corrected Adam (``meta.baselines.adam_step``) as a step rule: the step is the new
    weights of a zero start."""
    def step(g, rest):
        m, v, t = rest if rest else ([torch.zeros_like(g)], [torch.zeros_like(g)], 0)
        (delta,), m, v = adam_step([torch.zeros_like(g)], [g], m, v, t + 1, lr)
        return delta, [m, v, t + 1]
    return step


def study(S: int, n_problems: int = 128, n_test: int = 128, outer_lr: float = 3e-3, seed: int = 0) -> QuadraticStudy:
    """Meta-train the L2L, then compare it with SGD and Adam tuned on the same test quadratics
    (best final mean loss over ``LR_GRID``: an advantage to the baselines)."""
    theta, outer = meta_train(S, n_problems, outer_lr, seed)
    test = sample(n_test, DIM, torch.Generator().manual_seed(seed + 1))
    opt, system = l2l(), QuadraticSystem(l2l(), test)
    per_problem = {"L2L": curve(lambda g, rest: opt.update(theta, g, None, rest, [(0, DIM)]), test,
                                system.init_state())}
    lrs = {}
    for name, make in (("SGD", sgd), ("Adam", adam)):
        runs = {lr: curve(make(lr), test, [test.y.new_zeros(test.y.shape)]) for lr in LR_GRID}
        final = {lr: c[-1].mean() for lr, c in runs.items()}
        best = min(runs, key=lambda lr: final[lr] if np.isfinite(final[lr]) else np.inf)
        per_problem[name], lrs[name] = runs[best], best
    return QuadraticStudy({k: c.mean(1) for k, c in per_problem.items()}, lrs, outer,
                          {k: c[-1] for k, c in per_problem.items()})
