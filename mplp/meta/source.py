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
from mplp.store import (MissingResultError, Record, RunResult, find_run, load_or_compute, load_run,
                        read_json, result_dir, run_dir)

Result = TypeVar("Result")


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
        self.records.append(Record(experiment, meta.parent, read_json(meta) if meta.exists() else {}))
        return result

    def train(self, cfgs: list[ExperimentConfig], device="cpu", progress: bool = False) -> list[RunResult]:
        """The complete stored runs of ``cfgs``; unless read-only, missing ones are trained
        (one population, resuming checkpoints)."""
        if self.read_only:
            runs = []
            for cfg in cfgs:
                r = find_run(self.base, cfg, dtype="float32")     # what the computing store would train
                if r is None:
                    raise MissingResultError(
                        f"{run_dir(self.base, cfg)}: no complete stored run of {cfg.experiment!r} (seed {cfg.seed}); "
                        "execute its chapter with this profile (mplp run <chapter> --profile <profile>) to train it")
                runs.append(r)
        else:
            runs = train_population(cfgs, out_root=self.root, resume=True, device=device, progress=progress)
        self.records += [Record(r.config.experiment, r.path, r.meta) for r in runs]
        return runs

    def stored_runs(self, cfgs: list[ExperimentConfig], how_to_train: str) -> list[RunResult]:
        """The stored runs of ``cfgs`` as far as they got, finished or still running (the
        multi-session runs of ``mplp.longruns``); nothing is computed, whatever ``read_only``
        says, since these runs take hours.  A missing run is a ``MissingResultError`` that
        names ``how_to_train``."""
        runs = []
        for cfg in cfgs:
            d = run_dir(self.base, cfg)
            try:
                runs.append(load_run(d))
            except FileNotFoundError:
                raise MissingResultError(f"{d}: no stored run of {cfg.experiment!r} (seed {cfg.seed}, S = "
                                         f"{cfg.meta.S:,}); it is trained outside the notebook: {how_to_train}") from None
        self.records += [Record(r.config.experiment, r.path, r.meta) for r in runs]
        return runs
