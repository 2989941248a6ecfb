"""The confirmatory rows: the pre-registered tests (``book/preregistration.md``) on the
thesis-budget runs, exactly as the plan writes them, one function per group.

Each function takes the group's stored runs (``store.RunResult``, five seeds per arm),
the tuned baselines and, for the rows that need a trained optimizer's functions or inner
training, per-run readings computed by the chapter (``sinewave_readings``,
``inner_readings``), and returns the plan's rows as ``claims.verdicts.Verdict`` with stage
"confirmatory".  At the thesis' own outer steps "not reached" does not apply: a row is
decided by its test, or trivially true (policy rule 2: the same test on the untrained
optimizers, ``untrained``, says yes; amendment A4).  Run on shorter runs (with their own
``S``), the same functions give a dry run of the plan, which is how they are tested.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from mplp.claims import prereg
from mplp.claims.analysis import (InnerComparison, compare_inner_training, final_level, last_hidden_entropy,
                                  log_mean_loss, nan_as_worst, plateau_exit, plateau_level, rises_at, spike_fraction,
                                  tail_fraction)
from mplp.claims.verdicts import Verdict, decide

WINDOW = 0.02        # the plateau exit holds for 2 % of S
# P1.7 and P3.6-P3.7: fresh initialisations trained by a trained optimizer and a tuned baseline, for 3T steps
INNER_INITS, INNER_HORIZON = 20, 3
STUCK = 0.10         # stuck: no exit by 10 % of S


@dataclass(frozen=True)
class RunQuantities:
    """The plan's per-run quantities of one run of ``S`` outer steps (``preregistration.md``,
    "Quantities"): plateau ``exit`` (None: never), ``final`` loss, training ``speed``,
    ``instability``, the step-0 validation ``start``."""

    seed: int
    exit: int | None
    final: float
    speed: float
    instability: float
    start: float
    S: int

    @property
    def stuck(self) -> bool:
        return self.exit is None or self.exit > STUCK * self.S


def untrained(x: RunQuantities) -> RunQuantities:
    """Policy rule 2's untrained optimizer in place of run ``x`` (amendment A4): its step-0
    validation held flat, so its final loss is that validation and its speed that validation's log."""
    return dataclasses.replace(x, exit=None, final=x.start, speed=float(np.log(x.start)), instability=0.0)


def _curve(run) -> tuple[np.ndarray, np.ndarray]:
    """A stored run's validation steps ``(V,)`` and losses ``(V,)``, NaN as +inf (the plan's worst)."""
    return np.asarray(run.validation["step"]), nan_as_worst(run.validation["val_loss"])


def quantities(run, S: int) -> RunQuantities:
    """``RunQuantities`` of a stored run, judged against ``S`` (the plan's outer steps)."""
    steps, losses = _curve(run)
    return RunQuantities(run.config.seed, plateau_exit(steps, losses, int(WINDOW * S)), final_level(steps, losses, S),
                         log_mean_loss(losses), spike_fraction(losses), float(losses[0]), S)


def _row(pid: str, claim: str, where: str, test: str, d: prereg.Decision, seeds: str, S: int,
         trivial: bool = False, kind: str = "thesis") -> Verdict:
    outcome = decide(d.outcome, trivial=trivial)
    interval = "; ".join((str(d.interval) if d.interval is not None else "no interval",
                          f"p = {d.p:.3g}" if d.p is not None else "no p"))
    return Verdict(f"{pid}: {claim}", where, test, d.evidence, outcome, partly_rule=d.rule, test_outcome=d.outcome,
                   steps=S, seeds=seeds, interval=interval, stage="confirmatory", post_hoc=d.post_hoc, kind=kind)


def _baselines(worse: tuple[str, str], better: tuple[str, str], where: str, q: list[RunQuantities], sgd: float,
               adam: float, seeds: str, S: int) -> list[Verdict]:
    """The pair of rows "worse than tuned Adam" and "better than tuned SGD" on the runs' final
    losses, each trivially true if the same test on the step-0 validations says yes (policy
    rule 2; for the Adam row by amendment A3, post hoc where the median reading differed)."""
    finals, starts = [x.final for x in q], [x.start for x in q]
    above = prereg.above_baseline(finals, adam, "Adam")
    trivial = _passes_at_step_0(prereg.above_baseline(starts, adam, "Adam"))
    if trivial != (float(np.median(starts)) > adam):
        above = dataclasses.replace(above, post_hoc=prereg.AMENDMENT_A3)
    return [_row(*worse, where, "prereg.above_baseline(final, adam); trivially true if "
                 "prereg.above_baseline(step-0 validations, adam) says yes", above, seeds, S, trivial=trivial),
            _row(*better, where, "prereg.below_baseline(final, sgd), sgd the book's tuned SGD",
                 prereg.below_baseline(finals, sgd, "SGD"),
                 seeds, S, trivial=_passes_at_step_0(prereg.below_baseline(starts, sgd, "SGD")))]


def complete_runs(store, cfgs: list) -> list | None:
    """The stored runs of ``cfgs`` if every one is finished at its outer steps, else None: the
    plan decides a group only when all its runs are complete."""
    runs = [store.complete_run(c) for c in cfgs]
    return None if any(r is None for r in runs) else runs


def in_words(rows: list[Verdict], evidence: bool = False) -> str:
    """The decided rows for a chapter's text: "P1.1 yes; P1.2 no" (with each row's evidence in
    brackets when ``evidence``); "" when none is decided."""
    return "; ".join(f"{v.row} {v.label}" + (f" ({v.evidence})" if evidence else "") for v in rows)


def theta_0(run) -> dict:
    """A stored run's step-0 meta-parameters θ₀ (its step-0 snapshot): the untrained optimizer
    that policy rule 2 reads P1.6-P1.7 and P3.6-P3.7 at (amendment A4)."""
    snaps = run.snapshots()
    if 0 not in snaps:
        raise ValueError(f"{run.path}: no step-0 snapshot; policy rule 2 needs θ₀ (snapshot_every keeps step 0)")
    return snaps[0]


def stored_inner_comparison(store, kind: str, run, theta: dict, lrs: dict[str, float], **key) -> InnerComparison:
    """``analysis.compare_inner_training`` of ``theta`` (a snapshot of ``run``'s meta-parameters: a
    checkpoint's or the final θ_S) against the baselines ``lrs`` on ``INNER_INITS`` fresh
    initialisations for ``INNER_HORIZON`` x T inner steps (P1.7, P3.6-P3.7), stored as ``kind``
    under the run's config, ``key`` and the lrs."""
    steps = INNER_HORIZON * run.config.meta.T
    return store.load_or_compute(
        kind, {"config": run.config.hash(), "n_inits": INNER_INITS, "steps": steps,
               **{f"{name}_lr": lr for name, lr in lrs.items()}, **key},
        lambda: compare_inner_training(run.config, theta, lrs, n_inits=INNER_INITS, steps=steps), InnerComparison)


def _passes_at_step_0(d: prereg.Decision) -> bool:
    """Policy rule 2: the row's test on the untrained optimizers (``untrained``, or readings at
    θ₀) says yes."""
    return d.outcome == "yes"


def _rule_2(d: prereg.Decision, at_step_0: prereg.Decision | None) -> tuple[prereg.Decision, bool]:
    """Amendment A4's rule 2 on a row first made without it: ``d`` and whether the row is
    trivially true (``at_step_0``, the same test on the untrained optimizers, says yes; None: not
    computed), ``d`` marked post hoc (A4) where that changes its label."""
    trivial = at_step_0 is not None and _passes_at_step_0(at_step_0)
    if trivial and d.outcome in ("yes", "partly"):
        d = _mark_a4(d)
    return d, trivial


def _mark_a4(d: prereg.Decision) -> prereg.Decision:
    if prereg.AMENDMENT_A4 in d.post_hoc:
        return d
    return dataclasses.replace(d, post_hoc="; ".join(filter(None, (d.post_hoc, prereg.AMENDMENT_A4))))


def _reading_rows(tests, readings: list, at_step_0: list | None, seeds: str, S: int) -> list[Verdict]:
    """Rows whose test reads per-run readings at trained meta-parameters (P1.6-P1.7, P3.6-P3.7):
    ``tests`` as (id, claim, place, test in words, the test as a function of readings); policy
    rule 2 runs each on ``at_step_0``, the readings at θ₀ (amendment A4)."""
    out = []
    for pid, claim, where, test, decision in tests:
        untrained_d = decision(at_step_0) if at_step_0 is not None else None
        d, trivial = _rule_2(_amended(decision(readings), readings, pid), untrained_d)
        if untrained_d is not None:
            d = dataclasses.replace(d, evidence=f"{d.evidence}; at θ₀: {untrained_d.evidence}")
        out.append(_row(pid, claim, where, test + ("; trivially true if the same at θ₀ says yes"
                                                   if at_step_0 is not None else ""), d, seeds, S, trivial=trivial))
    return out


def _amended(d: prereg.Decision, readings: list, pid: str) -> prereg.Decision:
    """``d`` (row ``pid``) marked post hoc (A4) when a reading it rests on ranked a non-finite value
    last for this row (the reading's ``amended`` names the rows)."""
    if not any(pid in r.amended for r in readings):
        return d
    return _mark_a4(d)


# ---------------------------------------------------------------- §5.1 (group sinewave-thesis)

@dataclass(frozen=True)
class SinewaveReading:
    """P1.6 and P1.7 for one run at the thesis' checkpoint (or at θ₀, for rule 2): whether every
    learned function is beyond chance and the signs agree (``sinewave.resemble_outcome`` ==
    "yes"), and whether tuned SGD ends below the learned MPLP after 3T inner steps; ``amended``:
    the rows for which a non-finite value was ranked last here (amendment A4: no finite checkpoint,
    P1.6 and P1.7; a NaN inner loss, P1.7)."""

    resembles: bool | None
    sgd_wins_late: bool | None
    amended: tuple[str, ...] = ()


def sinewave_rows(runs: list, sgd: float, adam: float, S: int = 300_000,
                  readings: list[SinewaveReading] | None = None, lo: int = 25_000, hi: int = 100_000,
                  at_step_0: list[SinewaveReading] | None = None) -> list[Verdict]:
    """P1.1-P1.7 on the §5.1 runs (``readings``: one per run; without them P1.6-P1.7 are not made;
    ``at_step_0``: the same readings at each run's θ₀, policy rule 2 for P1.6-P1.7)."""
    q = [quantities(r, S) for r in runs]
    seeds = f"{len(runs)} seeds, {S:,} outer steps"
    exits = [x.exit for x in q]
    check = sinewave_exit_check(runs, S, lo, hi, plan=exits)
    out = [_row("P1.1", "an initial flat phase, escaping after around 50,000 steps", "§5.1.2, Fig. 3a",
                f"prereg.exit_in_window(exits, S={S:,}, lo={lo:,}, hi={hi:,})",
                _noted(prereg.exit_in_window(exits, S, lo, hi), check.note("P1.1")), seeds, S)]
    out.append(_row("P1.2", "the learning curve does not decrease monotonically", "§5.1.2",
                    "prereg.every_seed(a validation after the exit more than twice the best before it)",
                    _noted(_non_monotone(runs, exits), check.note("P1.2")), seeds, S))
    finals = [x.final for x in q]
    out += _baselines(("P1.3", "worse than learning-rate-tuned Adam"), ("P1.4", "better than learning-rate-tuned SGD"),
                      "§5.1.2, Fig. 3a", q, sgd, adam, seeds, S)
    out.append(_row("P1.5", "the outer-loss is fairly high (around 25)", "§5.1.2",
                    "prereg.within_factor(final, 25, tolerance=1.0)",
                    prereg.within_factor(finals, 25.0, 1.0, "25"), seeds, S,
                    trivial=_passes_at_step_0(prereg.within_factor([x.start for x in q], 25.0, 1.0, "25"))))
    if readings is not None:
        tests = (("P1.6", "the learned optimizer is similar to SGD", "§7; §5.1.2, Figs. 4-7",
                  "prereg.every_seed(sinewave.resemble_outcome == 'yes' at the thesis' checkpoint)",
                  lambda rs: prereg.every_seed([r.resembles for r in rs], "every function beyond chance, signs agreeing")),
                 ("P1.7", "run for longer, SGD would eventually outperform the learned MPLP", "§5.1.2",
                  "prereg.every_seed(tuned SGD below MPLP at 3T)",
                  lambda rs: prereg.every_seed([r.sgd_wins_late for r in rs], "SGD below MPLP at 3T")))
        out += _reading_rows(tests, readings, at_step_0, seeds, S)
    return out


def _noted(d: prereg.Decision, note: str) -> prereg.Decision:
    """``d`` with ``note`` (a post hoc reading beside the plan's) after its evidence."""
    return dataclasses.replace(d, evidence=f"{d.evidence} {note}")


def _non_monotone(runs: list, exits: list[int | None]) -> prereg.Decision:
    """P1.2's test: per run with an exit, a validation from the exit on more than twice the best before it."""
    nonmono = []
    for r, e in zip(runs, exits):
        if e is None:
            nonmono.append(None)
            continue
        v = r.validation
        after = np.asarray(v["val_loss"], dtype=float)[np.asarray(v["step"]) >= e]
        nonmono.append(spike_fraction(after) > 0)
    return prereg.every_seed(nonmono, "non-monotone after the exit")


@dataclass(frozen=True)
class ExitCheck:
    """The rows that use the plateau exit again with each run's exit measured from its plateau's
    level (the median of the three validations after step 0) instead of the plan's initial level
    (post hoc, a robustness reading that decides nothing): ``plan`` and ``plateau`` the exits
    (None: never), ``first`` the runs, as (cell name or "", seed), whose plan exit is their first
    validation after step 0, ``readings`` and ``plan_readings`` {row id: the row's own test on
    the plateau exits, on the plan's exits}."""

    plan: list
    plateau: list
    first: list[tuple[str, int]]
    readings: dict[str, prereg.Decision]
    plan_readings: dict[str, prereg.Decision]

    def _why(self) -> str:
        by_cell: dict[str, list[int]] = {}
        for cell, seed in self.first:
            by_cell.setdefault(cell, []).append(seed)
        named = "; ".join(f"{cell + ': ' if cell else ''}{_seeds(seeds)}" for cell, seeds in by_cell.items())
        return ("measured from the plateau's own level (the median of the three validations after step 0) instead "
                "of the plan's initial level, which a step-0 validation above the plateau but under the 2x outlier "
                "line lifts to the plateau, so that the untrained optimizer's first drop, or a slow drift, counts as "
                "the exit" + (f" (the first validation after step 0 for {named})" if named else ""))

    def _reading(self, pid: str) -> str:
        d, plan = self.readings[pid], self.plan_readings[pid]
        same = "still " if d.outcome == plan.outcome else ""
        return f"{pid}'s test would {same}say {d.outcome} ({d.evidence})"

    def note(self, pid: str) -> str:
        """Row ``pid``'s post hoc reading in words, in brackets after the row's evidence."""
        return f"[post hoc check, deciding nothing: {self._why()}: {self._reading(pid)}]"

    def summary(self) -> str:
        """Every row's post hoc reading in one sentence, for a chapter's text."""
        return (f"post hoc, deciding nothing: {self._why()}: "
                + "; ".join(self._reading(pid) for pid in self.readings))


def _seeds(seeds: list[int]) -> str:
    """"seed 3", "seeds 3 and 4", "seeds 1, 3 and 4"."""
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    return f"seeds {', '.join(map(str, seeds[:-1]))} and {seeds[-1]}"


def exit_check(runs: list, S: int, tests: dict, cells: list[str], plan: list | None = None) -> ExitCheck:
    """``ExitCheck`` of ``runs`` (in the cells named ``cells``, "" for none) for ``tests`` ({row
    id: the row's test as a function of the runs' exits}); ``plan``: the plan's exits, if already
    measured."""
    curves = [_curve(r) for r in runs]
    w = int(WINDOW * S)
    plan = [plateau_exit(steps, losses, w) for steps, losses in curves] if plan is None else list(plan)
    plateau = [plateau_exit(steps, losses, w, level=plateau_level(losses)) for steps, losses in curves]
    first = [(cell, r.config.seed) for cell, r, (steps, _), e in zip(cells, runs, curves, plan)
             if len(steps) > 1 and e == int(steps[1])]
    return ExitCheck(plan, plateau, first, {pid: test(plateau) for pid, test in tests.items()},
                     {pid: test(plan) for pid, test in tests.items()})


def sinewave_exit_check(runs: list, S: int = 300_000, lo: int = 25_000, hi: int = 100_000,
                        plan: list | None = None) -> ExitCheck:
    """``ExitCheck`` of the §5.1 runs for P1.1-P1.2."""
    tests = {"P1.1": lambda ex: prereg.exit_in_window(ex, S, lo, hi), "P1.2": lambda ex: _non_monotone(runs, ex)}
    return exit_check(runs, S, tests, [""] * len(runs), plan)


# ---------------------------------------------------------------- §5.2 (group grid-thesis)

def _cells(cells: dict, S: int) -> dict:
    """{(message_size, batch_norm, learned_lr): [RunQuantities]} of the grid's cells."""
    return {(c.message_size, c.batch_norm, c.learned_lr): [quantities(r, S) for r in rs] for c, rs in cells.items()}


def _name(m=None, bn=None, lr=None) -> str:
    parts = [f"|m|={m}" if m is not None else "", f"BN {'on' if bn else 'off'}" if bn is not None else "",
             f"lr {'learned' if lr else 'fixed'}" if lr is not None else ""]
    return ", ".join(p for p in parts if p)


def _pairs(q: dict, factor: int, high_first: bool, field: str) -> dict:
    """Strata of the other two factors: {name: (values with the factor on / 8, values off / 1)}
    (``high_first``), or the reverse."""
    out, high = {}, (8 if factor == 0 else True)
    for key in q:
        if key[factor] != high:
            continue
        low = list(key)
        low[factor] = 1 if factor == 0 else False
        others = {i: key[i] for i in range(3) if i != factor}
        name = _name(**{("m", "bn", "lr")[i]: v for i, v in others.items()})
        hi_vals = [getattr(x, field) for x in q[key]]
        lo_vals = [getattr(x, field) for x in q[tuple(low)]]
        out[name] = (hi_vals, lo_vals) if high_first else (lo_vals, hi_vals)
    return out


BEST_CELL = (8, True, True)                         # |m| = 8, BN on, lr learned: the thesis' best
BEST_CELL_ROWS = (("P2.12", "the best configuration is still worse than learning-rate-tuned Adam"),
                  ("P2.13", "the best configuration performs better than SGD"))


def best_cell_rows(runs: list, sgd: float, adam: float, S: int = 120_000) -> list[Verdict]:
    """P2.12-P2.13, which the plan lets the thesis' best cell (|m| = 8, BN on, lr learned; its
    ``runs``) decide on its own, before the other seven cells are trained."""
    q = [quantities(r, S) for r in runs]
    return _baselines(*BEST_CELL_ROWS, "§5.2.2", q, sgd, adam, f"{len(q)} seeds of the best cell, {S:,} outer steps", S)


def grid_rows(cells: dict, sgd: float, adam: float, S: int = 120_000) -> list[Verdict]:
    """P2.1-P2.16 on §5.2's eight cells (``cells``: ``ablation.Cell`` -> its five runs); policy
    rule 2 runs each row's test on the cells' untrained optimizers too (``untrained``)."""
    q = _cells(cells, S)
    q0 = {k: [untrained(x) for x in xs] for k, xs in q.items()}
    n = len(next(iter(q.values())))
    seeds = f"{n} seeds per cell, {len(q)} cells, {S:,} outer steps"
    check = grid_exit_check(cells, S, q)
    out = []
    for pid, claim, where, test, decision, rule_2 in _grid_tests(BEST_CELL):
        if pid == "P2.12":                                  # P2.12-P2.13: rule 2 as decided before
            out += _baselines(*BEST_CELL_ROWS, "§5.2.2", q[BEST_CELL], sgd, adam, seeds, S)
            continue
        d, trivial = _rule_2(decision(q), decision(q0) if rule_2 else None)
        if pid in check.readings:
            d = _noted(d, check.note(pid))
        out.append(_row(pid, claim, where, test + ("; trivially true if the same on the untrained optimizers says yes"
                                                   if rule_2 else ""), d, seeds, S, trivial=trivial))
    return out


GRID_EXIT_ROWS = ("P2.3", "P2.10", "P2.16")


def grid_exit_check(cells: dict, S: int = 120_000, q: dict | None = None) -> ExitCheck:
    """``ExitCheck`` of §5.2's cells (as ``grid_rows`` takes them; ``q``: their ``_cells``, if
    already measured) for the rows on the plateau exit, P2.3, P2.10 and P2.16."""
    q = _cells(cells, S) if q is None else q

    def with_exits(exits: list) -> dict:
        it = iter(exits)
        return {k: [dataclasses.replace(x, exit=next(it)) for x in xs] for k, xs in q.items()}

    tests = {pid: (lambda ex, f=decision: f(with_exits(ex)))
             for pid, _, _, _, decision, _ in _grid_tests(BEST_CELL) if pid in GRID_EXIT_ROWS}
    names = [_name(*k) for k, xs in q.items() for _ in xs]
    return exit_check([r for rs in cells.values() for r in rs], S, tests, names,
                      plan=[x.exit for xs in q.values() for x in xs])


def _swap(pairs: dict) -> dict:
    return {k: (b, a) for k, (a, b) in pairs.items()}


def _stuck(q: dict, where) -> list[bool]:
    return [x.stuck for k, xs in q.items() if where(k) for x in xs]


def _grid_tests(best: tuple) -> list[tuple]:
    """The plan's P2.1-P2.16 as (id, claim, place, test in words, the test as a function of the
    cells' ``RunQuantities``, whether policy rule 2 applies: amendment A4's rows about what an
    optimizer achieves, not how meta-training moves).  P2.12 stands for P2.12-P2.13."""
    bn_speed = lambda q: _pairs(q, 1, True, "speed")                 # (with BN, without BN) per (m, lr)
    lr_speed = lambda q: _pairs(q, 2, False, "speed")                # (fixed, learned) per (m, BN)
    return [
        ("P2.1", "batch normalization converges faster under all configurations", "§5.2.2, Fig. 8",
         "prereg.every_stratum({(m, lr): (with BN, without BN)}, 'less') on training speed",
         lambda q: prereg.every_stratum(bn_speed(q), "less"), True),
        ("P2.2", "a large difference for batch normalization in the bottom-right configuration", "§5.2.2",
         "prereg.largest_in({(m, lr): (without BN, with BN)}, '|m|=8, lr fixed', 'greater')",
         lambda q: prereg.largest_in(_swap(bn_speed(q)), "|m|=8, lr fixed", "greater"), True),
        ("P2.3", "with batch normalization training less often gets stuck at the beginning", "§5.2.2",
         "prereg.fewer_events(stuck with BN, stuck without BN)",
         lambda q: prereg.fewer_events(sum(_stuck(q, lambda k: k[1])), len(_stuck(q, lambda k: k[1])),
                                       sum(_stuck(q, lambda k: not k[1])), len(_stuck(q, lambda k: not k[1])),
                                       ("with BN", "without BN")), False),
        ("P2.4", "learning the learning rate generally speeds up convergence", "§5.2.2",
         "prereg.stratified_shift({(m, BN): (fixed, learned)}, 'greater') on training speed",
         lambda q: prereg.stratified_shift(lr_speed(q), "greater"), True),
        ("P2.5", "at message size 1 the learned lr's speed-up is minimal, if even significant", "§5.2.2",
         "prereg.smallest_in(effects, ['|m|=1, BN off', '|m|=1, BN on'], 'greater')",
         lambda q: prereg.smallest_in(lr_speed(q), ["|m|=1, BN off", "|m|=1, BN on"], "greater"), True),
        ("P2.6", "learning the lr helps mainly at |m| = 8 without batch normalization", "§5.2.2, Fig. 8",
         "prereg.largest_in(effects, '|m|=8, BN off', 'greater')",
         lambda q: prereg.largest_in(lr_speed(q), "|m|=8, BN off", "greater"), True),
        ("P2.7", "the learned learning rate makes training more unstable", "§5.2.2; §7",
         "prereg.stratified_shift({(m, BN): (learned, fixed)}, 'greater') on instability",
         lambda q: prereg.stratified_shift(_swap(_pairs(q, 2, False, "instability")), "greater"), False),
        ("P2.8", "increasing the message size leads to a much lower outer-loss", "§5.2.2, Fig. 8",
         "prereg.every_stratum({(BN, lr): (|m|=8, |m|=1)}, 'less', max_ratio=0.5) on the final loss",
         lambda q: prereg.every_stratum(_pairs(q, 0, True, "final"), "less", max_ratio=0.5), True),
        ("P2.9", "the message size has a large influence on convergence speed", "§7",
         "prereg.every_stratum({(BN, lr): (|m|=8, |m|=1)}, 'less') on training speed",
         lambda q: prereg.every_stratum(_pairs(q, 0, True, "speed"), "less"), True),
        ("P2.10", "with |m| = 8 there are still runs with an initial flat phase", "§5.2.2",
         "prereg.some_run(stuck) over the |m| = 8 runs",
         lambda q: prereg.some_run(_stuck(q, lambda k: k[0] == 8), "stuck with |m| = 8"), False),
        ("P2.11", "learned lr, batch normalization and |m| = 8 give the best performance", "§5.2.2",
         "prereg.lowest_of(cells, '|m|=8, BN on, lr learned') on the final loss",
         lambda q: prereg.lowest_of({_name(*k): [x.final for x in xs] for k, xs in q.items()}, _name(*best)), True),
        ("P2.12", "", "", "", None, None),
        ("P2.14", "batch normalization generally produces a better performing MPLP", "§7",
         "prereg.stratified_shift({(m, lr): (with BN, without BN)}, 'less') on the final loss",
         lambda q: prereg.stratified_shift(_pairs(q, 1, True, "final"), "less"), True),
        ("P2.15", "learning the learning rate increased performance", "§7",
         "prereg.stratified_shift({(m, BN): (learned, fixed)}, 'less') on the final loss",
         lambda q: prereg.stratified_shift(_swap(_pairs(q, 2, False, "final")), "less"), True),
        ("P2.16", "every §5.2 run trains without batch-entropy regularisation", "§6",
         "prereg.every_seed(a plateau exit before S) over all runs",
         lambda q: prereg.every_seed([x.exit is not None for xs in q.values() for x in xs], "left the plateau"), False),
    ]


# ---------------------------------------------------------------- §5.3 (group mnist-thesis)

@dataclass(frozen=True)
class InnerReading:
    """P3.6-P3.7 for one run with the term, at its final meta-parameters: mean inner loss over
    the last tenth of T steps, of the MPLP and of tuned Adam, at T and at 3T."""

    mplp_T: float
    adam_T: float
    mplp_3T: float
    adam_3T: float
    amended: tuple[str, ...] = ()    # rows whose inputs had a NaN inner loss, counted as +inf (amendment A4)


def inner_readings(cmp, T: int) -> InnerReading:
    """``InnerReading`` from an ``analysis.InnerComparison`` over at least 3T steps (a non-finite
    inner loss counts as +inf, the worst, amendment A4)."""
    w = max(1, T // 10)
    loss = {k: np.asarray(cmp.loss[k], dtype=float) for k in ("mplp", "adam")}
    m, a = (nan_as_worst(loss[k]).mean(0) for k in ("mplp", "adam"))
    nan_by_T = any(np.isnan(v[:, T - w:T]).any() for v in loss.values())
    nan_late = any(np.isnan(v[:, -w:]).any() for v in loss.values())
    return InnerReading(float(m[T - w:T].mean()), float(a[T - w:T].mean()), float(m[-w:].mean()), float(a[-w:].mean()),
                        amended=("P3.6", "P3.7") if nan_by_T else (("P3.7",) if nan_late else ()))


def mnist_rows(off: list, on: list, S: int = 150_000, inner: list[InnerReading] | None = None,
               at_step_0: list[InnerReading] | None = None) -> list[Verdict]:
    """P3.1-P3.8 on §5.3's runs without (``off``) and with (``on``) the batch-entropy term
    (``inner``: one reading per run with the term at θ_S; without them P3.6-P3.7 are not made;
    ``at_step_0``: the same at each run's θ₀, policy rule 2 for P3.6-P3.7)."""
    qo, qn = [quantities(r, S) for r in off], [quantities(r, S) for r in on]
    seeds = f"{len(off)} + {len(on)} seeds (term off + on), {S:,} outer steps"
    window = int(WINDOW * S)
    p31 = dataclasses.replace(prereg.long_and_unpredictable([x.exit for x in qo], S, S // 10), post_hoc=prereg.AMENDMENT_A2)
    out = [_row("P3.1", "without the term, a long initial phase, and hard to predict when it ends", "§5.3.2, Fig. 9a",
                f"prereg.long_and_unpredictable(exits, S={S:,}, long={S // 10:,})", p31, seeds, S),
           _row("P3.2", "without the term, one run did not start to learn within the budget", "§5.3.2",
                "prereg.some_run(never)", prereg.some_run([x.exit is None for x in qo], "never left, without the term"),
                seeds, S)]
    rises = [rises_at(r.validation["step"], last_hidden_entropy(r), x.exit, int(S * WINDOW)) for r, x in zip(off, qo)]
    out.append(_row("P3.3", "the final layer's batch entropy increases when the optimizer starts to learn", "Fig. 9b",
                    f"prereg.every_seed(rises_at(entropy, exit, {window:,})) over the runs without the term that exit",
                    prereg.every_seed(rises, "batch entropy higher after the exit"), seeds, S))
    out.append(_row("P3.4", "batch-entropy regularisation removes the initial flat phase: immediate training",
                    "Fig. 10a", f"prereg.exit_within(on, S={S:,}, limit={S // 100:,}, compare=off)",
                    prereg.exit_within([x.exit for x in qn], S, S // 100, compare=[x.exit for x in qo]), seeds, S))
    out.append(_row("P3.5", "the batch-entropy loss quickly decreases to close to 0", "Fig. 10b",
                    "prereg.every_seed(tail_fraction(term) < 0.05)",
                    prereg.every_seed([tail_fraction(r.train["be_term"]) < 0.05 for r in on], "term below 5 % of its start"),
                    seeds, S))
    if inner is not None:
        tests = (("P3.6", "the learned MPLP and Adam show similar convergence speed", "Fig. 11; §7",
                  "prereg.within_factor(MPLP at T, Adam at T, tolerance=0.25) over the runs with the term",
                  lambda rs: prereg.within_factor([i.mplp_T / i.adam_T for i in rs], 1.0, 0.25, "Adam")),
                 ("P3.7", "run longer, Adam would likely outperform the MPLP", "§5.3.2",
                  "prereg.every_seed(MPLP / Adam at 3T above MPLP / Adam at T)",
                  lambda rs: prereg.every_seed([i.mplp_3T / i.adam_3T > i.mplp_T / i.adam_T for i in rs],
                                               "falls behind Adam past T")))
        out += _reading_rows(tests, inner, at_step_0, seeds, S)
    out.append(_row("P3.8", "batch-entropy regularisation was necessary on MNIST", "§6",
                    "prereg.fewer_events(stuck with the term, stuck without)",
                    prereg.fewer_events(sum(x.stuck for x in qn), len(qn), sum(x.stuck for x in qo), len(qo),
                                        ("with the term", "without")), seeds, S))
    return out



# ---------------------------------------------------------------- Metz et al. §2.4 (chapter 4; tranche 3)

@dataclass(frozen=True)
class TruncationReading:
    """PM.1-PM.3 for one seed of chapter 4's Figure 4 problem: the learned lrs (geometric mean over
    the last third of outer training) with the shortest truncation ``short_lr``, the full unroll
    ``full_lr`` and PES at the shortest truncation ``pes_lr``; the lr grid's optimum ``best_lr``;
    the summed shortest-truncation gradients ``truncated_sum`` and the full unroll's ``true_grad``
    (d loss / d log lr along one inner problem)."""

    short_lr: float
    full_lr: float
    pes_lr: float
    best_lr: float
    truncated_sum: float
    true_grad: float

    def biased_down(self) -> bool:
        """PM.1: the short truncations' lr below the full unroll's and further from the optimum (in log)."""
        far = lambda lr: abs(np.log(lr / self.best_lr))
        return self.short_lr < self.full_lr and far(self.short_lr) > far(self.full_lr)

    def anti_correlated(self) -> bool:
        """PM.2: the summed truncated gradient and the true one have opposite signs (their correlation < 0)."""
        return self.truncated_sum * self.true_grad < 0

    def pes_unbiased(self) -> bool:
        """PM.3: PES's lr within 2x of the grid optimum."""
        return abs(np.log(self.pes_lr / self.best_lr)) <= np.log(2)


def truncation_rows(readings: list[TruncationReading], shortest: int = 10, longest: int = 1_000) -> list[Verdict]:
    """PM.1-PM.3 on chapter 4's Figure 4 problem, one reading per seed (``TruncationReading``)."""
    seeds = f"{len(readings)} seeds per estimator"
    rows = (("PM.1", "short truncations bias the learned learning rate downwards", "Metz et al. §2.4, Fig. 4a",
             f"prereg.every_seed(lr with K = {shortest} below K = {longest}'s and further from the grid optimum)",
             [r.biased_down() for r in readings], "biased downwards"),
            ("PM.2", "the sum of truncated outer-gradients is anti-correlated to the true outer-gradient",
             "Metz et al. §2.4, Fig. 4c", f"prereg.every_seed(summed K = {shortest} gradients x full unroll's < 0)",
             [r.anti_correlated() for r in readings], "anti-correlated"),
            ("PM.3", "PES at the same truncation removes the bias", "Vicol et al. 2021",
             f"prereg.every_seed(PES's lr at K = {shortest} within 2x of the grid optimum)",
             [r.pes_unbiased() for r in readings], "PES within 2x of the optimum"))
    return [_row(pid, claim, where, test, prereg.every_seed(holds, what), seeds, 0, kind="metz")
            for pid, claim, where, test, holds, what in rows]
