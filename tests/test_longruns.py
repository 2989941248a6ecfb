"""The longer runs: their configs, the status report and the work queue (tiny training only)."""

import pytest

from mplp import longruns
from mplp.chapters.ablation import DECISIVE_LONGER_S, DECISIVE_S, decisive_configs, thesis_grid
from mplp.chapters import mnist_be, registry, sinewave
from mplp.store import RunLock, committed_root, find_run, run_dir


def test_groups_are_the_decisive_comparisons_with_the_codes_adam():
    mn = mnist_be.long_population(mnist_be.LONG_S)
    assert [c.meta.batch_entropy for c in mn] == [False, False, True, True] and {c.seed for c in mn} == {0, 1}
    assert all(c.meta.S == mnist_be.LONG_S and not c.meta.adam_bias_correction for c in mn)
    groups = list(decisive_configs(DECISIVE_S).values())
    assert [(g[0].learner.message_size, g[0].learner.batch_norm) for g in groups] == [(8, True), (8, False), (1, True)]
    assert all(len(g) == 3 and g[0].meta.S == DECISIVE_S for g in groups)


def test_status_lists_every_run(tmp_path, capsys):
    rows = longruns.status(tmp_path)
    # the queues (tranche1, ...) are not listed twice; chapter 6: 4 x 3 sinewave, 3 x 3 MNIST, 1 sinusoid run
    assert len(rows) == 4 + 4 + 9 + 9 + 3 + 3 + 1 + 5 + 40 + 10 + 22
    assert all(r.state == "queued" and r.steps_done == 0 and r.wall_time_s == 0 for _, r in rows)
    assert [g for g, _ in rows].count("ablation") == 9
    assert longruns.main(["status"]) == 0 and "mnist" in capsys.readouterr().out


def test_the_thesis_budget_groups_follow_the_plan():
    sine, grid, mnist = sinewave.thesis_runs(), thesis_grid(), mnist_be.thesis_runs()
    assert [c.seed for c in sine] == list(longruns.PREREG_SEEDS) and {c.meta.S for c in sine} == {300_000}
    assert {c.learner.loss_inputs for c in sine} == {"prediction_target"} and {c.meta.K for c in sine} == {10}
    assert len(grid) == 8 and {c.meta.S for g in grid for c in g} == {120_000}
    cells = [(g[0].learner.message_size, g[0].learner.batch_norm, g[0].learner.learned_lr) for g in grid]
    assert cells[0] == (8, True, True) and len(set(cells)) == 8
    assert [[c.meta.batch_entropy for c in g] for g in mnist] == [[False] * 5, [True] * 5]
    everything = [c for g in longruns.GROUPS["thesis"]() for c in g]
    assert len(everything) == 55 and all(not c.meta.adam_bias_correction for c in everything)
    # seeds never run before in this project: no stored result has one
    all_groups = longruns.GROUPS
    assert not set(longruns.PREREG_SEEDS) & {c.seed for name, groups in all_groups.items() if name not in longruns.QUEUES
                                             and "thesis" not in name for g in groups() for c in g}
    assert registry.group_of(sine) == "sinewave-thesis" and registry.group_of(grid[0]) == "grid-thesis"


def test_sinewave_groups_are_chapter_1s_longer_runs():
    assert [c.meta.S for c in longruns.GROUPS["sinewave"]()[0]] == [sinewave.LONG_S] * 3
    assert [c.learner.loss_inputs for c in longruns.GROUPS["sinewave-script"]()[0]] == ["full"]


def test_the_40k_mnist_group_continues_the_finished_20k_runs(tmp_path):
    cfgs = mnist_be.long_population(mnist_be.LONG_EXTENDED_S)
    assert all(c.meta.S == mnist_be.LONG_EXTENDED_S for c in cfgs)
    srcs = longruns.extend_sources("mnist-40k", cfgs, tmp_path)
    # the same configs, only S differs
    assert srcs == [run_dir(tmp_path, c) for c in mnist_be.long_population(mnist_be.LONG_S)]
    assert longruns.extend_sources("mnist", mnist_be.long_population(mnist_be.LONG_S), tmp_path) is None


def test_the_60k_ablation_group_repeats_the_decisive_runs_at_twice_the_steps():
    longer, short = longruns.GROUPS["ablation-60k"](), list(decisive_configs(DECISIVE_S).values())
    assert all(c.meta.S == DECISIVE_LONGER_S for g in longer for c in g)
    assert [[c.replace(**{"meta.S": DECISIVE_S}) for c in g] for g in longer] == short
    assert longruns.extend_sources("ablation-60k", longer[0], committed_root()) is None    # from step 0


def test_the_300k_sinewave_group_continues_the_finished_150k_runs(tmp_path):
    (cfgs,) = longruns.GROUPS["sinewave-300k"]()
    assert [c.meta.S for c in cfgs] == [300_000] * 3
    want = [run_dir(tmp_path, c) for c in longruns.GROUPS["sinewave"]()[0]]
    assert longruns.extend_sources("sinewave-300k", cfgs, tmp_path) == want


def test_a_chapter_that_reads_missing_longer_runs_names_the_group_that_trains_them():
    assert registry.how_to_train(mnist_be.long_population(mnist_be.LONG_S)).startswith("python -m mplp.longruns mnist ")
    assert registry.how_to_train(mnist_be.long_configs(mnist_be.LONG_EXTENDED_S)[True]).startswith("python -m mplp.longruns mnist-40k ")
    script = longruns.GROUPS["sinewave-script"]()[0]
    assert registry.how_to_train(script).startswith("python -m mplp.longruns sinewave-script ")
    odd = [mnist_be.long_population(mnist_be.LONG_S)[0].replace(seed=7)]
    assert registry.group_of(mnist_be.long_population(mnist_be.LONG_S)) == "mnist" and registry.group_of(odd) is None
    assert registry.how_to_train(odd).startswith("no group of python -m mplp.longruns")


def test_a_queue_worker_skips_a_population_another_worker_holds(tmp_path, monkeypatch, capsys):
    from helpers import tiny_config

    held, free = [tiny_config(seed=1, **{"meta.S": 2})], [tiny_config(seed=2, **{"meta.S": 2})]
    monkeypatch.setitem(longruns.GROUPS, "tranche1", lambda: [held, free])
    monkeypatch.setattr(longruns.paths, "results_root", lambda: tmp_path)
    lock = RunLock(run_dir(tmp_path, held[0])).acquire()
    try:
        assert longruns.main(["tranche1"]) == 0
    finally:
        lock.release()
    out = capsys.readouterr().out
    assert "skipped (another worker holds it)" in out and "complete" in out
    assert find_run(tmp_path, free[0]) is not None and find_run(tmp_path, held[0]) is None
    # any group's workers share its queue: a held population is skipped there too
    monkeypatch.setitem(longruns.GROUPS, "sinewave", lambda: [held])
    lock = RunLock(run_dir(tmp_path, held[0])).acquire()
    try:
        assert longruns.main(["sinewave"]) == 0
    finally:
        lock.release()
    assert "skipped (another worker holds it)" in capsys.readouterr().out


def test_progress_reads_a_group_as_far_as_it_got(tmp_path, monkeypatch):
    from helpers import tiny_config

    from mplp.meta.loop import train_population

    started = [tiny_config(seed=s, **{"meta.S": 4, "validation.every": 1, "checkpoint_every": 1}) for s in (1, 2)]
    waiting = [tiny_config(seed=s, **{"meta.S": 4, "validation.every": 1}) for s in (3, 4)]
    monkeypatch.setitem(longruns.GROUPS, "grid-thesis", lambda: [started, waiting])
    assert "not started (0 of 4 runs" in longruns.progress("grid-thesis", tmp_path).status()
    train_population(started, out_root=tmp_path, progress=False, max_steps=2)
    p = longruns.progress("grid-thesis", tmp_path)
    assert len(p.runs) == 2 and not p.complete and p.populations[1] == []
    assert p.status().startswith("in progress: 2 of 4 runs started, at 2 of 4 outer steps (25.0% of the group's 16)")
    (cfg, steps, losses), = list(p.curves())
    assert cfg.seed == 1 and losses.shape == (2, len(steps)) and steps[-1] == 2


def test_an_interrupted_worker_says_where_it_stopped_and_resumes(tmp_path, monkeypatch, capsys):
    from helpers import tiny_config

    from mplp.meta import loop

    cfgs = [tiny_config(seed=s, **{"meta.S": 4, "checkpoint_every": 1}) for s in (1, 2)]
    monkeypatch.setitem(longruns.GROUPS, "tranche1", lambda: [cfgs])
    monkeypatch.setattr(longruns.paths, "results_root", lambda: tmp_path)

    def stopped_after_two(cfgs, **kw):             # Ctrl-C at a step boundary, after the loop's checkpoint
        loop.train_population(cfgs, max_steps=2, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(longruns, "train_population", stopped_after_two)
    assert longruns.main(["tranche1"]) == 130
    err = capsys.readouterr().err                   # the progress bar's lines, then one line
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last == ("interrupted at step 2: continue from the last checkpoint with "
                                               "python -m mplp.longruns tranche1")
    monkeypatch.setattr(longruns, "train_population", loop.train_population)
    assert longruns.main(["tranche1"]) == 0
    assert all(find_run(tmp_path, c).meta["steps_done"] == 4 for c in cfgs)


def test_tranche_3_waits_for_tranches_1_and_2(tmp_path, monkeypatch, capsys):
    """The plan's order: chapter 4's Figure 4 problem per seed only once every tranche-1 and
    tranche-2 population is complete; then each seed's reading is computed into the store."""
    from types import SimpleNamespace

    from mplp.chapters import truncation

    assert longruns.tranche3(tmp_path) == 2
    assert "tranche 3 waits for tranches 1 and 2" in capsys.readouterr().err
    monkeypatch.setattr(longruns, "progress", lambda group, root=None: SimpleNamespace(complete=True))
    asked = []
    monkeypatch.setattr(truncation, "tranche3", lambda fig4, ks: asked.append((fig4, ks)) or ["r"] * 5)
    assert longruns.tranche3(tmp_path) == 0
    (fig4, ks), = asked
    assert ks == [10, 100, 1000] and fig4.N == 1000 and fig4.store.root == tmp_path
    assert capsys.readouterr().out.count("seed 10") == 5
