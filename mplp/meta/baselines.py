"""Hand-designed baselines: SGD and Adam with a learning rate tuned by grid search.

Tuned on the same validation runs (tasks, inner inits, batches) and the same outer
metric as the learned optimizer, so the horizontal lines of Figs. 3a, 8 and 11 are
comparable.  Default grid: 11 values log-spaced in [1e-4, 10] (Metz et al. 2019).
All validation runs are trained at once (a leading run dimension).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mplp.core.config import ExperimentConfig, OptimizeeConfig
from mplp.core.optimizee import accuracy, forward, loss_node
from mplp.tasks.families import ValidationSet, validation_set
from mplp.meta.source import Store
from mplp.core.unroll import outer_metric

OPTIMIZERS = ("sgd", "adam")


def default_grid(n: int = 11, low: float = 1e-4, high: float = 10.0) -> list[float]:
    return [float(v) for v in np.logspace(math.log10(low), math.log10(high), n)]


def grid_text(lrs: list[float]) -> str:
    """The learning-rate grid of a tuned baseline in words, for the chapters' prose:
    "11 log-spaced values in [0.0001, 10]" (or "values from ... to ..." when not log-spaced)."""
    lrs = sorted(float(v) for v in lrs)
    if len(lrs) > 2 and np.allclose(np.diff(np.log(lrs)), math.log(lrs[1] / lrs[0]), rtol=1e-6):
        return f"{len(lrs)} log-spaced values in [{lrs[0]:g}, {lrs[-1]:g}]"
    return f"{len(lrs)} values from {lrs[0]:g} to {lrs[-1]:g}"


@dataclass
class InnerRun:
    """R inner problems trained together: ``curves (R, T)`` inner loss before each
    update, ``params`` the final parameters (leading dimension R), ``accuracy (R, T)``
    the batch accuracy before each update (classification only, else None)."""

    curves: torch.Tensor
    params: list[torch.Tensor]
    accuracy: torch.Tensor | None = None


def adam_step(params: list[torch.Tensor], grads: list[torch.Tensor], m: list[torch.Tensor], v: list[torch.Tensor],
              t: int, lr, betas=(0.9, 0.999), eps: float = 1e-8):
    """One Adam step (``t`` counts from 1) on lists of tensors; returns new (params, m, v).
    ``lr`` may be a tensor (differentiable, chapter 4's learned learning rate)."""
    b1, b2 = betas
    m = [b1 * a + (1 - b1) * g for a, g in zip(m, grads)]
    v = [b2 * c + (1 - b2) * g * g for c, g in zip(v, grads)]
    params = [p - lr * (a / (1 - b1 ** t)) / ((c / (1 - b2 ** t)).sqrt() + eps) for p, a, c in zip(params, m, v)]
    return params, m, v


def inner_train(name: str, lr: float, inits: list[torch.Tensor], xs: torch.Tensor, ys: torch.Tensor,
                opt: OptimizeeConfig, betas=(0.9, 0.999), eps: float = 1e-8) -> InnerRun:
    """Train R problems at once for T steps with autograd SGD or Adam: ``inits[l]``
    ``(R, n_in + 1, n_out)``, ``xs`` ``(R, T, B, n_in)``."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown baseline {name!r}; expected one of {OPTIMIZERS}")
    params = [p.clone() for p in inits]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    curve, acc = [], []
    for t in range(xs.shape[1]):
        ps = [p.requires_grad_(True) for p in params]
        with torch.enable_grad():
            out = forward(ps, xs[:, t], opt.activation).output
            loss = loss_node(opt.loss, out, ys[:, t]).value                      # (R,)
            grads = torch.autograd.grad(loss.sum(), ps)
        curve.append(loss.detach())
        if opt.loss == "xent":
            acc.append(accuracy(out.detach(), ys[:, t]))
        with torch.no_grad():
            if name == "sgd":
                params = [p - lr * g for p, g in zip(params, grads)]
            else:
                params, m, v = adam_step(params, grads, m, v, t + 1, lr, betas, eps)
    return InnerRun(torch.stack(curve, dim=1), [p.detach() for p in params],
                    torch.stack(acc, dim=1) if acc else None)


@dataclass
class BaselineResult:
    """A tuned baseline.

    metrics[i]: mean outer metric over the validation runs at ``lrs[i]`` (nan when a
    run diverged); best_*: the best finite one; curve: ``(T,)`` mean inner-loss curve
    at the best lr, curves: ``(R, T)`` per run.
    """

    optimizer: str
    lrs: list[float]
    metrics: list[float]
    best_lr: float
    best_metric: float
    curve: np.ndarray
    curves: np.ndarray


def tune(name: str, cfg: ExperimentConfig, lrs: list[float] | None = None,
         val: ValidationSet | None = None, dtype=torch.float32, device="cpu") -> BaselineResult:
    """Grid-search the learning rate of ``name`` on ``cfg``'s validation set."""
    lrs = default_grid() if lrs is None else list(lrs)
    val = val or validation_set(cfg, dtype, device)
    inits = [torch.stack(ps) for ps in zip(*val.inits)]
    metrics, curves = [], []
    for lr in lrs:
        c = inner_train(name, lr, inits, val.xs, val.ys, cfg.optimizee).curves
        per_run = outer_metric(c, cfg.meta.unroll).double()
        metrics.append(float(per_run.mean()) if bool(torch.isfinite(per_run).all()) else float("nan"))
        curves.append(c)
    finite = [i for i, v in enumerate(metrics) if math.isfinite(v)]
    if not finite:
        raise RuntimeError(f"{name}: every learning rate in the grid diverged")
    best = min(finite, key=lambda i: metrics[i])
    return BaselineResult(name, lrs, metrics, lrs[best], metrics[best],
                          curves[best].double().mean(0).cpu().numpy(), curves[best].cpu().numpy())


def tuned(cfg: ExperimentConfig, store=None) -> dict[str, BaselineResult]:
    """``{"sgd", "adam"}`` tuned on ``cfg``'s validation set, stored under results/baselines/."""

    store = store if store is not None else Store()
    return {name: store.load_or_compute("baselines", {"config": cfg.hash(), "optimizer": name},
                                        lambda name=name: tune(name, cfg), BaselineResult)
            for name in ("sgd", "adam")}
