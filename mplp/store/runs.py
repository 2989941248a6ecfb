"""Run directories, ``<root>/<experiment>/<config-hash>/``.

Files: ``config.yaml``; ``validation.csv`` (outer step, validation outer-loss, ...);
``train.csv`` (windowed training losses); ``theta.pt`` (final meta-parameters);
``snapshots.pt`` (theta at validation steps); ``meta.json`` (status, timings,
machine); ``final_state.pt`` (a finished run's whole training state, to extend it);
``manifest.json`` (size and sha256 of every file above, written last);
``checkpoint.pt`` (an unfinished run's resume state) with its own record ``checkpoint.json``.

Every read verifies what it returns: the manifest, the stored config's hash against the
directory (and so against the request), ``meta.json``'s hash and step counts.  A mismatch is
a ``DamagedResultError`` naming the file, never a silent return.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mplp.core.config import ConfigError, ExperimentConfig, parse
from mplp.store.files import (MANIFEST, DamagedResultError, RunLockedError, StoreError, _atomic_write_bytes,
                              _matches, load_torch, read_csv, read_json, read_text, verify_manifest, write_json)
from mplp.store.locks import RunLock

RUN_FILES = ("config.yaml", "meta.json", "validation.csv", "train.csv", "theta.pt", "snapshots.pt", "final_state.pt")


FINAL_STATE = "final_state.pt"    # a finished run's whole training state: a longer run can extend it
CHECKPOINT, CHECKPOINT_RECORD = "checkpoint.pt", "checkpoint.json"


def save_checkpoint(directory: Path, state: dict) -> None:
    """``checkpoint.pt`` and its record ``checkpoint.json`` (size and sha256), so that a checkpoint
    is verified before it is read.  The record vouches for the file at every instant: it first
    accepts the old and the new checkpoint, then the file is replaced, then only the new one stays."""
    d = Path(directory)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    new = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    try:
        old = [r for r in read_json(d / CHECKPOINT_RECORD)["accept"] if r != new][:1]
    except (FileNotFoundError, StoreError, KeyError, TypeError):
        old = []
    write_json(d / CHECKPOINT_RECORD, {"accept": [new, *old]})
    _atomic_write_bytes(d / CHECKPOINT, data)
    write_json(d / CHECKPOINT_RECORD, {"accept": [new]})


def load_checkpoint(directory: Path) -> dict:
    """The resume state in ``checkpoint.pt``, read as data once it matches its record."""
    d = Path(directory)
    ckpt, rec = d / CHECKPOINT, d / CHECKPOINT_RECORD
    why = f"{rec} is missing"
    try:
        accept = read_json(rec)["accept"]
        if any(_matches(ckpt, r) for r in accept):
            return load_torch(ckpt)
        why = f"it differs from {rec} (damaged, edited or not written here)"
    except FileNotFoundError as e:
        why = f"{Path(e.filename or rec).name} is missing"
    except (KeyError, TypeError):
        why = f"{rec} is not a valid checkpoint record"
    raise DamagedResultError(f"{ckpt} cannot be read: {why}; train with --restart to start the run over")


def load_final_state(directory: Path) -> dict:
    """A finished run's whole training state (``final_state.pt``), read as data once the run's
    manifest vouches for it."""
    verify_manifest(directory, required=(FINAL_STATE,))
    return load_torch(Path(directory) / FINAL_STATE)


def run_dir(root: str | Path, cfg: ExperimentConfig) -> Path:
    return Path(root) / cfg.experiment / cfg.hash()


@dataclass
class RunResult:
    """A stored meta-training run.

    validation: columns of validation.csv (``step``, ``val_loss``, ``val_loss_std``,
    ``final_inner_loss``, ``entropy_l<k>``); train: columns of train.csv (``step``,
    ``outer_loss``, ``inner_loss``, ``be_term``); theta: final meta-parameters.
    """

    path: Path
    config: ExperimentConfig
    validation: dict[str, np.ndarray]
    train: dict[str, np.ndarray]
    theta: dict[str, torch.Tensor]
    meta: dict

    @property
    def complete(self) -> bool:
        return self.meta.get("status") == "complete"

    @property
    def finished(self) -> bool:
        """Trained to its S: "complete", or "diverged" (non-finite end or too many skipped updates)."""
        return self.meta.get("status") in ("complete", "diverged")

    @property
    def extended_at(self) -> list[tuple[int, str]]:
        """``(step, source run's directory name)`` for each time this run continued a shorter
        finished one (``mplp train --extend-from``; recorded in meta.json's resumes)."""
        return [(int(x["step"]), str(x["extended_from"])) for x in self.meta.get("resumes", []) if "extended_from" in x]

    def snapshots(self) -> dict[int, dict[str, torch.Tensor]]:
        """theta at the kept outer steps, ``{step: theta}``."""
        p = self.path / "snapshots.pt"
        return load_torch(p) if p.exists() else {}


def load_run(path: str | Path) -> RunResult:
    """Load a stored run, verified (``verify_run``); raises ``FileNotFoundError`` when there is
    no run there and ``DamagedResultError`` when one is there but damaged or foreign."""
    path = Path(path)
    if not (path / "meta.json").exists() and not (path / "config.yaml").exists():
        raise FileNotFoundError(f"{path}: not a stored run (meta.json is missing)")
    for name in ("config.yaml", "meta.json", "validation.csv", "train.csv", "theta.pt"):
        if not (path / name).exists():
            raise DamagedResultError(f"{path / name} is missing: the run in {path} is incomplete; train it again "
                                     "with --restart (discards the rest) or restore the file")
    try:
        cfg = parse(read_text(path / "config.yaml"), path / "config.yaml")
        meta = json.loads(read_text(path / "meta.json"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
        run = RunResult(path, cfg, read_csv(path / "validation.csv"), read_csv(path / "train.csv"), {}, meta)
    except (ConfigError, ValueError) as e:
        raise DamagedResultError(f"{path}: config.yaml, meta.json or a curve cannot be read ({e}); restore it "
                                 "or train the run again with --restart") from None
    except OSError as e:                  # a directory where a file belongs, an unreadable file, ...
        raise DamagedResultError(f"{path}: {Path(e.filename or path).name} cannot be read ({e.strerror}); "
                                 "restore it or train the run again with --restart") from None
    verify_run(run)                       # the run is whole before anything in it is unpickled
    run.theta = load_torch(path / "theta.pt")
    return run


def verify_run(run: RunResult) -> None:
    """The run is the one its directory names, and it is whole: config.yaml hashes to the
    directory's name, meta.json says the same hash, a complete run's steps are its S and its last
    validation is at S, and its files match the manifest (an unfinished run's too, unless its
    owner is writing it right now)."""
    d, name = run.path, run.path.name
    if run.config.hash() != name:
        raise DamagedResultError(f"{d / 'config.yaml'} hashes to {run.config.hash()}, not to its directory {name}: "
                                 "it was edited or copied; restore it or delete the directory")
    if run.meta.get("config_hash", name) != name:
        raise DamagedResultError(f"{d / 'meta.json'} belongs to config {run.meta.get('config_hash')}, not {name}")
    if run.finished:
        S = run.config.meta.S
        steps = run.validation.get("step")
        if int(run.meta.get("steps_done", -1)) != S or steps is None or not len(steps) or int(steps[-1]) != S:
            raise DamagedResultError(f"{d}: marked complete, but its steps ({run.meta.get('steps_done')}, last "
                                     f"validation {None if steps is None or not len(steps) else int(steps[-1])}) are "
                                     f"not its config's S = {S}; delete the directory to train it again")
        verify_manifest(d, required=("config.yaml", "meta.json", "validation.csv", "train.csv", "theta.pt"))
    elif not RunLock.held_elsewhere(d):       # an unfinished run at rest: its last checkpoint's files
        verify_manifest(d, required=("config.yaml", "meta.json", "validation.csv", "train.csv", "theta.pt"))


def find_run(root: str | Path, cfg: ExperimentConfig, dtype: str | None = None) -> RunResult | None:
    """The finished stored run of ``cfg`` under ``root`` ("complete" or "diverged"), or None
    (nothing there, or not finished).
    A damaged or foreign run is a ``DamagedResultError``; with ``dtype`` ("float32"), a run stored
    in another precision is a ``StoreError``."""
    d = run_dir(root, cfg)
    try:
        r = load_run(d)
    except FileNotFoundError:
        return None
    except DamagedResultError:
        if RunLock.held_elsewhere(d):     # being written by its owner right now, not damaged
            raise RunLockedError(f"{d} is in use by another process (another mplp train or chapter run); "
                                 "wait for it to finish or stop it") from None
        if (d / CHECKPOINT).is_file() and not (d / CHECKPOINT).is_symlink():
            return None                   # stopped mid-write (e.g. before its manifest): resumable from its checkpoint
        raise
    if not r.finished:
        return None
    if dtype is not None and r.meta.get("dtype", dtype) != dtype:
        raise StoreError(f"{d} was trained in {r.meta.get('dtype')}, not {dtype}: ask for --dtype "
                         f"{r.meta.get('dtype')} or train into another results root (--out)")
    return r


def own_files(directory: Path) -> list[Path]:
    """The regular files in a run directory that the store writes (``RUN_FILES``, its
    checkpoint and record, manifest and leftover ``*.tmp``): what ``--restart`` may delete, nothing else."""
    names = {*RUN_FILES, CHECKPOINT, CHECKPOINT_RECORD, MANIFEST}
    return [f for f in Path(directory).iterdir()
            if not f.is_symlink() and f.is_file() and (f.name in names or
                                                       (f.name.endswith(".tmp") and f.name.split(".")[0] in
                                                        {n.split(".")[0] for n in names}))]
