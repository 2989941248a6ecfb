"""The optimizee: a functional MLP (parameters in, parameters out).

Each linear layer holds weight and bias in one ``(n_in + 1, n_out)`` tensor; its input
gets a column of ones appended (thesis §4.1, released code).  Hidden layers use one
activation type; the last linear layer feeds a loss node (MSE as ``mse / 2``, or
softmax + cross-entropy fused into one node, thesis Appendix C, Eq. 22-25).

Every function accepts optional leading "run" dimensions on ``params`` and ``x`` so
several independent inner problems can be evaluated in one call.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

ACTIVATIONS = ("relu", "tanh", "sigmoid")
LOSSES = ("mse", "xent")
PROB_CLIP = 1e-8  # softmax probabilities are clipped to [1e-8, 1 - 1e-8] (released code)


@contextlib.contextmanager
def probability_clip(value: float):
    """Temporarily change the cross-entropy node's probability clip (0 disables it);
    used to show that the clip is what separates Table 2's message from autograd."""
    global PROB_CLIP
    old, PROB_CLIP = PROB_CLIP, float(value)
    try:
        yield
    finally:
        PROB_CLIP = old


def activate(kind: str, z: torch.Tensor) -> torch.Tensor:
    """Apply activation ``kind`` element-wise."""
    if kind == "relu":
        return torch.relu(z)
    if kind == "tanh":
        return torch.tanh(z)
    if kind == "sigmoid":
        return torch.sigmoid(z)
    raise ValueError(f"unknown activation {kind!r}; expected one of {ACTIVATIONS}")


def activation_derivative(kind: str, z: torch.Tensor) -> torch.Tensor:
    """act'(z), used by the analytic g_act of Table 2 (ReLU'(0) := 0, as autograd)."""
    if kind == "relu":
        return (z > 0).to(z.dtype)
    if kind == "tanh":
        return 1 - torch.tanh(z) ** 2
    if kind == "sigmoid":
        s = torch.sigmoid(z)
        return s * (1 - s)
    raise ValueError(f"unknown activation {kind!r}; expected one of {ACTIVATIONS}")


def init_params(sizes: tuple[int, ...], generator: torch.Generator,
                dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> list[torch.Tensor]:
    """Draw optimizee parameters with ``torch.nn.Linear``'s initialisation.

    Returns one ``(n_in + 1, n_out)`` tensor per layer: rows ``:n_in`` are weights
    (Kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(n_in), 1/sqrt(n_in))) and the
    last row the bias (U(-1/sqrt(n_in), 1/sqrt(n_in))).
    """
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / math.sqrt(n_in)
        u = torch.rand(n_in + 1, n_out, generator=generator, dtype=torch.float64)
        params.append(((2 * u - 1) * bound).to(dtype=dtype, device=device))
    return params


def with_ones(h: torch.Tensor) -> torch.Tensor:
    """Append the bias column: ``(..., B, n)`` -> ``(..., B, n + 1)``."""
    return torch.cat([h, torch.ones_like(h[..., :1])], dim=-1)


@dataclass
class ForwardCache:
    """What the message-passing backward needs from one forward pass.

    inputs[l]:  ``(..., B, n_in_l + 1)`` input of linear layer l, ones column included
    preacts[l]: ``(..., B, n_out_l)`` output of linear layer l (pre-activation)
    acts[l]:    ``(..., B, n_out_l)`` activation of hidden layer l (all but the last)
    output:     ``(..., B, n_out_last)`` network output fed to the loss node
    """

    inputs: list[torch.Tensor]
    preacts: list[torch.Tensor]
    acts: list[torch.Tensor]

    @property
    def output(self) -> torch.Tensor:
        return self.preacts[-1]


def forward(params: list[torch.Tensor], x: torch.Tensor, activation: str) -> ForwardCache:
    """Run the MLP on ``x`` ``(..., B, n_in)``; no activation after the last layer."""
    inputs, preacts, acts = [], [], []
    h = x
    for l, w in enumerate(params):
        inp = with_ones(h)
        z = inp @ w
        inputs.append(inp)
        preacts.append(z)
        if l < len(params) - 1:
            h = activate(activation, z)
            acts.append(h)
    return ForwardCache(inputs, preacts, acts)


@dataclass
class LossNode:
    """Per-output-unit view of the loss node (the inputs of g_loss).

    elements: ``(..., B, n_out)`` per-element loss (sums, per sample, to the sample loss)
    feature:  ``(..., B, n_out)`` prediction (MSE) or clipped softmax probability (xent)
    target:   ``(..., B, n_out)`` target, one-hot for cross-entropy
    value:    ``(...)`` scalar inner loss of the batch
    """

    elements: torch.Tensor
    feature: torch.Tensor
    target: torch.Tensor
    value: torch.Tensor


def loss_node(kind: str, output: torch.Tensor, y: torch.Tensor) -> LossNode:
    """Evaluate the loss node.

    mse:  ``value = mean((output - y)**2) / 2`` over batch and outputs; ``y`` has
          the shape of ``output``.
    xent: softmax over outputs, probabilities clipped to [1e-8, 1 - 1e-8],
          ``value = mean_b(-sum_j y_bj log p_bj)``; ``y`` holds integer labels ``(..., B)``.
    """
    if kind == "mse":
        if y.shape != output.shape:
            raise ValueError(f"mse target shape {tuple(y.shape)} != output shape {tuple(output.shape)}")
        el = (output - y) ** 2 / 2
        return LossNode(el, output, y, el.mean(dim=(-2, -1)))
    if kind == "xent":
        p = torch.softmax(output, dim=-1).clamp(PROB_CLIP, 1 - PROB_CLIP)
        onehot = torch.nn.functional.one_hot(y.long(), output.shape[-1]).to(output.dtype)
        el = -onehot * torch.log(p)
        return LossNode(el, p, onehot, el.sum(-1).mean(-1))
    raise ValueError(f"unknown loss {kind!r}; expected one of {LOSSES}")


def loss_value(kind: str, params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
               activation: str) -> torch.Tensor:
    """Scalar inner loss L(params; x, y), ``(...)`` over leading run dimensions."""
    return loss_node(kind, forward(params, x, activation).output, y).value


def accuracy(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Classification accuracy of ``output`` ``(..., B, C)`` against labels ``(..., B)``."""
    return (output.argmax(-1) == y).to(output.dtype).mean(-1)
