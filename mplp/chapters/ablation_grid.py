"""The §5.2 grid (thesis Table 4): its cells, their configs, and the per-cell summary of stored
runs (plateau exits, final levels, speed, spikes) that chapter 2's verdicts are drawn from."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mplp.store import RunResult
from mplp.claims.analysis import log_mean_loss, plateau_end, plateau_exit, spike_fraction
from mplp.claims.verdicts import final_loss_reached, median_still_falling
from mplp.core.config import ConfigError, ExperimentConfig, shipped
LR_FIXED = 1.0e-3          # the fixed learning rate of cells without a learned lr (Table 3)
LR_LEARNED_INIT = 1.0e-2   # initial value of the learned lr (released code)
THESIS_S = 120_000         # §5.2's outer steps per run
PLATEAU_WINDOW = 0.02      # the plan's plateau exit holds for 2 % of S (book/preregistration.md)


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


def cell_config(base: ExperimentConfig, cell: Cell, seed: int) -> ExperimentConfig:
    """``base`` with the cell's learner choices and ``seed`` (validation runs unchanged)."""
    return base.replace(**{"seed": seed, "learner.message_size": cell.message_size,
                           "learner.batch_norm": cell.batch_norm, "learner.learned_lr": cell.learned_lr,
                           "learner.lr": LR_LEARNED_INIT if cell.learned_lr else LR_FIXED})


def grid_configs(base: ExperimentConfig, n_seeds: int) -> dict[Cell, list[ExperimentConfig]]:
    """The configs of every cell, seeds ``0 .. n_seeds - 1``."""
    if n_seeds < 1:
        raise ConfigError(f"n_seeds: must be >= 1 (got {n_seeds})")
    return {cell: [cell_config(base, cell, s) for s in range(n_seeds)] for cell in GRID}


# §5.2's decisive comparisons at a longer budget: |m| = 8 with and without batch-norm,
# and |m| = 8 against |m| = 1 with batch-norm, all with the learned lr; 3 seeds per cell
DECISIVE_CELLS = (Cell(8, True, True), Cell(8, False, True), Cell(1, True, True))


DECISIVE_SEEDS = 3


def decisive_configs(S: int, validation_every: int = 300,
                     validation_runs: int = 20) -> dict[Cell, list[ExperimentConfig]]:
    """The longer runs of ``DECISIVE_CELLS``, seeds 0-2, with the released code's outer Adam
    (``adam_bias_correction: false``), trained by ``mplp.longruns`` across sessions."""
    base = base_config(S, validation_every, validation_runs, adam_bias_correction=False)
    return {cell: [cell_config(base, cell, s) for s in range(DECISIVE_SEEDS)] for cell in DECISIVE_CELLS}


def base_config(S: int, validation_every: int, validation_runs: int,
                adam_bias_correction: bool = False) -> ExperimentConfig:
    """The grid's shared setting (``configs/ablation.yaml``) with chapter 2's profile values."""
    return shipped("ablation").replace(**{"meta.S": S, "validation.every": validation_every,
                                          "validation.n_runs": validation_runs,
                                          "meta.adam_bias_correction": adam_bias_correction})


def long_config(S: int, validation_every: int, adam_bias_correction: bool = False) -> ExperimentConfig:
    """One longer run of §5.2's best cell (|m| = 8, batch-norm, learned lr initialised at the
    fixed lr 1e-3): ``configs/sinewave_m8_bn.yaml`` with ``S`` outer steps."""
    return shipped("sinewave_m8_bn").replace(**{"meta.S": S, "validation.every": validation_every,
                                                "meta.adam_bias_correction": adam_bias_correction})


def curves(runs: list[RunResult]) -> tuple[np.ndarray, np.ndarray]:
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
    n_stuck: int                 # seeds that have not left the plateau (analysis.plateau_end is None)
    final_log_spread: float      # std over seeds of log(final loss): the instability measure
    skipped: int = 0             # outer updates skipped for a non-finite meta-gradient, all seeds
    falling: bool = False        # the median curve still falls > 5 % over the run's last quarter
    start_median: float = math.nan   # median step-0 validation loss (the untrained optimizer)
    steps: int = 0               # outer steps run
    # per seed: mean log validation loss (analysis.log_mean_loss), instability (spike_fraction) and
    # plateau exit (plateau_exit, the plan's held crossing; None: not left), for the plan's tests
    log_means: tuple = ()
    spikes: tuple = ()
    exits: tuple = ()
    final_seeds: tuple = ()      # per seed final validation loss

    @property
    def left(self) -> bool:
        """A majority of the seeds has left the plateau."""
        return self.n_stuck < self.n_seeds / 2

    @property
    def settled(self) -> bool:
        """Rule 1 of the verdict policy for final-loss claims: left the plateau, and stopped
        falling or reached the thesis' outer steps."""
        return final_loss_reached(self.left, self.falling, self.steps, THESIS_S)


def first_reach(steps: np.ndarray, losses: np.ndarray, level: float) -> float:
    """First step at which ``losses`` is at or below ``level`` (nan if never)."""
    hit = np.nonzero(losses <= level)[0]
    return float(steps[hit[0]]) if len(hit) else math.nan


def summarise(cell: Cell, runs: list[RunResult], level: float) -> CellSummary:
    """The table row of one cell; ``level`` is the fixed loss level of "steps to reach"."""
    steps, L = curves(runs)
    final = L[:, -1]
    reach = np.array([first_reach(steps, l, level) for l in L])
    n_reached = int((~np.isnan(reach)).sum())
    # the median over all seeds, counting "not reached" as infinitely late (nan if that is the median)
    med_reach = float(np.median(np.where(np.isnan(reach), np.inf, reach)))
    stuck = int(sum(plateau_end(steps, l) is None for l in L))
    # a diverged seed is the most unstable outcome: infinite spread
    spread = math.inf if not np.isfinite(final).all() else float(np.std(np.log(final))) if len(final) > 1 else 0.0
    return CellSummary(cell, len(runs), float(np.median(final)), float(final.min()), float(final.max()),
                       float(np.median(np.exp(np.log(L).mean(1)))), med_reach if math.isfinite(med_reach) else math.nan,
                       n_reached, stuck, spread, sum(int(r.meta.get("skipped_outer_updates", 0)) for r in runs),
                       median_still_falling(L), float(np.median(L[:, 0])), int(steps[-1]),
                       tuple(log_mean_loss(l) for l in L), tuple(spike_fraction(l) for l in L),
                       tuple(plateau_exit(steps, l, int(PLATEAU_WINDOW * THESIS_S)) for l in L), tuple(final))


def common_level(runs: dict[Cell, list[RunResult]], fraction: float = 0.5) -> float:
    """The fixed loss level of "steps to reach": ``fraction`` x the median step-0
    validation loss over every run of the grid (the same level for every cell)."""
    return fraction * float(np.median([r.validation["val_loss"][0] for rs in runs.values() for r in rs]))


def summary_table(runs: dict[Cell, list[RunResult]], level: float) -> dict[Cell, CellSummary]:
    """``summarise`` for every cell of the grid, in ``GRID`` order."""
    return {cell: summarise(cell, runs[cell], level) for cell in GRID if cell in runs}
