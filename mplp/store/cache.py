"""The result cache: results other than meta-training runs, stored by their key
(``<root>/<experiment>/<key-hash>/``, verified on every read), and what each result cost."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import torch

from mplp import paths
from mplp.store.files import (DamagedResultError, check_writable, load_torch, read_json, save_torch,
                              verify_manifest, write_json, write_manifest)

Result = TypeVar("Result")


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
            "execute its chapter with this profile (mplp run <chapter> --profile <profile> --in-place) to compute it")
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
