"""The learned-optimizer interface the meta-trainer sees, and MPLP behind it.

A learned optimizer has meta-parameters ``theta`` (a dict of tensors) and trains an
optimizee MLP: ``unroll`` takes K inner steps differentiably in ``theta`` (the truncation
of Algorithm 2), ``rollout`` takes T steps with ``theta`` fixed (validation, Fig. 3b, 11).
Both accept leading member dimensions ``(...)`` on ``theta``'s tensors, the params and
the batches (a population, or the perturbations of an ES estimate).  MPLP with neural
learners and MPLP with Table 2's functions are the two implementations here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from mplp.core.backward import sgd_backward
from mplp.core.config import ExperimentConfig, MetaConfig, OptimizeeConfig
from mplp.core.learners import LearnerSpec, init_theta, learner_spec, make_learners
from mplp.core.unroll import Backward, Rollout, UnrollResult, rollout, unroll

Theta = dict[str, torch.Tensor]


class LearnedOptimizer(ABC):
    """Meta-parameters ``theta`` that train an optimizee.  The carried inner state is a list of
    tensors: the optimizee's params, then whatever the optimizer keeps between inner steps
    (an LSTM's carries, momenta; ``init_state``); ``unroll`` and ``rollout`` take and return it
    whole (``UnrollResult.params``, ``Rollout.params``)."""

    name: str

    def init_state(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """The inner state of a fresh optimizee ``params``; a stateless optimizer (MPLP) keeps none."""
        return params

    @abstractmethod
    def init_theta(self, gen: torch.Generator, dtype: torch.dtype = torch.float32,
                   device: str | torch.device = "cpu") -> Theta:
        """Fresh meta-parameters drawn from ``gen``."""

    def calibrate(self, theta: Theta, params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> Theta:
        """``theta`` with constants recorded on first minibatches ``x (R, B, n_in)`` of ``R`` fresh
        optimizees ``params`` (leading ``R``) before meta-training; most optimizers record none."""
        return theta

    @abstractmethod
    def unroll(self, theta: Theta, params: list[torch.Tensor], xs: torch.Tensor, ys: torch.Tensor,
               meta: MetaConfig, be_weight: torch.Tensor | None = None) -> UnrollResult:
        """K inner steps on ``xs (K, ..., B, n_in)``, ``ys (K, ..., B, ...)`` from ``params``;
        the outer loss of ``meta``'s convention, differentiable in ``theta``."""

    @abstractmethod
    def rollout(self, theta: Theta, params: list[torch.Tensor], xs: torch.Tensor, ys: torch.Tensor) -> Rollout:
        """``len(xs)`` inner steps with ``theta`` fixed, no meta-gradient."""


@dataclass(frozen=True)
class MPLP(LearnedOptimizer):
    """The thesis' optimizer: messages passed backward through the optimizee (Eq. 4-5),
    learners of ``spec.kind`` ("neural", or "sgd": Table 2's functions, MPLP as SGD)."""

    spec: LearnerSpec
    optimizee: OptimizeeConfig
    backward: Backward
    be_formula: str = "code"
    name = "mplp"

    @classmethod
    def from_config(cls, cfg: ExperimentConfig, backward: Backward) -> "MPLP":
        """The MPLP an experiment meta-trains; Table 2's functions run in closed form
        (``sgd_backward``, equal to the dense backward: tested)."""
        spec = learner_spec(cfg)
        return cls(spec, cfg.optimizee, sgd_backward if spec.kind == "sgd" else backward, cfg.meta.be_formula)

    def init_theta(self, gen, dtype=torch.float32, device="cpu") -> Theta:
        return init_theta(self.spec, gen, dtype, device)

    def unroll(self, theta, params, xs, ys, meta, be_weight=None) -> UnrollResult:
        return unroll(make_learners(theta, self.spec), params, xs, ys, self.optimizee, meta, self.spec.loss_inputs,
                      self.backward, be_weight)

    def rollout(self, theta, params, xs, ys) -> Rollout:
        return rollout(make_learners(theta, self.spec), params, xs, ys, self.optimizee, self.spec.loss_inputs,
                       self.backward, self.be_formula)
