"""A chapter's meta-training runs as jobs: plan, dispatch, status.

Runs are independent and keyed by config hash, so every training population a chapter's
study needs maps onto one job: ``mplp train``'s population training with ``resume``, into a
shared results root.  ``plan`` lists those populations from the chapter's profile values
(``tests/test_sweep.py`` checks that it is exactly what the study trains); ``status`` reads
how far each run got from its files; ``run_local``, ``run_ray`` and ``run_slurm`` execute the
missing ones (subprocesses; Ray tasks on a local or running cluster; Slurm jobs through
submitit), at most ``max_parallel`` at a time.  A duplicate submission is harmless: the run
directory's lock sends it away without computing.  After a sweep, ``mplp run CHAPTER --profile P`` renders
the chapter from the store without training.

    mplp sweep ablation --profile cpu --max-parallel 2
    mplp sweep ablation --profile cpu --status
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mplp import chapters as _chapters  # noqa: F401  (every chapter registers its plan)
from mplp import paths
from mplp.chapters import registry
from mplp.chapters.profiles import load_profile
from mplp.core.config import ExperimentConfig, MAX_YAML_BYTES, dump, from_dict
from mplp.meta.trainer import resolve_device
from mplp.meta.loop import train_population
from mplp.store import (RunLock, RunLockedError, StoreError, load_run, open_stored, read_json, read_text, run_dir,
                        write_text)


def chapters() -> list[str]:
    """The chapters whose study meta-trains (the others compute only seconds-long results on render)."""
    return [c.name for c in registry.chapters() if c.plan is not None]


def plan(chapter: str, profile: str) -> list[list[ExperimentConfig]]:
    """The training populations (each one job) that ``chapter``'s study needs with ``profile``."""
    if chapter not in chapters():
        raise ValueError(f"chapter {chapter!r} has no meta-training runs to sweep; chapters: {', '.join(chapters())}")
    pops, seen = [], set()
    for cfgs in registry.chapter(chapter).plan(load_profile(chapter, profile)):   # read twice by the study: one job
        key = tuple(c.hash() for c in cfgs)
        if key not in seen:
            seen.add(key)
            pops.append(cfgs)
    return pops


@dataclass
class RunStatus:
    """One run of a sweep, from its files: "queued" (nothing stored), "running" (a checkpoint
    or partial curves), "complete" or "diverged" (verified: manifest, hash, files), "damaged"
    (marked finished but not whole, or an unreadable meta.json), "interrupted" (its job started
    and stopped short without an error: killed; a sweep again resumes it), or "failed" (the last
    job's log ends in an error)."""

    run: Path
    state: str
    steps_done: int
    steps_total: int
    log: Path | None = None
    wall_time_s: float = 0.0  # training time recorded in meta.json, over every resume


def _log_path(root: Path, cfgs: list[ExperimentConfig]) -> Path:
    return Path(root) / "sweep_logs" / f"{cfgs[0].experiment}-{cfgs[0].hash()}.log"


ATTEMPT = "=== mplp sweep job started"    # heads each job's part of a log (jobs append, never truncate)


def _last_attempt(log: Path, tail: int = 200_000) -> str:
    """The part of a job log written by its latest job (after the last ``ATTEMPT`` line), read
    from its last ``tail`` bytes (a log grows with every job)."""
    with open_stored(log) as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - tail))
        text = f.read().decode(errors="replace")
    return text[text.rfind(ATTEMPT):] if ATTEMPT in text else text


def _held(root: Path, cfgs: list[ExperimentConfig]) -> bool:
    """Whether a job elsewhere (another sweep, a train) is training a run of this population now."""
    return any(RunLock.held_elsewhere(run_dir(root, c)) for c in cfgs)


def status(pops: list[list[ExperimentConfig]], root: Path | None = None) -> list[RunStatus]:
    """Per run of ``pops``: how far it got under ``root`` (default: the results root)."""
    root = Path(root) if root is not None else paths.results_root()
    out = []
    for cfgs in pops:
        log = _log_path(root, cfgs)
        try:
            failed = log.exists() and "Traceback" in _last_attempt(log)
        except StoreError:                            # not a log this sweep wrote
            failed = True
        for cfg in cfgs:
            d = run_dir(root, cfg)
            try:
                meta = read_json(d / "meta.json") if (d / "meta.json").exists() else {}
                if not isinstance(meta, dict):
                    raise ValueError
            except (StoreError, ValueError):
                meta = {"status": "damaged"}
            st = meta.get("status")
            state = st if st in ("complete", "diverged", "damaged") else ("failed" if failed else
                                                                          "running" if st else "queued")
            if state in ("running", "queued") and log.exists() and not RunLock.held_elsewhere(d):
                state = "interrupted"                  # its job started and stopped short, with no error logged
            if state in ("complete", "diverged"):      # one truth: the store's verified reading, not meta.json alone
                try:
                    load_run(d)
                except (StoreError, OSError):
                    state = "damaged"
            out.append(RunStatus(d, state, int(meta.get("steps_done", 0)), cfg.meta.S, log if log.exists() else None,
                                 float(meta.get("wall_time_s", 0.0))))
    return out


def pending(pops: list[list[ExperimentConfig]], root: Path | None = None) -> list[list[ExperimentConfig]]:
    """The populations with a run not finished (complete or diverged) in the store."""
    done = {s.run for s in status(pops, root) if s.state in ("complete", "diverged")}
    root = Path(root) if root is not None else paths.results_root()
    return [cfgs for cfgs in pops if any(run_dir(root, c) not in done for c in cfgs)]


def _refuse_linked(path: Path) -> None:
    """Neither a sweep file nor the folders it sits in (``sweep_logs``, ``jobs``) may be a
    symbolic link, so nothing outside the store is written."""
    for p in (path, path.parent, path.parent.parent):
        if p.is_symlink():
            raise StoreError(f"{p} is a symbolic link; the store neither follows nor writes through links: "
                             "replace it with a regular file or directory")


def open_for_writing(path: Path):
    """A job log opened for appending inside the store (``_refuse_linked``), headed by an
    ``ATTEMPT`` line: concurrent sweeps add to one log, none truncates another's."""
    import time

    path = Path(path)
    _refuse_linked(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        _refuse_linked(path)
        raise StoreError(f"{path} cannot be written ({e.strerror}): check the results directory") from None
    fh = os.fdopen(fd, "w")
    fh.write(f"{ATTEMPT} by process {os.getpid()} at {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n")
    fh.flush()
    return fh


def _check_device(device: str) -> None:
    """The device every job will ask for, checked once before anything is submitted."""
    resolve_device(device)


def write_job(cfgs: list[ExperimentConfig], directory: Path) -> Path:
    """A job file: the population's configs, one YAML document each."""
    f = Path(directory) / f"{cfgs[0].experiment}-{cfgs[0].hash()}.yaml"
    _refuse_linked(f)
    write_text(f, "\n---\n".join(dump(c) for c in cfgs))    # atomic: a job reading it never sees half
    return f


def read_job(path: Path) -> list[ExperimentConfig]:
    import yaml

    return [from_dict(d) for d in yaml.safe_load_all(read_text(path, MAX_YAML_BYTES)) if d]


def run_job(path: Path, root: Path, device: str = "cpu") -> int:
    """One job: train the population in ``path`` into ``root``, resuming checkpoints.  A run
    that another job is training (its directory is locked) is left to that job: a duplicate
    submission exits at once and computes nothing."""
    try:
        train_population(read_job(path), out_root=root, resume=True, device=device, progress=False)
    except RunLockedError as e:
        print(f"mplp sweep job: left to the job that holds it ({e})", flush=True)
    return 0


def _job_command(job_file: Path, root: Path, device: str, threads: int) -> list[str]:
    return [sys.executable, "-m", "mplp.sweep", "job", str(job_file), "--out", str(root), "--device", device,
            "--threads", str(threads)]


def _run_logged(cmd: list[str], log: str) -> int:
    """Run one job's command with its output in ``log`` (inside a Ray worker or a Slurm task)."""
    with open_for_writing(Path(log)) as fh:
        return subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode


def run_ray(pops: list[list[ExperimentConfig]], root: Path | None = None, max_parallel: int = 1,
            device: str = "cpu", threads: int = 1, address: str | None = None) -> list[RunStatus]:
    """The pending populations as Ray tasks, at most ``max_parallel`` at once: on a local
    cluster started here (``address`` None; shut down after) or on a running one
    (``address``, e.g. "auto" or "ray://head:10001"; the results root must be shared)."""
    import ray

    if max_parallel < 1:
        raise ValueError(f"--max-parallel: must be >= 1 (got {max_parallel})")
    _check_device(device)
    root = Path(root).resolve() if root is not None else paths.results_root()
    todo = [cfgs for cfgs in pending(pops, root) if not _held(root, cfgs)]
    jobs_dir = root / "sweep_logs" / "jobs"
    own = not ray.is_initialized()
    if own:
        kw = {"address": address} if address else {"num_cpus": max_parallel}
        ray.init(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True, **kw)
    try:
        task = ray.remote(num_cpus=1, num_gpus=1 if device.startswith("cuda") else 0)(_run_logged)
        waiting, refs = list(todo), []
        while waiting or refs:
            while waiting and len(refs) < max_parallel:
                cfgs = waiting.pop(0)
                refs.append(task.remote(_job_command(write_job(cfgs, jobs_dir), root, device, threads),
                                        str(_log_path(root, cfgs))))
            done, refs = ray.wait(refs, num_returns=1)
            ray.get(done)
    finally:
        if own:
            ray.shutdown()
    return status(pops, root)


def run_slurm(pops: list[list[ExperimentConfig]], root: Path | None = None, max_parallel: int = 1,
              device: str = "cpu", threads: int = 1, folder: Path | None = None, cluster: str | None = None,
              timeout_min: int = 60 * 24) -> list[RunStatus]:
    """The pending populations as Slurm jobs through ``submitit`` (``cluster`` "local": its
    local executor, real subprocesses, as the tests run it; None: Slurm when ``sbatch`` is
    there).  At most ``max_parallel`` run at once; a GPU per job with ``device`` "cuda"."""
    import submitit

    if max_parallel < 1:
        raise ValueError(f"--max-parallel: must be >= 1 (got {max_parallel})")
    _check_device(device)
    root = Path(root).resolve() if root is not None else paths.results_root()
    todo = [cfgs for cfgs in pending(pops, root) if not _held(root, cfgs)]
    folder = Path(folder) if folder is not None else root / "sweep_logs" / "submitit"
    ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    ex.update_parameters(timeout_min=timeout_min, cpus_per_task=max(1, threads),
                         gpus_per_node=1 if device.startswith("cuda") else 0)
    if ex.cluster == "slurm":
        ex.update_parameters(slurm_array_parallelism=max_parallel)
    jobs_dir = root / "sweep_logs" / "jobs"
    for k in range(0, len(todo), max_parallel if ex.cluster != "slurm" else len(todo) or 1):
        batch = todo[k:k + (max_parallel if ex.cluster != "slurm" else len(todo))]
        jobs = [ex.submit(_run_logged, _job_command(write_job(cfgs, jobs_dir), root, device, threads),
                          str(_log_path(root, cfgs))) for cfgs in batch]
        for j in jobs:
            j.result()
    return status(pops, root)


def run_local(pops: list[list[ExperimentConfig]], root: Path | None = None, max_parallel: int = 1,
              device: str = "cpu", threads: int = 1) -> list[RunStatus]:
    """Execute the pending populations as subprocesses (``python -m mplp.sweep job``), at most
    ``max_parallel`` at once, each logging to ``<root>/sweep_logs/``; returns the status after."""
    if max_parallel < 1:
        raise ValueError(f"--max-parallel: must be >= 1 (got {max_parallel})")
    _check_device(device)
    root = Path(root).resolve() if root is not None else paths.results_root()
    todo = [cfgs for cfgs in pending(pops, root) if not _held(root, cfgs)]    # others' jobs are left to them
    jobs_dir = root / "sweep_logs" / "jobs"
    running: list[tuple[subprocess.Popen, object]] = []
    for cfgs in todo:
        while len(running) >= max_parallel:
            running = _reap(running)
        fh = open_for_writing(_log_path(root, cfgs))
        cmd = _job_command(write_job(cfgs, jobs_dir), root, device, threads)
        running.append((subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT), fh))
    while running:
        running = _reap(running)
    return status(pops, root)


def _reap(running):
    import time

    still = []
    for proc, fh in running:
        if proc.poll() is None:
            still.append((proc, fh))
        else:
            fh.close()
    if len(still) == len(running):
        time.sleep(0.2)
    return still


def main(argv=None) -> int:
    import argparse

    import torch

    p = argparse.ArgumentParser(prog="python -m mplp.sweep", description="run one sweep job")
    sub = p.add_subparsers(dest="command", required=True)
    j = sub.add_parser("job", help="train one population from a job file, resuming checkpoints")
    j.add_argument("file")
    j.add_argument("--out", required=True)
    j.add_argument("--device", default="cpu")
    j.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    return run_job(Path(args.file), Path(args.out), args.device)


if __name__ == "__main__":
    sys.exit(main())
