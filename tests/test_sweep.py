"""The sweep: its plan is what the studies train, its status reads the store, and
the local executor trains the pending populations as subprocesses, resumably."""

import pytest

from mplp.book import report
from mplp.store import RunLock, committed_root, load_run, run_dir
from mplp.meta.source import Store
from mplp import sweep


class RecordingStore(Store):
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
    planned = [tuple(sorted(c.hash() for c in cfgs)) for cfgs in sweep.plan(chapter, "ci")]
    assert len(set(planned)) == len(planned) and set(planned) == {tuple(sorted(a)) for a in store.asked}


def test_status_of_the_committed_cpu_runs():
    rows = sweep.status(sweep.plan("ablation", "cpu"), committed_root())
    assert len(rows) == 50 and {r.state for r in rows} == {"complete"}
    assert sweep.pending(sweep.plan("ablation", "cpu"), committed_root()) == []
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


def test_ray_sweep_of_chapter_2_ci_on_a_real_local_cluster(tmp_path):
    """A real local Ray cluster runs chapter 2's ci sweep two jobs at a time; every run
    lands complete; a second sweep computes nothing."""
    pytest.importorskip("ray")
    pops = sweep.plan("ablation", "ci")
    rows = sweep.run_ray(pops, tmp_path, max_parallel=2)
    assert {r.state for r in rows} == {"complete"} and len(rows) == sum(map(len, pops))
    before = {r.run: (r.run / "meta.json").read_text() for r in rows}
    sweep.run_ray(pops, tmp_path, max_parallel=2)
    assert {r.run: (r.run / "meta.json").read_text() for r in rows} == before


def test_a_killed_job_resumes_bit_for_bit_when_resubmitted(tmp_path):
    """Kill a job mid-run (SIGKILL, after its first checkpoint); resubmitting it through Ray
    finishes the run exactly as an uninterrupted one."""
    import signal
    import subprocess
    import sys
    import time

    import torch

    from helpers import tiny_config

    pytest.importorskip("ray")
    cfg = tiny_config(**{"meta.S": 400, "checkpoint_every": 20, "validation.every": 50})
    job = sweep.write_job([cfg], tmp_path / "jobs")
    proc = subprocess.Popen([sys.executable, "-m", "mplp.sweep", "job", str(job), "--out", str(tmp_path / "a")])
    for _ in range(1200):              # until its meta.json says it is mid-run (checkpoint.pt comes first)
        (row,) = sweep.status([[cfg]], tmp_path / "a")
        if (row.state == "running" and row.steps_done > 0) or proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (row,) = sweep.status([[cfg]], tmp_path / "a")
    assert row.state == "running" and 0 < row.steps_done < 400
    (row,) = sweep.run_ray([[cfg]], tmp_path / "a", max_parallel=1)
    assert row.state == "complete"
    sweep.run_local([[cfg]], tmp_path / "b")
    resumed, fresh = load_run(row.run), load_run(run_dir(tmp_path / "b", cfg))
    assert resumed.meta["resumes"] and all(torch.equal(resumed.theta[k], fresh.theta[k]) for k in fresh.theta)


def test_slurm_path_through_submitits_local_executor(tmp_path):
    """The Slurm executor, run by submitit's local executor (real subprocesses); it has not run
    on a real Slurm cluster here."""
    pytest.importorskip("submitit")
    from helpers import tiny_config

    pops = [[tiny_config(seed=s)] for s in (0, 1, 2)]
    rows = sweep.run_slurm(pops, tmp_path, max_parallel=2, cluster="local")
    assert [r.state for r in rows] == ["complete"] * 3


def test_a_duplicate_job_leaves_a_locked_run_alone(tmp_path):
    from helpers import tiny_config

    cfg = tiny_config()
    lock = RunLock(run_dir(tmp_path, cfg)).acquire()
    try:
        assert sweep.run_job(sweep.write_job([cfg], tmp_path / "jobs"), tmp_path) == 0
        assert not (run_dir(tmp_path, cfg) / "meta.json").exists()        # nothing computed
    finally:
        lock.release()


def test_two_concurrent_sweeps_compute_nothing_twice(tmp_path):
    """Two sweeps of the same populations at the same time: each run is trained by one job;
    the other job finds it locked (or finished) and leaves it."""
    import threading

    from helpers import tiny_config

    pops = [[tiny_config(**{"seed": s, "meta.S": 60})] for s in range(3)]
    threads = [threading.Thread(target=sweep.run_local, args=(pops, tmp_path), kwargs={"max_parallel": 2})
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = sweep.status(pops, tmp_path)
    assert [r.state for r in rows] == ["complete"] * 3
    for r in rows:                      # one uninterrupted training each: never resumed, never restarted
        assert load_run(r.run).meta.get("resumes", []) == []
        log = r.log.read_text()         # each job's lines kept (appended, not truncated), no error
        assert log.count(sweep.ATTEMPT) >= 1 and "Traceback" not in log


def test_report_plan_is_what_the_deviations_study_trains():
    """The report chapter's runs of the other choice, checked on the committed cpu results
    (read, not trained)."""
    from mplp.chapters import deviations

    class Recording(Store):
        asked = []

        def train(self, cfgs, device="cpu", progress=False):
            self.asked.append(sorted(c.hash() for c in cfgs))
            return super().train(cfgs, device=device, progress=progress)

    store = Recording(committed_root(), read_only=True)
    p = report.load_profile("report", "cpu")
    deviations.study(p["alternatives_profile"], p["ablation_seeds"], p["mnist_seeds"], store)
    planned = [tuple(sorted(c.hash() for c in cfgs)) for cfgs in sweep.plan("report", "cpu")]
    assert len(set(planned)) == len(planned) and set(planned) == {tuple(a) for a in store.asked}
