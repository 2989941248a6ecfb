"""Result storage: one directory per run, ``<root>/<experiment>/<config-hash>/``.

Files: ``config.yaml``; ``validation.csv`` (outer step, validation outer-loss, ...);
``train.csv`` (windowed training losses); ``theta.pt`` (final meta-parameters);
``snapshots.pt`` (theta at validation steps); ``meta.json`` (status, timings,
machine); ``manifest.json`` (size and sha256 of every file above, written last);
``checkpoint.pt`` (an unfinished run's resume state) with its own record ``checkpoint.json``.
Every write is atomic (temporary file + rename), so an interrupted run never leaves a
half-written file.  The store reads only regular files of bounded size, never through a
symbolic link, and unpickles nothing but data (``torch.load(weights_only=True)``).

Every read verifies what it returns: the manifest, the stored config's hash against the
directory (and so against the request), ``meta.json``'s hash and step counts, a result's
``key.json`` against its key.  A mismatch is a ``DamagedResultError`` naming the file,
never a silent return.  A run directory is owned by one process at a time (``RunLock``,
an OS file lock on ``.lock``).
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import platform
import stat
import tempfile
import time
import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import torch

from mplp.core import config as C
from mplp import paths

Result = TypeVar("Result")

MANIFEST = "manifest.json"
RUN_FILES = ("config.yaml", "meta.json", "validation.csv", "train.csv", "theta.pt", "snapshots.pt", "final_state.pt")
FINAL_STATE = "final_state.pt"    # a finished run's whole training state: a longer run can extend it
CHECKPOINT, CHECKPOINT_RECORD = "checkpoint.pt", "checkpoint.json"
MAX_TEXT_BYTES = 256 * 2**20      # a stored CSV, JSON or YAML file (the longest curves are a few MB)
MAX_TENSOR_BYTES = 64 * 2**30     # a stored tensor file (as large as the largest allowed step, config.MAX_STEP_BYTES)


class StoreError(RuntimeError):
    """A stored result cannot be used as asked; the message names the file and what to do."""


class DamagedResultError(StoreError):
    """A stored result is incomplete, corrupt or not the one its directory names."""


class RunLockedError(StoreError):
    """Another process holds the run directory."""


def open_stored(path: Path, limit: int | None = None):
    """A stored file opened for binary reading, if it is a regular file (not a symbolic link,
    directory, FIFO or device) of at most ``limit`` bytes; else a ``DamagedResultError`` naming it.
    A missing file is a ``FileNotFoundError``."""
    path, limit = Path(path), MAX_TENSOR_BYTES if limit is None else limit
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as e:
        why = "it is a symbolic link, which the store does not follow" if e.errno == errno.ELOOP else e.strerror
        raise DamagedResultError(f"{path} cannot be read ({why}): restore the file the store wrote, or delete "
                                 "the run (train with --restart)") from None
    info = os.fstat(fd)
    why = (None if stat.S_ISREG(info.st_mode) and info.st_size <= limit else
           "it is a directory" if stat.S_ISDIR(info.st_mode) else
           "it is not a regular file" if not stat.S_ISREG(info.st_mode) else
           f"{info.st_size:,} bytes, more than any file the store writes ({limit:,})")
    if why:
        os.close(fd)
        raise DamagedResultError(f"{path} cannot be read ({why}): restore the file the store wrote, or delete "
                                 "the run (train with --restart)")
    return os.fdopen(fd, "rb")


def read_text(path: Path, limit: int | None = None) -> str:
    """A stored text file (``open_stored``'s checks; at most ``MAX_TEXT_BYTES``), decoded as UTF-8."""
    with open_stored(path, MAX_TEXT_BYTES if limit is None else limit) as f:
        data = f.read()
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise DamagedResultError(f"{path} cannot be read (not UTF-8 text): restore it or delete the run") from None


def read_json(path: Path):
    try:
        return json.loads(read_text(path))
    except ValueError as e:
        raise DamagedResultError(f"{path} cannot be read (not valid JSON: {e}); restore it or delete the run") from None


def _sha256(path: Path) -> str:
    with open_stored(path) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_manifest(directory: Path, names) -> None:
    """``manifest.json``: size and sha256 of each of ``names`` present in ``directory``; written
    last, so a manifest vouches for files that were all written."""
    d = Path(directory)
    files = {n: {"bytes": (d / n).stat().st_size, "sha256": _sha256(d / n)} for n in names if (d / n).exists()}
    write_json(d / MANIFEST, {"files": files})


def verify_manifest(directory: Path, required=()) -> None:
    """Raise ``DamagedResultError`` naming the first file that is missing, or differs from the
    manifest; ``required`` files must be listed in it."""
    d = Path(directory)
    m = d / MANIFEST
    if not m.exists():
        raise DamagedResultError(f"{m} is missing: the result in {d} was not finished or was damaged; "
                                 "delete the directory (or train with --restart) to compute it again")
    try:
        files = read_json(m)["files"]
        if not isinstance(files, dict) or not all(isinstance(r, dict) and {"bytes", "sha256"} <= r.keys()
                                                  for r in files.values()):
            raise TypeError
    except (KeyError, TypeError):
        raise DamagedResultError(f"{m} is not a valid manifest; delete {d} to compute the result again") from None
    for name in required:
        if name not in files:
            raise DamagedResultError(f"{d / name} is not in {m}: the result is incomplete; delete {d} to compute it again")
    for name, rec in files.items():
        f = d / name
        if Path(name).name != name or name in ("", ".", ".."):
            raise DamagedResultError(f"{m} lists {name!r}, which is not a file of the run directory; delete {d}")
        if not f.exists() and not f.is_symlink():
            raise DamagedResultError(f"{f} is missing (listed in {m}); delete {d} (or train with --restart) "
                                     "to compute the result again")
        if not _matches(f, rec):
            raise DamagedResultError(f"{f} differs from {m} (edited or damaged); restore it (git checkout) or delete "
                                     f"{d} to compute the result again")


def _matches(f: Path, rec: dict) -> bool:
    """Whether the stored file ``f`` has the size and sha256 that ``rec`` records."""
    with open_stored(f) as fh:
        if os.fstat(fh.fileno()).st_size != rec["bytes"]:
            return False
        return hashlib.file_digest(fh, "sha256").hexdigest() == rec["sha256"]


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
    except FileNotFoundError:
        pass
    except (KeyError, TypeError):
        why = f"{rec} is not a valid checkpoint record"
    raise DamagedResultError(f"{ckpt} cannot be read: {why}; train with --restart to start the run over")


def load_final_state(directory: Path) -> dict:
    """A finished run's whole training state (``final_state.pt``), read as data once the run's
    manifest vouches for it."""
    verify_manifest(directory, required=(FINAL_STATE,))
    return load_torch(Path(directory) / FINAL_STATE)


def run_dir(root: str | Path, cfg: C.ExperimentConfig) -> Path:
    return Path(root) / cfg.experiment / cfg.hash()


WRITE_ERRORS = {errno.ENOSPC: "the disk is full: free space or pass another --out",
                errno.EDQUOT: "the disk quota is used up: free space or pass another --out",
                errno.EROFS: "the file system is read-only: pass a writable --out",
                errno.EACCES: "it is not writable: pass a writable --out",
                errno.EPERM: "it is not writable: pass a writable --out",
                errno.ENAMETOOLONG: "the name is too long for this file system: use a shorter --out or experiment",
                errno.EISDIR: "a directory is where this file belongs: move it away",
                errno.ENOTDIR: "a file is where a directory belongs: move it away"}


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    except OSError as e:
        raise StoreError(f"{path} cannot be written: {WRITE_ERRORS.get(e.errno, e.strerror)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        raise StoreError(f"{path} cannot be written: {WRITE_ERRORS.get(e.errno, e.strerror)}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: Path, text: str) -> None:
    _atomic_write_bytes(Path(path), text.encode())


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_torch(path: Path, obj) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    _atomic_write_bytes(Path(path), buf.getvalue())


def _numpy_globals() -> list:
    """What numpy arrays of numbers need to be rebuilt by ``torch.load(weights_only=True)``: the
    array constructor and the numeric dtypes (no object arrays)."""
    core = getattr(np, "_core", None) or np.core
    dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType") and n != "ObjectDType"]
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, *dtypes]


# Registered once for the process (a ``torch.serialization.safe_globals`` block would remove them
# again on exit): numeric arrays, and torch's version string, are data in every weights_only load.
SAFE_GLOBALS = [*_numpy_globals(), torch.torch_version.TorchVersion]
torch.serialization.add_safe_globals(SAFE_GLOBALS)


def load_torch(path: Path):
    """A stored file read as data only (``torch.load(weights_only=True)``: tensors, numeric numpy
    arrays and plain containers; nothing in the file can run code); an unreadable or foreign one
    is a ``DamagedResultError`` naming it."""
    try:
        with open_stored(path) as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except (FileNotFoundError, DamagedResultError):
        raise
    except Exception as e:  # truncated, empty or foreign files raise many kinds of errors
        raise DamagedResultError(f"{path} cannot be read ({type(e).__name__}: {str(e)[:120]}); it is truncated or "
                                 "not a file this library wrote: delete it (a checkpoint: train with --restart)") from None


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rows of equal keys as CSV; floats with full precision (``repr``)."""
    out = io.StringIO()
    if rows:
        w = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    write_text(path, out.getvalue())


def read_csv(path: Path) -> dict[str, np.ndarray]:
    """Columns of a CSV written by ``write_csv`` as float arrays."""
    rows = list(csv.DictReader(io.StringIO(read_text(path))))
    if not rows:
        return {}
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


@dataclass
class RunResult:
    """A stored meta-training run.

    validation: columns of validation.csv (``step``, ``val_loss``, ``val_loss_std``,
    ``final_inner_loss``, ``entropy_l<k>``); train: columns of train.csv (``step``,
    ``outer_loss``, ``inner_loss``, ``be_term``); theta: final meta-parameters.
    """

    path: Path
    config: C.ExperimentConfig
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
        cfg = C.parse(read_text(path / "config.yaml"), path / "config.yaml")
        meta = json.loads(read_text(path / "meta.json"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
        run = RunResult(path, cfg, read_csv(path / "validation.csv"), read_csv(path / "train.csv"), {}, meta)
    except (C.ConfigError, ValueError) as e:
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


def find_run(root: str | Path, cfg: C.ExperimentConfig, dtype: str | None = None) -> RunResult | None:
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


def key_hash(key: dict) -> str:
    """12 hex digits of a JSON-able key (parameters of a computation)."""
    blob = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def machine_record(device="cpu") -> dict:
    """The machine a result was computed on, for the cost table (stored in meta.json)."""
    d = {"device": str(device), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
         "platform": platform.platform(), "torch": torch.__version__}
    if torch.device(device).type == "cuda":
        d["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return d


class MissingResultError(FileNotFoundError):
    """A result that was to be read, not computed, is not stored."""


def result_dir(experiment: str, key: dict, root: str | Path | None = None) -> Path:
    """``<root>/<experiment>/<key-hash>``, where ``load_or_compute`` stores a result."""
    return Path(root if root is not None else paths.results_root()) / experiment / key_hash(key)


def load_or_compute(experiment: str, key: dict, compute: Callable[[], Result], cls: type,
                    root: str | Path | None = None, read_only: bool = False) -> Result:
    """Return the stored result of ``compute`` for ``key``, or compute and store it.

    Stored as ``<root>/<experiment>/<key-hash>/{key.json, result.pt, meta.json}``
    (meta.json: wall time and machine); ``cls`` is the result dataclass (rebuilt from
    its fields).  With ``MPLP_CACHE=off`` nothing is read or written: the result is
    always computed.  With ``read_only`` nothing is computed: a result that is not
    stored is a ``MissingResultError``.
    """
    d = result_dir(experiment, key, root)
    if read_only and not (d / "result.pt").exists():
        raise MissingResultError(
            f"{d} is missing: no stored {experiment!r} result for {json.dumps(key, sort_keys=True, default=str)}; "
            "execute its chapter with this profile (mplp run <chapter> --profile <profile>) to compute it")
    if not read_only and not paths.cache_enabled():
        return compute()
    if (d / "result.pt").exists():
        return _read_result(d, key, cls)
    if d.exists() and any(d.iterdir()):
        raise DamagedResultError(f"{d} holds an unfinished {experiment!r} result (no result.pt); delete the directory "
                                 "to compute it again")
    check_writable(d.parent)
    started = time.perf_counter()
    result = compute()
    write_json(d / "meta.json", {"status": "complete", "wall_time_s": round(time.perf_counter() - started, 3),
                                 "population_size": 1, **machine_record()})
    save_torch(d / "result.pt", {f.name: getattr(result, f.name) for f in dataclasses.fields(result)})
    write_json(d / "key.json", key)
    write_manifest(d, ("result.pt", "key.json", "meta.json"))
    return result


def _read_result(d: Path, key: dict, cls: type):
    """A stored ``load_or_compute`` result, verified: its key.json is the asked key, its files
    match the manifest, its fields are ``cls``'s."""
    kj = d / "key.json"
    try:
        stored = read_json(kj)
    except (FileNotFoundError, DamagedResultError):
        raise DamagedResultError(f"{kj} is missing or unreadable; delete {d} to compute the result again") from None
    if json.loads(json.dumps(key, sort_keys=True, default=str)) != stored:
        raise DamagedResultError(f"{kj} holds another key than the one asked for (a copied or edited result): "
                                 f"stored {json.dumps(stored, sort_keys=True)[:200]}; delete {d}")
    verify_manifest(d, required=("result.pt", "key.json"))
    fields = load_torch(d / "result.pt")
    try:
        return cls(**fields)
    except TypeError as e:
        raise DamagedResultError(f"{d / 'result.pt'} does not hold a {cls.__name__} ({e}); delete {d}") from None


def refuse_links(directory: Path) -> None:
    """A run directory that is (or sits inside a run experiment directory that is) a symbolic
    link is refused: the store writes and deletes only inside itself."""
    d = Path(directory)
    for p in (d, d.parent):
        if p.is_symlink():
            raise StoreError(f"{p} is a symbolic link; the store neither follows nor writes through links: "
                             "replace it with a directory (or pass another --out)")
        if p.exists() and not p.is_dir():
            raise StoreError(f"{p} is a file where the store needs a directory: move it away (or pass another --out)")


def own_files(directory: Path) -> list[Path]:
    """The regular files in a run directory that the store writes (``RUN_FILES``, its
    checkpoint and record, manifest and leftover ``*.tmp``): what ``--restart`` may delete, nothing else."""
    names = {*RUN_FILES, CHECKPOINT, CHECKPOINT_RECORD, MANIFEST}
    return [f for f in Path(directory).iterdir()
            if not f.is_symlink() and f.is_file() and (f.name in names or
                                                        (f.name.endswith(".tmp") and f.name.split(".")[0] in
                                                         {n.split(".")[0] for n in names}))]


def check_writable(directory: Path) -> None:
    """Refuse, before any work, a results root that cannot be written."""
    p = Path(directory)
    while not p.exists() and p != p.parent:
        p = p.parent
    if p.exists() and not p.is_dir():
        raise StoreError(f"{p} is a file, not a results directory: pass another --out")
    if not os.access(p, os.W_OK):
        raise StoreError(f"{p} is not writable: results could not be stored; pass a writable --out "
                         "(or use a read-only Store to only read)")


class RunLock:
    """Exclusive ownership of a run directory by this process (``fcntl.flock`` on ``<dir>/.lock``,
    released on exit or when the process dies); a second owner gets ``RunLockedError`` naming
    the holder's pid."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.fd = None

    def acquire(self) -> "RunLock":
        import fcntl

        check_writable(self.directory)
        refuse_links(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / ".lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            if path.is_symlink():
                raise StoreError(f"{path} is a symbolic link; the store neither follows nor writes through links: "
                                 "remove it") from None
            raise StoreError(f"{path} cannot be opened ({e.strerror}): check the results directory") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLockedError(f"{self.directory} is in use by process {holder} (another mplp train or chapter run); "
                                 "wait for it to finish or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd
        return self

    @staticmethod
    def held_elsewhere(directory: Path) -> bool:
        """Whether another owner holds ``directory``'s lock now (asks without taking it)."""
        import fcntl

        path = Path(directory) / ".lock"
        if not path.is_file() or path.is_symlink():
            return False
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)          # closing drops a lock taken here
        return False

    def release(self) -> None:
        if self.fd is not None:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def committed_root() -> Path:
    """``<repo>/results``: the results committed with the book (whatever ``MPLP_CACHE`` says)."""
    return paths.repo_root() / "results"


@dataclass
class Record:
    """What one stored result cost: outer steps, wall time (shared by ``population_size``
    runs trained together) and machine, from its meta.json (empty when not recorded)."""

    what: str
    path: Path | None
    meta: dict

    @property
    def outer_steps(self) -> int:
        return int(self.meta.get("steps_done", 0))

    @property
    def wall_time_s(self) -> float | None:
        t = self.meta.get("wall_time_s")
        return None if t is None else t / max(1, int(self.meta.get("population_size", 1)))
