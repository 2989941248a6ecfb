"""The learned optimizer an experiment config names (``learner.kind``): MPLP with neural
learners or Table 2's functions, L2L (Andrychowicz et al. 2016) or the per-parameter MLP
optimizer (Metz et al. 2019) or the stateful MPLP (Randazzo et al. 2020)."""

from __future__ import annotations

from mplp.core.config import ExperimentConfig
from mplp.core.l2l import L2L
from mplp.core.learned_optimizer import MPLP, LearnedOptimizer
from mplp.core.mlp_opt import MLPOptimizer
from mplp.core.stateful_mplp import StatefulMPLP
from mplp.core.unroll import Backward


def from_config(cfg: ExperimentConfig, backward: Backward) -> LearnedOptimizer:
    """``cfg``'s learned optimizer; ``backward`` is MPLP's message-passing backward (the others
    take the optimizee's gradient by autograd)."""
    kind, be = cfg.learner.kind, cfg.meta.be_formula
    if kind == "l2l":
        return L2L(cfg.optimizee, hidden=cfg.learner.hidden, be_formula=be)
    if kind == "mlp-optimizer":
        return MLPOptimizer(cfg.optimizee, hidden=cfg.learner.hidden, be_formula=be)
    if kind == "stateful-mplp":
        return StatefulMPLP(cfg.optimizee, cfg.learner.message_size, cfg.learner.hidden, be_formula=be)
    return MPLP.from_config(cfg, backward)
