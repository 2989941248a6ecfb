"""Result storage: one directory per run, ``<root>/<experiment>/<config-hash>/``.

Files: ``config.yaml``; ``validation.csv`` (outer step, validation outer-loss, ...);
``train.csv`` (windowed training losses); ``theta.pt`` (final meta-parameters);
``snapshots.pt`` (theta at validation steps); ``meta.json`` (status, timings,
machine); ``checkpoint.pt`` (resume state, not committed).  Every write is atomic
(temporary file + rename), so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import tempfile
import time
import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import torch

from . import config as C
from . import paths

Result = TypeVar("Result")


def run_dir(root: str | Path, cfg: C.ExperimentConfig) -> Path:
    return Path(root) / cfg.experiment / cfg.hash()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
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


def load_torch(path: Path):
    return torch.load(path, map_location="cpu", weights_only=False)


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
    with open(path) as f:
        rows = list(csv.DictReader(f))
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

    def snapshots(self) -> dict[int, dict[str, torch.Tensor]]:
        """theta at the kept outer steps, ``{step: theta}``."""
        p = self.path / "snapshots.pt"
        return load_torch(p) if p.exists() else {}


def load_run(path: str | Path) -> RunResult:
    """Load a stored run; raises ``FileNotFoundError`` naming what is missing."""
    path = Path(path)
    for name in ("config.yaml", "meta.json", "validation.csv", "train.csv", "theta.pt"):
        if not (path / name).exists():
            raise FileNotFoundError(f"{path}: not a stored run ({name} is missing)")
    return RunResult(path, C.load(path / "config.yaml"), read_csv(path / "validation.csv"),
                     read_csv(path / "train.csv"), load_torch(path / "theta.pt"),
                     json.loads((path / "meta.json").read_text()))


def find_run(root: str | Path, cfg: C.ExperimentConfig) -> RunResult | None:
    """The complete stored run of ``cfg`` under ``root``, or None."""
    d = run_dir(root, cfg)
    try:
        r = load_run(d)
    except FileNotFoundError:
        return None
    return r if r.complete else None


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
        return cls(**load_torch(d / "result.pt"))
    started = time.perf_counter()
    result = compute()
    write_json(d / "meta.json", {"status": "complete", "wall_time_s": round(time.perf_counter() - started, 3),
                                 "population_size": 1, **machine_record()})
    save_torch(d / "result.pt", {f.name: getattr(result, f.name) for f in dataclasses.fields(result)})
    write_json(d / "key.json", key)
    return result


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


@dataclass
class Store:
    """Where a chapter's results come from: ``root`` (None: ``paths.results_root()``);
    with ``read_only`` nothing is computed and a missing result is a ``MissingResultError``.
    ``records`` collects the cost record of every result handed out (the report's cost table).
    """

    root: Path | None = None
    read_only: bool = False
    records: list[Record] = dataclasses.field(default_factory=list)

    @property
    def base(self) -> Path:
        return Path(self.root) if self.root is not None else paths.results_root()

    def load_or_compute(self, experiment: str, key: dict, compute: Callable[[], Result], cls: type) -> Result:
        """``load_or_compute`` under this store's root; read-only stores only read."""
        result = load_or_compute(experiment, key, compute, cls, root=self.root, read_only=self.read_only)
        meta = result_dir(experiment, key, self.root) / "meta.json"
        self.records.append(Record(experiment, meta.parent, json.loads(meta.read_text()) if meta.exists() else {}))
        return result

    def train(self, cfgs: list[C.ExperimentConfig], device="cpu", progress: bool = False) -> list[RunResult]:
        """The complete stored runs of ``cfgs``; unless read-only, missing ones are trained
        (one population, resuming checkpoints)."""
        if self.read_only:
            runs = []
            for cfg in cfgs:
                r = find_run(self.base, cfg)
                if r is None:
                    raise MissingResultError(
                        f"{run_dir(self.base, cfg)}: no complete stored run of {cfg.experiment!r} (seed {cfg.seed}); "
                        "execute its chapter with this profile (mplp run <chapter> --profile <profile>) to train it")
                runs.append(r)
        else:
            from .trainer import train_population
            runs = train_population(cfgs, out_root=self.root, resume=True, device=device, progress=progress)
        self.records += [Record(r.config.experiment, r.path, r.meta) for r in runs]
        return runs
