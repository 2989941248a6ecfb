"""Measurements on runs that claims are decided by: the checkpoint rule, plateau exits and
final levels of validation curves, spikes, continuations, and a trained optimizer's inner
training against tuned SGD and Adam (thesis Fig. 11)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mplp.core.config import ExperimentConfig
from mplp.core.fast import fast_backward
from mplp.core.learners import NeuralLearners, learner_spec
from mplp.core.optimizee import accuracy, init_params
from mplp.core.unroll import inner_step
from mplp.meta.baselines import inner_train
from mplp.store import RunResult
from mplp.tasks.families import make_family

# The pre-registered plateau rule: a run has left its plateau once its loss is this fraction below its initial level.
PLATEAU_DROP = 0.1


@dataclass
class Checkpoint:
    """The meta-parameters chosen for analysis and why: the stored snapshot with the
    lowest validation outer-loss (``rule`` says so in words)."""

    step: int
    val_loss: float
    theta: dict[str, torch.Tensor]
    rule: str


def choose_checkpoint(run: RunResult, window: tuple[int, int] | None = None) -> Checkpoint:
    """Among the outer steps with a stored snapshot (within ``window`` = [lo, hi] when given:
    the thesis' §5.1 picks a state between 100,000 and 130,000 steps), the one with the
    lowest validation loss."""
    snaps = run.snapshots()
    v = run.validation
    loss_at = {int(s): float(l) for s, l in zip(v["step"], v["val_loss"]) if np.isfinite(l)}
    candidates = [s for s in snaps if s in loss_at and (window is None or window[0] <= s <= window[1])]
    if not candidates:
        where = "" if window is None else f" in steps {window[0]:,}-{window[1]:,}"
        raise ValueError(f"{run.path}: no snapshot{where} has a finite validation loss")
    best = min(candidates, key=lambda s: loss_at[s])
    within = "" if window is None else f" between steps {window[0]:,} and {window[1]:,}"
    return Checkpoint(best, loss_at[best], snaps[best],
                      f"the stored snapshot (every snapshot_every outer steps){within} with the lowest validation outer-loss")


def initial_level(losses: np.ndarray, n: int = 3, outlier: float = 2.0) -> float:
    """The loss a run starts its flat phase at: the step-0 validation, unless it is more
    than ``outlier`` times the median of the next ``n`` validations (the untrained
    optimizer diverged there: a start far above the plateau), in which case that median."""
    if len(losses) < 1 + n:
        return float(losses[0])
    after = float(np.median(losses[1:1 + n]))
    return float(losses[0]) if losses[0] <= outlier * after else after


def plateau_level(losses: np.ndarray, n: int = 3) -> float:
    """The level of the flat phase itself: the median of the ``n`` validations after step 0
    (unlike ``initial_level``, never the step-0 validation)."""
    return float(np.median(nan_as_worst(losses)[1:1 + n]))


def last_hidden_entropy(run) -> np.ndarray:
    """Batch entropy of the optimizee's last hidden layer at every validation ``(V,)`` of a
    stored run (``store.RunResult``; the validation's ``entropy_l<i>`` columns, thesis Fig. 9b)."""
    cols = sorted(k for k in run.validation if k.startswith("entropy_l"))
    if not cols:
        raise ValueError(f"{run.path}: validation.csv has no entropy columns")
    return run.validation[cols[-1]]


def plateau_end(steps: np.ndarray, losses: np.ndarray, drop: float = PLATEAU_DROP) -> int | None:
    """First validation step from which the loss stays below ``(1 - drop)`` times its
    initial level (``initial_level``) for all later validations (the end of the initial
    flat phase), or None."""
    below = losses < (1 - drop) * initial_level(losses)
    for i in range(len(steps)):
        if below[i:].all():
            return int(steps[i])
    return None


def plateau_exit(steps: np.ndarray, losses: np.ndarray, window: int, drop: float = PLATEAU_DROP,
                 level: float | None = None) -> int | None:
    """The pre-registered end of the flat phase: the first validation step ``s`` whose loss is
    below ``(1 - drop)`` times the run's ``initial_level`` (or ``level``, given) and where the
    median of the validations in [s, s + window] is below that line too (a crossing that holds;
    a later divergence spike does not move it, a lone dip on the plateau does not make it).
    Steps closer than ``window`` to the run's last validation are not judged (None: no exit
    yet).  A NaN validation counts as +inf (the plan's worst value)."""
    steps, losses = np.asarray(steps), nan_as_worst(losses)
    line = (1 - drop) * (initial_level(losses) if level is None else level)
    for i in np.flatnonzero(losses < line):
        s = steps[i]
        if s + window > steps[-1]:
            return None
        held = losses[(steps >= s) & (steps <= s + window)]
        if np.median(held) < line:
            return int(s)
    return None


def nan_as_worst(losses) -> np.ndarray:
    """Validation losses with NaN (a diverged validation) as +inf: the worst value, ranked last."""
    a = np.asarray(losses, dtype=float)
    return np.where(np.isnan(a), np.inf, a)


def final_level(steps: np.ndarray, losses: np.ndarray, S: int, tail: float = 0.1) -> float:
    """The pre-registered final loss of a run of ``S`` outer steps: the median of its
    validation losses after step ``(1 - tail) S`` (robust to a spike, no checkpoint chosen)."""
    steps, losses = np.asarray(steps), nan_as_worst(losses)
    late = losses[steps > (1 - tail) * S]
    if not len(late):
        raise ValueError(f"no validation after step {(1 - tail) * S:,.0f}: the run has not reached the "
                         f"last {tail:.0%} of its {S:,} steps")
    return float(np.median(late))


def log_mean_loss(losses: np.ndarray) -> float:
    """How fast meta-training brings the loss down: the mean log validation loss over the run
    (the log of the curve's geometric mean; lower is faster; a non-finite loss makes it inf)."""
    return float(np.mean(np.log(nan_as_worst(losses))))


def spike_fraction(losses: np.ndarray, factor: float = 2.0) -> float:
    """Meta-training instability: the fraction of validations (after the first) whose loss is
    more than ``factor`` times the lowest loss of the validations before it (NaN counts as a spike)."""
    losses = nan_as_worst(losses)
    if len(losses) < 2:
        return 0.0
    best = np.minimum.accumulate(losses)[:-1]
    return float(np.mean(losses[1:] > factor * best))


def rises_at(steps: np.ndarray, values: np.ndarray, at: int | None, window: int) -> bool | None:
    """Whether ``values`` (e.g. the last hidden layer's batch entropy per validation) are higher
    on average in the ``window`` outer steps after step ``at`` than in the ``window`` before it
    (None: no ``at``, or either side without a value)."""
    if at is None:
        return None
    steps, values = np.asarray(steps), np.asarray(values, dtype=float)
    before = values[(steps >= at - window) & (steps < at)]
    after = values[(steps > at) & (steps <= at + window)]
    if not len(before) or not len(after):
        return None
    return bool(after.mean() > before.mean())


def tail_fraction(values: np.ndarray, tail: float = 0.1) -> float:
    """The mean of the last ``tail`` of a logged series relative to its first value (Fig. 10b:
    how far the batch-entropy term fell)."""
    v = np.asarray(values, dtype=float)
    n = max(1, int(round(tail * len(v))))
    return float(v[-n:].mean() / v[0])


@dataclass
class Crossings:
    """Where a run first went below its plateau line (90 % of ``initial_level``; None: never)
    and the validations after that back above it: how many, and the highest (evidence beside
    ``plateau_end``, which moves with each return)."""

    first_below: int | None
    n_back: int
    max_back: float | None


def crossings(steps: np.ndarray, losses: np.ndarray, drop: float = PLATEAU_DROP) -> Crossings:
    line = (1 - drop) * initial_level(losses)
    below = np.flatnonzero(losses < line)
    if not len(below):
        return Crossings(None, 0, None)
    back = losses[(steps > steps[below[0]]) & (losses >= line)]
    return Crossings(int(steps[below[0]]), len(back), float(back.max()) if len(back) else None)


@dataclass
class Continuation:
    """How longer runs got their length: continued at outer step ``step`` from finished
    shorter runs, when ``n_left`` of the ``n`` runs counted had left the plateau (what was
    known when the choice to continue them was made)."""

    step: int
    n_left: int
    n: int

    def note(self, what: str = "") -> str:
        """The post-hoc note of a verdict judged on the continued runs."""
        return (f"the runs continued past {self.step:,} steps after they were seen there ({self.n_left} of {self.n}"
                f"{' ' + what if what else ''} off the plateau)")


def continuation(runs: list[RunResult], counted: list[RunResult] | None = None,
                 drop: float = PLATEAU_DROP) -> Continuation | None:
    """``Continuation`` of ``runs`` (None unless every one continued a shorter run; the last
    continuation counts), with the plateau exits by then among ``counted`` (default: ``runs``)."""
    ext = [r.extended_at for r in runs]
    if not ext or not all(ext):
        return None
    step = max(e[-1][0] for e in ext)
    counted = runs if counted is None else counted
    left = sum(plateau_end(v["step"][v["step"] <= step], v["val_loss"][v["step"] <= step], drop) is not None
               for v in (r.validation for r in counted))
    return Continuation(step, left, len(counted))


@dataclass
class InnerComparison:
    """Fig. 11: R inner problems trained by the learned optimizer and by tuned baselines.

    loss / accuracy: ``{optimizer: (R, steps)}`` inner loss and batch accuracy before
    each update (accuracy empty for regression); lrs: the baselines' learning rates;
    T: the horizon the learned optimizer was meta-trained for.
    """

    loss: dict[str, np.ndarray]
    accuracy: dict[str, np.ndarray]
    lrs: dict[str, float]
    T: int


@torch.no_grad()
def fresh_problems(cfg: ExperimentConfig, n_inits: int, steps: int | None = None, seed: int = 99):
    """Fig. 11's problems: the first ``steps`` (default 3T) batches ``(steps, B, ...)`` of one
    validation task, and ``n_inits`` fresh initialisations stacked ``(R, n_in + 1, n_out)``."""
    steps = 3 * cfg.meta.T if steps is None else steps
    if steps < 1 or n_inits < 1:
        raise ValueError(f"steps and n_inits must be >= 1 (got steps={steps}, n_inits={n_inits})")
    gen = torch.Generator().manual_seed(seed)
    task = make_family(cfg.task).validation_tasks(1, gen, steps)[0]      # raises if the split is too short
    xs, ys = task.batches(0, steps)
    inits = [init_params(cfg.optimizee.sizes, gen) for _ in range(n_inits)]
    return xs, ys, [torch.stack(ps) for ps in zip(*inits)]


def compare_inner_training(cfg: ExperimentConfig, theta: dict[str, torch.Tensor], lrs: dict[str, float],
                           n_inits: int = 20, steps: int | None = None, seed: int = 99) -> InnerComparison:
    """Train ``n_inits`` fresh inits on the first ``steps`` (default 3T) batches of the
    validation split with the learned MPLP (``theta``) and with each baseline at its lr
    (``{"adam": lr, ...}``); every optimizer sees the same inits and batches."""

    xs, ys, stacked = fresh_problems(cfg, n_inits, steps, seed)
    rep = lambda t: t.unsqueeze(0).expand(n_inits, *t.shape)
    learners = NeuralLearners(theta, learner_spec(cfg))
    params, loss, acc = stacked, [], []
    for x, y in zip(xs, ys):
        st = inner_step(learners, params, rep(x), rep(y), cfg.optimizee, cfg.learner.loss_inputs, fast_backward)
        loss.append(st.loss)
        if cfg.optimizee.loss == "xent":
            acc.append(accuracy(st.output, rep(y)))
        params = st.params
    out_loss = {"mplp": torch.stack(loss, 1).double().numpy()}
    out_acc = {"mplp": torch.stack(acc, 1).double().numpy()} if acc else {}
    bx = xs.unsqueeze(0).expand(n_inits, *xs.shape)
    by = ys.unsqueeze(0).expand(n_inits, *ys.shape)
    for name, lr in lrs.items():
        run = inner_train(name, lr, stacked, bx, by, cfg.optimizee)
        out_loss[name] = run.curves.double().numpy()
        if run.accuracy is not None:
            out_acc[name] = run.accuracy.double().numpy()
    return InnerComparison(out_loss, out_acc, dict(lrs), cfg.meta.T)


