"""The synthetic task of Andrychowicz et al. (2016, §3.1): ``f(w) = ||W w - y||^2`` with
``W (d, d)`` and ``y (d,)`` drawn i.i.d. from N(0, 1), a batch of problems on a leading
dimension ``(n, ...)``."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Quadratics:
    """``n`` quadratics: ``W (n, d, d)``, ``y (n, d)``."""

    W: torch.Tensor
    y: torch.Tensor

    def loss(self, w: torch.Tensor) -> torch.Tensor:
        """``f(w) (n,)`` for weights ``w (n, d)``."""
        return ((self.W @ w[..., None])[..., 0] - self.y).pow(2).sum(-1)

    def grad(self, w: torch.Tensor) -> torch.Tensor:
        """``df/dw = 2 W^T (W w - y)``, ``(n, d)``."""
        r = (self.W @ w[..., None])[..., 0] - self.y
        return 2 * (self.W.transpose(-1, -2) @ r[..., None])[..., 0]


def sample(n: int, d: int, gen: torch.Generator, dtype: torch.dtype = torch.float32) -> Quadratics:
    """``n`` fresh quadratics of dimension ``d``."""
    W = torch.randn(n, d, d, generator=gen, dtype=dtype)
    return Quadratics(W, torch.randn(n, d, generator=gen, dtype=dtype))
