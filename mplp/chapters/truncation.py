"""Chapter 4 (Metz et al. 2019, Vicol et al. 2021): the toy's landscape and basins, the
estimators compared on it, the study that gathers every result, and the verdicts.  The toy
itself is in ``truncation_toy``, Figure 4's learned-lr problem in ``truncation_lr``, the
discussion's numbers in ``truncation_prose``."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from mplp.claims.verdicts import CH4_RULES_COMMIT, MEND_COMMIT, Verdict
from mplp.chapters import confirm, controls
from mplp.chapters.registry import PREREG_SEEDS, Chapter, register
from mplp.core.config import ExperimentConfig, shipped
from mplp.chapters.truncation_lr import (AdamLrProblem, LrGrid, OuterTrace, TruncationGradients, lr_grid, outer_train,
                                         truncation_gradients)
from mplp.chapters.truncation_toy import (DTYPE, LrGradient, MomentumToy, lr_gradients, momentum_gradients,
                                          momentum_trajectories, toy_loss)
from mplp.meta.estimators import ES, ReparamES
from mplp.meta.source import Store
from mplp.store import MissingResultError
from mplp.tasks.data import mnist

# -- summaries and verdicts ------------------------------------------------------------------


@dataclass
class LandscapeRow:
    """Fig. 3c at one horizon T: how rough l(w_T) is as a function of the momentum."""

    T: int
    jumps: int                 # neighbouring momenta whose final losses differ by more than `jump`
    max_slope: float           # max |d l(w_T) / d momentum| by finite differences on the grid
    frac_global: float         # fraction of momenta that end in the global minimum's basin (w > 1.68)


def landscape(momenta: torch.Tensor, horizons: list[int], lr: float, jump: float = 1.0,
              trajectories: torch.Tensor | None = None) -> list[LandscapeRow]:
    """``LandscapeRow`` for each T: final losses over the momentum grid, their jumps and slopes
    (``trajectories``: ``momentum_trajectories`` of these momenta, when already computed)."""
    m = torch.as_tensor(momenta, dtype=DTYPE)
    traj = trajectories if trajectories is not None else momentum_trajectories(m, max(horizons), lr)
    rows = []
    for T in horizons:
        w = traj[:, T]
        loss = toy_loss(w)
        d = loss.diff().abs()
        rows.append(LandscapeRow(T, int((d > jump).sum()), float((d / m.diff()).max()),
                                 float((w > (21 - 57 ** 0.5) / 8).double().mean())))
    return rows


MINIMA = (0.0, (21 + math.sqrt(21 ** 2 - 4 * 4 * 24)) / 8)     # l'(w) = 0: w = 0 and w = 3.57 (minima)
RIDGE = (21 - math.sqrt(21 ** 2 - 4 * 4 * 24)) / 8              # and w = 1.68, the maximum between them


def basin_reading(momenta, trajectories) -> dict:
    """Fig. 3b read from the toy's trajectories ``(M, T + 1)``: per momentum, the minimum its
    run ends nearest to (0 or 1, None when it diverged) and how often it crossed the ridge
    between the two basins (w = 1.68)."""
    w = np.asarray(trajectories, dtype=float)
    final = w[:, -1]
    ends = [None if not np.isfinite(f) else int(abs(f - MINIMA[1]) < abs(f - MINIMA[0])) for f in final]
    crossings = [int(np.sum(np.diff(np.sign(row[np.isfinite(row)] - RIDGE)) != 0)) for row in w]
    return {"momenta": np.asarray(momenta, dtype=float), "ends": ends, "crossings": crossings}


def verdicts(rows: list[LandscapeRow], lr_grad: LrGradient, momentum_grad_max, traces: dict[str, OuterTrace],
             grid: LrGrid, shortest: int, longest: int,
             truncation_grads: dict[int, "TruncationGradients"] | None = None, basins: dict | None = None) -> list:
    """The toy chapter's claims: landscape pathology and exploding gradients with T (Metz
    et al. §2.3), truncation bias shrinking the learned lr (§2.4), PES removing it (Vicol
    et al.).  ``momentum_grad_max``: max |d l(w_T) / d momentum| over the grid at each of
    ``rows``' horizons; ``traces``: keys "tbptt-<k>", "pes-<k>", "es-<N>"."""
    out = [_landscape(rows)]
    if basins is not None:
        out.append(_basins(rows, basins))
    out += [_gradient_norm(rows, lr_grad, momentum_grad_max), _lr_bias(traces, grid, shortest, longest)]
    if truncation_grads is not None and shortest in truncation_grads:
        out.append(_truncated_signs(truncation_grads[shortest], shortest))
        if longest in truncation_grads:
            out.append(_anti_correlated(truncation_grads, shortest, longest))
    pes = traces.get(f"pes-{shortest}")
    if pes is not None:
        out.append(_pes(pes, traces, grid, shortest))
    return out


LATE = "geometric mean over the last third of outer training"   # how a learned lr is read off its trace


def _landscape(rows: list[LandscapeRow]) -> Verdict:
    """Metz et al. §2.3, Fig. 3c: the outer landscape grows pathological as T grows."""
    first, last = rows[0], rows[-1]
    return Verdict("the outer landscape grows pathological as T grows", "Metz et al. §2.3, Fig. 3c",
                   f"more jumps (|delta l| > 1 between neighbouring momenta) at T = {last.T} than at T = {first.T}",
                   f"jumps {first.jumps} -> {last.jumps}; max slope {first.max_slope:.3g} -> {last.max_slope:.3g}",
                   "yes" if last.jumps > first.jumps else ("partly" if last.max_slope > first.max_slope else "no"),
                   kind="metz", partly_rule="no more jumps, but a steeper largest slope")


def _basins(rows: list[LandscapeRow], basins: dict) -> Verdict:
    """Metz et al. §2.3, Fig. 3b: which minimum each momentum settles in."""
    m, ends, cross = basins["momenta"], basins["ends"], basins["crossings"]
    low = ends[0] == 0
    second = [k for k, e in enumerate(ends) if e == 1]
    higher = bool(second) and all(e == 0 for e in ends[:second[0]])
    oscillate = bool(second) and any(c >= 2 for c in cross[second[0]:])
    holds = [low, higher, oscillate]
    return Verdict("on the toy, low momenta settle in the first minimum, higher ones in the second, and "
                   "larger ones oscillate between them first", "Metz et al. §2.3, Fig. 3b",
                   f"over the {len(m)} momenta of Fig. 3 (T = {rows[-1].T}): the lowest ends at w = 0; the "
                   f"first to end at w = {MINIMA[1]:.2f} comes after a run of momenta that all end at 0; some "
                   f"momentum above it crosses the ridge between the basins (w = {RIDGE:.2f}) at least twice "
                   "(partly: two of the three)",
                   f"lowest momentum {m[0]:.3g} ends at the "
                   f"{'first' if low else 'second' if ends[0] == 1 else 'no'} minimum; first at the second "
                   f"minimum: {f'momentum {m[second[0]]:.3g}' if second else 'none'}; momenta crossing the "
                   f"ridge twice or more: {sum(c >= 2 for c in cross)}; diverged: {sum(e is None for e in ends)}",
                   "yes" if all(holds) else ("partly" if sum(holds) == 2 else "no"), kind="metz",
                   partly_rule="two of the three patterns", seeds="deterministic (no seeds)",
                   post_hoc=f"{MEND_COMMIT}: a claim added to the ledger after Fig. 3b was seen")


def _gradient_norm(rows: list[LandscapeRow], lr_grad: LrGradient, momentum_grad_max) -> Verdict:
    """Metz et al. §2.3, App. A: the unrolled outer-gradient's norm grows with T."""
    g = np.asarray(momentum_grad_max, dtype=float)
    decays = lr_grad.autograd.abs().amax(0)
    peak = int(np.argmax(g))
    return Verdict("the unrolled outer-gradient's norm grows with T", "Metz et al. §2.3, App. A",
                   f"max over the momentum grid of |d l(w_T)/d momentum|, against T = {rows[0].T}: at least 10x "
                   f"at T = {rows[-1].T} (partly: at least 10x at a shorter T, then falling as inner training "
                   "converges)",
                   "momentum: " + ", ".join(f"T={r.T}: {x:.3g}" for r, x in zip(rows, g)) +
                   f"; learning rate of plain GD (App. A): {float(decays[0]):.3g} -> {float(decays[-1]):.3g}",
                   "yes" if g[-1] >= 10 * g[0] else ("partly" if g[peak] >= 10 * g[0] else "no"), kind="metz",
                   partly_rule=f"10x at T = {rows[peak].T}, then falling as the runs converge",
                   post_hoc=f"{CH4_RULES_COMMIT}: widened to three outcomes after the endpoint-only test said no")


def _lr_bias(traces: dict[str, OuterTrace], grid: LrGrid, shortest: int, longest: int) -> Verdict:
    """Metz et al. §2.4, Fig. 4a: short truncations bias the learned lr downwards."""
    short, full = traces[f"tbptt-{shortest}"].late_lr(), traces[f"tbptt-{longest}"].late_lr()
    start = float(traces[f"tbptt-{shortest}"].lr[0])
    ordered = short < full and abs(np.log(short / grid.best_lr)) > abs(np.log(full / grid.best_lr))
    falls = short < start
    return Verdict("short truncations bias the learned lr downwards", "Metz et al. §2.4, Fig. 4a",
                   f"learned lr ({LATE}) with k = {shortest} below that with k = {longest} and further from "
                   f"the grid optimum (in log), and below where the k = {shortest} run started (Metz et al.: "
                   "'the resulting learning rate decreases'); partly: the ordering alone",
                   f"k = {shortest}: {short:.3g} (after its first update {start:.3g}: "
                   f"{'falls' if falls else 'rises'}); k = {longest}: {full:.3g}; grid optimum {grid.best_lr:.3g}",
                   "yes" if ordered and falls else ("partly" if short < full else "no"), kind="metz",
                   partly_rule="lower than the full unroll's and further from the optimum, but it rises rather "
                               "than decreases" if ordered else "lower, but not further from the grid optimum",
                   seeds=f"1 seed, {len(traces[f'tbptt-{shortest}'].lr)} outer updates per truncation length",
                   post_hoc=f"{CH4_RULES_COMMIT}: late geometric mean replaced the final value; {MEND_COMMIT}: the "
                            "'decreases' half of the claim tested (after the data was seen)")


def _truncated_signs(tg: TruncationGradients, shortest: int) -> Verdict:
    """Metz et al. §2.4, Fig. 4b: truncated outer-gradients negative early, positive later."""
    late = float(np.median(tg.grads[len(tg.grads) // 2:]))
    first_neg, late_pos = tg.grads[0] < 0, late > 0
    return Verdict("truncated outer-gradients are negative early in inner training and positive later",
                   "Metz et al. §2.4, Fig. 4b",
                   f"the k = {shortest} truncations' gradients (d loss / d log lr) along one inner problem at "
                   f"lr {tg.lr:.3g}: the first negative and the median over the second half positive "
                   "(partly: one of the two)",
                   f"first {tg.grads[0]:+.3g}; median over the second half {late:+.3g}; last {tg.grads[-1]:+.3g}",
                   "yes" if first_neg and late_pos else ("partly" if first_neg or late_pos else "no"),
                   kind="metz", partly_rule="early negative, not positive later" if first_neg else
                   "positive later, not negative early", seeds="1 inner problem at one lr (1 seed)",
                   post_hoc=f"{MEND_COMMIT}: a claim added to the ledger after Fig. 4b was seen")


def _anti_correlated(truncation_grads: dict[int, TruncationGradients], shortest: int, longest: int) -> Verdict:
    """Metz et al. §2.4, Fig. 4c: summed truncated gradients against the true one."""
    summed, true = float(truncation_grads[shortest].cumulative[-1]), float(truncation_grads[longest].cumulative[-1])
    return Verdict("the sum of truncated outer-gradients is anti-correlated with the true outer-gradient",
                   "Metz et al. §2.4, Fig. 4c",
                   f"at the lr of Fig. 4b-c, the sum of the k = {shortest} truncations' gradients (d loss / "
                   f"d log lr) along one inner problem and the full unroll's (k = {longest}) have opposite signs",
                   f"sum over k = {shortest}: {summed:+.3g}; full unroll: {true:+.3g}; at lr "
                   f"{truncation_grads[shortest].lr:.3g}",
                   "yes" if summed * true < 0 else "no", kind="metz",
                   seeds="1 inner problem at one lr (1 seed)",
                   post_hoc=f"{MEND_COMMIT}: a claim added to the ledger after its numbers were seen")


def _pes(pes: OuterTrace, traces: dict[str, OuterTrace], grid: LrGrid, shortest: int) -> Verdict:
    """Vicol et al. 2021: PES at the same short truncations removes the bias."""
    short = traces[f"tbptt-{shortest}"].late_lr()
    p = pes.late_lr()
    closer = abs(np.log(p / grid.best_lr)) < abs(np.log(short / grid.best_lr))
    within = abs(np.log(p / grid.best_lr)) <= np.log(2)
    return Verdict("PES at the same short truncations removes the bias", "Vicol et al. 2021",
                   f"PES's learned lr (k = {shortest}, {LATE}) within 2x of the grid optimum (partly: "
                   "closer to it than truncated BPTT's)",
                   f"PES {p:.3g}; truncated BPTT {short:.3g}; grid optimum {grid.best_lr:.3g}",
                   "yes" if within else ("partly" if closer else "no"), kind="metz",
                   partly_rule="closer to the optimum than truncated BPTT, not within 2x",
                   post_hoc=f"{CH4_RULES_COMMIT}: late geometric mean replaced the final value")


@dataclass
class ToyEstimates:
    """Metz et al. §3 on the toy: at each probed momentum ``(n,)``, the backprop gradient
    ``exact (n,)`` and ``n_rep`` estimates ``(n, n_rep)`` by ES and by reparameterisation + ES."""

    momenta: np.ndarray
    T: int
    sigma: float
    exact: np.ndarray
    es: np.ndarray
    combined: np.ndarray


def toy_estimates(momenta, T: int, lr: float, sigma: float, n_pairs: int, n_rep: int = 10,
                  seed: int = 0) -> ToyEstimates:
    """Estimate d l(w_T) / d momentum at each momentum by backprop, ES and the combined
    estimator (``n_rep`` independent estimates each), on ``MomentumToy(lr)``."""

    toy = MomentumToy(lr)
    gen = torch.Generator().manual_seed(seed)
    m = torch.as_tensor(momenta, dtype=DTYPE)
    exact = momentum_gradients(m, T, lr)
    es, comb = [], []
    for mi in m:
        th = mi.reshape(1)
        es.append([float(ES(sigma, n_pairs).estimate(toy, th, toy.init(), T, gen).grad[0]) for _ in range(n_rep)])
        comb.append([float(ReparamES(sigma, n_pairs).estimate(toy, th, toy.init(), T, gen).grad[0])
                     for _ in range(n_rep)])
    return ToyEstimates(m.numpy(), T, sigma, exact.numpy(), np.asarray(es), np.asarray(comb))


@dataclass
class Figure4:
    """Figure 4's learned-lr problem (Metz et al. §2.4: log lr of an MLP's inner Adam, outer-trained
    on MNIST) in one setting; each result is stored under ``results/truncation/`` keyed by the
    setting and the seed, computed on first use unless ``store`` is read-only."""

    subset: int            # MNIST training images (0: all)
    hidden: int            # the MLP lin(784, hidden), ReLU, lin(hidden, 10)
    N: int                 # inner steps per inner problem
    n_problems: int        # inner problems per outer-training run
    meta_lr: float         # outer Adam step on log lr
    sigma: float           # ES / PES perturbation scale, in log lr
    n_pairs: int           # antithetic pairs per ES / PES estimate
    store: Store
    _problem: AdamLrProblem | None = dataclasses.field(default=None, repr=False, compare=False)

    def problem(self) -> AdamLrProblem:
        if self._problem is None:
            x, y = mnist("train", self.subset)
            self._problem = AdamLrProblem(x, y, (784, self.hidden, 10), batch_size=128)
        return self._problem

    def _key(self, seed: int, **more) -> dict:
        return {"subset": self.subset, "hidden": self.hidden, "N": self.N, "seed": seed, **more}

    def grid(self, seed: int) -> LrGrid:
        """The grid search's mean training loss per fixed lr (13 lrs in [1e-4, 0.1], 2 inits)."""
        return self.store.load_or_compute("truncation", self._key(seed, what="grid"),
                                          lambda: lr_grid(self.problem(), np.logspace(-4, -1, 13), self.N, n_seeds=2,
                                                          seed=seed), LrGrid)

    def trace(self, estimator: str, k: int, seed: int) -> OuterTrace:
        """The learned lr over outer training with ``estimator`` at truncation ``k`` (from lr 1e-3)."""
        key = self._key(seed, what="outer", estimator=estimator, k=k, n_problems=self.n_problems,
                        meta_lr=self.meta_lr, sigma=self.sigma, n_pairs=self.n_pairs)
        return self.store.load_or_compute(
            "truncation", key, lambda: outer_train(self.problem(), estimator, k, self.N, self.n_problems, 1e-3,
                                                   self.meta_lr, seed, self.sigma, self.n_pairs), OuterTrace)

    def gradients(self, k: int, seed: int) -> TruncationGradients:
        """The truncated gradients of length ``k`` along one inner problem at lr 1e-3 (Fig. 4b-c)."""
        return self.store.load_or_compute("truncation", self._key(seed, what="per-truncation", k=k),
                                          lambda: truncation_gradients(self.problem(), 1e-3, self.N, k, seed),
                                          TruncationGradients)

    def reading(self, seed: int, shortest: int, longest: int) -> confirm.TruncationReading:
        """PM.1-PM.3's reading of one seed: the late learned lrs of truncated BPTT at ``shortest``
        and ``longest`` and of PES at ``shortest``, the grid optimum, and the summed gradients of
        the ``shortest`` truncations with the full unroll's (k = N) at lr 1e-3."""
        return confirm.TruncationReading(
            self.trace("tbptt", shortest, seed).late_lr(), self.trace("tbptt", longest, seed).late_lr(),
            self.trace("pes", shortest, seed).late_lr(), self.grid(seed).best_lr,
            float(self.gradients(shortest, seed).cumulative[-1]), float(self.gradients(self.N, seed).cumulative[-1]))


def plan_setting(store: Store) -> tuple[Figure4, list[int]]:
    """Tranche 3's setting (the plan: chapter 4's ``cpu`` profile) and its truncation lengths."""
    from mplp.chapters.profiles import load_profile

    p = load_profile("truncation", "cpu")
    return (Figure4(p["subset"], p["hidden"], p["N"], p["n_problems"], p["meta_lr"], p["sigma"], p["n_pairs"], store),
            list(p["truncations"]))


def confirmed_rows(fig4: Figure4, truncations: list[int], seeds=PREREG_SEEDS) -> list[Verdict]:
    """PM.1-PM.3 once tranche 3's readings of every seed are stored (``tranche3``, run by
    ``python -m mplp.longruns tranche3`` after tranches 1-2); nothing before, and nothing is
    computed here."""
    ro = dataclasses.replace(fig4, store=dataclasses.replace(fig4.store, read_only=True))
    try:
        readings = [ro.reading(s, min(truncations), max(truncations)) for s in seeds]
    except MissingResultError:
        return []
    return confirm.truncation_rows(readings, min(truncations), max(truncations))


def tranche3(fig4: Figure4, truncations: list[int], seeds=PREREG_SEEDS) -> list[confirm.TruncationReading]:
    """Tranche 3 of the plan, computed and stored (hours on one core): per seed, truncated BPTT at
    every length of ``truncations`` and PES at the shortest (the plan's runs), then PM.1-PM.3's reading."""
    out = []
    for s in seeds:
        for k in truncations:
            fig4.trace("tbptt", k, s)
        out.append(fig4.reading(s, min(truncations), max(truncations)))
    return out


@dataclass
class TruncationStudy:
    """Chapter 4's data. Toy: ``momenta (M,)``, ``trajectories (M, T + 1)``, landscape
    ``rows``, the §2.3 ``lr_grad`` at ``grad_lrs`` and ``momentum_grad`` (max over the grid
    per horizon), the estimator comparison ``toy``.  Figure 4: the lr ``grid``, the outer
    ``traces`` ("tbptt-<k>", "pes-<k>", "es-<N>"), the per-truncation gradients
    ``truncation_grads`` {k}.  MPLP: one stored run per estimator, ``mplp_runs``; the positive
    control (``controls.LrControl``: Table 2's functions fixed, only the lr learned)."""

    truncations: list[int]
    momenta: torch.Tensor
    trajectories: torch.Tensor
    rows: list[LandscapeRow]
    grad_lrs: list[float]
    lr_grad: LrGradient
    momentum_grad: list[float]
    grid: LrGrid
    traces: dict[str, OuterTrace]
    truncation_grads: dict[int, TruncationGradients]
    toy: ToyEstimates
    mplp_runs: dict
    control: object = None
    confirmatory: list[Verdict] = dataclasses.field(default_factory=list)   # PM.1-PM.3 once tranche 3 is stored

    def verdicts(self) -> list[Verdict]:
        t = self.truncations
        out = verdicts(self.rows, self.lr_grad, self.momentum_grad, self.traces, self.grid, min(t), max(t),
                       self.truncation_grads, basin_reading(self.momenta, self.trajectories))
        return out + (self.control.verdicts() if self.control is not None else []) + self.confirmatory


def mplp_base_config(S: int, validation_runs: int, pairs: int, sigma: float, seed: int,
                     adam_bias_correction: bool = False):
    """The §5.2 setting that chapter 4 meta-trains with each estimator (``meta.estimator`` set per run)."""

    return shipped("ablation").replace(**{
        "experiment": "estimators", "meta.S": S, "validation.every": max(1, S // 10),
        "validation.n_runs": validation_runs, "meta.es_pairs": pairs, "meta.es_sigma": sigma, "seed": seed,
        "meta.adam_bias_correction": adam_bias_correction})


def study(toy_lr: float, n_momenta: int, horizons: list[int], grad_horizons: list[int], subset: int, hidden: int,
          N: int, n_problems: int, truncations: list[int], meta_lr: float, sigma: float, n_pairs: int,
          toy_sigma: float, estimate_T: int, mplp_S: int, mplp_pairs: int, mplp_sigma: float,
          mplp_validation_runs: int, seed: int, mplp_adam_bias_correction: bool = False,
          control_S: int = 0, control_seeds: int = 1, thesis_budget: bool = False, store=None) -> TruncationStudy:
    """Chapter 4 from its parameters (``estimate_T``: the horizon of the toy's estimator
    comparison). The toy's landscape and gradients are recomputed
    (float64, seconds); Figure 4's runs, the toy estimates and the MPLP runs are stored
    results (read, or computed unless ``store`` is read-only).  ``thesis_budget``: the plan's
    rows PM.1-PM.3 once tranche 3 is stored (``confirmed_rows``)."""

    store = store if store is not None else Store()
    momenta = torch.linspace(0, 0.99, n_momenta, dtype=DTYPE)
    traj = momentum_trajectories(momenta, max(horizons), toy_lr)
    rows = landscape(momenta, horizons, toy_lr, trajectories=traj)
    grad_lrs = [toy_lr / 4, toy_lr / 2, toy_lr]
    lg = lr_gradients(grad_lrs, grad_horizons)
    mom_grad = [float(momentum_gradients(momenta, T, toy_lr).abs().max()) for T in horizons]

    fig4 = Figure4(subset, hidden, N, n_problems, meta_lr, sigma, n_pairs, store)
    grid = fig4.grid(seed)
    runs = {f"tbptt-{k}": ("tbptt", k) for k in truncations}
    runs[f"pes-{min(truncations)}"] = ("pes", min(truncations))
    runs[f"es-{N}"] = ("es", N)
    traces = {name: fig4.trace(est, k, seed) for name, (est, k) in runs.items()}
    tgs = {k: fig4.gradients(k, seed) for k in truncations}
    probe = momenta[::max(1, n_momenta // 20)]
    te = store.load_or_compute(
        "truncation", {"what": "toy-estimates", "T": estimate_T, "lr": toy_lr, "sigma": toy_sigma, "n_pairs": n_pairs,
                       "n_momenta": n_momenta, "seed": seed},
        lambda: toy_estimates(probe, estimate_T, toy_lr, toy_sigma, n_pairs, n_rep=10, seed=seed), ToyEstimates)
    mplp_base = mplp_base_config(mplp_S, mplp_validation_runs, mplp_pairs, mplp_sigma, seed, mplp_adam_bias_correction)
    mplp_runs = {est: store.train([mplp_base.replace(**{"meta.estimator": est})])[0] for est in ("tbptt", "es", "pes")}

    control = controls.study(control_S, control_seeds, store) if control_S else None
    return TruncationStudy(list(truncations), momenta, traj, rows, grad_lrs, lg, mom_grad, grid, traces, tgs, te,
                           mplp_runs, control, confirmed_rows(*plan_setting(store)) if thesis_budget else [])


def plan(p: dict) -> list[list[ExperimentConfig]]:
    """The training populations the study needs with the profile values ``p``: the MPLP runs per
    estimator, and the learned-lr control runs."""
    base = mplp_base_config(p["mplp_S"], p["mplp_validation_runs"], p["mplp_pairs"], p["mplp_sigma"], p["seed"],
                            p.get("mplp_adam_bias_correction", False))
    pops = [[base.replace(**{"meta.estimator": est})] for est in ("tbptt", "es", "pes")]
    if p.get("control_S"):
        pops += [[controls.control_config(e, p["control_S"], s)] for e in controls.ESTIMATORS
                 for s in range(p["control_seeds"])]
    return pops


# chapter 4's MPLP runs use §5.2's setting: its 120,000 outer steps are the paper's budget for them
RECORD = register(Chapter(
    "truncation", "Metz et al.: 10,000 inner steps per inner problem (Fig. 4)",
    ("Metz et al. (2019) §2–3, Vicol et al. (2021)", "Metz et al. Figs. 3–4, Appendix A"), 120_000, study, plan,
    run_groups=lambda st: {f"MPLP with {k}": [r] for k, r in st.mplp_runs.items()}))
