"""Files of the store, written atomically and read as data: a stored file is read only if it
is a regular file (not a symbolic link, FIFO or device) of bounded size; tensor files are
unpickled with ``torch.load(weights_only=True)``, so nothing in them can run code; manifests
record each file's size and sha256.  Errors name the file and what to do (``StoreError``)."""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import stat
import tempfile
from pathlib import Path

import numpy as np
import torch


MAX_TEXT_BYTES = 256 * 2**20      # a stored CSV, JSON or YAML file (the longest curves are a few MB)


MAX_TENSOR_BYTES = 64 * 2**30     # a stored tensor file (as large as the largest allowed step, config.MAX_STEP_BYTES)


MANIFEST = "manifest.json"


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
