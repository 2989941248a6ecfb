import json

import numpy as np
import pytest
import torch

from mplp.store import FINAL_STATE, run_dir
from mplp.meta.trainer import MetaTrainer, resolve_device
from mplp.meta.loop import RunExistsError, train

from helpers import tiny_config


def _same_run(a, b):
    for k in a.validation:
        assert a.validation[k].tolist() == b.validation[k].tolist(), k
    for k in a.train:
        assert a.train[k].tolist() == b.train[k].tolist(), k
    for k in a.theta:
        assert torch.equal(a.theta[k], b.theta[k]), k


def test_resume_is_bit_for_bit(tmp_path):
    cfg = tiny_config()
    full = train(cfg, tmp_path / "full", progress=False)
    assert full.complete and full.meta["steps_done"] == 12
    part = train(cfg, tmp_path / "split", progress=False, max_steps=7)
    assert not part.complete and (part.path / "checkpoint.pt").exists()
    assert json.loads((part.path / "meta.json").read_text())["steps_done"] == 7
    with pytest.raises(RunExistsError, match="--resume"):
        train(cfg, tmp_path / "split", progress=False)
    resumed = train(cfg, tmp_path / "split", progress=False, resume=True)
    assert resumed.complete and not (resumed.path / "checkpoint.pt").exists()
    _same_run(full, resumed)


def test_resume_with_batch_entropy_and_text_convention(tmp_path):
    cfg = tiny_config(**{"meta.batch_entropy": True, "meta.unroll": "text", "meta.S": 8})
    full = train(cfg, tmp_path / "a", progress=False)
    train(cfg, tmp_path / "b", progress=False, max_steps=3)
    _same_run(full, train(cfg, tmp_path / "b", progress=False, resume=True))
    assert (full.train["be_term"] >= 0).all()


def test_stored_results(tmp_path):
    cfg = tiny_config()
    run = train(cfg, tmp_path, progress=False)
    assert run.path == run_dir(tmp_path, cfg)
    assert run.validation["step"].tolist() == [0, 4, 8, 12]
    assert run.train["step"].tolist() == [2, 4, 6, 8, 10, 12]
    assert {"entropy_l0", "entropy_l1", "val_loss_std"} <= set(run.validation)
    assert sorted(run.snapshots()) == [0, 4, 8, 12]
    assert run.meta["cpu_count"] >= 1 and run.meta["wall_time_s"] > 0
    again = train(cfg, tmp_path, progress=False)        # a complete run is loaded, not recomputed
    assert again.meta["wall_time_s"] == run.meta["wall_time_s"]


def test_inner_problem_resets_when_t_plus_K_exceeds_T():
    cfg = tiny_config()                                  # K = 3, T = 9: 3 unrolls per problem
    tr = MetaTrainer(cfg)
    st = tr.init_state()
    tasks = []
    for _ in range(7):
        tr.outer_step(st)
        tasks.append(id(st.inner.task))
    assert tasks[0] == tasks[2] != tasks[3] == tasks[5] != tasks[6]
    text = MetaTrainer(cfg.replace(**{"meta.unroll": "text"}))   # Algorithm 1: t + K >= T
    st = text.init_state()
    ids = []
    for _ in range(4):
        text.outer_step(st)
        ids.append(id(st.inner.task))
    assert ids[0] == ids[1] != ids[2] == ids[3]


def test_non_finite_meta_gradient_skips_the_update():
    cfg = tiny_config()
    tr = MetaTrainer(cfg)
    st = tr.init_state()
    st.theta["f.w2"] = torch.full_like(st.theta["f.w2"], float("nan"))
    before = {k: v.clone() for k, v in st.theta.items()}
    tr.outer_step(st)
    assert st.skipped == 1 and torch.equal(st.theta["g_lin.w1"], before["g_lin.w1"])


def test_meta_training_lowers_the_outer_loss(tmp_path):
    """A learned optimizer that never learns is a bug: a short, aggressive run must help."""
    cfg = tiny_config(**{"meta.S": 60, "meta.outer_lr": 3e-3, "validation.every": 60})
    run = train(cfg, tmp_path, progress=False)
    first, last = run.validation["val_loss"]
    assert last < 0.9 * first, (first, last)


def test_devices():
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")


def test_mnist_meta_training_walks_one_data_stream(tmp_path):
    cfg = tiny_config(**{"task.name": "mnist", "task.subset": 96, "task.batch_size": 4,
                         "optimizee.sizes": [784, 4, 10], "optimizee.loss": "xent",
                         "meta.S": 5, "meta.K": 2, "meta.T": 4, "meta.batch_entropy": True})
    tr = MetaTrainer(cfg)
    st = tr.init_state()
    cursors, params = [], []
    for _ in range(5):
        tr.outer_step(st)
        cursors.append(st.inner.cursor)
        params.append(st.inner.params[0])
    assert cursors == [2, 4, 6, 8, 10]                      # the cursor carries on across resets
    assert st.inner.t == 2 and not torch.equal(params[1], params[2])  # ... while the init is redrawn
    run = train(cfg, tmp_path, progress=False)
    assert run.complete and run.validation["step"].tolist() == [0, 4, 5]  # every 4, and the last


def test_prediction_target_loss_inputs_train(tmp_path):
    """§5.1 feeds the loss learner only [prediction, target]."""
    cfg = tiny_config(**{"learner.loss_inputs": "prediction_target", "meta.S": 3})
    run = train(cfg, tmp_path, progress=False)
    assert run.theta["g_loss.mse.w1"].shape[0] == 2 and run.complete


def test_batched_validation_equals_run_by_run_dense():
    from mplp.core.backward import dense_backward

    cfg = tiny_config(**{"validation.n_runs": 3})
    fast = MetaTrainer(cfg, dtype=torch.float64)
    dense = MetaTrainer(cfg, dtype=torch.float64, backward=dense_backward)
    theta = fast.init_state().theta
    a, b = fast.validate(theta), dense.validate(theta)
    assert a.curves.shape == b.curves.shape == (3, cfg.meta.T)
    assert torch.allclose(a.curves, b.curves, rtol=1e-9, atol=1e-12)
    assert a.loss == pytest.approx(b.loss, rel=1e-9)
    assert a.entropy == pytest.approx(b.entropy, rel=1e-9)


def test_population_equals_runs_one_by_one(tmp_path):
    from mplp.meta.loop import train_population

    base = tiny_config(**{"meta.S": 6, "validation.every": 3})
    cfgs = [base.replace(seed=0), base.replace(seed=1), base.replace(**{"seed": 2, "meta.batch_entropy": True})]
    pop = train_population(cfgs, tmp_path / "pop", progress=False, dtype=torch.float64)
    # Under batch-norm the output bias of every message learner is dead: the next
    # learner's normalisation removes a constant shift of the messages, so its gradient
    # is rounding noise that Adam turns into steps of at most ~outer_lr; the batched and
    # single runs may differ there by that much, and nowhere else.
    dead = {"g_lin.b2", "g_act.relu.b2", "g_loss.mse.b2"}
    bound = 2 * base.meta.outer_lr * base.meta.S
    for c, r in zip(cfgs, pop):
        alone = train(c, tmp_path / "alone", progress=False, dtype=torch.float64)
        assert r.path.name == alone.path.name == c.hash()
        for k in alone.theta:
            atol = bound if k in dead else 1e-12
            assert torch.allclose(r.theta[k], alone.theta[k], rtol=1e-9, atol=atol), k
        assert r.validation["val_loss"] == pytest.approx(alone.validation["val_loss"], rel=1e-9)
        assert r.train["be_term"] == pytest.approx(alone.train["be_term"], rel=1e-9, abs=1e-12)
    assert (pop[2].train["be_term"] > 0).any() and (pop[0].train["be_term"] == 0).all()


def test_population_resumes_and_refuses_mismatched_members(tmp_path):
    from mplp.core import config
    from mplp.meta.loop import train_population

    base = tiny_config(**{"meta.S": 8})
    cfgs = [base.replace(seed=s) for s in (0, 1)]
    full = train_population(cfgs, tmp_path / "a", progress=False)
    train_population(cfgs, tmp_path / "b", progress=False, max_steps=5)
    resumed = train_population(cfgs, tmp_path / "b", progress=False, resume=True)
    for f, r in zip(full, resumed):
        for k in f.theta:
            assert torch.equal(f.theta[k], r.theta[k]), k
    with pytest.raises(config.ConfigError, match="must share"):
        train_population([base, base.replace(**{"seed": 1, "meta.K": 2})], tmp_path / "c", progress=False)
    with pytest.raises(config.ConfigError, match="identical"):
        train_population([base, base], tmp_path / "c", progress=False)


def test_es_meta_gradient_points_like_truncated_bptt_on_one_truncation():
    # ES on the smoothed loss of one truncation estimates (for small sigma) the gradient
    # truncated BPTT computes exactly; with many pairs the two must align
    from mplp.meta.estimators import TBPTT
    from mplp.meta.trainer import Truncation

    cfg = tiny_config(**{"meta.estimator": "es", "meta.es_pairs": 3000, "meta.es_sigma": 1e-3,
                         "learner.batch_norm": False})
    tr = MetaTrainer(cfg, dtype=torch.float64)
    st = tr.init_state()
    xs, ys = tr.next_batches(st)
    system = Truncation(tr.optimizer, xs, ys, cfg.meta)
    es = tr.estimator.estimate(system, st.theta, st.inner.params, cfg.meta.K, st.gen_es).grad
    exact = TBPTT().estimate(system, st.theta, st.inner.params, cfg.meta.K).grad
    a = torch.cat([es[k].flatten() for k in sorted(es)])
    b = torch.cat([exact[k].flatten() for k in sorted(exact)])
    cos = float(a @ b / (a.norm() * b.norm()))
    assert cos > 0.9, cos


@pytest.mark.parametrize("estimator", ["es", "pes"])
def test_es_and_pes_training_runs_and_resumes_bit_for_bit(tmp_path, estimator):
    cfg = tiny_config(**{"meta.estimator": estimator, "meta.es_pairs": 3, "meta.S": 8})
    full = train(cfg, tmp_path / "a", progress=False)
    assert full.complete and np.isfinite(full.validation["val_loss"]).all()
    assert not all(torch.equal(full.theta[k], MetaTrainer(cfg).init_state().theta[k]) for k in full.theta)
    train(cfg, tmp_path / "b", progress=False, max_steps=5)           # interrupted (PES particles mid-problem)
    resumed = train(cfg, tmp_path / "b", resume=True, progress=False)
    assert all(torch.equal(full.theta[k], resumed.theta[k]) for k in full.theta)


def test_estimator_settings_are_checked_and_keep_old_hashes():
    from mplp.core.config import ConfigError
    with pytest.raises(ConfigError, match="meta.estimator"):
        tiny_config(**{"meta.estimator": "rl"})
    with pytest.raises(ConfigError, match="meta.es_sigma"):
        tiny_config(**{"meta.es_sigma": 0.0})
    assert tiny_config(**{"meta.estimator": "tbptt"}).hash() == tiny_config().hash()
    assert tiny_config(**{"meta.estimator": "pes"}).hash() != tiny_config().hash()


def test_a_finished_run_extends_to_a_longer_one_bit_for_bit(tmp_path):
    """A finished run keeps its final state, and a longer run of the same config
    continues from it along the same trajectory as one run trained without stopping."""
    from mplp.meta.loop import train

    short, long_ = tiny_config(**{"meta.S": 8}), tiny_config(**{"meta.S": 16})
    done = train(short, out_root=tmp_path / "a", progress=False)
    assert (done.path / FINAL_STATE).exists() and not (done.path / "checkpoint.pt").exists()
    ext = train(long_, out_root=tmp_path / "a", progress=False, extend_from=done.path)
    ref = train(long_, out_root=tmp_path / "b", progress=False)
    for k in ref.theta:
        assert torch.equal(ext.theta[k], ref.theta[k]), k
    assert np.array_equal(ext.validation["val_loss"], ref.validation["val_loss"])
    assert np.array_equal(ext.train["outer_loss"], ref.train["outer_loss"])
    assert ext.meta["resumes"][-1]["extended_from"] == done.path.name and ext.meta["steps_done"] == 16
    assert ext.extended_at == [(8, done.path.name)] and ref.extended_at == []     # what chapters report


def test_extension_refuses_a_different_config_or_a_shorter_target(tmp_path):
    from mplp.core import config
    from mplp.meta.loop import train

    done = train(tiny_config(**{"meta.S": 8}), out_root=tmp_path, progress=False)
    with pytest.raises(config.ConfigError, match="differs from this one in learner"):
        train(tiny_config(**{"meta.S": 16, "learner.hidden": 9}), out_root=tmp_path, progress=False,
              extend_from=done.path)
    with pytest.raises(config.ConfigError, match="meta.S must be larger"):
        train(tiny_config(**{"meta.S": 4}), out_root=tmp_path / "y", progress=False, extend_from=done.path)
    with pytest.raises(config.ConfigError, match="not a multiple of log_every"):
        odd = train(tiny_config(**{"meta.S": 7}), out_root=tmp_path / "z", progress=False)
        train(tiny_config(**{"meta.S": 12}), out_root=tmp_path / "z", progress=False, extend_from=odd.path)


def test_a_run_that_ended_off_its_validation_grid_extends_bit_for_bit(tmp_path):
    """S = 6 with validations every 4: the run validated (and snapshotted) at its last step;
    the extension drops those records and then equals one run of S = 12, validations included."""
    from mplp.meta.loop import train

    extra = {"validation.every": 4, "snapshot_every": 4}
    done = train(tiny_config(**{"meta.S": 6}, **extra), out_root=tmp_path / "a", progress=False)
    assert 6 in done.validation["step"]
    ext = train(tiny_config(**{"meta.S": 12}, **extra), out_root=tmp_path / "a", progress=False, extend_from=done.path)
    ref = train(tiny_config(**{"meta.S": 12}, **extra), out_root=tmp_path / "b", progress=False)
    for k in ref.theta:
        assert torch.equal(ext.theta[k], ref.theta[k]), k
    assert np.array_equal(ext.validation["step"], ref.validation["step"]) and 6 not in ext.validation["step"]
    assert np.array_equal(ext.validation["val_loss"], ref.validation["val_loss"])
    assert np.array_equal(ext.train["outer_loss"], ref.train["outer_loss"])
    assert sorted(ext.snapshots()) == sorted(ref.snapshots())
    assert ext.meta["resumes"][-1]["dropped_at_step"] == ["validation", "snapshot"]


def test_training_tells_its_progress_to_the_notebook_runner(tmp_path, monkeypatch):
    """Inside a notebook run by ``mplp run`` the loop reports its outer steps through
    ``$MPLP_PROGRESS_FILE`` (the runner shows them as a second progress bar)."""
    import json

    from mplp.meta.loop import train

    monkeypatch.setenv("MPLP_PROGRESS_FILE", str(tmp_path / "progress.json"))
    train(tiny_config(**{"meta.S": 6}), out_root=tmp_path / "r", progress=False)
    assert json.loads((tmp_path / "progress.json").read_text()) == {"what": "tiny", "step": 6, "total": 6}


@pytest.mark.parametrize("kind, key, extra", [("l2l", "lstm0.w_in", {}), ("mlp-optimizer", "w1", {}),
                                              ("stateful-mplp", "w0.W_ux", {"learner.message_size": 2,
                                                                            "meta.hint_weight": 1.0})])
def test_the_other_learned_optimizers_train_from_a_config_and_resume_bit_for_bit(tmp_path, kind, key, extra):
    """``learner.kind`` names the optimizer; its runs are stored, recorded and resumed like MPLP's."""
    from mplp.meta.loop import train

    cfg = tiny_config(**{"learner.kind": kind, "learner.hidden": 6, "learner.batch_norm": False,
                         "learner.learned_lr": False, "learner.message_size": 1, "meta.S": 8, **extra})
    whole = train(cfg, out_root=tmp_path / "whole", progress=False)
    assert whole.complete and key in whole.theta and whole.meta["backward"] == f"autograd ({kind})"
    assert np.isfinite(whole.validation["val_loss"]).all()
    train(cfg, out_root=tmp_path / "cut", progress=False, max_steps=5)
    resumed = train(cfg, out_root=tmp_path / "cut", progress=False, resume=True)
    assert all(torch.equal(whole.theta[k], resumed.theta[k]) for k in whole.theta)


def test_mplp_only_settings_are_refused_for_the_other_optimizers():
    from mplp.core.config import ConfigError

    with pytest.raises(ConfigError, match="'l2l' is not MPLP"):
        tiny_config(**{"learner.kind": "l2l"})                    # tiny_config has batch norm and a learned lr
    with pytest.raises(ConfigError, match="'stateful-mplp' standardises its inputs"):
        tiny_config(**{"learner.kind": "stateful-mplp"})
    with pytest.raises(ConfigError, match="meta.hint_weight: only learner.kind 'stateful-mplp'"):
        tiny_config(**{"meta.hint_weight": 1.0})


def test_a_spent_inner_problem_is_saved_as_its_cursor_and_resumes_the_same(tmp_path):
    """At a reset boundary the state holds no params (they are redrawn at the next step), and a
    run resumed from it follows the uninterrupted one."""
    from mplp.meta.trainer import MetaTrainer

    cfg = tiny_config(**{"meta.S": 6})
    tr = MetaTrainer(cfg)
    st = tr.init_state()
    while not (st.inner is not None and tr._needs_reset(st.inner)):
        tr.outer_step(st)
    d = tr.state_dict(st)
    assert d["inner"]["params"] == [] and d["inner"]["task"] is None
    resumed = tr.load_state_dict(d)
    for _ in range(2):
        tr.outer_step(st)
        tr.outer_step(resumed)
    assert all(torch.equal(st.theta[k], resumed.theta[k]) for k in st.theta)
