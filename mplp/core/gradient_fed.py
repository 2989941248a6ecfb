"""The gradient-fed learned optimizers' common step: forward, loss, the gradient of the loss
w.r.t. every optimizee weight, then the optimizer's per-coordinate ``update`` of the weights.

Subclasses say how a gradient becomes an update (``update``) and what they carry between
steps (``extra_state``); the inner state is the optimizee's params followed by that carry.
Coordinates: the params flattened and concatenated, ``(..., P)``; ``segments`` gives each
weight tensor's ``(start, stop)`` in it (for per-tensor statistics).
"""

from __future__ import annotations

from abc import abstractmethod

import torch

from mplp.core.batch_entropy import batch_entropy
from mplp.core.config import MetaConfig, OptimizeeConfig
from mplp.core.learned_optimizer import LearnedOptimizer
from mplp.core.optimizee import forward, loss_node
from mplp.core.unroll import Rollout, UnrollResult, roll, truncation


class GradientFed(LearnedOptimizer):
    """A learned optimizer that sees the gradient.  ``first_order``: the gradient is an input
    only (no second derivatives in the meta-gradient)."""

    optimizee: OptimizeeConfig
    first_order: bool
    be_formula: str

    @abstractmethod
    def extra_state(self, params: list[torch.Tensor], P: int) -> list[torch.Tensor]:
        """What the optimizer carries between steps for ``P`` coordinates (leading dims of ``params``)."""

    @abstractmethod
    def update(self, theta, g: torch.Tensor, w: torch.Tensor, extra: list[torch.Tensor],
               segments: list[tuple[int, int]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The step ``(..., P)`` added to the weights ``w (..., P)`` given their gradient ``g``,
        and the new carry."""

    def init_state(self, params):
        return list(params) + self.extra_state(params, sum(p.shape[-2] * p.shape[-1] for p in params))

    def _step(self, theta, state, x, y, update: bool):
        n = len(self.optimizee.sizes) - 1
        params, extra = state[:n], state[n:]
        with torch.enable_grad():
            leaves = [p if p.requires_grad else p.detach().requires_grad_(True) for p in params]
            cache = forward(leaves, x, self.optimizee.activation)
            loss = loss_node(self.optimizee.loss, cache.output, y).value
            exact = not self.first_order and any(p.requires_grad for p in params)
            grads = torch.autograd.grad(loss.sum(), leaves, retain_graph=True, create_graph=exact)
        H = (torch.stack([batch_entropy(h, self.be_formula) for h in cache.acts]) if cache.acts and x.shape[-2] > 1
             else loss.new_full((len(cache.acts),) + tuple(loss.shape), float("nan")))
        if not update:
            return loss, state, H
        lead, segments, k = params[0].shape[:-2], [], 0
        for p in params:
            segments.append((k, k + p.shape[-2] * p.shape[-1]))
            k = segments[-1][1]
        flat = lambda ts: torch.cat([t.reshape(*lead, -1) for t in ts], -1)
        g = flat([gr.detach() if self.first_order else gr for gr in grads])
        delta, extra = self.update(theta, g, flat(params), extra, segments)
        out = [p + delta[..., a:b].reshape(p.shape) for p, (a, b) in zip(params, segments)]
        return loss, out + extra, H

    def unroll(self, theta, params, xs, ys, meta: MetaConfig, be_weight=None) -> UnrollResult:
        return UnrollResult(*truncation(lambda s, x, y, upd: self._step(theta, s, x, y, upd), params, xs, ys, meta,
                                        be_weight))

    def rollout(self, theta, params, xs, ys) -> Rollout:
        theta = {k: v.detach() for k, v in theta.items()}
        return roll(lambda s, x, y, upd: self._step(theta, s, x, y, upd), [s.detach() for s in params], xs, ys)
