"""Positive control: the book's meta-trainer on a problem whose answer is known.

Table 2's functions are held fixed (``learner.kind: sgd``, so MPLP *is* SGD, chapter 0) and only
the inner learning rate is meta-learned (``theta = {log_lr}``), on chapter 1's task family
(``configs/control_lr.yaml``).  The answer is the SGD learning rate tuned on the same
validation runs and metric (a fine grid).  Truncated BPTT with Table 3's short truncations
(K = 10 of T = 200) and PES (Vicol et al. 2021) on the same truncations are compared with it:
the first shows truncation bias on MPLP itself, the second should remove it (chapter 4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mplp.meta import baselines
from mplp.core.config import ExperimentConfig, shipped
from mplp.store import RunResult
from mplp.meta.source import Store
from mplp.claims.verdicts import Verdict

ESTIMATORS = ("tbptt", "pes")
GRID = (41, 1e-3, 1.0)          # the fine lr grid of the known answer: n, low, high (log-spaced)


def control_config(estimator: str, S: int, seed: int) -> ExperimentConfig:
    """``configs/control_lr.yaml`` with the estimator, outer steps and seed."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; expected one of {ESTIMATORS}")
    return shipped("control_lr").replace(**{"meta.estimator": estimator, "meta.S": S, "seed": seed,
                                            "snapshot_every": max(1, S // 30)})


@dataclass
class LrControl:
    """The control's data: per estimator the stored ``runs`` (one per seed) and their learned-lr
    traces ``lr[estimator] (n_seeds, n_snapshots)`` at ``steps (n_snapshots,)``; the tuned SGD
    lr ``tuned_lr`` on the fine grid (``grid``: the baseline's lrs and metrics)."""

    S: int
    seeds: list[int]
    steps: np.ndarray
    lr: dict[str, np.ndarray]
    runs: dict[str, list[RunResult]]
    tuned_lr: float
    grid: baselines.BaselineResult

    def late_lr(self, estimator: str) -> np.ndarray:
        """Per seed, the geometric mean of the learned lr over the last third of outer training
        (as chapter 4's Figure 4 verdicts: the end of a noisy trace is not its level)."""
        tail = self.steps >= (2 / 3) * self.S
        return np.exp(np.log(self.lr[estimator][:, tail]).mean(1))

    def verdicts(self) -> list[Verdict]:
        return verdicts(self)


def study(S: int, n_seeds: int, store: Store | None = None) -> LrControl:
    """Meta-train (or read) the control with each estimator and seeds ``0 .. n_seeds - 1``; the
    tuned SGD lr on the fine grid (stored as a baseline result)."""
    store = store if store is not None else Store()
    runs = {e: [store.train([control_config(e, S, s)])[0] for s in range(n_seeds)] for e in ESTIMATORS}
    steps = None
    lr = {}
    for e, rs in runs.items():
        traces = []
        for r in rs:
            snaps = r.snapshots()
            st = np.array(sorted(snaps))
            if steps is None:
                steps = st
            traces.append([float(snaps[s]["log_lr"].exp()) for s in st])
        lr[e] = np.asarray(traces)
    cfg = control_config("tbptt", S, 0)
    grid = store.load_or_compute("baselines", {"config": cfg.hash(), "optimizer": "sgd", "grid": list(GRID)},
                                 lambda: baselines.tune("sgd", cfg, lrs=baselines.default_grid(*GRID)),
                                 baselines.BaselineResult)
    return LrControl(S, list(range(n_seeds)), steps, lr, runs, float(grid.best_lr), grid)


def verdicts(c: LrControl) -> list[Verdict]:
    """The control passes when PES's learned lr is within 2x of the tuned one for every seed;
    truncation bias on MPLP shows when truncated BPTT's is below half of it for every seed."""
    pes, tb, best = c.late_lr("pes"), c.late_lr("tbptt"), c.tuned_lr
    fmt = lambda xs: ", ".join(f"{x:.3g}" for x in xs)
    found = bool(np.all(np.abs(np.log(pes / best)) <= np.log(2)))
    biased = bool(np.all(tb < best / 2))
    some = bool(np.any(np.abs(np.log(pes / best)) <= np.log(2)))
    return [
        Verdict("the book's meta-trainer finds a known answer: the tuned SGD lr (Table 2's functions fixed)",
                "the book's positive control",
                f"PES on K = 10 truncations: learned lr (geometric mean over the last third of {c.S:,} outer steps) "
                "within 2x of the lr tuned on the same validation runs, for every seed",
                f"PES per seed {fmt(pes)}; tuned SGD lr {best:.3g}", "yes" if found else ("partly" if some else "no"),
                kind="check", partly_rule="within 2x for some seeds"),
        Verdict("short truncations bias the learned lr downwards, on MPLP itself", "Metz et al. §2.4, on MPLP",
                "truncated BPTT (K = 10 of T = 200): learned lr below half the tuned one for every seed",
                f"truncated BPTT per seed {fmt(tb)}; PES {fmt(pes)}; tuned {best:.3g}",
                "yes" if biased else ("partly" if np.any(tb < best / 2) else "no"), kind="metz",
                partly_rule="below half for some seeds"),
    ]
