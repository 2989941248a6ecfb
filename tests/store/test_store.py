import math

import numpy as np
import pytest
import torch

from mplp.store import (DamagedResultError, MissingResultError, Record, RunLock, RunLockedError, find_run,
                        load_or_compute, load_run, load_torch, read_csv, run_dir, save_torch, write_csv, write_json)
from mplp.meta.source import Store

from helpers import tiny_config


def test_csv_round_trip_keeps_full_precision(tmp_path):
    rows = [{"step": 0, "val_loss": 1 / 3}, {"step": 10, "val_loss": float("nan")}]
    write_csv(tmp_path / "v.csv", rows)
    got = read_csv(tmp_path / "v.csv")
    assert got["step"].tolist() == [0.0, 10.0] and got["val_loss"][0] == 1 / 3 and math.isnan(got["val_loss"][1])


def test_atomic_writes_leave_no_temporaries(tmp_path):
    save_torch(tmp_path / "t.pt", {"a": torch.ones(2)})
    write_json(tmp_path / "m.json", {"x": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "t.pt"]
    assert torch.equal(load_torch(tmp_path / "t.pt")["a"], torch.ones(2))


def test_run_dir_and_missing_files(tmp_path):
    c = tiny_config()
    assert run_dir(tmp_path, c) == tmp_path / "tiny" / c.hash()
    assert find_run(tmp_path, c) is None
    with pytest.raises(FileNotFoundError, match="not a stored run"):
        load_run(tmp_path)


def test_load_or_compute(tmp_path, monkeypatch):
    from dataclasses import dataclass

    @dataclass
    class Out:
        x: np.ndarray
        note: str

    calls = []

    def compute():
        calls.append(1)
        return Out(np.arange(3.0), "hi")

    monkeypatch.setenv("MPLP_CACHE", "on")
    a = load_or_compute("exp", {"k": 1}, compute, Out, root=tmp_path)
    b = load_or_compute("exp", {"k": 1}, compute, Out, root=tmp_path)
    assert len(calls) == 1 and b.note == "hi" and np.array_equal(a.x, b.x)
    load_or_compute("exp", {"k": 2}, compute, Out, root=tmp_path)
    assert len(calls) == 2 and len(list((tmp_path / "exp").iterdir())) == 2
    monkeypatch.setenv("MPLP_CACHE", "off")
    load_or_compute("exp", {"k": 1}, compute, Out, root=tmp_path)
    assert len(calls) == 3 and len(list((tmp_path / "exp").iterdir())) == 2


def test_store_read_only_names_what_is_missing(tmp_path):
    store = Store(tmp_path, read_only=True)
    with pytest.raises(MissingResultError, match=r"no stored 'thing' result for \{\"a\": 1\}"):
        store.load_or_compute("thing", {"a": 1}, lambda: pytest.fail("a read-only store computed"), Record)
    cfg = tiny_config()
    with pytest.raises(MissingResultError, match=rf"{cfg.hash()}: no complete stored run of 'tiny' \(seed 0\)"):
        store.train([cfg])
    assert not any(tmp_path.iterdir())                     # nothing written


def test_store_records_time_and_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLP_CACHE", "on")
    store = Store(tmp_path)
    got = store.load_or_compute("thing", {"a": 1}, lambda: Record("x", None, {"steps_done": 3}), Record)
    assert got.meta == {"steps_done": 3}
    rec = store.records[-1]
    assert rec.meta["wall_time_s"] >= 0 and rec.meta["cpu_count"] >= 1 and rec.wall_time_s is not None
    again = Store(tmp_path, read_only=True)              # now stored: a read-only store reads it
    assert again.load_or_compute("thing", {"a": 1}, None, Record).meta == {"steps_done": 3}
    runs = Store(tmp_path).train([tiny_config(seed=s) for s in (0, 1)])
    assert [r.meta["population_size"] for r in runs] == [2, 2]
    recs = Store(tmp_path, read_only=True)
    recs.train([tiny_config(seed=0)])
    r = recs.records[-1]
    assert r.outer_steps == 12 and r.wall_time_s == pytest.approx(r.meta["wall_time_s"] / 2)
    assert Record("x", None, {}).wall_time_s is None


def test_stored_runs_reads_unfinished_runs_and_names_the_command(tmp_path):
    from mplp.meta import loop

    cfg = tiny_config(**{"meta.S": 4})
    loop.train(cfg, out_root=tmp_path, progress=False, max_steps=2)
    store = Store(tmp_path, read_only=True)
    (run,) = store.stored_runs([cfg], "python -m mplp.longruns x")
    assert run.meta["status"] == "running" and run.meta["steps_done"] == 2 and store.records
    with pytest.raises(MissingResultError, match="trained outside the notebook: python -m mplp.longruns x"):
        store.stored_runs([cfg.replace(seed=99)], "python -m mplp.longruns x")


def test_a_run_being_started_elsewhere_is_in_use_not_damaged(tmp_path):
    """Another process has locked the directory and not yet written meta.json: find_run says the
    run is in use (a queue worker skips it), not that it is damaged; once free, damaged again."""

    cfg = tiny_config(**{"meta.S": 2})
    d = run_dir(tmp_path, cfg)
    lock = RunLock(d).acquire()
    (d / "config.yaml").write_text("partial")
    try:
        assert RunLock.held_elsewhere(d)
        with pytest.raises(RunLockedError, match="in use"):
            find_run(tmp_path, cfg)
    finally:
        lock.release()
    assert not RunLock.held_elsewhere(d)
    with pytest.raises(DamagedResultError):
        find_run(tmp_path, cfg)


def test_a_store_with_a_fallback_reads_it_first_and_writes_only_its_own_root(tmp_path, monkeypatch):
    """An ad-hoc run's store: what the committed results hold is read from them, the rest is
    computed into the run's own root, and the committed root is never written."""
    monkeypatch.setenv("MPLP_CACHE", "on")
    committed, own = tmp_path / "committed", tmp_path / "own"
    Store(committed).load_or_compute("thing", {"a": 1}, lambda: Record("x", None, {"n": 1}), Record)
    cfg = tiny_config(**{"meta.S": 4})
    Store(committed).train([cfg])
    before = sorted(p for p in committed.rglob("*") if p.name != ".lock")
    store = Store(own, fallback=committed)
    got = store.load_or_compute("thing", {"a": 1}, lambda: pytest.fail("recomputed a committed result"), Record)
    assert got.meta == {"n": 1}
    store.load_or_compute("thing", {"a": 2}, lambda: Record("y", None, {"n": 2}), Record)
    runs = store.train([cfg, cfg.replace(seed=1)])
    assert runs[0].path.parent.parent == committed and runs[1].path.parent.parent == own
    assert sorted(p for p in committed.rglob("*") if p.name != ".lock") == before


def test_mplp_results_moves_the_root_and_its_store_falls_back_to_the_committed_results(tmp_path, monkeypatch):
    from mplp import paths

    monkeypatch.setenv("MPLP_CACHE", "on")
    monkeypatch.setenv("MPLP_RESULTS", str(tmp_path))
    store = Store()
    assert store.base == tmp_path.resolve() and store.fallback == paths.repo_root() / "results"
    monkeypatch.delenv("MPLP_RESULTS")
    assert Store().fallback is None and Store().base == paths.repo_root() / "results"


def test_a_default_store_without_a_fallback_computes(monkeypatch):
    """``Store()`` (root and fallback both unset) computes what is missing: no fallback is not
    a read-only fallback."""
    monkeypatch.setenv("MPLP_CACHE", "off")
    monkeypatch.delenv("MPLP_RESULTS", raising=False)
    got = Store().load_or_compute("thing", {"a": 1}, lambda: Record("x", None, {"n": 1}), Record)
    assert got.meta == {"n": 1}
