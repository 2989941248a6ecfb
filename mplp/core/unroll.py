"""Inner steps and the truncated unroll (thesis Algorithm 2).

Conventions (``meta.unroll``):
  "code" (released code, default): the inner loss of the first of the K steps is not
         added to the outer loss; an update follows every step, including the last.
  "text" (Algorithm 2 as printed): all K losses are added; no update after step K.
The first step's loss never depends on theta (the carried inner state is detached),
so the conventions differ in the reported value and in the carried state only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from mplp.core import fast
from mplp.core.backward import Learners, apply_updates, dense_backward
from mplp.core.batch_entropy import batch_entropy
from mplp.core.config import MetaConfig, OptimizeeConfig
from mplp.core.optimizee import forward, loss_node

Backward = Callable[..., list]


@dataclass
class StepResult:
    """One inner step: the loss before the update, the updated params, the hidden
    activations and the network output ``(..., B, n_out)`` before the update."""

    loss: torch.Tensor
    params: list[torch.Tensor]
    acts: list[torch.Tensor]
    output: torch.Tensor


def inner_step(learners: Learners, params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
               opt: OptimizeeConfig, loss_inputs: str = "full", backward: Backward = dense_backward,
               update: bool = True) -> StepResult:
    """Forward on batch ``(x (B, n_in), y)``, loss, message-passing backward, MPLP update."""
    cache = forward(params, x, opt.activation)
    node = loss_node(opt.loss, cache.output, y)
    if update:
        ups = backward(learners, params, cache, node, opt.activation, opt.loss, loss_inputs)
        params = apply_updates(params, ups, learners.lr)
    return StepResult(node.value, params, cache.acts, cache.output)


def _uses_engine(learners, backward) -> bool:
    """Neural learners on the fast backward: run through the fast engine (``fast.compiled``)."""
    return backward is fast.fast_backward and hasattr(learners, "theta") and learners.spec.kind == "neural"


def _step_with_entropy(learners: Learners, params, x, y, opt: OptimizeeConfig, loss_inputs: str,
                       backward: Backward, update: bool, be_formula: str):
    """``inner_step`` as ``(loss, params, entropy)``: the batch entropy of each hidden layer
    ``(n_hidden, ...)``, nan for a batch of 1."""
    st = inner_step(learners, params, x, y, opt, loss_inputs, backward, update)
    shape = (len(st.acts),) + tuple(st.loss.shape)
    if not st.acts or x.shape[-2] < 2:
        return st.loss, st.params, torch.full(shape, float("nan"), dtype=st.loss.dtype, device=st.loss.device)
    return st.loss, st.params, torch.stack([batch_entropy(h, be_formula) for h in st.acts])


def _engine_step(learners: Learners, params, x, y, opt: OptimizeeConfig, loss_inputs: str, backward: Backward,
                 update: bool, be_formula: str):
    """``_step_with_entropy``, as one compiled graph per inner step on the fast engine."""
    if not _uses_engine(learners, backward) or torch.compiler.is_compiling():
        return _step_with_entropy(learners, params, x, y, opt, loss_inputs, backward, update, be_formula)
    spec = learners.spec

    def one(theta, params, x, y):
        return _step_with_entropy(fast.FastLearners(theta, spec), params, x, y, opt, loss_inputs, backward, update,
                                  be_formula)

    return fast.compiled(one, ("step", spec, opt, loss_inputs, update, be_formula), learners.theta, params, x, y)


@dataclass
class UnrollResult:
    """Result of one truncated unroll of K inner steps.

    total:   meta-objective (outer + be_term), differentiable w.r.t. theta
    outer:   sum of the inner losses counted by the convention
    be_term: batch-entropy term that was added (0 when switched off)
    losses:  ``(K,)`` detached inner loss of every step (before its update)
    entropy: ``(K, n_hidden)`` detached batch entropy of every hidden layer
    params:  inner parameters after the unroll (still attached to the graph)
    """

    total: torch.Tensor
    outer: torch.Tensor
    be_term: torch.Tensor
    losses: torch.Tensor
    entropy: torch.Tensor
    params: list[torch.Tensor]


def unroll(learners: Learners, params: list[torch.Tensor], xs: torch.Tensor, ys: torch.Tensor,
           opt: OptimizeeConfig, meta: MetaConfig, loss_inputs: str = "full",
           backward: Backward = dense_backward, be_weight: torch.Tensor | None = None) -> UnrollResult:
    """Algorithm 2 on the K batches ``xs (K, ..., B, n_in)``, ``ys (K, ..., B, ...)``.

    The batch-entropy term (Eq. 8) is ``2 * mean_k penalty_k * L_K.detach()`` where
    ``L_K`` is the last step's loss (released code).  ``be_weight`` ``(...)`` scales it
    per population member (0 switches it off for that member).  On the fast path with
    neural learners the whole unroll is one compiled graph (``fast.compiled``).
    """
    if _uses_engine(learners, backward):
        spec = learners.spec

        def whole(theta, params, xs, ys, be_weight):
            return _unroll(fast.FastLearners(theta, spec), params, xs, ys, opt, meta, loss_inputs, backward, be_weight)

        key = ("unroll", spec, opt, meta, loss_inputs)
        return UnrollResult(*fast.compiled(whole, key, learners.theta, params, xs, ys, be_weight))
    return UnrollResult(*_unroll(learners, params, xs, ys, opt, meta, loss_inputs, backward, be_weight))


def _unroll(learners, params, xs, ys, opt, meta, loss_inputs, backward, be_weight) -> tuple:
    """``unroll``'s loop for MPLP's learners; returns the fields of an ``UnrollResult`` as a tuple."""
    def step(params, x, y, update):
        return _engine_step(learners, params, x, y, opt, loss_inputs, backward, update, meta.be_formula)

    return truncation(step, params, xs, ys, meta, be_weight)


Step = Callable[[list, torch.Tensor, torch.Tensor, bool], tuple]


def truncation(step: Step, params: list[torch.Tensor], xs: torch.Tensor, ys: torch.Tensor, meta: MetaConfig,
               be_weight: torch.Tensor | None = None) -> tuple:
    """Algorithm 2's loop for any learned optimizer's ``step(state, x, y, update) -> (loss (...),
    state, entropy (n_hidden, ...))``: the outer loss of ``meta``'s convention plus the
    batch-entropy term (Eq. 8); returns the fields of an ``UnrollResult`` as a tuple."""
    K = xs.shape[0]
    if meta.batch_entropy and xs.shape[-2] < 2:
        raise ValueError("batch entropy needs a batch of at least 2 samples")
    outer = xs.new_zeros(())
    penalty = xs.new_zeros(())
    losses, ents = [], []
    for i in range(K):
        do_update = meta.unroll == "code" or i < K - 1
        loss, new_params, H = step(params, xs[i], ys[i], do_update)
        if meta.unroll == "text" or i > 0:
            outer = outer + loss
        if meta.batch_entropy:  # Eq. 8, from the same entropies that are logged
            penalty = penalty + torch.clamp(meta.be_threshold - H, min=0).mean(0)
        ents.append(H.detach())
        losses.append(loss.detach())
        last_loss = loss
        params = new_params
    be_term = 2 * penalty / K * last_loss.detach() if meta.batch_entropy else xs.new_zeros(())
    if be_weight is not None:
        be_term = be_term * be_weight
    return outer + be_term, outer, be_term, torch.stack(losses), torch.stack(ents), params


def outer_metric(curve: torch.Tensor, convention: str) -> torch.Tensor:
    """Outer-loss metric of an inner-loss curve ``(..., T)`` (Eq. 3 with w_t = 1):
    the sum of the losses the unroll convention counts ("code" skips the first)."""
    return curve[..., 1:].sum(-1) if convention == "code" else curve.sum(-1)


@dataclass
class Rollout:
    """An inner training run of T steps with a fixed optimizer (no meta-gradient).

    losses:  ``(T,)`` inner loss before each update
    entropy: ``(T, n_hidden)`` batch entropy of each hidden layer
    params:  final inner parameters
    """

    losses: torch.Tensor
    entropy: torch.Tensor
    params: list[torch.Tensor]


@torch.no_grad()
def rollout(learners: Learners, params: list[torch.Tensor], xs: torch.Tensor, ys: torch.Tensor,
            opt: OptimizeeConfig, loss_inputs: str = "full", backward: Backward = dense_backward,
            be_formula: str = "code") -> Rollout:
    """Run ``len(xs)`` MPLP inner steps, updating after every one (validation, Fig. 3b, 11)."""
    return roll(lambda p, x, y, update: _engine_step(learners, p, x, y, opt, loss_inputs, backward, update, be_formula),
                params, xs, ys)


@torch.no_grad()
def roll(step: Step, state: list[torch.Tensor], xs: torch.Tensor, ys: torch.Tensor) -> Rollout:
    """``len(xs)`` inner steps of any learned optimizer's ``step`` (as ``truncation`` takes it),
    updating after every one, with no meta-gradient."""
    losses, ents = [], []
    for x, y in zip(xs, ys):
        loss, state, H = step(state, x, y, True)
        losses.append(loss.detach())
        ents.append(H.detach())
    return Rollout(torch.stack(losses), torch.stack(ents), [s.detach() for s in state])
