"""Smoke helpers shared by the tests: tiny configs, random problems, comparisons."""

from __future__ import annotations

import torch

from mplp.core.config import (ExperimentConfig, LearnerConfig, MetaConfig, OptimizeeConfig, TaskConfig,
                              ValidationConfig)
from mplp.core.learners import LearnerSpec


def tiny_config(**changes) -> ExperimentConfig:
    """A seconds-long sinewave meta-training config; dotted-path overrides."""
    base = ExperimentConfig(
        experiment="tiny",
        optimizee=OptimizeeConfig(sizes=(1, 6, 5, 1)),
        learner=LearnerConfig(message_size=2, hidden=8, batch_norm=True, learned_lr=True, lr=0.01),
        task=TaskConfig(batch_size=8, amplitude=(1.0, 2.0)),
        meta=MetaConfig(K=3, T=9, S=12, outer_lr=1e-3),
        validation=ValidationConfig(every=4, n_runs=2, seed=7),
        log_every=2, checkpoint_every=5,
    )
    return base.replace(**changes) if changes else base


def learner_spec(c: ExperimentConfig) -> LearnerSpec:
    from mplp.core.learners import learner_spec as ls
    return ls(c)


def random_batch(sizes, loss, B, gen, dtype=torch.float64):
    """Inputs ``(B, n_in)`` and targets (values for mse, labels for xent)."""
    x = torch.randn(B, sizes[0], generator=gen, dtype=dtype)
    if loss == "mse":
        y = torch.randn(B, sizes[-1], generator=gen, dtype=dtype)
    else:
        y = torch.randint(0, sizes[-1], (B,), generator=gen)
    return x, y


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max(max |b|, tiny)."""
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))
