"""The book's trained MPLPs as artefacts: listed from the committed results, loaded by name,
and applied to a new MLP exactly as the meta-trainer's validation applies them."""

import math

import pytest
import torch

import mplp
from mplp import pretrained
from mplp.core.learned_optimizer import MPLP
from mplp.core.optimizee import init_params
from mplp.core.unroll import outer_metric
from mplp.tasks.families import make_family

BEST_GRID_CELL = "ablation/8942ef7ed055"      # |m|=8, BN on, lr learned: 120,000 outer steps (thesis budget)


def test_the_listing_reads_the_committed_runs():
    listed = {p.name: p for p in pretrained.available()}
    p = listed[BEST_GRID_CELL]
    assert p.experiment == "ablation" and p.status == "complete" and p.steps == 120_000
    assert p.setting.startswith("|m|=8, BN on, lr learned; sinewave MLP 1-20-20-1")
    opt = pretrained.load(BEST_GRID_CELL)
    assert p.val_loss == pytest.approx(float(opt.info.val_loss)) and set(opt.theta) >= {"f.w1", "lr"}


def test_optimize_is_the_validation_rollout_and_trains_a_new_mlp():
    opt = pretrained.load(BEST_GRID_CELL)
    cfg = opt.config
    task = make_family(cfg.task).sample(torch.Generator().manual_seed(5), cfg.meta.T)
    xs, ys = task.batches(0, cfg.meta.T)
    got = pretrained.optimize(cfg.optimizee.sizes, xs, ys, opt, seed=3)
    params = init_params(cfg.optimizee.sizes, torch.Generator().manual_seed(3))
    want = MPLP.from_config(cfg, pretrained.fast_backward).rollout(opt.theta, params, xs, ys)
    assert torch.equal(got.losses, want.losses)
    metric = float(outer_metric(got.losses, cfg.meta.unroll))
    assert math.isfinite(metric) and float(got.losses[-10:].mean()) < 0.5 * float(got.losses[0])
    wider = mplp.optimize((1, 32, 1), xs, ys, BEST_GRID_CELL)      # another MLP, the same learners
    assert wider.params[0].shape == (2, 32) and torch.isfinite(wider.losses).all()


@pytest.mark.parametrize("name, message", [
    ("ablation", "expected <experiment>/<hash>"),
    ("../etc/passwd", "expected <experiment>/<hash>"),
    ("ablation/000000000000", "no trained optimizer"),
    ("baselines/ccfad6155721", "no trained optimizer"),          # a stored result, not a run
])
def test_bad_names_are_one_line_errors(name, message):
    with pytest.raises(ValueError, match=message):
        pretrained.load(name)


def test_optimize_refuses_data_that_does_not_fit():
    opt = pretrained.load(BEST_GRID_CELL)
    with pytest.raises(ValueError, match=r"xs must be \(N, B, 1\)"):
        pretrained.optimize((1, 20, 1), torch.zeros(4, 8, 3), torch.zeros(4, 8, 1), opt)
    with pytest.raises(ValueError, match=r"ys \(N, B, 1\)"):                # would broadcast silently
        pretrained.optimize((1, 20, 1), torch.zeros(4, 8, 1), torch.zeros(4, 8), opt)
    with pytest.raises(ValueError, match="with hidden layers"):
        pretrained.optimize((1, 1), torch.zeros(4, 8, 1), torch.zeros(4, 8, 1), opt)
