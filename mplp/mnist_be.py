"""MNIST with and without batch-entropy regularisation (thesis §5.3, Figures 9-11).

The 5 + 5 runs (seeds with the Eq. 8 term off and on) share every shape, so they are
meta-trained as one population; the table, the plateau criterion and the verdicts on
§5.3's claims are computed here from the stored runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import config as C
from . import results as R
from .analysis import InnerComparison, plateau_end
from .claims import Verdict

PLATEAU_DROP = 0.1      # a run has left the plateau once its loss stays below 90 % of its start
NEAR_ZERO = 0.05        # "near zero": the batch-entropy term below 5 % of its first logged value


def run_configs(base: C.ExperimentConfig, n_seeds: int) -> dict[bool, list[C.ExperimentConfig]]:
    """``{batch_entropy: [config of seed 0 .. n_seeds - 1]}`` for the term off and on."""
    if n_seeds < 1:
        raise C.ConfigError(f"n_seeds: must be >= 1 (got {n_seeds})")
    return {be: [base.replace(**{"seed": s, "meta.batch_entropy": be}) for s in range(n_seeds)]
            for be in (False, True)}


def train_runs(base: C.ExperimentConfig, n_seeds: int, store: R.Store | None = None, device="cpu",
               progress: bool = True) -> dict[bool, list[R.RunResult]]:
    """Meta-train (or load) all runs as one population; ``{batch_entropy: [runs]}``."""
    store = store if store is not None else R.Store()
    cfgs = run_configs(base, n_seeds)
    runs = store.train(cfgs[False] + cfgs[True], device=device, progress=progress)
    return {False: runs[:n_seeds], True: runs[n_seeds:]}


def last_hidden_entropy(run: R.RunResult) -> np.ndarray:
    """Batch entropy of the optimizee's last hidden layer at every validation ``(V,)``."""
    cols = sorted(k for k in run.validation if k.startswith("entropy_l"))
    if not cols:
        raise ValueError(f"{run.path}: validation.csv has no entropy columns")
    return run.validation[cols[-1]]


@dataclass
class RunRow:
    """One run of the table: when it left the plateau and where it ended."""

    batch_entropy: bool
    seed: int
    plateau_end: int | None      # first validated step after which the loss stays < 90 % of its start
    final_loss: float
    best_loss: float
    entropy_start: float         # last hidden layer's batch entropy at step 0 and at the end
    entropy_end: float


def run_table(runs: dict[bool, list[R.RunResult]]) -> list[RunRow]:
    rows = []
    for be, rs in runs.items():
        for r in rs:
            v = r.validation
            h = last_hidden_entropy(r)
            rows.append(RunRow(be, r.config.seed, plateau_end(v["step"], v["val_loss"], PLATEAU_DROP),
                               float(v["val_loss"][-1]), float(np.nanmin(v["val_loss"])), float(h[0]), float(h[-1])))
    return rows


def _late(end: int | None) -> float:
    return np.inf if end is None else float(end)


def verdicts(runs: dict[bool, list[R.RunResult]], cmp: InnerComparison) -> list[Verdict]:
    """§5.3's claims tested on the runs (``{batch_entropy: runs}``) and on Figure 11's
    comparison ``cmp`` (learned MPLP vs tuned Adam, ``cmp.T`` the meta-training horizon)."""
    rows = run_table(runs)
    S = int(max(r.validation["step"][-1] for rs in runs.values() for r in rs))
    off = [r for r in rows if not r.batch_entropy]
    on = [r for r in rows if r.batch_entropy]
    out = []
    # 1. without the term: a long and unpredictable plateau
    ends = [_late(r.plateau_end) for r in off]
    never = sum(np.isinf(e) for e in ends)
    long_ = np.median(ends) > 0.1 * S
    finite = [e for e in ends if np.isfinite(e)]
    varied = (0 < never < len(ends)) or (len(finite) >= 2 and max(finite) >= 2 * max(min(finite), 1))
    ev = ", ".join("never" if np.isinf(e) else f"{e:.0f}" for e in ends) + f" (of {S} steps)"
    if never == len(ends):
        holds = "undecided"                      # all still on the plateau: its length is not measured
    else:
        holds = "yes" if long_ and varied else ("partly" if long_ or varied else "no")
    out.append(Verdict("without the term, a long and unpredictable initial plateau", "§5.3, Fig. 9a",
                       "plateau end (loss stays < 90 % of its start) later than 10 % of the run in the median, "
                       "and varying at least 2x between seeds or some seeds never leaving", ev, holds))
    # 2. batch entropy rises when learning starts (runs without the term that left the plateau)
    rises = []
    for r, row in zip(runs[False], off):
        if row.plateau_end is None:
            continue
        steps, h = r.validation["step"], last_hidden_entropy(r)
        before, after = h[steps < row.plateau_end], h[steps >= row.plateau_end]
        if len(before) and len(after):
            rises.append(float(np.nanmean(after) - np.nanmean(before)))
    out.append(Verdict("the last hidden layer's batch entropy rises when learning starts", "§5.3, Fig. 9b",
                       "mean batch entropy after the plateau end > before it, for the runs without the term "
                       "that leave the plateau",
                       (", ".join(f"{d:+.3f}" for d in rises) or "no run left the plateau"),
                       "undecided" if not rises else ("yes" if all(d > 0 for d in rises) else
                                                      ("partly" if any(d > 0 for d in rises) else "no"))))
    # 3. with the term, no plateau
    ends_on = [_late(r.plateau_end) for r in on]
    early = all(e <= 0.1 * S for e in ends_on)
    earlier = np.median(ends_on) < np.median(ends)
    out.append(Verdict("with the term, no plateau", "§5.3, Fig. 10a",
                       "every run with the term leaves the plateau within the first 10 % of the run "
                       "(partly: later, but earlier than without the term in the median)",
                       ", ".join("never" if np.isinf(e) else f"{e:.0f}" for e in ends_on) + f" (of {S} steps)",
                       "yes" if early else ("partly" if earlier else "no")))
    # 4. the batch-entropy loss falls to near zero
    ratios = []
    for r in runs[True]:
        be = r.train["be_term"]
        tail = be[-max(1, len(be) // 10):]
        ratios.append(float(np.mean(tail) / be[0]) if be[0] > 0 else 0.0)
    out.append(Verdict("the batch-entropy loss falls to near zero", "§5.3, Fig. 10b",
                       f"mean term over the last 10 % of logged steps < {NEAR_ZERO:.0%} of its first value, "
                       "in every run with the term",
                       ", ".join(f"{x:.1%}" for x in ratios),
                       "yes" if all(x < NEAR_ZERO for x in ratios) else
                       ("partly" if any(x < NEAR_ZERO for x in ratios) else "no")))
    # 5. the learned MPLP is about as fast as tuned Adam over T steps; 6. past T Adam wins
    T = cmp.T
    w = max(1, T // 10)            # loss "at" a step: mean over the last tenth of T steps before it
    mplp, adam = cmp.loss["mplp"].mean(0), cmp.loss["adam"].mean(0)
    ratio = float(mplp[T - w:T].mean() / adam[T - w:T].mean())
    out.append(Verdict("the learned MPLP trains about as fast as tuned Adam over T steps", "§5.3, Fig. 11",
                       "mean inner loss at step T (last tenth of the T steps) within 25 % of Adam's "
                       "(partly: within 2x)", f"MPLP / Adam = {ratio:.2f}",
                       "yes" if ratio <= 1.25 else ("partly" if ratio <= 2 else "no")))
    if mplp.shape[0] > T:
        late = float(mplp[-w:].mean() / adam[-w:].mean())
        out.append(Verdict("past the horizon T, tuned Adam is better than the learned MPLP", "§5.3, Fig. 11",
                           f"mean inner loss at step {mplp.shape[0]} (last tenth of T steps): Adam < MPLP",
                           f"MPLP / Adam = {late:.2f}", "yes" if late > 1 else "no"))
    return out


def pick_optimizer(runs_with_term: list[R.RunResult]):
    """Figure 11's learned optimizer, by rule: among the runs with the term, the one with
    the lowest validation loss at a stored snapshot, at that snapshot.  Returns
    ``(run, analysis.Checkpoint)``."""
    from .analysis import choose_checkpoint

    if not runs_with_term:
        raise ValueError("no runs with the batch-entropy term to pick an optimizer from")
    picks = [(r, choose_checkpoint(r)) for r in runs_with_term]
    return min(picks, key=lambda rc: rc[1].val_loss)


def base_config(S: int, T: int, validation_every: int, subset: int,
                adam_bias_correction: bool = False) -> C.ExperimentConfig:
    """Table 5's setting (``configs/mnist_table5.yaml``) with chapter 3's profile values."""
    return C.shipped("mnist_table5").replace(**{"meta.S": S, "meta.T": T, "validation.every": validation_every,
                                                "task.subset": subset,
                                                "meta.adam_bias_correction": adam_bias_correction})


@dataclass
class MnistStudy:
    """Chapter 3's data: ``runs`` {batch_entropy: [runs]}, the ``tuned`` baselines, the
    per-run ``rows``, Figure 11's ``picked`` run and ``checkpoint`` and its ``comparison``
    with the tuned baselines on fresh initialisations."""

    base: C.ExperimentConfig
    runs: dict[bool, list[R.RunResult]]
    tuned: dict
    rows: list[RunRow]
    picked: R.RunResult
    checkpoint: object
    comparison: InnerComparison

    def verdicts(self) -> list[Verdict]:
        return verdicts(self.runs, self.comparison)


def study(n_seeds: int, S: int, T: int, validation_every: int, subset: int, n_inits: int, horizon_factor: int,
          adam_bias_correction: bool = False, device: str = "cpu", store: R.Store | None = None) -> MnistStudy:
    """Chapter 3 from its parameters; stored results are read, missing ones computed
    (unless ``store`` is read-only)."""
    from . import baselines
    from .analysis import compare_inner_training

    store = store if store is not None else R.Store()
    base = base_config(S, T, validation_every, subset, adam_bias_correction)
    runs = train_runs(base, n_seeds, store, device=device, progress=False)
    tuned = baselines.tuned(base, store)
    picked, ck = pick_optimizer(runs[True])
    cmp = store.load_or_compute(
        "mnist_fig11", {"config": picked.config.hash(), "step": ck.step, "n_inits": n_inits,
                        "steps": horizon_factor * T},
        lambda: compare_inner_training(picked.config, ck.theta, {k: v.best_lr for k, v in tuned.items()},
                                       n_inits=n_inits, steps=horizon_factor * T),
        InnerComparison)
    return MnistStudy(base, runs, tuned, run_table(runs), picked, ck, cmp)
