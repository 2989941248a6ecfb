"""The training loop: meta-train runs into the store, checkpointed and resumable.

A run directory is locked for the whole loop; every ``checkpoint_every`` outer steps its
checkpoint and partial outputs are written, so an interrupted run resumes bit-for-bit.  Several
runs of one configuration shape train as one batched population.  Ctrl-C stops at a step
boundary.  A finished run is never trained over.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import torch

from mplp import paths
from mplp.store import (CHECKPOINT, CHECKPOINT_RECORD, FINAL_STATE, RUN_FILES, RunLock, RunResult, StoreError,
                        find_run, load_checkpoint, load_final_state, load_run, machine_record, own_files, read_json,
                        read_text, run_dir, save_checkpoint, save_torch, write_csv, write_json, write_manifest,
                        write_text)
from mplp.core.config import ConfigError, ExperimentConfig, dump
from mplp.core.backward import sgd_backward
from mplp.core.fast import fast_backward
from mplp.meta.trainer import (MetaTrainer, TrainState, _population_key, backward_name, population_step,
                               resolve_device)


class RunExistsError(StoreError):
    """A run directory holds an unfinished run that this call may not continue or replace."""


# A run whose outer updates were skipped this often (non-finite meta-gradients: diverged
# inner problems), or whose last validation is not finite, ends "diverged", not "complete".
DIVERGED_SKIP_FRACTION = 0.5


def final_status(st: TrainState, S: int) -> str:
    """"diverged" when the last validation is not finite or more than
    ``DIVERGED_SKIP_FRACTION`` of the outer updates were skipped; else "complete"."""
    last = st.val_rows[-1]["val_loss"] if st.val_rows else float("nan")
    if not math.isfinite(last) or st.skipped > DIVERGED_SKIP_FRACTION * max(S, 1):
        return "diverged"
    return "complete"


def _write_outputs(trainer: MetaTrainer, st: TrainState, out, status: str, population_size: int) -> None:
    write_csv(out / "validation.csv", st.val_rows)
    write_csv(out / "train.csv", st.train_rows)
    save_torch(out / "theta.pt", st.theta)
    save_torch(out / "snapshots.pt", st.snapshots)
    write_json(out / "meta.json", {
        "status": status, "config_hash": trainer.cfg.hash(), "steps_done": st.step,
        "steps_total": trainer.cfg.meta.S, "skipped_outer_updates": st.skipped,
        "wall_time_s": round(st.elapsed, 3), "dtype": str(trainer.dtype).replace("torch.", ""),
        "backward": backward_name(trainer), "resumes": st.resumes,
        "population_size": population_size, **machine_record(trainer.device)})
    write_manifest(out, RUN_FILES)


class _Run:
    """One run's bookkeeping inside the training loop: validation, logs, checkpoints."""

    def __init__(self, trainer: MetaTrainer, out_root, resume: bool, restart: bool = False,
                 extend_from: Path | None = None, lock: RunLock | None = None):
        cfg = self.cfg = trainer.cfg
        self.extend_from = Path(extend_from) if extend_from is not None else None
        self.population_size = 1       # runs sharing this run's wall time (set by train_population)
        self.trainer, self.out = trainer, run_dir(out_root, cfg)
        self.ckpt = self.out / CHECKPOINT
        # one owner at a time, until finish() / close(); a population takes every lock first
        self.lock = lock if lock is not None else RunLock(self.out).acquire()
        try:
            self._open(trainer, resume, restart)
        except BaseException:
            self.close()
            raise
        self.started = time.perf_counter() - self.st.elapsed

    def _open(self, trainer: MetaTrainer, resume: bool, restart: bool) -> None:
        for tmp in self.out.glob("*.tmp"):            # left by a process killed mid-write
            if tmp in own_files(self.out):
                tmp.unlink()
        if restart:                                    # only what the store wrote
            for f in own_files(self.out):
                f.unlink()
        if self.ckpt.exists():
            if not resume:
                raise RunExistsError(f"{self.out} holds an unfinished run; pass --resume (resume=True) to "
                                     "continue it, or --restart (restart=True) to discard it and start over")
            self.st = trainer.load_state_dict(load_checkpoint(self.out))
            self.st.resumes.append({"step": self.st.step, "dtype": str(trainer.dtype).replace("torch.", ""),
                                    "backward": backward_name(trainer)})
            return
        left = [f.name for f in self.out.iterdir() if f.name != ".lock"]
        if left:
            raise RunExistsError(self._refusal(left))
        self.st = trainer.init_state() if self.extend_from is None else self._extended(trainer)
        write_text(self.out / "config.yaml", dump(self.cfg))

    def _extended(self, trainer: MetaTrainer) -> TrainState:
        """The finished shorter run in ``extend_from``'s final state, to be continued to this
        config's S: the same trajectory as one uninterrupted run, since nothing but S differs."""
        src = self.extend_from
        shorter = load_run(src)                      # verified: complete and whole
        if not shorter.finished or not (src / FINAL_STATE).exists():
            raise StoreError(f"{src} cannot be extended: it is not finished or has no {FINAL_STATE} (runs "
                             "finished before extensions existed do not keep one)")
        a, b = shorter.config.to_dict(), self.cfg.to_dict()
        S0 = a["meta"].pop("S")
        b["meta"].pop("S")
        if a != b:
            diff = sorted(k for k in a if a[k] != b[k])
            raise ConfigError(f"--extend-from {src}: its config differs from this one in {', '.join(diff)}, "
                              "not only in meta.S")
        if S0 >= self.cfg.meta.S:
            raise ConfigError(f"--extend-from {src}: it ran {S0:,} outer steps; meta.S must be larger (got "
                              f"{self.cfg.meta.S:,})")
        if self.cfg.log_every and S0 % self.cfg.log_every:
            raise ConfigError(f"--extend-from {src}: its S = {S0:,} is not a multiple of log_every, so its last "
                              "logged mean covers other steps than an uninterrupted run's")
        st = trainer.load_state_dict(load_final_state(src), config_hash=shorter.config.hash())
        # A run validates and snapshots at its last step S0 even off their grids; an uninterrupted
        # run would not, so those records go (validation draws no random numbers: the trajectory
        # is unchanged, tests/meta/test_trainer.py)
        dropped = []
        if S0 % self.cfg.validation.every and st.val_rows and st.val_rows[-1]["step"] == S0:
            st.val_rows.pop()
            dropped.append("validation")
        snap = self.cfg.snapshot_every
        if snap and S0 % snap and S0 in st.snapshots:
            del st.snapshots[S0]
            dropped.append("snapshot")
        st.resumes.append({"step": st.step, "extended_from": src.name, "dtype": str(trainer.dtype).replace("torch.", ""),
                           "backward": backward_name(trainer), **({"dropped_at_step": dropped} if dropped else {})})
        return st

    def _refusal(self, left: list[str]) -> str:
        """Why a directory with files but no checkpoint is not trained over, and what would be lost."""
        try:
            meta = read_json(self.out / "meta.json")
            what = f"status {meta.get('status')!r}, {meta.get('steps_done')} of {meta.get('steps_total')} outer steps"
        except (OSError, StoreError, AttributeError):
            what = "no readable meta.json"
        try:
            rows = max(0, len(read_text(self.out / "validation.csv").splitlines()) - 1)
        except (OSError, StoreError):
            rows = 0
        return (f"{self.out} holds a run that cannot be continued ({what}; no checkpoint.pt to resume from) or is "
                f"damaged; training again would overwrite {', '.join(sorted(left))} ({rows} validation rows). "
                "Pass --restart (restart=True) to discard it and start over, or restore the missing files")

    def close(self) -> None:
        self.lock.release()

    def checkpoint(self, status: str) -> None:
        self.st.elapsed = time.perf_counter() - self.started
        save_checkpoint(self.out, self.trainer.state_dict(self.st))
        _write_outputs(self.trainer, self.st, self.out, status, self.population_size)

    def maybe_validate(self) -> None:
        st, S = self.st, self.cfg.meta.S
        snap = self.cfg.snapshot_every
        if st.step % self.cfg.validation.every == 0 or st.step == S:
            if not st.val_rows or st.val_rows[-1]["step"] != st.step:
                st.val_rows.append(self.trainer.validate(st.theta).row(st.step))
            if snap == 0 or st.step % snap == 0 or st.step == S:
                st.snapshots[st.step] = {k: v.detach().cpu().clone() for k, v in st.theta.items()}

    def after_step(self, losses: dict) -> None:
        st, S = self.st, self.cfg.meta.S
        st.window.append(losses)
        if st.step % self.cfg.log_every == 0 or st.step == S:
            row = {"step": st.step}
            row.update({k: sum(w[k] for w in st.window) / len(st.window) for k in st.window[0]})
            st.train_rows.append(row)
            st.window = []
        self.maybe_validate()
        if st.step % self.cfg.checkpoint_every == 0 and st.step < S:
            self.checkpoint("running")

    def finish(self) -> RunResult:
        if self.st.step >= self.cfg.meta.S:
            self.st.elapsed = time.perf_counter() - self.started
            save_torch(self.out / FINAL_STATE, self.trainer.state_dict(self.st))     # kept: extensible
            _write_outputs(self.trainer, self.st, self.out, final_status(self.st, self.cfg.meta.S),
                           self.population_size)
            for f in (self.ckpt, self.out / CHECKPOINT_RECORD):
                if f.exists():
                    f.unlink()
        else:
            self.checkpoint("running")
        return load_run(self.out)


class _DeferredInterrupt:
    """SIGINT (Ctrl-C) during a training loop sets a flag instead of raising, so the loop stops
    at a step boundary, where the state is whole (an interrupt between the outer update and the
    step counter would otherwise be checkpointed half-done).  A second Ctrl-C raises at once;
    the last periodic checkpoint is then the one to resume from."""

    def __init__(self):
        self.flag, self.old = False, None

    def _handler(self, signum, frame):
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)


def train_population(cfgs: list[ExperimentConfig], out_root=None, resume: bool = False, device="cpu",
                     dtype=torch.float32, backward=fast_backward, progress: bool = True,
                     max_steps: int | None = None, restart: bool = False,
                     extend_from: list | None = None) -> list[RunResult]:
    """Meta-train several runs that share a configuration shape (e.g. the seeds of an
    ablation cell) as one batched program; each is stored as if run alone.

    Finished stored runs ("complete" or "diverged", verified) are returned as they are;
    unfinished ones resume with ``resume=True``; ``restart=True`` discards what is stored and
    starts over.  A directory holding files but no checkpoint is refused (``RunExistsError``),
    never trained over.  Each run directory is locked for the duration.  Runs at different
    steps, or a dense ``backward``, go one by one.  ``extend_from``: per config, None or the
    directory of a finished shorter run of the same config (only meta.S differs) that a new
    run continues from its final state instead of starting at step 0.
    """
    _check_population(cfgs)
    dev = resolve_device(device)
    out_root = out_root if out_root is not None else paths.results_root()
    dtype_name = str(dtype).replace("torch.", "")
    results: dict[int, RunResult] = {}
    runs: dict[int, _Run] = {}
    locks: dict[int, RunLock] = {}
    try:
        pending = []
        for i, cfg in enumerate(cfgs):
            done = None if restart else find_run(out_root, cfg, dtype=dtype_name)
            if done is not None:
                results[i] = done
            else:
                pending.append(i)
        for i in pending:                             # every lock before anything is deleted or written
            locks[i] = RunLock(run_dir(out_root, cfgs[i])).acquire()
        for i in pending:
            runs[i] = _Run(MetaTrainer(cfgs[i], dtype, dev, backward), out_root, resume, restart,
                           (extend_from or [None] * len(cfgs))[i], lock=locks.pop(i))
        groups: dict[int, list[int]] = {}
        for i, r in runs.items():
            groups.setdefault(r.st.step, []).append(i)
        for step0, members in groups.items():
            group = [runs[i] for i in members]
            _train_group(group, step0, max_steps, progress)
            for i, r in zip(members, group):
                results[i] = r.finish()
    finally:
        for r in runs.values():
            r.close()
        for lock in locks.values():                   # taken, but their runs never opened
            lock.release()
    return [results[i] for i in range(len(cfgs))]


def _check_population(cfgs: list[ExperimentConfig]) -> None:
    """Members of one population share everything that shapes the batched step and differ."""
    if not cfgs:
        raise ValueError("train_population needs at least one config")
    key = _population_key(cfgs[0])
    for c in cfgs[1:]:
        if _population_key(c) != key:
            raise ConfigError(f"population members must share optimizee, learner, task and meta (except "
                              f"meta.batch_entropy); {c.experiment} (seed {c.seed}) differs")
    hashes = [c.hash() for c in cfgs]
    if len(set(hashes)) != len(hashes):
        raise ConfigError("population members must differ (e.g. by seed): two configs are identical")


class _Beacon:
    """Training progress for whoever runs the notebook this trains in (``mplp run``): when
    ``$MPLP_PROGRESS_FILE`` is set, ``{"what", "step", "total"}`` written there at most once a second."""

    def __init__(self, what: str, total: int):
        self.path, self.what, self.total, self.last = os.environ.get("MPLP_PROGRESS_FILE"), what, total, 0.0

    def tell(self, step: int) -> None:
        if not self.path or (time.monotonic() - self.last < 1.0 and step < self.total):
            return
        self.last = time.monotonic()
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as f:
                json.dump({"what": self.what, "step": step, "total": self.total}, f)
            os.replace(tmp, self.path)
        except OSError:              # the runner is gone (a process that outlived it): stop telling
            self.path = None


def _train_group(group: list[_Run], step0: int, max_steps: int | None, progress: bool) -> None:
    """Train runs standing at the same step ``step0`` together (one batched program on the fast
    path) to S, or to ``max_steps``; Ctrl-C checkpoints them at the next step boundary."""
    from tqdm import tqdm

    cfg = group[0].cfg
    S = cfg.meta.S
    stop = S if max_steps is None else min(S, max_steps)
    for r in group:
        r.population_size = len(group)
    batched = (group[0].trainer.backward in (fast_backward, sgd_backward) and len(group) > 1
               and cfg.meta.estimator == "tbptt")
    desc = cfg.experiment + (f" x{len(group)}" if len(group) > 1 else "")
    bar = tqdm(total=S, initial=step0, disable=not progress, unit="step", desc=desc, dynamic_ncols=True)
    beacon = _Beacon(desc, S)
    try:
        with _DeferredInterrupt() as interrupt:
            for r in group:
                r.maybe_validate()
            while group[0].st.step < stop:
                if batched:
                    losses = population_step([r.trainer for r in group], [r.st for r in group])
                else:
                    losses = [r.trainer.outer_step(r.st) for r in group]
                for r, l in zip(group, losses):
                    r.after_step(l)
                bar.update(1)
                beacon.tell(group[0].st.step)
                vals = [r.st.val_rows[-1]["val_loss"] for r in group if r.st.val_rows]
                if vals:
                    bar.set_postfix(val=" ".join(f"{v:.4g}" for v in vals), refresh=False)
                if interrupt.flag:                      # a step boundary: the state is whole
                    for r in group:
                        r.checkpoint("running")
                    raise KeyboardInterrupt
    finally:
        bar.close()


def train(cfg: ExperimentConfig, out_root=None, resume: bool = False, device="cpu",
          dtype=torch.float32, backward=fast_backward, progress: bool = True,
          max_steps: int | None = None, restart: bool = False, extend_from=None) -> RunResult:
    """Meta-train ``cfg`` into ``<out_root>/<experiment>/<hash>/`` and return the stored run
    (``out_root`` defaults to ``paths.results_root()``, the repository's ``results/``).

    A complete stored run is returned as is.  An unfinished one needs ``resume=True``
    and continues from its checkpoint.  ``max_steps`` stops early (checkpointed,
    status "running"): a stand-in for an interruption.  ``extend_from``: the directory of a
    finished shorter run of the same config, continued from its final state.
    """
    return train_population([cfg], out_root, resume, device, dtype, backward, progress, max_steps, restart,
                            [extend_from])[0]
