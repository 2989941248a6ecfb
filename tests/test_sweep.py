"""The sweep (issue 18): its plan is what the studies train, its status reads the store, and
the local executor trains the pending populations as subprocesses, resumably."""

import pytest

from mplp import report, results as R, sweep


class RecordingStore(R.Store):
    """A store that trains for real (into a scratch root) and records each population asked for."""

    def __init__(self, root):
        super().__init__(root)
        self.asked: list[list[str]] = []

    def train(self, cfgs, device="cpu", progress=False):
        self.asked.append([c.hash() for c in cfgs])
        return super().train(cfgs, device=device, progress=progress)


@pytest.mark.parametrize("chapter", ["ablation", "mnist", "truncation"])
def test_plan_is_what_the_study_trains(chapter, tmp_path, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    store = RecordingStore(tmp_path)
    report.STUDIES[chapter](**report.study_parameters(chapter, "ci"), store=store)
    planned = [[c.hash() for c in cfgs] for cfgs in sweep.plan(chapter, "ci")]
    assert sorted(map(sorted, planned)) == sorted(map(sorted, store.asked))


def test_status_of_the_committed_cpu_runs():
    rows = sweep.status(sweep.plan("ablation", "cpu"), R.committed_root())
    assert len(rows) == 50 and {r.state for r in rows} == {"complete"}
    assert sweep.pending(sweep.plan("ablation", "cpu"), R.committed_root()) == []
    with pytest.raises(ValueError, match="no meta-training runs to sweep"):
        sweep.plan("sgd", "ci")


def test_local_sweep_trains_what_is_missing_and_nothing_twice(tmp_path):
    from helpers import tiny_config

    pops = [[tiny_config(seed=s) for s in (0, 1)], [tiny_config(**{"seed": 5, "learner.hidden": 9})]]
    assert {r.state for r in sweep.status(pops, tmp_path)} == {"queued"}
    rows = sweep.run_local(pops, tmp_path, max_parallel=2)
    assert [r.state for r in rows] == ["complete"] * 3 and all(r.steps_done == r.steps_total for r in rows)
    before = {r.run: (r.run / "meta.json").read_text() for r in rows}
    assert sweep.pending(pops, tmp_path) == []
    sweep.run_local(pops, tmp_path, max_parallel=2)                 # a second sweep computes nothing
    assert {r.run: (r.run / "meta.json").read_text() for r in rows} == before
    with pytest.raises(ValueError, match="max-parallel"):
        sweep.run_local(pops, tmp_path, max_parallel=0)
