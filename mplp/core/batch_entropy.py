"""Batch entropy of an activation layer and its regulariser (thesis §4.4, Eq. 6-8).

The released code uses ``H = mean_j 0.5 * log(pi * e * std_j**2 + 1)`` (std over the
batch, Bessel-corrected); the thesis' Eq. 6 writes ``2 * pi * e``.  ``formula``
selects: "code" (default) or "text".
"""

from __future__ import annotations

import math

import torch

FORMULAS = {"code": math.pi * math.e, "text": 2 * math.pi * math.e}


def batch_entropy(h: torch.Tensor, formula: str = "code") -> torch.Tensor:
    """Batch entropy of activations ``h`` ``(..., B, n)`` -> ``(...)``."""
    if formula not in FORMULAS:
        raise ValueError(f"unknown batch-entropy formula {formula!r}; expected one of {tuple(FORMULAS)}")
    if h.shape[-2] < 2:
        raise ValueError("batch entropy needs a batch of at least 2 samples")
    std = h.std(dim=-2, unbiased=True)
    return (0.5 * torch.log(FORMULAS[formula] * std ** 2 + 1)).mean(-1)


def entropy_penalty(acts: list[torch.Tensor], threshold: float = 0.5, formula: str = "code") -> torch.Tensor:
    """Eq. 8: ``mean_l max(0, p - H^l)`` over the activation layers ``acts``."""
    return torch.stack([torch.clamp(threshold - batch_entropy(h, formula), min=0) for h in acts]).mean(0)
