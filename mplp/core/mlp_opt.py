"""The per-parameter MLP optimizer of Metz et al. (2019, §4.1 and appendix C), behind the
learned-optimizer interface.

Every weight gets 31 features: the gradient ``g`` and the weight ``w``; at each decay
``beta`` in (0.5, 0.9, 0.99, 0.999, 0.9999) the momentum ``m``, ``rms = sqrt(ms)`` of the
mean square, ``r = 1 / (rms + eps)`` and ``r * m``; and the step ``t`` squashed at 9
timescales, ``tanh(t / eta - 1)``, eta log-spaced over [3, 300k].  The 22 non-time features
are divided by their root-mean-square over the weight's tensor (``normalize``), an MLP of
``hidden`` ReLU units gives ``o1, o2`` and the weight moves by
``-exp(lambda_exp * o1) * lambda_lin * o2`` (lambdas 1e-3).  Carry: ``m, ms (..., P, 5)`` and
``t (...)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mplp.core.config import OptimizeeConfig
from mplp.core.gradient_fed import GradientFed
from mplp.core.learners import uniform

DECAYS = (0.5, 0.9, 0.99, 0.999, 0.9999)
TIMESCALES = tuple(float(x) for x in torch.logspace(math.log10(3), math.log10(300_000), 9, dtype=torch.float64))
N_FEATURES = 2 + 4 * len(DECAYS) + len(TIMESCALES)       # 31


@dataclass(frozen=True)
class MLPOptimizer(GradientFed):
    """``theta`` keys ``w1 (31, hidden)``, ``b1 (hidden,)``, ``w2 (hidden, 2)``, ``b2 (2,)``."""

    optimizee: OptimizeeConfig
    hidden: int = 32
    normalize: bool = True
    eps: float = 1e-8
    lambda_exp: float = 1e-3
    lambda_lin: float = 1e-3
    first_order: bool = False
    be_formula: str = "code"
    name = "mlp-optimizer"

    def init_theta(self, gen, dtype=torch.float32, device="cpu") -> dict[str, torch.Tensor]:
        """``torch.nn.Linear``-style uniform initialisation."""
        draw = lambda shape, fan_in: uniform(shape, fan_in, gen, dtype, device)
        return {"w1": draw((N_FEATURES, self.hidden), N_FEATURES), "b1": draw((self.hidden,), N_FEATURES),
                "w2": draw((self.hidden, 2), self.hidden), "b2": draw((2,), self.hidden)}

    def extra_state(self, params, P: int):
        lead = params[0].shape[:-2]
        moments = params[0].new_zeros((*lead, P, len(DECAYS)))
        return [moments, moments, params[0].new_zeros(lead)]

    def features(self, g, w, m, ms, t, segments) -> torch.Tensor:
        """The 31 features ``(..., P, 31)`` of the moments already updated with ``g``."""
        rms = ms.clamp_min(1e-30).sqrt()          # a finite meta-gradient where a gradient is exactly 0
        r = 1.0 / (rms + self.eps)
        x = torch.cat([g[..., None], w[..., None], m, rms, r, r * m], -1)              # (..., P, 22)
        if self.normalize:                  # each feature by its second moment over the weight's tensor
            x = torch.cat([seg / (seg.pow(2).mean(-2, keepdim=True) + self.eps).sqrt()
                           for seg in (x[..., a:b, :] for a, b in segments)], -2)
        scales = torch.tensor(TIMESCALES, dtype=g.dtype, device=g.device)
        time = torch.tanh(t[..., None] / scales - 1)                                    # (..., 9)
        return torch.cat([x, time[..., None, :].expand(*x.shape[:-1], len(TIMESCALES))], -1)

    def update(self, theta, g, w, extra, segments):
        m, ms, t = extra
        beta = torch.tensor(DECAYS, dtype=g.dtype, device=g.device)
        m = beta * m + (1 - beta) * g[..., None]
        ms = beta * ms + (1 - beta) * g[..., None] ** 2
        hidden = torch.relu(self.features(g, w, m, ms, t, segments) @ theta["w1"] + theta["b1"])
        o = hidden @ theta["w2"] + theta["b2"]
        step = -torch.exp(self.lambda_exp * o[..., 0]) * self.lambda_lin * o[..., 1]
        return step, [m, ms, t + 1]
