"""The outer optimiser: Adam on the meta-parameters ``theta`` (thesis §4.3).

Hand-written like the released code (SimonsThijs/MPLP @ 31403b7, checked against its
outputs in ``tests/chapters/test_peer.py``): the meta-gradient is clipped element-wise to
``[-grad_clip, grad_clip]`` before the moments, eps 1e-11, and the moments are used
*without* bias correction::

    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  theta -= outer_lr m / (sqrt(v) + eps)

``meta.adam_bias_correction = True`` divides m and v by ``1 - b^t`` (Kingma & Ba); with
b1 = 0.99, b2 = 0.999 the code's step is 0.32x the corrected one at step 1, about 2x
around steps 50-300 and -> 1x after a few thousand steps.  Pure functions over explicit state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mplp.core.config import MetaConfig


@dataclass
class AdamState:
    """First and second moments per theta entry, and the step count."""

    m: dict[str, torch.Tensor]
    v: dict[str, torch.Tensor]
    step: int = 0

    def state_dict(self) -> dict:
        return {"m": self.m, "v": self.v, "step": self.step}

    @classmethod
    def from_state_dict(cls, d: dict) -> "AdamState":
        return cls(d["m"], d["v"], d["step"])


def meta_gradient(objective: torch.Tensor, leaf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """d objective / d theta for every entry of ``leaf`` (zeros where it does not depend)."""
    grads = torch.autograd.grad(objective, list(leaf.values()), allow_unused=True)
    return {k: (g if g is not None else torch.zeros_like(leaf[k])) for k, g in zip(leaf, grads)}


def adam_init(theta: dict[str, torch.Tensor]) -> AdamState:
    return AdamState({k: torch.zeros_like(t) for k, t in theta.items()},
                     {k: torch.zeros_like(t) for k, t in theta.items()}, 0)


@torch.no_grad()
def adam_update(theta: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], state: AdamState,
                meta: MetaConfig) -> tuple[dict[str, torch.Tensor], AdamState]:
    """One Adam step; returns new ``theta`` and new state (inputs are not modified)."""
    t = state.step + 1
    b1, b2 = meta.beta1, meta.beta2
    new_theta, new_m, new_v = {}, {}, {}
    for k, p in theta.items():
        g = grads[k].clamp(-meta.grad_clip, meta.grad_clip)
        m = b1 * state.m[k] + (1 - b1) * g
        v = b2 * state.v[k] + (1 - b2) * g * g
        if meta.adam_bias_correction:
            m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        else:
            m_hat, v_hat = m, v
        new_theta[k] = p - meta.outer_lr * m_hat / (v_hat.sqrt() + meta.eps)
        new_m[k], new_v[k] = m, v
    return new_theta, AdamState(new_m, new_v, t)


def code_step_ratio(step: int | float, beta1: float = 0.99, beta2: float = 0.999):
    """The released code's Adam step over the bias-corrected one at outer ``step`` for a
    constant meta-gradient: ``(1 - beta1^t) / sqrt(1 - beta2^t)`` (0.32 at t = 1 with the
    thesis' betas, about 2 around t = 100, 1.26 at t = 1000, -> 1)."""
    import numpy as np

    t = np.asarray(step, dtype=float)
    return (1 - beta1 ** t) / np.sqrt(1 - beta2 ** t)
