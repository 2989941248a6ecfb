"""The longer runs: their configs, the status report and the work queue (tiny training only)."""

import pytest

from mplp import longruns as L
from mplp.chapters import ablation as A, mnist_be, registry, sinewave
from mplp import store as R


def test_groups_are_the_decisive_comparisons_with_the_codes_adam():
    mn = mnist_be.long_population(mnist_be.LONG_S)
    assert [c.meta.batch_entropy for c in mn] == [False, False, True, True] and {c.seed for c in mn} == {0, 1}
    assert all(c.meta.S == mnist_be.LONG_S and not c.meta.adam_bias_correction for c in mn)
    groups = list(A.decisive_configs(A.DECISIVE_S).values())
    assert [(g[0].learner.message_size, g[0].learner.batch_norm) for g in groups] == [(8, True), (8, False), (1, True)]
    assert all(len(g) == 3 and g[0].meta.S == A.DECISIVE_S for g in groups)


def test_status_lists_every_run(tmp_path, capsys):
    rows = L.status(tmp_path)
    assert len(rows) == 4 + 4 + 9 + 9 + 3 + 3 + 1 + 5 + 40 + 10   # the queues (tranche1, ...) are not listed twice
    assert all(r.state == "queued" and r.steps_done == 0 and r.wall_time_s == 0 for _, r in rows)
    assert [g for g, _ in rows].count("ablation") == 9
    assert L.main(["status"]) == 0 and "mnist" in capsys.readouterr().out


def test_the_thesis_budget_groups_follow_the_plan():
    sine, grid, mnist = sinewave.thesis_runs(), A.thesis_grid(), mnist_be.thesis_runs()
    assert [c.seed for c in sine] == list(L.PREREG_SEEDS) and {c.meta.S for c in sine} == {300_000}
    assert {c.learner.loss_inputs for c in sine} == {"prediction_target"} and {c.meta.K for c in sine} == {10}
    assert len(grid) == 8 and {c.meta.S for g in grid for c in g} == {120_000}
    cells = [(g[0].learner.message_size, g[0].learner.batch_norm, g[0].learner.learned_lr) for g in grid]
    assert cells[0] == (8, True, True) and len(set(cells)) == 8
    assert [[c.meta.batch_entropy for c in g] for g in mnist] == [[False] * 5, [True] * 5]
    everything = [c for g in L.GROUPS["thesis"]() for c in g]
    assert len(everything) == 55 and all(not c.meta.adam_bias_correction for c in everything)
    # seeds never run before in this project: no stored result has one
    assert not set(L.PREREG_SEEDS) & {c.seed for name, groups in L.GROUPS.items() if name not in L.QUEUES
                                      and "thesis" not in name for g in groups() for c in g}
    assert registry.group_of(sine) == "sinewave-thesis" and registry.group_of(grid[0]) == "grid-thesis"


def test_sinewave_groups_are_chapter_1s_longer_runs():
    assert [c.meta.S for c in L.GROUPS["sinewave"]()[0]] == [sinewave.LONG_S] * 3
    assert [c.learner.loss_inputs for c in L.GROUPS["sinewave-script"]()[0]] == ["full"]


def test_the_40k_mnist_group_continues_the_finished_20k_runs(tmp_path):
    cfgs = mnist_be.long_population(mnist_be.LONG_EXTENDED_S)
    assert all(c.meta.S == mnist_be.LONG_EXTENDED_S for c in cfgs)
    srcs = L.extend_sources("mnist-40k", cfgs, tmp_path)
    assert srcs == [R.run_dir(tmp_path, c) for c in mnist_be.long_population(mnist_be.LONG_S)]     # the same configs, only S differs
    assert L.extend_sources("mnist", mnist_be.long_population(mnist_be.LONG_S), tmp_path) is None


def test_the_60k_ablation_group_repeats_the_decisive_runs_at_twice_the_steps():
    longer, short = L.GROUPS["ablation-60k"](), list(A.decisive_configs(A.DECISIVE_S).values())
    assert all(c.meta.S == A.DECISIVE_LONGER_S for g in longer for c in g)
    assert [[c.replace(**{"meta.S": A.DECISIVE_S}) for c in g] for g in longer] == short
    assert L.extend_sources("ablation-60k", longer[0], R.committed_root()) is None    # from step 0


def test_the_300k_sinewave_group_continues_the_finished_150k_runs(tmp_path):
    (cfgs,) = L.GROUPS["sinewave-300k"]()
    assert [c.meta.S for c in cfgs] == [300_000] * 3
    assert L.extend_sources("sinewave-300k", cfgs, tmp_path) == [R.run_dir(tmp_path, c) for c in L.GROUPS["sinewave"]()[0]]


def test_a_chapter_that_reads_missing_longer_runs_names_the_group_that_trains_them():
    assert registry.how_to_train(mnist_be.long_population(mnist_be.LONG_S)).startswith("python -m mplp.longruns mnist ")
    assert registry.how_to_train(mnist_be.long_configs(mnist_be.LONG_EXTENDED_S)[True]).startswith("python -m mplp.longruns mnist-40k ")
    assert registry.how_to_train(L.GROUPS["sinewave-script"]()[0]).startswith("python -m mplp.longruns sinewave-script ")
    odd = [mnist_be.long_population(mnist_be.LONG_S)[0].replace(seed=7)]
    assert registry.group_of(mnist_be.long_population(mnist_be.LONG_S)) == "mnist" and registry.group_of(odd) is None
    assert registry.how_to_train(odd).startswith("no group of python -m mplp.longruns")


def test_a_queue_worker_skips_a_population_another_worker_holds(tmp_path, monkeypatch, capsys):
    from helpers import tiny_config

    held, free = [tiny_config(seed=1, **{"meta.S": 2})], [tiny_config(seed=2, **{"meta.S": 2})]
    monkeypatch.setitem(L.GROUPS, "tranche1", lambda: [held, free])
    monkeypatch.setattr(L.paths, "results_root", lambda: tmp_path)
    lock = R.RunLock(R.run_dir(tmp_path, held[0])).acquire()
    try:
        assert L.main(["tranche1"]) == 0
    finally:
        lock.release()
    out = capsys.readouterr().out
    assert "skipped (another worker holds it)" in out and "complete" in out
    assert R.find_run(tmp_path, free[0]) is not None and R.find_run(tmp_path, held[0]) is None
    # outside a queue, a held run is an error, not a skip
    monkeypatch.setitem(L.GROUPS, "sinewave", lambda: [held])
    lock = R.RunLock(R.run_dir(tmp_path, held[0])).acquire()
    try:
        with pytest.raises(R.RunLockedError):
            L.main(["sinewave"])
    finally:
        lock.release()


def test_progress_reads_a_group_as_far_as_it_got(tmp_path, monkeypatch):
    from helpers import tiny_config

    from mplp.meta.loop import train_population

    started = [tiny_config(seed=s, **{"meta.S": 4, "validation.every": 1, "checkpoint_every": 1}) for s in (1, 2)]
    waiting = [tiny_config(seed=s, **{"meta.S": 4, "validation.every": 1}) for s in (3, 4)]
    monkeypatch.setitem(L.GROUPS, "grid-thesis", lambda: [started, waiting])
    assert "not started (0 of 4 runs" in L.progress("grid-thesis", tmp_path).status()
    train_population(started, out_root=tmp_path, progress=False, max_steps=2)
    p = L.progress("grid-thesis", tmp_path)
    assert len(p.runs) == 2 and not p.complete and p.populations[1] == []
    assert p.status().startswith("in progress: 2 of 4 runs started, at 2 of 4 outer steps (25.0% of the group's 16)")
    (cfg, steps, losses), = list(p.curves())
    assert cfg.seed == 1 and losses.shape == (2, len(steps)) and steps[-1] == 2
