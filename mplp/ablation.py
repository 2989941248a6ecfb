"""The §5.2 ablation grid (thesis Table 4, Figure 8): |m| x batch-norm x learned lr.

Every cell of the 2 x 2 x 2 grid is meta-trained with several seeds as one population
(``trainer.train_population``); all cells share the validation runs of the base config.
The summary and the verdicts on §5.2's claims are computed here from stored runs, so
the book and the claims ledger read the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import config as C
from . import results as R
from .analysis import initial_level
from .claims import Verdict

LR_FIXED = 1.0e-3          # the fixed learning rate of cells without a learned lr (Table 3)
LR_LEARNED_INIT = 1.0e-2   # initial value of the learned lr (released code)
STUCK_DROP = 0.1           # a seed is stuck if its final loss is not below (1 - 0.1) x its initial level


@dataclass(frozen=True)
class Cell:
    """One configuration of the grid."""

    message_size: int
    batch_norm: bool
    learned_lr: bool

    @property
    def label(self) -> str:
        return f"|m|={self.message_size}, BN {'on' if self.batch_norm else 'off'}, " \
               f"lr {'learned' if self.learned_lr else 'fixed'}"


GRID = tuple(Cell(m, bn, lr) for m in (1, 8) for lr in (False, True) for bn in (False, True))


def cell_config(base: C.ExperimentConfig, cell: Cell, seed: int) -> C.ExperimentConfig:
    """``base`` with the cell's learner choices and ``seed`` (validation runs unchanged)."""
    return base.replace(**{"seed": seed, "learner.message_size": cell.message_size,
                           "learner.batch_norm": cell.batch_norm, "learner.learned_lr": cell.learned_lr,
                           "learner.lr": LR_LEARNED_INIT if cell.learned_lr else LR_FIXED})


def grid_configs(base: C.ExperimentConfig, n_seeds: int) -> dict[Cell, list[C.ExperimentConfig]]:
    """The configs of every cell, seeds ``0 .. n_seeds - 1``."""
    if n_seeds < 1:
        raise C.ConfigError(f"n_seeds: must be >= 1 (got {n_seeds})")
    return {cell: [cell_config(base, cell, s) for s in range(n_seeds)] for cell in GRID}


def train_grid(base: C.ExperimentConfig, n_seeds: int, store: R.Store | None = None, device="cpu",
               progress: bool = True) -> dict[Cell, list[R.RunResult]]:
    """Meta-train (or load) every cell of the grid, each cell's seeds as one population."""
    store = store if store is not None else R.Store()
    return {cell: store.train(cfgs, device=device, progress=progress)
            for cell, cfgs in grid_configs(base, n_seeds).items()}


def base_config(S: int, validation_every: int, validation_runs: int,
                adam_bias_correction: bool = False) -> C.ExperimentConfig:
    """The grid's shared setting (``configs/ablation.yaml``) with chapter 2's profile values."""
    return C.shipped("ablation").replace(**{"meta.S": S, "validation.every": validation_every,
                                            "validation.n_runs": validation_runs,
                                            "meta.adam_bias_correction": adam_bias_correction})


@dataclass
class AblationStudy:
    """Chapter 2's data: the stored ``runs`` per cell, the ``tuned`` baselines, the
    common loss ``level`` and the per-cell ``table``."""

    base: C.ExperimentConfig
    runs: dict[Cell, list[R.RunResult]]
    tuned: dict
    level: float
    table: dict[Cell, "CellSummary"]

    def verdicts(self) -> list[Verdict]:
        return verdicts(self.table, self.tuned["sgd"].best_metric, self.tuned["adam"].best_metric)


def study(n_seeds: int, S: int, validation_every: int, validation_runs: int, adam_bias_correction: bool = False,
          device: str = "cpu", store: R.Store | None = None) -> AblationStudy:
    """Chapter 2 from its parameters; stored runs are read, missing ones trained
    (unless ``store`` is read-only)."""
    from . import baselines

    store = store if store is not None else R.Store()
    base = base_config(S, validation_every, validation_runs, adam_bias_correction)
    runs = train_grid(base, n_seeds, store, device=device, progress=False)
    tuned = baselines.tuned(base, store)
    level = common_level(runs)
    return AblationStudy(base, runs, tuned, level, summary_table(runs, level))


def curves(runs: list[R.RunResult]) -> tuple[np.ndarray, np.ndarray]:
    """Validation steps ``(V,)`` and losses ``(n_seeds, V)`` of one cell's runs; a
    diverged validation (nan) counts as an infinite loss."""
    steps = runs[0].validation["step"]
    for r in runs[1:]:
        if not np.array_equal(r.validation["step"], steps):
            raise ValueError(f"{r.path}: validation steps differ from {runs[0].path}")
    L = np.stack([r.validation["val_loss"] for r in runs]).astype(float)
    return steps, np.where(np.isnan(L), np.inf, L)


@dataclass
class CellSummary:
    """One row of the chapter's table (losses are validation outer-losses)."""

    cell: Cell
    n_seeds: int
    final_median: float
    final_min: float
    final_max: float
    auc_median: float            # median over seeds of the geometric-mean validation loss over the run
    steps_to_level: float        # median over seeds of the first step with loss <= level (nan: not reached)
    n_reached: int               # seeds that reached the level
    n_stuck: int                 # seeds whose final loss is not below (1 - STUCK_DROP) x initial level
    final_log_spread: float      # std over seeds of log(final loss): the instability measure
    skipped: int = 0             # outer updates skipped for a non-finite meta-gradient, all seeds


def first_reach(steps: np.ndarray, losses: np.ndarray, level: float) -> float:
    """First step at which ``losses`` is at or below ``level`` (nan if never)."""
    hit = np.nonzero(losses <= level)[0]
    return float(steps[hit[0]]) if len(hit) else math.nan


def summarise(cell: Cell, runs: list[R.RunResult], level: float) -> CellSummary:
    """The table row of one cell; ``level`` is the fixed loss level of "steps to reach"."""
    steps, L = curves(runs)
    final = L[:, -1]
    reach = np.array([first_reach(steps, l, level) for l in L])
    n_reached = int((~np.isnan(reach)).sum())
    # the median over all seeds, counting "not reached" as infinitely late (nan if that is the median)
    med_reach = float(np.median(np.where(np.isnan(reach), np.inf, reach)))
    stuck = int(sum(f >= (1 - STUCK_DROP) * initial_level(l) for f, l in zip(final, L)))
    # a diverged seed is the most unstable outcome: infinite spread
    spread = math.inf if not np.isfinite(final).all() else float(np.std(np.log(final))) if len(final) > 1 else 0.0
    return CellSummary(cell, len(runs), float(np.median(final)), float(final.min()), float(final.max()),
                       float(np.median(np.exp(np.log(L).mean(1)))), med_reach if math.isfinite(med_reach) else math.nan,
                       n_reached, stuck, spread, sum(int(r.meta.get("skipped_outer_updates", 0)) for r in runs))


def common_level(runs: dict[Cell, list[R.RunResult]], fraction: float = 0.5) -> float:
    """The fixed loss level of "steps to reach": ``fraction`` x the median step-0
    validation loss over every run of the grid (the same level for every cell)."""
    return fraction * float(np.median([r.validation["val_loss"][0] for rs in runs.values() for r in rs]))


def summary_table(runs: dict[Cell, list[R.RunResult]], level: float) -> dict[Cell, CellSummary]:
    """``summarise`` for every cell of the grid, in ``GRID`` order."""
    return {cell: summarise(cell, runs[cell], level) for cell in GRID if cell in runs}


def _pairs(rows: dict[Cell, CellSummary], vary: str):
    """Pairs of cells that differ only in ``vary``: (cell with False/1, cell with True/8)."""
    low, high = (1, 8) if vary == "message_size" else (False, True)
    for c in rows:
        if getattr(c, vary) == low:
            yield rows[c], rows[Cell(**{**c.__dict__, vary: high})]


def _majority_stuck(s: CellSummary) -> bool:
    return s.n_stuck > s.n_seeds / 2


def verdicts(rows: dict[Cell, CellSummary], sgd: float, adam: float) -> list[Verdict]:
    """The verdicts on §5.2's claims from the cell summaries and the tuned baselines.

    A comparison whose two cells are both stuck for most seeds is "undecided": the
    budget did not get them out of the initial flat phase."""
    out = []
    # 1. batch-norm converges faster in every configuration (speed: area under the log curve)
    pairs = list(_pairs(rows, "batch_norm"))
    faster = [on.auc_median < off.auc_median for off, on in pairs]
    undecided = [_majority_stuck(off) and _majority_stuck(on) for off, on in pairs]
    ev = "; ".join(f"{on.cell.message_size}/{'learned' if on.cell.learned_lr else 'fixed'}: "
                   f"{off.auc_median:.3g} -> {on.auc_median:.3g}" for off, on in pairs)
    if all(faster):
        holds = "yes"
    elif all(f or u for f, u in zip(faster, undecided)):
        holds = "undecided"
    else:
        holds = "partly" if any(faster) else "no"
    out.append(Verdict("batch-norm converges faster in every configuration", "§5.2",
                       "median geometric-mean validation loss with BN < without, in all 4 (|m|, lr) cells",
                       f"{sum(faster)}/4 ({ev})", holds))
    # 2. |m| = 8 gives a much lower loss than |m| = 1 (much: at least 2x lower median final loss)
    pairs = list(_pairs(rows, "message_size"))
    ratio = [m8.final_median / m1.final_median for m1, m8 in pairs]
    lower, much = sum(r < 1 for r in ratio), sum(r <= 0.5 for r in ratio)
    out.append(Verdict("|m| = 8 gives a much lower loss than |m| = 1", "§5.2",
                       "median final loss with |m| = 8 at most half that with |m| = 1, in all 4 (BN, lr) cells",
                       f"ratios {', '.join(f'{r:.2f}' for r in ratio)}",
                       "yes" if much == 4 else ("partly" if lower >= 3 else "no")))
    # 3. learned lr helps most at |m| = 8 without batch-norm, and makes training less stable
    pairs = {(off.cell.message_size, off.cell.batch_norm): (off, on) for off, on in _pairs(rows, "learned_lr")}
    gain = {k: off.auc_median / on.auc_median for k, (off, on) in pairs.items()}
    best = max(gain, key=gain.get)
    out.append(Verdict("learned lr helps most at |m| = 8 without batch-norm", "§5.2",
                       "speed-up (geometric-mean loss ratio fixed / learned) largest in the |m| = 8, BN off cell",
                       ", ".join(f"|m|={m} BN {'on' if bn else 'off'}: {g:.2f}" for (m, bn), g in gain.items()),
                       "yes" if best == (8, False) and gain[best] > 1 else "no"))
    wider = [on.final_log_spread > off.final_log_spread for off, on in pairs.values()]
    more_stuck = sum(on.n_stuck for _, on in pairs.values()) - sum(off.n_stuck for off, _ in pairs.values())
    skip_on = sum(on.skipped for _, on in pairs.values())
    skip_off = sum(off.skipped for off, _ in pairs.values())
    out.append(Verdict("learned lr makes training less stable", "§5.2",
                       "std over seeds of log final loss larger with learned lr, in at least 3 of 4 cells",
                       f"{sum(wider)}/4 wider; stuck seeds learned - fixed: {more_stuck:+d}; outer updates skipped "
                       f"for a diverged inner problem: {skip_on} learned vs {skip_off} fixed",
                       "yes" if sum(wider) >= 3 else ("partly" if sum(wider) == 2 else "no")))
    # 4. the best configuration beats tuned SGD but not tuned Adam
    top = min(rows.values(), key=lambda s: s.final_median)
    out.append(Verdict("the best configuration beats tuned SGD but not tuned Adam", "§5.2",
                       "median final loss of the best cell: < tuned SGD and > tuned Adam",
                       f"best {top.cell.label}: {top.final_median:.3g}; SGD {sgd:.3g}, Adam {adam:.3g}",
                       "yes" if adam < top.final_median < sgd else
                       ("partly" if top.final_median > adam else "no")))
    return out
