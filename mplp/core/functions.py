"""The |m| = 1 learner functions as two-argument functions ``fn(a, b)`` (Figs. 4-7): their names
and axes, Table 2's closed forms, and evaluation on a grid."""

from __future__ import annotations

from typing import Callable

import torch

from mplp.core.learners import SGDLearners

# name -> (first input, second input, title) of the |m| = 1 learner functions (Figs. 4-7)
FUNCTIONS = {
    "f": ("message m", "input x", "update f(m, x)"),
    "g_lin": ("message m", "weight w", "linear node g_lin(m, w)"),
    "g_loss": ("prediction", "target y", "loss node g_mse(pred, y)"),
    "g_relu": ("message m", "pre-activation z", "ReLU node g_relu(m, z)"),
}
DEFAULT_RANGES = {"f": ((-1, 1), (-2, 2)), "g_lin": ((-1, 1), (-1, 1)),
                  "g_loss": ((-2, 2), (-1, 1)), "g_relu": ((-1, 1), (-2, 2))}

Fn2 = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sgd_function(name: str) -> Fn2:
    """The Table 2 function ``name`` as ``fn(a, b)`` on equal-shape tensors, evaluated
    by the library's analytic learners (``learners.SGDLearners``, MSE with one output)."""
    learners = SGDLearners(1.0, "mse", 1)

    def rows(*cols):
        return torch.stack([c.reshape(-1) for c in cols], dim=1)

    if name == "f":
        return lambda m, x: learners.f(rows(m, x)).reshape(m.shape)
    if name == "g_lin":
        return lambda m, w: learners.g_lin(rows(m, w)).reshape(m.shape)
    if name == "g_relu":
        return lambda m, z: learners.g_act("relu", rows(m, z)).reshape(m.shape)
    if name == "g_loss":
        return lambda p, y: learners.g_loss("mse", rows((p - y) ** 2 / 2, p, y)).reshape(p.shape)
    raise ValueError(f"unknown learner function {name!r}; expected one of {tuple(FUNCTIONS)}")


def grid(fn: Fn2, a_range, b_range, n: int = 41):
    """``(A, B, Z)`` arrays of ``fn`` on an n x n grid (float64)."""
    a = torch.linspace(*a_range, n, dtype=torch.float64)
    b = torch.linspace(*b_range, n, dtype=torch.float64)
    A, B = torch.meshgrid(a, b, indexing="ij")
    with torch.no_grad():
        Z = fn(A, B)
    return A.numpy(), B.numpy(), Z.double().numpy()
