"""MNIST with and without batch-entropy regularisation (thesis §5.3, Figures 9-11).

The 5 + 5 runs (seeds with the Eq. 8 term off and on) share every shape, so they are
meta-trained as one population; the table, the plateau criterion and the verdicts on
§5.3's claims are computed here from the stored runs.
"""

from __future__ import annotations

import dataclasses
import math

from dataclasses import dataclass

import numpy as np

from mplp.core.config import ConfigError, ExperimentConfig, shipped
from mplp.chapters.registry import PREREG_SEEDS, Chapter, Group, how_to_train, register
from mplp.store import RunResult
from mplp.meta.source import Store
from mplp.claims import prereg, stats
from mplp.chapters import confirm
from mplp.claims.analysis import (Continuation, InnerComparison, choose_checkpoint, compare_inner_training,
                                  last_hidden_entropy, plateau_end, plateau_exit)
from mplp.claims.analysis import continuation as _continuation
from mplp.claims.verdicts import (MEND_COMMIT, PLATEAU_RULE_COMMIT, POLICY_COMMIT, Verdict, decide,
                                  final_loss_reached, median_still_falling)
from mplp.meta import baselines

THESIS_S = 150_000      # Table 5's outer steps per run
PLATEAU_DROP = 0.1      # a run has left the plateau once its loss stays below 90 % of its start
NEAR_ZERO = 0.05        # "near zero": the batch-entropy term below 5 % of its first logged value
PLATEAU_WINDOW = 0.02   # the plan's plateau exit holds for 2 % of S (book/preregistration.md)


def run_configs(base: ExperimentConfig, n_seeds: int) -> dict[bool, list[ExperimentConfig]]:
    """``{batch_entropy: [config of seed 0 .. n_seeds - 1]}`` for the term off and on."""
    if n_seeds < 1:
        raise ConfigError(f"n_seeds: must be >= 1 (got {n_seeds})")
    return {be: [base.replace(**{"seed": s, "meta.batch_entropy": be}) for s in range(n_seeds)]
            for be in (False, True)}


# §5.3's decisive comparison run longer: the term off and on, seeds 0-1, the
# released code's outer Adam, trained across sessions by ``mplp.longruns``
LONG_SEEDS = 2
LONG_RULE_COMMIT = "83a3a69"   # claims judged on the longer runs (written after their partial curves were seen)


def long_configs(S: int, T: int = 100, validation_every: int = 150) -> dict[bool, list[ExperimentConfig]]:
    """The longer runs: ``{batch_entropy: [seed 0, seed 1]}`` to ``S`` outer steps."""
    return run_configs(base_config(S, T, validation_every, 0, adam_bias_correction=False), LONG_SEEDS)


def train_runs(base: ExperimentConfig, n_seeds: int, store: Store | None = None, device="cpu",
               progress: bool = True) -> dict[bool, list[RunResult]]:
    """Meta-train (or load) all runs as one population; ``{batch_entropy: [runs]}``."""
    store = store if store is not None else Store()
    cfgs = run_configs(base, n_seeds)
    runs = store.train(cfgs[False] + cfgs[True], device=device, progress=progress)
    return {False: runs[:n_seeds], True: runs[n_seeds:]}


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


def run_table(runs: dict[bool, list[RunResult]]) -> list[RunRow]:
    rows = []
    for be, rs in runs.items():
        for r in rs:
            v = r.validation
            h = last_hidden_entropy(r)
            rows.append(RunRow(be, r.config.seed, plateau_end(v["step"], v["val_loss"], PLATEAU_DROP),
                               float(v["val_loss"][-1]), float(np.nanmin(v["val_loss"])), float(h[0]), float(h[-1])))
    return rows


def continuation(runs: dict[bool, list[RunResult]]) -> Continuation | None:
    """``analysis.continuation`` of all ``runs`` (``{batch_entropy: runs}``), counting the
    plateau exits of the runs without the term (what the choice to continue them rested on)."""
    return _continuation([r for rs in runs.values() for r in rs], runs[False], PLATEAU_DROP)


def _late(end: int | None) -> float:
    return np.inf if end is None else float(end)


def verdicts(runs: dict[bool, list[RunResult]], cmp: InnerComparison, adam_metric: float = float("nan"),
             picked: RunResult | None = None, thesis_S: int = THESIS_S) -> list[Verdict]:
    """§5.3's claims tested on the runs (``{batch_entropy: runs}``) and on Figure 11's
    comparison ``cmp`` (learned MPLP vs tuned Adam, ``cmp.T`` the meta-training horizon),
    through the written policy (``claims.verdicts``); ``adam_metric``: tuned Adam's validation
    outer-loss, for the trivially-true rule (the step-0 optimizer already worse); ``picked``:
    Figure 11's run (default: any run with the term), whose plateau exit decides claims 5-6;
    ``thesis_S``: the thesis' outer steps, which set the plateau windows (10 %)."""
    c = _context(runs, thesis_S)
    out = [_long_plateau(c), _entropy_rises(runs, c), _no_plateau_with_term(runs, c), _term_near_zero(runs, c),
           *_against_adam(runs, cmp, adam_metric, picked, c)]
    return [dataclasses.replace(v, steps=c.S) for v in out]


@dataclass(frozen=True)
class _Context:
    """What every §5.3 verdict reads: the per-run table split by the term (``off``, ``on``), the
    steps run ``S``, the thesis' ``thesis_S`` and its 10 % ``window``, and shared wording."""

    off: list
    on: list
    S: int
    thesis_S: int
    window: int
    n_left_off: int
    n_left_on: int
    budget: str
    ph: str
    seeds: str


def _context(runs: dict[bool, list[RunResult]], thesis_S: int) -> _Context:
    rows = run_table(runs)
    S = int(max(r.validation["step"][-1] for rs in runs.values() for r in rs))
    off = [r for r in rows if not r.batch_entropy]
    on = [r for r in rows if r.batch_entropy]
    ph = f"{PLATEAU_RULE_COMMIT}: plateau start rule; {POLICY_COMMIT}: the window is 10 % of the thesis' S, " \
         "not of the run"
    return _Context(off, on, S, thesis_S, thesis_S // 10, sum(r.plateau_end is not None for r in off),
                    sum(r.plateau_end is not None for r in on),
                    f" (of {S:,} steps run, {S / thesis_S:.1%} of Table 5's S)", ph,
                    f"{len(off)} + {len(on)} seeds (term off + on, {S:,} of {thesis_S:,} steps)")


def _long_plateau(c: _Context) -> Verdict:
    """§5.3: without the term: a long and unpredictable plateau."""
    off, S, window, n_left_off, budget, ph, seeds = c.off, c.S, c.window, c.n_left_off, c.budget, c.ph, c.seeds
    fmt = lambda rs: ", ".join("never" if r.plateau_end is None else f"{r.plateau_end:,}" for r in rs)
    ends = [_late(r.plateau_end) for r in off]
    never = sum(np.isinf(e) for e in ends)
    long_ = np.median(ends) > window
    finite = [e for e in ends if np.isfinite(e)]
    varied = (0 < never < len(ends)) or (len(finite) >= 2 and max(finite) >= 2 * max(min(finite), 1))
    test = ("yes" if long_ and varied else ("partly" if long_ or varied else "no")) if n_left_off or S > window \
        else "undecided"
    return Verdict("without the term, a long and unpredictable initial plateau", "§5.3, Fig. 9a",
                   f"plateau end (loss stays < 90 % of its start) later than {window:,} steps (10 % of the "
                   "thesis' S) in the median, and varying at least 2x between seeds or some seeds never leaving; "
                   "a claim about the plateau's end: reached when a majority of the runs without the term left it "
                   "(policy rule 1)",
                   f"plateau ends {fmt(off)}{budget}"
                   + (f"; long so far (no exit by {S:,} > {window:,}), unpredictability not judged without exits"
                      if not n_left_off and S > window else ""),
                   decide(test, about_trained=True, reached=n_left_off > len(off) / 2), test_outcome=test,
                   partly_rule="long or unpredictable, not both", seeds=seeds,
                   post_hoc=f"{ph}; {MEND_COMMIT}: rule 1 (a plateau-end claim needs runs that left it) applied, "
                            "as in chapters 1 and 2 (after the data was seen)")


def _entropy_rises(runs: dict[bool, list[RunResult]], c: _Context) -> Verdict:
    """§5.3: batch entropy rises when learning starts (runs without the term that left the plateau)."""
    off, n_left_off, budget, seeds = c.off, c.n_left_off, c.budget, c.seeds
    rises = []
    for r, row in zip(runs[False], off):
        if row.plateau_end is None:
            continue
        steps, h = r.validation["step"], last_hidden_entropy(r)
        before, after = h[steps < row.plateau_end], h[steps >= row.plateau_end]
        if len(before) and len(after):
            rises.append(float(np.nanmean(after) - np.nanmean(before)))
    test = "undecided" if not rises else ("yes" if all(d > 0 for d in rises) else
                                          ("partly" if any(d > 0 for d in rises) else "no"))
    return Verdict("the last hidden layer's batch entropy rises when learning starts", "§5.3, Fig. 9b",
                   "mean batch entropy after the plateau end > before it, for the runs without the term "
                   "that leave the plateau",
                   (", ".join(f"{d:+.3f}" for d in rises) or f"no run left the plateau ({n_left_off}/{len(off)})")
                   + budget,
                   decide(test, about_trained=True, reached=bool(rises)), test_outcome=test,
                   partly_rule=f"rises in some of the {len(rises)} runs that left", seeds=seeds)


def _no_plateau_with_term(runs: dict[bool, list[RunResult]], c: _Context) -> Verdict:
    """§5.3: with the term, no plateau: "allows for immediate training" (the plan's test, P3.4)."""
    off, on, S, thesis_S, n_left_on = c.off, c.on, c.S, c.thesis_S, c.n_left_on
    budget, ph, seeds = c.budget, c.ph, c.seeds
    held = int(PLATEAU_WINDOW * thesis_S)
    exit_of = {id(r): plateau_exit(r.validation["step"], r.validation["val_loss"], held) for rs in runs.values()
               for r in rs}
    exits_on, exits_off = [exit_of[id(r)] for r in runs[True]], [exit_of[id(r)] for r in runs[False]]
    limit = thesis_S // 100
    d = prereg.exit_within(exits_on, S, limit, compare=exits_off)
    decided = n_left_on == len(on) or S > limit
    smallest_p = 1 / math.comb(len(on) + len(off), len(on))
    return Verdict("with the term, no plateau", "§5.3, Fig. 10a",
                   f"the plan's test (prereg.exit_within): every run with the term leaves the plateau within "
                   f"{limit:,} steps (1 % of the thesis' S: 'allows for immediate training'); partly: not all, but "
                   "earlier than without the term (one-sided Mann-Whitney at 0.05); the exit holds for "
                   f"{held:,} steps (analysis.plateau_exit)",
                   f"{d.evidence}{budget}; with {len(on)} + {len(off)} seeds the smallest p a rank test can give "
                   f"is {smallest_p:.3g}",
                   decide(d.outcome, about_trained=True, reached=decided), test_outcome=d.outcome,
                   partly_rule=d.rule, seeds=seeds,
                   interval=f"median exit with the term {d.interval} (95 % bootstrap)",
                   post_hoc=f"{ph}; {MEND_COMMIT}: the plan's limit (1 % of S, for 'immediate') and held exit "
                            "replace 10 % of S and 'stays below for good' (after the data was seen)")


def _term_near_zero(runs: dict[bool, list[RunResult]], c: _Context) -> Verdict:
    """§5.3: the batch-entropy loss falls to near zero."""
    budget, seeds = c.budget, c.seeds
    ratios = []
    for r in runs[True]:
        be = r.train["be_term"]
        tail = be[-max(1, len(be) // 10):]
        ratios.append(float(np.mean(tail) / be[0]) if be[0] > 0 else 0.0)
    near = sum(x < NEAR_ZERO for x in ratios)
    return Verdict("the batch-entropy loss falls to near zero", "§5.3, Fig. 10b",
                   f"mean term over the last 10 % of logged steps < {NEAR_ZERO:.0%} of its first value, "
                   "in every run with the term (the regulariser is meta-trained on the plateau too)",
                   "per seed " + ", ".join(f"{x:.1%}" for x in ratios) + budget,
                   "yes" if near == len(ratios) else ("partly" if near else "no"),
                   partly_rule=f"below {NEAR_ZERO:.0%} in {near} of {len(ratios)} runs", seeds=seeds)


def _against_adam(runs: dict[bool, list[RunResult]], cmp: InnerComparison, adam_metric: float,
                  picked: RunResult | None, c: _Context) -> list[Verdict]:
    """§5.3: the learned MPLP is about as fast as tuned Adam over T steps; past T, Adam wins."""
    on, S, thesis_S, n_left_on = c.on, c.S, c.thesis_S, c.n_left_on
    out = []
    if picked is not None:
        v = picked.validation
        picked_left = plateau_end(v["step"], v["val_loss"], PLATEAU_DROP) is not None
    else:
        picked_left = any(r.plateau_end is not None for r in on)
    start = float(np.median([r.validation["val_loss"][0] for rs in runs.values() for r in rs]))
    T = cmp.T
    w = max(1, T // 10)            # loss "at" a step: mean over the last tenth of T steps before it
    mplp, adam = cmp.loss["mplp"].mean(0), cmp.loss["adam"].mean(0)
    ratio = float(mplp[T - w:T].mean() / adam[T - w:T].mean())
    per_init = cmp.loss["mplp"][:, T - w:T].mean(1), cmp.loss["adam"][:, T - w:T].mean(1)
    iv = stats.bootstrap_ratio(*per_init, statistic=np.mean)
    test = "yes" if ratio <= 1.25 else ("partly" if ratio <= 2 else "no")
    left_txt = f"runs with the term off the plateau: {n_left_on}/{len(on)}"
    curves_on = [r.validation["val_loss"] for r in runs[True]]
    falling = median_still_falling(curves_on)
    one = f"1 optimizer (Figure 11's pick), {cmp.loss['mplp'].shape[0]} inner initialisations"
    out.append(Verdict("the learned MPLP trains about as fast as tuned Adam over T steps", "§5.3, Fig. 11",
                       "mean inner loss at step T (last tenth of the T steps) within 25 % of Adam's; a claim about "
                       "a trained MPLP's final performance: reached when its run left the plateau and the runs with "
                       "the term stopped falling or got the thesis' steps (policy rule 1)",
                       f"MPLP / Adam = {ratio:.2f}; {left_txt}; the median curve of the runs with the term "
                       f"{'still falls' if falling else 'has settled'} at {S:,} of {thesis_S:,} steps",
                       decide(test, about_trained=True, reached=final_loss_reached(picked_left, falling, S, thesis_S)),
                       test_outcome=test, partly_rule="within 2x", seeds=one,
                       interval=f"MPLP / Adam over the initialisations {iv} (95 % bootstrap)",
                       post_hoc=f"{MEND_COMMIT}: rule 1's 'still falling' clause applied, as in chapters 1 and 2 "
                                "(after the data was seen)"))
    if mplp.shape[0] > T:
        late = float(mplp[-w:].mean() / adam[-w:].mean())
        test = "yes" if late > 1 else "no"
        out.append(Verdict("past the horizon T, tuned Adam is better than the learned MPLP", "§5.3, Fig. 11",
                           f"mean inner loss at step {mplp.shape[0]} (last tenth of T steps): Adam < MPLP; trivially "
                           "true only when the trained MPLP is already clearly worse than Adam at T (ratio > 1.25: "
                           "then falling behind later says nothing new)",
                           f"MPLP / Adam = {late:.2f} at step {mplp.shape[0]} against {ratio:.2f} at T = {T}; "
                           f"validation outer-loss at step 0 {start:.3g} vs tuned Adam {adam_metric:.3g}; {left_txt}",
                           decide(test, about_trained=True, reached=picked_left, trivial=ratio > 1.25),
                           test_outcome=test, seeds=one,
                           interval="MPLP / Adam over the initialisations "
                                    f"{stats.bootstrap_ratio(cmp.loss['mplp'][:, -w:].mean(1), cmp.loss['adam'][:, -w:].mean(1), statistic=np.mean)} "
                                    "(95 % bootstrap)",
                           post_hoc=f"{MEND_COMMIT}: trivial only when the trained MPLP is already worse at T, not "
                                    "when the untrained one is (after the data was seen)"))
    return out


def pick_optimizer(runs_with_term: list[RunResult]):
    """Figure 11's learned optimizer, by rule: among the runs with the term, the one with
    the lowest validation loss at a stored snapshot, at that snapshot.  Returns
    ``(run, analysis.Checkpoint)``."""

    if not runs_with_term:
        raise ValueError("no runs with the batch-entropy term to pick an optimizer from")
    picks = [(r, choose_checkpoint(r)) for r in runs_with_term]
    return min(picks, key=lambda rc: rc[1].val_loss)


def base_config(S: int, T: int, validation_every: int, subset: int,
                adam_bias_correction: bool = False) -> ExperimentConfig:
    """Table 5's setting (``configs/mnist_table5.yaml``) with chapter 3's profile values."""
    return shipped("mnist_table5").replace(**{"meta.S": S, "meta.T": T, "validation.every": validation_every,
                                              "task.subset": subset,
                                              "meta.adam_bias_correction": adam_bias_correction})


@dataclass
class MnistStudy:
    """Chapter 3's data: ``runs`` {batch_entropy: [runs]}, the ``tuned`` baselines, the
    per-run ``rows``, Figure 11's ``picked`` run and ``checkpoint`` and its ``comparison``
    with the tuned baselines on fresh initialisations."""

    base: ExperimentConfig
    runs: dict[bool, list[RunResult]]
    tuned: dict
    rows: list[RunRow]
    picked: RunResult
    checkpoint: object
    comparison: InnerComparison
    long_runs: dict[bool, list[RunResult]] | None = None    # the longer runs, as far as they got
    # the plan's rows P3.1-P3.8 on the thesis-budget runs, once all ten are finished ([] before)
    confirmatory: list[Verdict] = dataclasses.field(default_factory=list)

    @property
    def judged(self) -> dict[bool, list[RunResult]]:
        """The runs the verdicts are judged on: the longer runs when there are any."""
        return self.long_runs or self.runs

    def verdicts(self) -> list[Verdict]:
        out = verdicts(self.judged, self.comparison, self.tuned["adam"].best_metric, self.picked)
        if self.long_runs:
            note = f"{LONG_RULE_COMMIT}: judged on the longer runs (written after their partial curves were seen)"
            cont = continuation(self.long_runs)
            if cont is not None:
                note += "; " + cont.note("without the term")
            out = [dataclasses.replace(v, post_hoc="; ".join(filter(None, [v.post_hoc, note]))) for v in out]
        return out + self.confirmatory


def study(n_seeds: int, S: int, T: int, validation_every: int, subset: int, n_inits: int, horizon_factor: int,
          adam_bias_correction: bool = False, long_S: int = 0, thesis_budget: bool = False, device: str = "cpu",
          store: Store | None = None) -> MnistStudy:
    """Chapter 3 from its parameters; stored results are read, missing ones computed
    (unless ``store`` is read-only).  ``long_S`` > 0 reads the longer runs of
    ``long_configs`` as far as they got (never trained here); the verdicts and Figure 11's
    optimizer then come from them.  ``thesis_budget``: the plan's rows, once the
    thesis-budget runs are finished (``confirmed_rows``)."""

    store = store if store is not None else Store()
    base = base_config(S, T, validation_every, subset, adam_bias_correction)
    runs = train_runs(base, n_seeds, store, device=device, progress=False)
    tuned = baselines.tuned(base, store)
    long_runs = None
    if long_S:
        long_runs = {be: store.stored_runs(cfgs, how_to_train(cfgs))
                     for be, cfgs in long_configs(long_S, T, validation_every).items()}
    picked, ck = pick_optimizer((long_runs or runs)[True])
    cmp = store.load_or_compute(
        "mnist_fig11", {"config": picked.config.hash(), "step": ck.step, "n_inits": n_inits,
                        "steps": horizon_factor * T},
        lambda: compare_inner_training(picked.config, ck.theta, {k: v.best_lr for k, v in tuned.items()},
                                       n_inits=n_inits, steps=horizon_factor * T),
        InnerComparison)
    return MnistStudy(base, runs, tuned, run_table(runs), picked, ck, cmp, long_runs,
                      confirmed_rows(store) if thesis_budget else [])


# Long runs (python -m mplp.longruns <group>): the term off and on, seeds 0-1, 20,000 steps; the
# same runs continued from their finished 20,000 steps to 40,000 (chosen after seeing them: at
# 20,000 no run without the term had left the plateau, so claim 3.2 was not reached); the
# pre-registered thesis-budget runs (book/preregistration.md).
LONG_S, LONG_EXTENDED_S = 20_000, 40_000


def thesis_runs() -> list[list[ExperimentConfig]]:
    """Table 5 at 150,000 outer steps, the term off (seeds ``PREREG_SEEDS``), then on."""
    base = base_config(THESIS_S, 100, 150, 0, adam_bias_correction=False)
    return [[base.replace(**{"seed": s, "meta.batch_entropy": be}) for s in PREREG_SEEDS] for be in (False, True)]


def thesis_inner_reading(run: RunResult, adam_lr: float, store: Store, step_0: bool = False):
    """P3.6-P3.7's ``confirm.InnerReading`` of one run with the term, at its final meta-parameters
    θ_S (no checkpoint chosen; ``step_0``: at its stored step-0 snapshot θ₀, policy rule 2), against
    Adam at ``adam_lr`` on ``confirm.INNER_INITS`` fresh initialisations for 3T steps.  Stored; a
    read-only store without it raises ``MissingResultError`` (execute chapter 3 on the finished runs
    before the report reads them)."""
    if not step_0:
        cmp = confirm.stored_inner_comparison(store, "mnist_inner_final", run, run.theta, {"adam": adam_lr})
    else:
        cmp = confirm.stored_inner_comparison(store, "mnist_inner_untrained", run, confirm.theta_0(run),
                                              {"adam": adam_lr}, step=0)
    return confirm.inner_readings(cmp, run.config.meta.T)


def confirmed_rows(store: Store, arms: list[list[ExperimentConfig]] | None = None, S: int = THESIS_S) -> list[Verdict]:
    """The plan's rows P3.1-P3.8 once the ten thesis-budget runs (``arms``: the term off, then on;
    default ``thesis_runs``) are finished, against Adam tuned on their validation set, P3.6-P3.7
    read at θ₀ too (policy rule 2); nothing before."""
    off_cfgs, on_cfgs = thesis_runs() if arms is None else arms
    off, on = (confirm.complete_runs(store, cfgs) for cfgs in (off_cfgs, on_cfgs))
    if off is None or on is None:
        return []
    adam = baselines.tuned(on_cfgs[0], store)["adam"]
    return confirm.mnist_rows(off, on, S, [thesis_inner_reading(r, adam.best_lr, store) for r in on],
                              [thesis_inner_reading(r, adam.best_lr, store, step_0=True) for r in on])


def long_population(S: int) -> list[ExperimentConfig]:
    """The decisive comparison at ``S``: the term off (seeds 0, 1) and on (seeds 0, 1), one population."""
    cfgs = long_configs(S)
    return cfgs[False] + cfgs[True]


def plan(p: dict) -> list[list[ExperimentConfig]]:
    """The training populations the study needs with the profile values ``p``."""
    base = base_config(p["S"], p["T"], p["validation_every"], p["subset"], p.get("adam_bias_correction", False))
    cfgs = run_configs(base, p["n_seeds"])
    pops = [cfgs[False] + cfgs[True]]
    if p.get("long_S"):
        long = long_configs(p["long_S"], p["T"], p["validation_every"])
        pops.append(long[False] + long[True])
    return pops


def run_groups(st: MnistStudy) -> dict[str, list[RunResult]]:
    """The study's meta-training runs, grouped as the chapter shows them."""
    groups = {f"batch-entropy term {'on' if be else 'off'}": rs for be, rs in st.runs.items()}
    for be, rs in (st.long_runs or {}).items():
        groups[f"longer runs, term {'on' if be else 'off'}"] = rs
    return groups


RECORD = register(Chapter(
    "mnist", "(5 + 5) runs x 150,000 outer steps (Table 5)", ("thesis §5.3, Table 5", "thesis Figs. 9–11"),
    THESIS_S, study, plan,
    (Group("mnist", lambda: [long_population(LONG_S)]),
     Group("mnist-40k", lambda: [long_population(LONG_EXTENDED_S)], chosen_after=LONG_S, extends=LONG_S),
     Group("mnist-thesis", thesis_runs)),
    run_groups))
