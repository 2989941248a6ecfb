"""The learned-optimizer interface: MPLP (neural and Table 2's) implements it, Table 2's
MPLP through it is SGD, and the meta-trainer runs any implementation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from mplp.core.config import OptimizeeConfig
from mplp.core.l2l import L2L
from mplp.core.learned_optimizer import MPLP, LearnedOptimizer
from mplp.core.mlp_opt import MLPOptimizer
from mplp.core.optimizee import init_params, loss_value
from mplp.core.stateful_mplp import StatefulMPLP
from mplp.core.unroll import Rollout, UnrollResult
from mplp.meta.outer import adam_init
from mplp.meta.trainer import MetaTrainer

from helpers import random_batch, tiny_config

TABLE2 = {"learner.kind": "sgd", "learner.batch_norm": False, "learner.message_size": 1}


def test_both_mplps_are_learned_optimizers_with_theta_of_their_kind():
    neural = MPLP.from_config(tiny_config(), backward=None)
    table2 = MPLP.from_config(tiny_config(**TABLE2), backward=None)
    gen = torch.Generator().manual_seed(0)
    assert isinstance(neural, LearnedOptimizer) and isinstance(table2, LearnedOptimizer)
    assert "f.w1" in neural.init_theta(gen) and set(table2.init_theta(gen)) == {"log_lr"}


def test_table2_mplp_through_the_interface_is_sgd():
    cfg = tiny_config(**TABLE2, **{"learner.lr": 0.05})
    opt = MPLP.from_config(cfg, backward=None)
    gen = torch.Generator().manual_seed(1)
    params = init_params(cfg.optimizee.sizes, gen, torch.float64)
    batches = [random_batch(cfg.optimizee.sizes, "mse", 8, gen) for _ in range(4)]
    xs, ys = torch.stack([b[0] for b in batches]), torch.stack([b[1] for b in batches])
    theta = {"log_lr": torch.tensor(math.log(0.05), dtype=torch.float64)}
    got = opt.rollout(theta, params, xs, ys).params
    want = params
    for x, y in batches:
        p = [w.clone().requires_grad_(True) for w in want]
        g = torch.autograd.grad(loss_value("mse", p, x, y, cfg.optimizee.activation), p)
        want = [w - 0.05 * gw for w, gw in zip(want, g)]
    assert all(torch.allclose(a, b, rtol=1e-10, atol=1e-12) for a, b in zip(got, want))


@dataclass(frozen=True)
class GradientLr(LearnedOptimizer):
    """A minimal gradient-fed learned optimizer (a learned log lr) written only against the
    interface, as the book's other learned optimizers are."""

    optimizee: OptimizeeConfig
    name = "gradient-lr"

    def init_theta(self, gen, dtype=torch.float32, device="cpu"):
        return {"log_lr": torch.tensor(math.log(0.01), dtype=dtype, device=device)}

    def _steps(self, theta, params, xs, ys):
        losses = []
        for x, y in zip(xs, ys):
            loss = loss_value(self.optimizee.loss, params, x, y, self.optimizee.activation)
            g = torch.autograd.grad(loss.sum(), params, create_graph=True)
            params = [w - theta["log_lr"].exp() * gw for w, gw in zip(params, g)]
            losses.append(loss)
        return torch.stack(losses), params

    def unroll(self, theta, params, xs, ys, meta, be_weight=None):
        with torch.enable_grad():
            params = [p if p.requires_grad else p.detach().requires_grad_(True) for p in params]
            losses, params = self._steps(theta, params, xs, ys)
        outer = losses[1:].sum(0)
        return UnrollResult(outer, outer, outer.new_zeros(()), losses.detach(), losses.new_zeros(len(xs), 0),
                            params)

    def rollout(self, theta, params, xs, ys):
        losses, params = self.unroll(theta, params, xs, ys, None).losses, None
        n_hidden = len(self.optimizee.sizes) - 2
        return Rollout(losses, losses.new_zeros((len(xs), n_hidden) + tuple(losses.shape[1:])), params)


@pytest.mark.parametrize("make", [GradientLr, L2L, MLPOptimizer, StatefulMPLP], ids=lambda c: c.__name__)
def test_the_meta_trainer_meta_trains_and_validates_any_learned_optimizer(make):
    """Written only against the interface: the trainer draws the inner state from the optimizer
    (its own carry included), takes outer steps and validates all runs at once."""
    cfg = tiny_config(**TABLE2)
    trainer = MetaTrainer(cfg, dtype=torch.float64)
    trainer.optimizer = make(cfg.optimizee)
    st = trainer.init_state()
    st.theta = trainer.optimizer.init_theta(torch.Generator().manual_seed(0), torch.float64)
    st.adam = adam_init(st.theta)
    start = {k: v.clone() for k, v in st.theta.items()}
    rows = [trainer.outer_step(st) for _ in range(4)]
    assert st.step == 4 and all(math.isfinite(r["outer_loss"]) for r in rows)
    assert any(not torch.equal(start[k], st.theta[k]) for k in start)          # the meta-gradient reached theta
    assert len(st.inner.params) == len(trainer.optimizer.init_state(st.inner.params[:len(cfg.optimizee.sizes) - 1]))
    v = trainer.validate(st.theta)
    assert math.isfinite(v.loss) and v.curves.shape == (cfg.validation.n_runs, cfg.meta.T)
