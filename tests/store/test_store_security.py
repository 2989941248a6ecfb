"""Stored files are read as data only: a crafted pickle in a run or result directory, even with a
manifest recomputed to match it, is refused with a clear error and never runs its payload."""

import os

import pytest
import torch

from mplp.store import (CHECKPOINT, CHECKPOINT_RECORD, DamagedResultError, FINAL_STATE, MANIFEST, RunLock,
                        RunLockedError, StoreError, find_run, load_run, load_torch, read_csv, read_json, run_dir,
                        save_torch, write_json, write_manifest, write_text)
from mplp.store import files
from mplp.meta.source import Store
from mplp.claims.stats import Interval
from mplp.meta.loop import train

from helpers import tiny_config


class Payload:
    """Unpickling this writes ``marker``: what a hostile ``theta.pt`` could do if loaded as code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant(path, marker):
    torch.save({"theta": Payload(marker)}, path)


@pytest.fixture
def finished(tmp_path):
    cfg = tiny_config(**{"meta.S": 2, "validation.every": 1, "checkpoint_every": 1})
    run = train(cfg, tmp_path / "store", progress=False)
    return cfg, run.path, tmp_path / "marker"


def test_a_crafted_theta_with_a_matching_manifest_is_refused(finished):
    cfg, d, marker = finished
    plant(d / "theta.pt", marker)
    write_manifest(d, [p.name for p in d.iterdir() if p.name not in (MANIFEST, ".lock")])
    with pytest.raises(DamagedResultError, match="theta.pt cannot be read"):
        load_run(d).theta
    assert not marker.exists()


def test_a_crafted_checkpoint_is_refused_on_resume(tmp_path):
    cfg = tiny_config(**{"meta.S": 4, "validation.every": 1, "checkpoint_every": 1})
    run = train(cfg, tmp_path / "store", progress=False, max_steps=2)
    marker = tmp_path / "marker"
    plant(run.path / "checkpoint.pt", marker)
    with pytest.raises(DamagedResultError, match="checkpoint.pt cannot be read"):
        train(cfg, tmp_path / "store", resume=True, progress=False)
    assert not marker.exists()


def test_a_checkpoint_is_verified_against_its_record_before_it_is_read(tmp_path):
    cfg = tiny_config(**{"meta.S": 4, "validation.every": 1, "checkpoint_every": 1})
    run = train(cfg, tmp_path / "store", progress=False, max_steps=2)
    good = (run.path / CHECKPOINT).read_bytes()
    marker = tmp_path / "marker"
    plant(run.path / CHECKPOINT, marker)
    with pytest.raises(DamagedResultError, match="checkpoint.pt cannot be read: it differs from"):
        train(cfg, tmp_path / "store", resume=True, progress=False)
    payload = (run.path / CHECKPOINT).read_bytes()      # the record recomputed to vouch for the payload:
    write_json(run.path / CHECKPOINT_RECORD,          # still data only, never code
               {"accept": [{"bytes": len(payload), "sha256": __import__("hashlib").sha256(payload).hexdigest()}]})
    with pytest.raises(DamagedResultError, match="checkpoint.pt cannot be read"):
        train(cfg, tmp_path / "store", resume=True, progress=False)
    (run.path / CHECKPOINT).write_bytes(good)
    (run.path / CHECKPOINT_RECORD).unlink()
    with pytest.raises(DamagedResultError, match="checkpoint.json is missing"):
        train(cfg, tmp_path / "store", resume=True, progress=False)
    assert not marker.exists()


def test_a_crash_while_a_checkpoint_is_replaced_leaves_one_that_resumes(tmp_path, monkeypatch):
    """The record accepts the old and the new checkpoint while the file is replaced: a process
    killed in between resumes from the old one."""
    cfg = tiny_config(**{"meta.S": 4, "validation.every": 1, "checkpoint_every": 1})
    whole = train(cfg, tmp_path / "whole", progress=False)
    train(cfg, tmp_path / "store", progress=False, max_steps=2)
    from mplp.store import runs

    real = runs._atomic_write_bytes

    def killed(path, data):
        if path.name == CHECKPOINT:
            raise KeyboardInterrupt        # after the record accepts both, before the file is replaced
        real(path, data)
    monkeypatch.setattr(runs, "_atomic_write_bytes", killed)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "store", resume=True, progress=False)
    monkeypatch.setattr(runs, "_atomic_write_bytes", real)
    assert len(read_json(run_dir(tmp_path / "store", cfg) / CHECKPOINT_RECORD)["accept"]) == 2
    done = train(cfg, tmp_path / "store", resume=True, progress=False)
    assert list(done.validation["val_loss"]) == list(whole.validation["val_loss"])
    assert not (done.path / CHECKPOINT_RECORD).exists()


def test_an_unlisted_final_state_is_refused_on_extend(tmp_path):
    cfg = tiny_config(**{"meta.S": 4})
    done = train(cfg, tmp_path / "store", progress=False)
    marker = tmp_path / "marker"
    plant(done.path / FINAL_STATE, marker)
    manifest = read_json(done.path / MANIFEST)
    del manifest["files"][FINAL_STATE]
    write_json(done.path / MANIFEST, manifest)
    with pytest.raises(DamagedResultError, match="final_state.pt is not in"):
        train(tiny_config(**{"meta.S": 8}), tmp_path / "store", progress=False, extend_from=done.path)
    assert not marker.exists()


def test_the_store_reads_only_its_own_regular_bounded_files(tmp_path, monkeypatch):
    cfg = tiny_config(**{"meta.S": 2})
    run = train(cfg, tmp_path / "store", progress=False)
    secret = tmp_path / "secret.pt"
    secret.write_bytes((run.path / "theta.pt").read_bytes())
    (run.path / "theta.pt").unlink()
    (run.path / "theta.pt").symlink_to(secret)           # a link out of the store, even to matching bytes
    with pytest.raises(DamagedResultError, match="theta.pt cannot be read .it is a symbolic link"):
        load_run(run.path)
    (run.path / "theta.pt").unlink()
    os.mkfifo(run.path / "theta.pt")                     # reading a FIFO would block for ever
    with pytest.raises(DamagedResultError, match="theta.pt cannot be read .it is not a regular file"):
        load_run(run.path)
    (run.path / "theta.pt").unlink()
    (run.path / "theta.pt").write_bytes(secret.read_bytes())
    load_run(run.path)
    monkeypatch.setattr(files, "MAX_TEXT_BYTES", 100)        # a text file larger than any the store writes
    with pytest.raises(DamagedResultError, match="more than any file the store writes"):
        read_csv(run.path / "validation.csv")


def test_a_manifest_naming_a_path_outside_the_run_is_refused(tmp_path):
    cfg = tiny_config(**{"meta.S": 2})
    run = train(cfg, tmp_path / "store", progress=False)
    manifest = read_json(run.path / MANIFEST)
    manifest["files"]["../../outside.txt"] = {"bytes": 1, "sha256": "0" * 64}
    write_json(run.path / MANIFEST, manifest)
    with pytest.raises(DamagedResultError, match="not a file of the run directory"):
        load_run(run.path)


def test_a_crafted_result_is_refused(tmp_path):
    store = Store(tmp_path / "store")
    key = {"what": "x"}
    store.load_or_compute("probe", key, lambda: Interval(1.0, 0.0, 2.0), Interval)
    d = next((tmp_path / "store" / "probe").iterdir())
    marker = tmp_path / "marker"
    plant(d / "result.pt", marker)
    write_manifest(d, ("result.pt", "key.json", "meta.json"))
    with pytest.raises(DamagedResultError, match="result.pt cannot be read"):
        Store(tmp_path / "store", read_only=True).load_or_compute("probe", key, lambda: None, Interval)
    assert not marker.exists() and not os.path.exists("marker")


def test_numeric_numpy_arrays_still_load(tmp_path):
    import numpy as np

    save_torch(tmp_path / "a.pt", {"x": np.arange(3.0), "i": np.arange(2), "t": torch.zeros(1)})
    got = load_torch(tmp_path / "a.pt")
    assert got["x"].tolist() == [0.0, 1.0, 2.0] and got["i"].dtype == np.int64


def test_a_lock_linked_outside_the_store_is_refused_and_the_target_untouched(tmp_path):
    cfg = tiny_config(**{"meta.S": 2})
    d = run_dir(tmp_path / "store", cfg)
    d.mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (d / ".lock").symlink_to(victim)
    with pytest.raises(StoreError, match="symbolic link"):
        train(cfg, tmp_path / "store", progress=False)
    assert victim.read_text() == "keep me"


def test_a_run_directory_that_is_a_link_is_refused_even_with_restart(tmp_path):
    cfg = tiny_config(**{"meta.S": 2})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "theta.pt").write_text("not the store's")
    (elsewhere / "x.tmp").write_text("not the store's")
    d = run_dir(tmp_path / "store", cfg)
    d.parent.mkdir(parents=True)
    d.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(StoreError, match="symbolic link"):
        train(cfg, tmp_path / "store", progress=False, restart=True)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["theta.pt", "x.tmp"]


def test_restart_deletes_only_what_the_store_wrote(tmp_path):
    cfg = tiny_config(**{"meta.S": 2})
    run = train(cfg, tmp_path / "store", progress=False)
    (run.path / "notes.txt").write_text("the user's")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (run.path / "link.tmp").symlink_to(victim)
    with pytest.raises(Exception, match="notes.txt"):          # not the store's: left, and named
        train(cfg, tmp_path / "store", progress=False, restart=True)
    assert (run.path / "notes.txt").exists() and victim.read_text() == "keep me"


def test_a_multi_seed_restart_takes_every_lock_before_deleting_anything(tmp_path):
    """Seed 1 is held by another process: restarting seeds 0 and 1 must not delete seed 0's
    finished run and then fail."""
    from mplp.meta.loop import train_population

    cfgs = [tiny_config(seed=s, **{"meta.S": 2}) for s in (0, 1)]
    done = train(cfgs[0], tmp_path / "store", progress=False)
    held = RunLock(run_dir(tmp_path / "store", cfgs[1])).acquire()
    try:
        with pytest.raises(RunLockedError):
            train_population(cfgs, tmp_path / "store", restart=True, progress=False)
    finally:
        held.release()
    assert find_run(tmp_path / "store", cfgs[0]) is not None and (done.path / "theta.pt").exists()


def test_a_crash_between_meta_and_manifest_resumes_from_the_checkpoint(tmp_path):
    """The process died after meta.json said "complete" and before manifest.json: the run's intact
    checkpoint finishes it on --resume, the same as an uninterrupted run."""
    import json

    cfg = tiny_config(**{"meta.S": 4, "validation.every": 1, "checkpoint_every": 1})
    whole = train(cfg, tmp_path / "whole", progress=False)
    part = train(cfg, tmp_path / "store", progress=False, max_steps=3)
    meta = json.loads((part.path / "meta.json").read_text())
    (part.path / "meta.json").write_text(json.dumps({**meta, "status": "complete"}))
    (part.path / MANIFEST).unlink()
    assert find_run(tmp_path / "store", cfg) is None
    done = train(cfg, tmp_path / "store", resume=True, progress=False)
    assert done.meta["status"] == "complete" and not (done.path / "checkpoint.pt").exists()
    assert list(done.validation["val_loss"]) == list(whole.validation["val_loss"])


def test_an_unfinished_run_at_rest_is_verified_against_its_manifest(tmp_path):
    cfg = tiny_config(**{"meta.S": 4, "validation.every": 1, "checkpoint_every": 1})
    part = train(cfg, tmp_path / "store", progress=False, max_steps=2)
    load_run(part.path)                                   # whole: served
    csv = part.path / "validation.csv"
    csv.write_text(csv.read_text().replace("\n1,", "\n1,0.0,", 1) if "\n1," in csv.read_text() else csv.read_text() + "\n")
    with pytest.raises(DamagedResultError, match="validation.csv"):
        load_run(part.path)
    lock = RunLock(part.path).acquire()                   # its owner writing it now: read as it stands
    try:
        assert load_run(part.path).path == part.path
    finally:
        lock.release()


def test_a_sweep_does_not_take_a_damaged_finished_run_for_complete(tmp_path):
    from mplp import sweep

    cfgs = [tiny_config(seed=s, **{"meta.S": 2}) for s in (0, 1)]
    for c in cfgs:
        train(c, tmp_path, progress=False)
    (run_dir(tmp_path, cfgs[0]) / "theta.pt").unlink()
    (run_dir(tmp_path, cfgs[1]) / "meta.json").write_text("{not json")
    states = [s.state for s in sweep.status([cfgs], tmp_path)]
    assert states == ["damaged", "damaged"] and sweep.pending([cfgs], tmp_path) == [cfgs]


def test_a_sweep_writes_no_job_or_log_through_a_link(tmp_path):
    from mplp import sweep

    cfgs = [tiny_config(seed=0, **{"meta.S": 2})]
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    jobs = tmp_path / "store" / "sweep_logs" / "jobs"
    jobs.mkdir(parents=True)
    (jobs / f"{cfgs[0].experiment}-{cfgs[0].hash()}.yaml").symlink_to(victim)
    with pytest.raises(StoreError, match="symbolic link"):
        sweep.write_job(cfgs, jobs)
    log = sweep._log_path(tmp_path / "store", cfgs)
    log.symlink_to(victim)
    with pytest.raises(StoreError, match="symbolic link"):
        sweep.open_for_writing(log)
    assert victim.read_text() == "keep me"


def test_jobs_sharing_a_log_append_to_it(tmp_path):
    from mplp import sweep

    log = sweep._log_path(tmp_path, [tiny_config()])
    for line in ("first job: training\n", "second job: left to the job that holds it\n"):
        with sweep.open_for_writing(log) as fh:
            fh.write(line)
    text = log.read_text()
    assert text.count(sweep.ATTEMPT) == 2 and "first job" in text and "second job" in sweep._last_attempt(log)


def test_a_sweep_checks_its_device_before_submitting_anything(tmp_path):
    from mplp import sweep

    if torch.cuda.is_available():
        pytest.skip("CUDA is there")
    with pytest.raises(ValueError, match="CUDA is not available"):
        sweep.run_local([[tiny_config(**{"meta.S": 2})]], tmp_path, device="cuda")
    assert not (tmp_path / "sweep_logs").exists()


def test_a_killed_job_is_interrupted_not_queued(tmp_path):
    from mplp import sweep

    cfgs = [tiny_config(seed=0, **{"meta.S": 4, "checkpoint_every": 1})]
    assert [s.state for s in sweep.status([cfgs], tmp_path)] == ["queued"]
    with sweep.open_for_writing(sweep._log_path(tmp_path, cfgs)) as fh:    # its job started ...
        fh.write("training\n")                                               # ... and was killed, silently
    assert [s.state for s in sweep.status([cfgs], tmp_path)] == ["interrupted"]
    train(cfgs[0], tmp_path, progress=False, max_steps=2)
    assert [s.state for s in sweep.status([cfgs], tmp_path)] == ["interrupted"]
    lock = RunLock(run_dir(tmp_path, cfgs[0])).acquire()                # a job is on it now
    try:
        assert [s.state for s in sweep.status([cfgs], tmp_path)] == ["running"]
    finally:
        lock.release()
    assert sweep.pending([cfgs], tmp_path) == [cfgs]


def test_a_job_killed_for_real_is_interrupted_and_a_sweep_finishes_it(tmp_path):
    import signal
    import subprocess
    import time

    from mplp import sweep

    cfgs = [tiny_config(seed=0, **{"meta.S": 400, "checkpoint_every": 20, "validation.every": 50})]
    log = sweep.open_for_writing(sweep._log_path(tmp_path, cfgs))           # as run_local starts a job
    proc = subprocess.Popen(sweep._job_command(sweep.write_job(cfgs, tmp_path / "sweep_logs" / "jobs"), tmp_path,
                                               "cpu", 1), stdout=log, stderr=subprocess.STDOUT)
    for _ in range(1200):
        (row,) = sweep.status([cfgs], tmp_path)
        if row.steps_done > 0 or proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    log.close()
    (row,) = sweep.status([cfgs], tmp_path)
    assert row.state == "interrupted" and 0 < row.steps_done < 400
    (row,) = sweep.run_local([cfgs], tmp_path)
    assert row.state == "complete" and load_run(row.run).meta["resumes"]


def test_a_read_only_store_does_not_serve_a_float64_run_for_a_float32_one(tmp_path):
    cfg = tiny_config(**{"meta.S": 2})
    train(cfg, tmp_path, progress=False, dtype=torch.float64)
    with pytest.raises(StoreError, match="float64, not float32"):
        Store(tmp_path, read_only=True).train([cfg])


def test_broken_stores_give_one_line_errors(tmp_path, monkeypatch):
    import errno

    cfg = tiny_config(**{"meta.S": 2})
    run = train(cfg, tmp_path / "store", progress=False)
    (run.path / "meta.json").write_text("[1, 2")                       # malformed JSON
    with pytest.raises(DamagedResultError, match="meta.json or a curve cannot be read"):
        load_run(run.path)
    (run.path / "meta.json").unlink()
    (run.path / "meta.json").mkdir()                                   # a directory where a file belongs
    with pytest.raises(DamagedResultError, match="meta.json cannot be read"):
        load_run(run.path)
    (tmp_path / "long").mkdir()
    with pytest.raises(StoreError, match="name is too long"):
        write_text(tmp_path / "long" / ("x" * 300), "y")
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(StoreError, match="a directory is where this file belongs"):
        write_text(tmp_path / "dir.json", "y")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(files.os, "replace", full)
    with pytest.raises(StoreError, match="the disk is full"):
        write_text(tmp_path / "z.txt", "y")


def test_reading_the_golden_reference_leaves_the_data_only_globals_in_place(tmp_path):
    import numpy as np

    from mplp.chapters import peer

    peer.load_reference()
    save_torch(tmp_path / "a.pt", {"x": np.arange(3.0)})
    assert load_torch(tmp_path / "a.pt")["x"].tolist() == [0.0, 1.0, 2.0]
