"""``Store``: where a chapter's results come from.  Results are read from the store, or computed
and stored (meta-training runs by the training loop, other results by ``load_or_compute``);
a read-only store only reads.  It sits above the training loop, which writes run directories."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from mplp import paths
from mplp.core.config import ExperimentConfig
from mplp.meta.loop import train_population
from mplp.store import (MissingResultError, Record, RunResult, committed_root, find_run, load_or_compute,
                        load_run, read_json, result_dir, run_dir)

Result = TypeVar("Result")


@dataclass
class Store:
    """Where a chapter's results come from: ``root`` (None: ``paths.results_root()``);
    with ``read_only`` nothing is computed and a missing result is a ``MissingResultError``.
    ``fallback``: a root only read: a result is looked up in the store's own root, then in the
    fallback, and computed into the own root only when neither has it (an ad-hoc run's store
    reads the committed results: None then means ``results/`` whenever ``$MPLP_RESULTS`` moved
    the root).  A population with members found in the fallback trains only the missing ones.
    ``records`` collects the cost record of every result handed out (the report's cost table).
    """

    root: Path | None = None
    read_only: bool = False
    records: list[Record] = dataclasses.field(default_factory=list)
    fallback: Path | None = None

    def __post_init__(self):
        if self.fallback is None and self.root is None and paths.results_moved():
            self.fallback = committed_root()
        if self.fallback is not None and Path(self.fallback).resolve() == self.base.resolve():
            self.fallback = None

    @property
    def base(self) -> Path:
        return Path(self.root) if self.root is not None else paths.results_root()

    def load_or_compute(self, experiment: str, key: dict, compute: Callable[[], Result], cls: type) -> Result:
        """``load_or_compute`` under this store's root (the fallback's result first, if it
        has one); read-only stores only read."""
        fallback = (self.fallback is not None and not (result_dir(experiment, key, self.root) / "result.pt").exists()
                    and (result_dir(experiment, key, self.fallback) / "result.pt").exists())
        root = self.fallback if fallback else self.root
        result = load_or_compute(experiment, key, compute, cls, root=root, read_only=self.read_only or fallback)
        meta = result_dir(experiment, key, root) / "meta.json"
        self.records.append(Record(experiment, meta.parent, read_json(meta) if meta.exists() else {}))
        return result

    def train(self, cfgs: list[ExperimentConfig], device="cpu", progress: bool = False) -> list[RunResult]:
        """The complete stored runs of ``cfgs``; unless read-only, missing ones are trained
        (one population, resuming checkpoints)."""
        # a computing store without a fallback leaves every lookup to the training loop (it loads complete runs)
        lookup = self.read_only or self.fallback is not None
        found = [self._locate(cfg) if lookup else None for cfg in cfgs]
        missing = [cfg for cfg, r in zip(cfgs, found) if r is None]
        if missing and self.read_only:
            cfg = missing[0]
            raise MissingResultError(
                f"{run_dir(self.base, cfg)}: no complete stored run of {cfg.experiment!r} (seed {cfg.seed}); "
                "execute its chapter with this profile (mplp run <chapter> --profile <profile> --in-place) to train it")
        if missing and len(missing) == len(cfgs):
            runs = train_population(cfgs, out_root=self.root, resume=True, device=device, progress=progress)
        else:
            trained = iter(train_population(missing, out_root=self.root, resume=True, device=device,
                                            progress=progress) if missing else [])
            runs = [r if r is not None else next(trained) for r in found]
        self.records += [Record(r.config.experiment, r.path, r.meta) for r in runs]
        return runs

    def complete_run(self, cfg: ExperimentConfig) -> RunResult | None:
        """The complete stored run of ``cfg`` (own root, then the fallback), or None; nothing is computed."""
        r = self._locate(cfg)
        if r is not None:
            self.records.append(Record(r.config.experiment, r.path, r.meta))
        return r

    def _locate(self, cfg: ExperimentConfig) -> RunResult | None:
        for root in [self.base] + ([self.fallback] if self.fallback is not None else []):
            r = find_run(root, cfg, dtype="float32")     # what the computing store would train
            if r is not None:
                return r
        return None

    def stored_runs(self, cfgs: list[ExperimentConfig], how_to_train: str) -> list[RunResult]:
        """The stored runs of ``cfgs`` as far as they got, finished or still running (the
        multi-session runs of ``mplp.longruns``); nothing is computed, whatever ``read_only``
        says, since these runs take hours.  A missing run is a ``MissingResultError`` that
        names ``how_to_train``."""
        runs = []
        for cfg in cfgs:
            d = run_dir(self.base, cfg)
            if not d.exists() and self.fallback is not None:
                d = run_dir(self.fallback, cfg)
            try:
                runs.append(load_run(d))
            except FileNotFoundError:
                raise MissingResultError(f"{d}: no stored run of {cfg.experiment!r} (seed {cfg.seed}, S = "
                                         f"{cfg.meta.S:,}); it is trained outside the notebook: {how_to_train}") from None
        self.records += [Record(r.config.experiment, r.path, r.meta) for r in runs]
        return runs
