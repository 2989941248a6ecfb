import math

import pytest
import torch

from mplp.meta.baselines import default_grid, grid_text, inner_train, tune
from mplp.core.optimizee import init_params, loss_value

from helpers import tiny_config


def test_default_grid_is_metz_2019():
    g = default_grid()
    assert len(g) == 11 and g[0] == pytest.approx(1e-4) and g[-1] == pytest.approx(10.0)
    assert g[5] == pytest.approx(10 ** -1.5)


def test_grid_text_says_the_grid_the_baselines_were_tuned_on():
    assert grid_text(default_grid()) == "11 log-spaced values in [0.0001, 10]"
    assert grid_text([0.1, 0.3, 0.2]) == "3 values from 0.1 to 0.3"


def test_inner_train_matches_torch_optimizers(gen):
    cfg = tiny_config()
    opt = cfg.optimizee
    init = init_params(opt.sizes, gen, torch.float64)
    xs = torch.rand(1, 6, 8, 1, generator=gen, dtype=torch.float64)
    ys = torch.sin(xs)
    for name, cls in (("sgd", torch.optim.SGD), ("adam", torch.optim.Adam)):
        run = inner_train(name, 0.05, [p[None] for p in init], xs, ys, opt)
        curve = run.curves
        ps = [p.clone().requires_grad_(True) for p in init]
        o = cls(ps, lr=0.05)
        ref = []
        for t in range(6):
            o.zero_grad()
            loss = loss_value(opt.loss, ps, xs[0, t], ys[0, t], opt.activation)
            loss.backward()
            o.step()
            ref.append(loss.item())
        assert torch.allclose(curve[0], torch.tensor(ref, dtype=torch.float64)), name
        assert all(torch.allclose(a[0], b) for a, b in zip(run.params, ps)), name


def test_tune_picks_the_best_finite_lr():
    cfg = tiny_config()
    r = tune("sgd", cfg, lrs=[1e-3, 1e-1, 1e4])
    assert math.isnan(r.metrics[2])                       # lr 1e4 diverges and is excluded
    assert r.best_lr == 1e-1 and r.best_metric == min(r.metrics[:2])
    assert r.curve.shape == (cfg.meta.T,) and r.curves.shape == (cfg.validation.n_runs, cfg.meta.T)
    with pytest.raises(ValueError, match="unknown baseline"):
        tune("rmsprop", cfg)


def test_inner_train_reports_batch_accuracy_for_classification(gen):
    from mplp.core.config import OptimizeeConfig
    from mplp.core.optimizee import accuracy, forward

    opt = OptimizeeConfig(sizes=(5, 4, 3), loss="xent")
    init = [p[None] for p in init_params(opt.sizes, gen, torch.float64)]
    xs = torch.randn(1, 3, 16, 5, generator=gen, dtype=torch.float64)
    ys = torch.randint(0, 3, (1, 3, 16), generator=gen)
    run = inner_train("sgd", 0.1, init, xs, ys, opt)
    assert run.accuracy.shape == (1, 3)
    assert run.accuracy[0, 0] == accuracy(forward([p[0] for p in init], xs[0, 0], "relu").output, ys[0, 0])
    assert inner_train("sgd", 0.1, [p[None] for p in init_params((1, 4, 1), gen, torch.float64)],
                       xs[..., :1], xs[..., :1], tiny_config().optimizee).accuracy is None
