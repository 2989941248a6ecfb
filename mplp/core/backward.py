"""The message-passing backward pass (thesis §4.1) and the MPLP weight update.

``dense_backward`` is the reference: it materialises one learner input row per
(batch element, weight), exactly as the released thesis code does, and is kept as the
oracle every faster path is tested against.  Cost: O(B * n_in * n_out * (|m| + 1))
memory per layer.
"""

from __future__ import annotations

from typing import Protocol

import torch

from mplp.core.optimizee import ForwardCache, LossNode, activation_derivative


class Learners(Protocol):
    """What a backward needs: the four learner kinds on rows, and the inner lr."""

    lr: torch.Tensor | float

    def f(self, rows: torch.Tensor) -> torch.Tensor: ...
    def g_lin(self, rows: torch.Tensor) -> torch.Tensor: ...
    def g_act(self, kind: str, rows: torch.Tensor) -> torch.Tensor: ...
    def g_loss(self, kind: str, rows: torch.Tensor) -> torch.Tensor: ...


def loss_features(node: LossNode, loss_inputs: str) -> torch.Tensor:
    """g_loss inputs per output unit, ``(..., B, n_out, d)``: [loss element, pred|prob,
    target] (``loss_inputs="full"``, d = 3) or [pred|prob, target] (§5.1, d = 2)."""
    cols = [node.feature, node.target]
    if loss_inputs == "full":
        cols = [node.elements] + cols
    return torch.stack(cols, dim=-1)


def loss_rows(node: LossNode, loss_inputs: str) -> torch.Tensor:
    """``loss_features`` as rows ``(B * n_out, d)``."""
    f = loss_features(node, loss_inputs)
    return f.reshape(-1, f.shape[-1])


def dense_backward(learners: Learners, params: list[torch.Tensor], cache: ForwardCache,
                   node: LossNode, activation: str, loss: str,
                   loss_inputs: str = "full") -> list[torch.Tensor]:
    """Reference backward for one unbatched inner problem.

    params[l]: ``(n_in + 1, n_out)``; cache tensors ``(B, ...)``.
    Returns ``mean_b f`` per layer, ``(n_in + 1, n_out)`` each (the update before lr
    and clamp).  Messages into a node are summed (Appendix B); the bias row's message
    is computed and dropped; the first layer sends no messages.
    """
    B, n_out = cache.output.shape
    msg = learners.g_loss(loss, loss_rows(node, loss_inputs)).reshape(B, n_out, -1)  # (B, n_out, |m|)
    m = msg.shape[-1]
    updates: list[torch.Tensor] = [None] * len(params)  # type: ignore[list-item]
    for l in reversed(range(len(params))):
        w, x = params[l], cache.inputs[l]                     # (n_in+1, n_out), (B, n_in+1)
        n_in1, n_o = w.shape
        if l < len(params) - 1:                               # activation node after layer l
            z = cache.preacts[l]                              # (B, n_o)
            rows = torch.cat([msg, z.unsqueeze(-1)], dim=-1).reshape(-1, m + 1)
            msg = learners.g_act(activation, rows).reshape(B, n_o, m)
        m_rows = msg.unsqueeze(1).expand(B, n_in1, n_o, m)   # (B, n_in+1, n_out, |m|)
        x_rows = x.unsqueeze(-1).expand(B, n_in1, n_o).unsqueeze(-1)
        f_out = learners.f(torch.cat([m_rows, x_rows], dim=-1).reshape(-1, m + 1))
        updates[l] = f_out.reshape(B, n_in1, n_o).mean(0)
        if l > 0:
            w_rows = w.expand(B, n_in1, n_o).unsqueeze(-1)
            g = learners.g_lin(torch.cat([m_rows, w_rows], dim=-1).reshape(-1, m + 1))
            msg = g.reshape(B, n_in1, n_o, m).sum(2)[:, :-1]  # (B, n_in, |m|), bias row dropped
    return updates


def apply_updates(params: list[torch.Tensor], updates: list[torch.Tensor],
                  lr: torch.Tensor | float) -> list[torch.Tensor]:
    """MPLP update ``w <- w - clamp(lr * mean_b f, -1, 1)`` (thesis §4.1); a learned lr
    with leading population dimensions ``(...)`` broadcasts over ``(..., n_in + 1, n_out)``."""
    if torch.is_tensor(lr) and lr.dim() > 0:
        lr = lr[..., None, None]
    return [w - torch.clamp(lr * u, -1.0, 1.0) for w, u in zip(params, updates)]


def sgd_backward(learners, params: list[torch.Tensor], cache: ForwardCache, node: LossNode, activation: str,
                 loss: str, loss_inputs: str = "full") -> list[torch.Tensor]:
    """Table 2's functions composed in closed form, with leading population dimensions
    ``(...)``: the loss message ``(pred - y) / n_out`` (MSE) or ``p - y`` (cross-entropy), then
    per layer ``act'(z) * m``, the update ``mean_b x m`` and the message ``sum_j w_ij m_j``
    (bias row dropped).  Equal to ``dense_backward`` with ``SGDLearners`` (tested); used by the
    positive control, whose only meta-parameter is the lr."""
    n_out = cache.output.shape[-1]
    msg = (node.feature - node.target) / (n_out if loss == "mse" else 1)        # (..., B, n_out)
    updates: list[torch.Tensor] = [None] * len(params)  # type: ignore[list-item]
    for l in reversed(range(len(params))):
        if l < len(params) - 1:
            msg = activation_derivative(activation, cache.preacts[l]) * msg
        x = cache.inputs[l]                                                      # (..., B, n_in + 1)
        updates[l] = x.transpose(-1, -2) @ msg / x.shape[-2]                     # (..., n_in + 1, n_out)
        if l > 0:
            msg = msg @ params[l][..., :-1, :].transpose(-1, -2)                 # (..., B, n_in)
    return updates
