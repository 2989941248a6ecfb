"""L2L: the coordinatewise LSTM optimizer of Andrychowicz et al. (2016), behind the
learned-optimizer interface.

Every coordinate of the optimizee's params gets its own carries of a shared two-layer LSTM
(``hidden`` units) fed the gradient, preprocessed as in the paper's appendix A
(``(log|g| / p, sign g)`` where ``|g| >= e^-p``, else ``(-1, e^p g)``; or the raw gradient);
a linear read-out times ``output_scale`` is the update, ``w <- w + out``.  The gradient is an
input only: no second derivatives flow into the meta-gradient (the paper's assumption;
``first_order=False`` keeps them, the exact meta-gradient a finite-difference check sees).
Inner state: the optimizee's params, then ``(h, c)`` of every layer, each ``(..., P, hidden)``
with ``P`` the number of coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mplp.core.config import OptimizeeConfig
from mplp.core.gradient_fed import GradientFed
from mplp.core.learners import uniform


@dataclass(frozen=True)
class L2L(GradientFed):
    """The coordinatewise LSTM optimizer; ``theta`` keys ``lstm<l>.w_in (n_in, 4H)``,
    ``.w_h (H, 4H)``, ``.b (4H,)`` per layer, ``out.w (H, 1)``, ``out.b (1,)``."""

    optimizee: OptimizeeConfig
    hidden: int = 20
    layers: int = 2
    preprocess: bool = True
    p: float = 10.0
    output_scale: float = 0.1
    first_order: bool = True
    be_formula: str = "code"
    name = "l2l"

    def init_theta(self, gen, dtype=torch.float32, device="cpu") -> dict[str, torch.Tensor]:
        """``torch.nn.LSTM``-style uniform(-1/sqrt(H), 1/sqrt(H)) weights."""
        H = self.hidden
        draw = lambda *shape: uniform(shape, H, gen, dtype, device)
        theta = {}
        for layer in range(self.layers):
            n_in = (2 if self.preprocess else 1) if layer == 0 else H
            theta.update({f"lstm{layer}.w_in": draw(n_in, 4 * H), f"lstm{layer}.w_h": draw(H, 4 * H),
                          f"lstm{layer}.b": draw(4 * H)})
        theta.update({"out.w": draw(H, 1), "out.b": draw(1)})
        return theta

    def extra_state(self, params, P: int):
        return [params[0].new_zeros((*params[0].shape[:-2], P, self.hidden))] * (2 * self.layers)

    def features(self, g: torch.Tensor) -> torch.Tensor:
        """The LSTM's input for gradient coordinates ``g (..., P)``: ``(..., P, 2)`` or ``(..., P, 1)``."""
        if not self.preprocess:
            return g[..., None]
        big = g.abs() >= math.exp(-self.p)
        first = torch.where(big, torch.log(g.abs().clamp_min(math.exp(-self.p))) / self.p, -torch.ones_like(g))
        second = torch.where(big, torch.sign(g), math.exp(self.p) * g)
        return torch.stack([first, second], -1)

    def update(self, theta, g, w, carries, segments) -> tuple[torch.Tensor, list]:
        """One LSTM step on gradient coordinates ``g (..., P)``: the update ``(..., P)`` and the new carries."""
        x, new = self.features(g), []
        for layer in range(self.layers):
            h, c = carries[2 * layer], carries[2 * layer + 1]
            gates = x @ theta[f"lstm{layer}.w_in"] + h @ theta[f"lstm{layer}.w_h"] + theta[f"lstm{layer}.b"]
            i, f, u, o = gates.chunk(4, -1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(u)
            h = torch.sigmoid(o) * torch.tanh(c)
            new += [h, c]
            x = h
        return self.output_scale * (x @ theta["out.w"] + theta["out.b"])[..., 0], new
