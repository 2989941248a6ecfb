"""§5.3's runs: configs, a tiny population on an MNIST subset, the table and the verdicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mplp.core.config import ConfigError
from mplp.chapters import mnist_be
from mplp.store import RunResult
from mplp.meta.source import Store
from mplp.claims.analysis import InnerComparison

from helpers import tiny_config

MNIST = {"task.name": "mnist", "task.subset": 640, "task.batch_size": 4, "optimizee.sizes": (784, 5, 4, 10),
         "optimizee.loss": "xent", "meta.K": 2, "meta.T": 4, "meta.S": 4, "validation.every": 2}


def test_configs_differ_only_by_seed_and_term():
    cfgs = mnist_be.run_configs(tiny_config(), 3)
    assert [c.meta.batch_entropy for c in cfgs[False]] == [False] * 3 and [c.seed for c in cfgs[True]] == [0, 1, 2]
    assert len({c.hash() for cs in cfgs.values() for c in cs}) == 6
    with pytest.raises(ConfigError, match="n_seeds"):
        mnist_be.run_configs(tiny_config(), 0)


def test_tiny_population_on_an_mnist_subset(tmp_path):
    runs = mnist_be.train_runs(tiny_config(**MNIST), 2, Store(tmp_path), progress=False)
    assert [r.config.meta.batch_entropy for r in runs[False] + runs[True]] == [False, False, True, True]
    assert all(r.complete for rs in runs.values() for r in rs)
    assert (runs[True][0].train["be_term"] >= 0).all() and (runs[False][0].train["be_term"] == 0).all()
    h = mnist_be.last_hidden_entropy(runs[True][0])
    assert h.shape == runs[True][0].validation["step"].shape and np.isfinite(h).all()
    rows = mnist_be.run_table(runs)
    assert [(r.batch_entropy, r.seed) for r in rows] == [(False, 0), (False, 1), (True, 0), (True, 1)]


def _run(be, losses, entropy, be_term=None, every=100):
    steps = np.arange(len(losses)) * every
    v = {"step": steps, "val_loss": np.asarray(losses, float), "entropy_l0": np.zeros(len(losses)),
         "entropy_l1": np.asarray(entropy, float)}
    t = {"step": np.arange(10) * 50, "be_term": np.asarray(be_term if be_term is not None else np.zeros(10), float)}
    return RunResult(Path("."), tiny_config(**{"meta.batch_entropy": be}), v, t, {}, {})


def _cmp(mplp, adam, T=2):
    return InnerComparison({"mplp": np.array([mplp]), "adam": np.array([adam])}, {}, {"adam": 1e-3}, T)


def test_verdicts_on_runs_shaped_like_the_thesis():
    flat = [2.3, 2.3, 2.3, 2.3, 2.3, 2.3, 2.3, 2.3, 2.3, 2.3, 2.3]
    off = [_run(False, flat[:3] + [1.5] * 8, [0.1] * 3 + [0.5] * 8),      # leaves at 300
           _run(False, flat[:8] + [1.0] * 3, [0.1] * 8 + [0.4] * 3),      # leaves at 800
           _run(False, flat, [0.1] * 11)]                                   # never
    decay = np.linspace(0.5, 0.001, 10)
    # with the term: validated every 10 steps, leaving the plateau at step 10 (within 1 % of S = 20)
    on = [_run(True, [2.3, 2.0, 1.6, 1.3] + [1.0] * 7, [0.6] * 11, decay, every=10) for _ in range(3)]
    # runs of 1,000 steps standing for a thesis budget of 2,000 (plateau windows of 200 steps)
    vs = mnist_be.verdicts({False: off, True: on}, _cmp([2.0, 1.0, 0.8, 0.8], [2.0, 0.9, 0.5, 0.3]), thesis_S=2000)
    assert [v.holds for v in vs] == ["yes"] * 6, [(v.claim, v.evidence) for v in vs]
    assert "never" in vs[0].evidence and vs[3].evidence.startswith("per seed 0.")
    assert vs[2].evidence.startswith("plateau exits 10, 10, 10") and all(v.seeds for v in vs)


def test_verdicts_that_fail_or_cannot_be_decided():
    stuck = [_run(False, [2.3] * 11, [0.1] * 11) for _ in range(2)]
    on = [_run(True, [2.3] * 11, [0.1] * 11, np.full(10, 0.4)) for _ in range(2)]
    cmp = _cmp([2.0, 4.0, 1.0, 1.0], [2.0, 0.5, 1.5, 1.5])
    # every run on the plateau, far short of the thesis' windows: claims about it are not reached,
    # whatever their tests say (claim 3's test alone says nothing yet; claim 5's says no)
    vs = mnist_be.verdicts({False: stuck, True: on}, cmp)
    assert [v.holds for v in vs] == ["not_reached", "not_reached", "not_reached", "no", "not_reached", "not_reached"]
    assert vs[4].test_outcome == "no"
    # past the windows (a thesis budget of 2,000 steps) the same runs decide: no plateau exit with the term;
    # the plateau's length and spread wait for runs that leave it (rule 1)
    vs = mnist_be.verdicts({False: stuck, True: on}, cmp, thesis_S=2000)
    assert [v.holds for v in vs][:3] == ["not_reached", "not_reached", "no"]
    assert vs[0].test_outcome == "partly" and vs[0].partly_rule == "long or unpredictable, not both"


def test_worse_than_adam_is_trivially_true_for_an_untrained_optimizer():
    stuck = [_run(False, [2.3] * 11, [0.1] * 11) for _ in range(2)]
    on = [_run(True, [2.3] * 11, [0.1] * 11, np.full(10, 0.4)) for _ in range(2)]
    vs = mnist_be.verdicts({False: stuck, True: on}, _cmp([2.0, 1.0, 2.0, 2.0], [2.0, 0.5, 0.4, 0.3]), adam_metric=1.0)
    assert vs[5].test_outcome == "yes" and vs[5].holds == "trivial" and not vs[5].counted


def test_pick_optimizer_takes_the_best_stored_snapshot(tmp_path):
    runs = mnist_be.train_runs(tiny_config(**MNIST, **{"snapshot_every": 2}), 2, Store(tmp_path), progress=False)
    run, ck = mnist_be.pick_optimizer(runs[True])
    best = min(float(v) for r in runs[True] for s, v in zip(r.validation["step"], r.validation["val_loss"])
               if int(s) in r.snapshots())
    assert ck.val_loss == best and run in runs[True]
    with pytest.raises(ValueError, match="no runs"):
        mnist_be.pick_optimizer([])


def test_continuation_says_where_the_longer_runs_were_continued_and_what_was_known_then():
    flat, leaves_late = [2.3] * 11, [2.3] * 8 + [1.0] * 3              # leaves at 800, after the 500 continuation
    off = [_run(False, flat, [0.1] * 11), _run(False, leaves_late, [0.1] * 11)]
    on = [_run(True, [2.3, 1.0] + [0.9] * 9, [0.5] * 11)]
    assert mnist_be.continuation({False: off, True: on}) is None                  # trained in one go
    for r in off + on:
        r.meta["resumes"] = [{"step": 200}, {"step": 500, "extended_from": "abc"}]
    assert mnist_be.continuation({False: off, True: on}) == mnist_be.Continuation(500, 0, 2)
    # every verdict judged on continued runs says so in its post-hoc note
    from types import SimpleNamespace

    st = mnist_be.MnistStudy(None, {False: off, True: on}, {"adam": SimpleNamespace(best_metric=1.0)}, [], on[0], None,
                             _cmp([2.0, 1.0], [2.0, 0.9]), {False: off, True: on})
    assert all("continued past 500 steps after they were seen there (0 of 2 without the term off the plateau)"
               in v.post_hoc for v in st.verdicts())
