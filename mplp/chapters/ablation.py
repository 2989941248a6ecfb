"""Chapter 2, the §5.2 ablation grid (thesis Table 4, Figure 8): |m| x batch-norm x learned lr.

Every cell of the 2 x 2 x 2 grid (``ablation_grid``) is meta-trained with several seeds as
one population (``loop.train_population``); all cells share the validation runs of the base
config.  The verdicts on §5.2's claims are computed here from the stored runs' summaries, so
the book and the claims ledger read the same numbers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mplp.store import RunResult
from mplp.chapters.ablation_grid import (LR_FIXED, LR_LEARNED_INIT, PLATEAU_WINDOW, THESIS_S, Cell, CellSummary,
                                         base_config, cell_config, common_level, decisive_configs, grid_configs,
                                         long_config, summarise, summary_table)
from mplp.chapters import confirm
from mplp.chapters.registry import PREREG_SEEDS, Chapter, Group, chosen_after, how_to_train, register
from mplp.claims import prereg, stats
from mplp.claims.analysis import plateau_end
from mplp.claims.verdicts import MEND_COMMIT, PLATEAU_RULE_COMMIT, POLICY_COMMIT, Verdict, decide
from mplp.core.config import ExperimentConfig
from mplp.meta import baselines
from mplp.meta.source import Store

DECISIVE_RULE_COMMIT = "913f3c6"   # where the longer runs' rule was written (see verdicts)


def train_grid(base: ExperimentConfig, n_seeds: int, store: Store | None = None, device="cpu",
               progress: bool = True) -> dict[Cell, list[RunResult]]:
    """Meta-train (or load) every cell of the grid, each cell's seeds as one population."""
    store = store if store is not None else Store()
    return {cell: store.train(cfgs, device=device, progress=progress)
            for cell, cfgs in grid_configs(base, n_seeds).items()}


@dataclass
class AblationStudy:
    """Chapter 2's data: the stored ``runs`` per cell, the ``tuned`` baselines, the
    common loss ``level`` and the per-cell ``table``."""

    base: ExperimentConfig
    runs: dict[Cell, list[RunResult]]
    tuned: dict
    level: float
    table: dict[Cell, "CellSummary"]
    long_run: RunResult | None = None
    decisive: dict[Cell, list[RunResult]] | None = None          # the longer runs, as far as they got
    decisive_table: dict[Cell, "CellSummary"] | None = None
    # the S of the decisive runs seen before these longer ones were chosen (None: planned before)
    decisive_after: int | None = None
    # the plan's rows the thesis-budget runs have decided so far (preregistration.md)
    confirmatory: list[Verdict] = dataclasses.field(default_factory=list)

    @property
    def decisive_steps(self) -> int:
        """Outer steps the longer runs have reached (0: none asked for)."""
        return min(int(r.meta.get("steps_done", 0)) for rs in self.decisive.values() for r in rs) \
            if self.decisive else 0

    @property
    def long_plateau_end(self) -> int | None:
        """Where the longer run of the best cell leaves its plateau (None: it does not)."""
        if self.long_run is None:
            return None
        v = self.long_run.validation
        return plateau_end(v["step"], v["val_loss"])

    def verdicts(self) -> list[Verdict]:
        return verdicts(self.table, self.tuned["sgd"].best_metric, self.tuned["adam"].best_metric,
                        self.decisive_table, self.decisive_after, self.adam_note()) + self.confirmatory

    def adam_note(self) -> str:
        """Which outer Adam each set of runs used, with the best cell's plateau exits under each:
        a confound of every claim judged on pairs from both sets."""
        if not self.decisive_table:
            return ""
        best = Cell(8, True, True)
        grid_adam = "bias-corrected" if self.base.meta.adam_bias_correction else "the released code's"

        def ends(runs):
            return ", ".join("never" if e is None else f"{e:,}" for e in
                             (plateau_end(r.validation["step"], r.validation["val_loss"]) for r in runs))
        note = (f"outer Adam: the {self.table[best].steps:,}-step grid used the {grid_adam} Adam, the "
                f"{self.decisive_steps:,}-step runs the released code's (no bias correction), so pairs judged on "
                "both compare different Adams")
        if best in self.decisive:
            note += (f"; in {best.label} the plateau ends (the census rule) are {ends(self.runs[best])} "
                     f"({grid_adam}, {self.table[best].steps:,} steps) and {ends(self.decisive[best])} "
                     f"(released code's; the plan's held exit: "
                     + ", ".join("never" if e is None else f"{e:,}" for e in self.decisive_table[best].exits) + ")")
        return note


def study(n_seeds: int, S: int, validation_every: int, validation_runs: int, adam_bias_correction: bool = False,
          long_S: int = 0, long_validation_every: int = 500, decisive_S: int = 0, thesis_budget: bool = False,
          device: str = "cpu", store: Store | None = None) -> AblationStudy:
    """Chapter 2 from its parameters; stored runs are read, missing ones trained
    (unless ``store`` is read-only).  ``decisive_S`` > 0 reads the longer runs of
    ``decisive_configs`` as far as they got; they are never trained here (hours).
    ``thesis_budget``: the plan's rows that the thesis-budget runs have decided."""

    store = store if store is not None else Store()
    base = base_config(S, validation_every, validation_runs, adam_bias_correction)
    runs = train_grid(base, n_seeds, store, device=device, progress=False)
    tuned = baselines.tuned(base, store)
    level = common_level(runs)
    long_run = None
    if long_S:
        long_run = store.train([long_config(long_S, long_validation_every, adam_bias_correction)], device=device)[0]
    decisive = decisive_table = after = None
    if decisive_S:
        dcfgs = decisive_configs(decisive_S, validation_every, validation_runs)
        decisive = {cell: store.stored_runs(cfgs, how_to_train(cfgs)) for cell, cfgs in dcfgs.items()}
        level_d = common_level(decisive)
        decisive_table = {cell: summarise(cell, rs, level_d) for cell, rs in decisive.items()}
        after = chosen_after([c for cfgs in dcfgs.values() for c in cfgs])
    return AblationStudy(base, runs, tuned, level, summary_table(runs, level), long_run, decisive, decisive_table,
                         after, confirmed_rows(store) if thesis_budget else [])


def _thesis_cells(store: Store, grid: list[list[ExperimentConfig]]) -> dict:
    """{Cell: its complete thesis-budget runs, or None while any is unfinished}, in the plan's order."""
    key = lambda c: Cell(c.learner.message_size, c.learner.batch_norm, c.learner.learned_lr)
    return {key(cfgs[0]): confirm.complete_runs(store, cfgs) for cfgs in grid}


def confirmed_rows(store: Store, grid: list[list[ExperimentConfig]] | None = None,
                   S: int = THESIS_S) -> list[Verdict]:
    """The confirmatory rows decided so far, against the SGD and Adam tuned on the runs' own
    validation set: P2.1-P2.16 once all eight cells' five thesis-budget runs (``grid``, default
    ``thesis_grid``, in the plan's order) are finished; before, P2.12-P2.13 once the best cell's
    are (the plan lets that cell decide them alone); nothing before that."""
    grid = thesis_grid() if grid is None else grid
    cells = _thesis_cells(store, grid)
    best = next(iter(cells.values()))
    if best is None:                                          # the plan's order: the thesis' best cell first
        return []
    tuned = baselines.tuned(grid[0][0], store)
    sgd, adam = tuned["sgd"].best_metric, tuned["adam"].best_metric
    if any(rs is None for rs in cells.values()):
        return confirm.best_cell_rows(best, sgd, adam, S)
    return confirm.grid_rows(cells, sgd, adam, S)


def thesis_exit_check(store: Store | None = None, grid: list[list[ExperimentConfig]] | None = None,
                      S: int = THESIS_S) -> confirm.ExitCheck | None:
    """``confirm.grid_exit_check`` of the forty thesis-budget runs, None until all are finished."""
    cells = _thesis_cells(store if store is not None else Store(), thesis_grid() if grid is None else grid)
    return None if any(rs is None for rs in cells.values()) else confirm.grid_exit_check(cells, S)


def _pairs(rows: dict[Cell, CellSummary], vary: str):
    """Pairs of cells that differ only in ``vary``: (cell with False/1, cell with True/8)."""
    low, high = (1, 8) if vary == "message_size" else (False, True)
    for c in rows:
        if getattr(c, vary) == low:
            yield rows[c], rows[Cell(**{**c.__dict__, vary: high})]


def _spread(s: CellSummary) -> str:
    return f"{s.final_median:.3g} [{s.final_min:.3g}-{s.final_max:.3g}]"


def _left(s: CellSummary) -> str:
    return f"{s.n_seeds - s.n_stuck}/{s.n_seeds} left"


def _longest(pairs, longer: dict[Cell, CellSummary] | None):
    """``pairs`` with every pair whose two cells were also run longer (``longer``) taken from
    the longer runs: a claim is judged at the longest budget that ran both arms."""
    longer = longer or {}
    return [(longer[a.cell], longer[b.cell]) if a.cell in longer and b.cell in longer else (a, b) for a, b in pairs]


def _at(s: CellSummary) -> str:
    return f" at {s.steps:,} steps" if s.steps != THESIS_S else ""


def _mw(a: CellSummary, b: CellSummary, field: str = "log_means") -> str:
    """The exact one-sided Mann-Whitney p that ``a``'s per-seed values lie below ``b``'s (as text;
    "" when the summaries carry no per-seed values)."""
    x, y = getattr(a, field), getattr(b, field)
    return f"p = {stats.mann_whitney(x, y, 'less'):.3g}" if len(x) and len(y) else ""


def _seeds(pairs) -> str:
    counts = sorted({(s.n_seeds, s.steps) for pr in pairs for s in pr}, key=lambda t: t[1])
    return "; ".join(f"{n} seeds per cell at {st:,} steps" for n, st in counts)


def verdicts(rows: dict[Cell, CellSummary], sgd: float, adam: float,
             longer: dict[Cell, CellSummary] | None = None, longer_after: int | None = None,
             adam_note: str = "") -> list[Verdict]:
    """The verdicts on §5.2's claims from the cell summaries and the tuned baselines, through
    the written policy (``claims.verdicts``).  A pair of cells is decided when at least one of its
    two arms has a majority of seeds off the plateau (the same rule both ways); for
    final-loss claims the arms must also have settled (``CellSummary.settled``).
    ``longer``: summaries of the decisive cells' longer runs, which replace the grid's pairs
    they cover and compete for the best configuration; ``longer_after``: the S of the runs of
    those cells seen before these longer ones were chosen (None: planned before), said in the
    post-hoc notes of the verdicts they feed."""
    lp = f"{DECISIVE_RULE_COMMIT}: pairs run longer are judged on the longer runs (rule written after the " \
         "|m| = 8 longer runs were seen)" if longer else ""
    if longer and longer_after:
        lp += f"; the longer runs were chosen after those of {longer_after:,} steps were seen"
    ph = f"{PLATEAU_RULE_COMMIT}: plateau start rule; {POLICY_COMMIT}: pairs with both arms on the plateau are " \
         "not reached, in both directions; stuck = not left the plateau"
    return [_bn_faster(rows, longer, adam_note, ph, lp),
            _larger_message(rows, longer, lp),
            *_learned_lr(rows, ph),
            _best_configuration(rows, longer, sgd, adam, lp),
            _bn_less_stuck(rows)]


def _bn_faster(rows: dict[Cell, CellSummary], longer, adam_note: str, ph: str, lp: str) -> Verdict:
    """§5.2: batch-norm converges faster in every configuration (speed: area under the log curve)."""
    pairs = _longest(_pairs(rows, "batch_norm"), longer)
    decided = [(off, on) for off, on in pairs if off.left or on.left]
    faster = [on.auc_median < off.auc_median for off, on in decided]
    ev = "; ".join(f"{on.cell.message_size}/{'learned' if on.cell.learned_lr else 'fixed'}{_at(on)}: "
                   f"{off.auc_median:.3g} ({_left(off)}) -> {on.auc_median:.3g} ({_left(on)})" for off, on in pairs)
    if not decided:
        test = "undecided"
    elif all(faster):
        test = "yes" if len(decided) == len(pairs) else "partly"
    else:
        test = "partly" if any(faster) else "no"
    ps = [f"{on.cell.message_size}/{'learned' if on.cell.learned_lr else 'fixed'}: {p}"
          for off, on in decided if (p := _mw(on, off))]
    return Verdict("batch-norm converges faster in every configuration", "§5.2",
                   "median geometric-mean validation loss with BN < without, in all 4 (|m|, lr) pairs that are "
                   "decided (an arm off the plateau)",
                   f"{sum(faster)}/{len(decided)} decided pairs faster ({ev})"
                   + (f"; {adam_note}" if adam_note else ""),
                   decide(test, about_trained=True, reached=bool(decided)), test_outcome=test,
                   seeds=_seeds(pairs), interval=("one-sided Mann-Whitney per decided pair, " + "; ".join(ps))
                   if ps else "",
                   steps=max(s.steps for pr in (decided or pairs) for s in pr),
                   partly_rule=f"faster in {sum(faster)} of {len(decided)} decided pairs, "
                               f"{len(pairs) - len(decided)} of {len(pairs)} pairs not reached",
                   post_hoc="; ".join(filter(None, [ph, lp])))


def _larger_message(rows: dict[Cell, CellSummary], longer, lp: str) -> Verdict:
    """§5.2: |m| = 8 gives a much lower loss than |m| = 1 (much: at least 2x lower median final loss)."""
    pairs = _longest(_pairs(rows, "message_size"), longer)
    decided = [(m1, m8) for m1, m8 in pairs if m1.settled or m8.settled]
    ratio = [m8.final_median / m1.final_median for m1, m8 in pairs]
    much = [m8.final_median / m1.final_median <= 0.5 for m1, m8 in decided]
    test = "undecided" if not decided else ("yes" if all(much) and len(decided) == len(pairs)
                                            else ("partly" if any(much) else "no"))
    return Verdict("|m| = 8 gives a much lower loss than |m| = 1", "§5.2",
                   "median final loss with |m| = 8 at most half that with |m| = 1, in all 4 (BN, lr) pairs; "
                   "a final-loss claim: decided on pairs with a settled arm (policy rule 1)",
                   "ratios " + ", ".join(f"{m8.cell.label.split(', ', 1)[1]}{_at(m8)}: {r:.3f} ({_spread(m1)} -> "
                                         f"{_spread(m8)}, {'still falling' if m8.falling else 'settled'})"
                                         for (m1, m8), r in zip(pairs, ratio)),
                   decide(test, about_trained=True, reached=bool(decided)), test_outcome=test,
                   partly_rule=f"at most half in {sum(much)} of {len(decided)} decided pairs",
                   steps=max(s.steps for pr in (decided or pairs) for s in pr), seeds=_seeds(pairs),
                   interval="; ".join(f"{m8.cell.label.split(', ', 1)[1]}: |m| = 8 / |m| = 1 "
                                      f"{stats.bootstrap_ratio(m8.final_seeds, m1.final_seeds)}"
                                      for m1, m8 in pairs if len(m1.final_seeds) and len(m8.final_seeds)),
                   post_hoc="; ".join(filter(None, [f"{POLICY_COMMIT}: 'partly' was 'lower in >= 3 pairs'; settled "
                                                    "pairs only", lp])))


def _learned_lr(rows: dict[Cell, CellSummary], ph: str) -> list[Verdict]:
    """§5.2: learned lr helps most at |m| = 8 without batch-norm; learned lr makes training less stable."""
    pairs = {(off.cell.message_size, off.cell.batch_norm): (off, on) for off, on in _pairs(rows, "learned_lr")}
    gain = {k: off.auc_median / on.auc_median for k, (off, on) in pairs.items()}
    best = max(gain, key=gain.get)
    target = pairs[(8, False)]
    test = "yes" if best == (8, False) and gain[best] > 1 else "no"
    first = Verdict("learned lr helps most at |m| = 8 without batch-norm", "§5.2",
                    "speed-up (geometric-mean loss ratio fixed / learned) largest in the |m| = 8, BN off pair; "
                    "decided when an arm of that pair is off the plateau",
                    ", ".join(f"|m|={m} BN {'on' if bn else 'off'}: {g:.3f}" for (m, bn), g in gain.items())
                    + f"; |m|=8 BN off: {_left(target[0])} (fixed), {_left(target[1])} (learned)",
                    decide(test, about_trained=True, reached=target[0].left or target[1].left), test_outcome=test,
                    post_hoc=ph, steps=target[0].steps, seeds=_seeds(pairs.values()),
                    interval=f"|m|=8 BN off, fixed slower than learned: one-sided Mann-Whitney "
                             f"{_mw(target[1], target[0])}" if len(target[0].log_means) else "")
    more_stuck = sum(on.n_stuck for _, on in pairs.values()) - sum(off.n_stuck for off, _ in pairs.values())
    skip_on = sum(on.skipped for _, on in pairs.values())
    skip_off = sum(off.skipped for off, _ in pairs.values())
    strata = {f"|m|={m} BN {'on' if bn else 'off'}": (on.spikes, off.spikes) for (m, bn), (off, on) in pairs.items()}
    d = prereg.stratified_shift(strata, "greater")
    second = Verdict("learned lr makes training less stable", "§5.2",
                     "the plan's test (prereg.stratified_shift): the fraction of validations more than twice the "
                     "lowest before them (analysis.spike_fraction) larger with the learned lr, a permutation test "
                     "within the 4 (|m|, BN) pairs, one-sided at 0.05 (partly: the direction in >= 3 of 4) "
                     "(meta-training stability: decided on the plateau too)",
                     "spike fractions (learned vs fixed) " + d.evidence
                     + "; the old measure, std over seeds of log final loss (fixed -> learned): "
                     + ", ".join(f"|m|={m} BN {'on' if bn else 'off'}: {off.final_log_spread:.3f} -> "
                                 f"{on.final_log_spread:.3f}" for (m, bn), (off, on) in pairs.items())
                     + f"; stuck seeds learned - fixed: {more_stuck:+d}; outer updates skipped for a diverged "
                       f"inner problem: {skip_on} learned vs {skip_off} fixed; the learned-lr cells also start "
                       f"with a {LR_LEARNED_INIT / LR_FIXED:.0f}x larger step ({LR_LEARNED_INIT:g} vs {LR_FIXED:g})",
                     d.outcome if d.outcome != "undecided" else "undecided", partly_rule=d.rule,
                     steps=max(s.steps for s in rows.values()), seeds=_seeds(pairs.values()),
                     interval=f"stratified permutation p = {d.p:.3g}",
                     post_hoc=f"{POLICY_COMMIT}: stuck = not left the plateau (evidence only); {MEND_COMMIT}: the "
                              "plan's spike fraction and stratified permutation test replace 'std of log final loss "
                              "wider in >= 3 of 4 pairs' (after the data was seen)")
    return [first, second]


def _best_configuration(rows: dict[Cell, CellSummary], longer, sgd: float, adam: float, lp: str) -> Verdict:
    """§5.2: the best configuration beats tuned SGD but not tuned Adam."""
    top = min([*rows.values(), *(longer or {}).values()], key=lambda s: s.final_median)
    test = "yes" if adam < top.final_median < sgd else "no"
    return Verdict("the best configuration beats tuned SGD but not tuned Adam", "§5.2",
                   "median final loss of the best cell < tuned SGD's (and > tuned Adam's: trivially true for an "
                   "untrained optimizer, not counted alone); a final-loss claim (policy rule 1)",
                   f"best {top.cell.label}: {_spread(top)}, {_left(top)}, "
                   f"{'still falling' if top.falling else 'settled'} at {top.steps:,} of {THESIS_S:,} steps; "
                   f"SGD {sgd:.3g}, Adam {adam:.3g}; step 0: {top.start_median:.3g}",
                   decide(test, about_trained=True, reached=top.settled), test_outcome=test, steps=top.steps,
                   seeds=f"{top.n_seeds} seeds at {top.steps:,} steps",
                   interval=(f"median / SGD {stats.bootstrap_ratio(top.final_seeds, [sgd])} (95 % bootstrap)"
                             if len(top.final_seeds) else ""),
                   post_hoc="; ".join(filter(None, [f"{POLICY_COMMIT}: the Adam half alone no longer makes it "
                                                    "'partly'", lp])))


def _bn_less_stuck(rows: dict[Cell, CellSummary]) -> Verdict:
    """§5.2: with batch-norm, meta-training less often gets stuck at the beginning (the grid's runs)."""
    on = [s for c, s in rows.items() if c.batch_norm]
    off = [s for c, s in rows.items() if not c.batch_norm]
    n_on, n_off = sum(s.n_seeds for s in on), sum(s.n_seeds for s in off)
    d = prereg.fewer_events(sum(s.n_stuck for s in on), n_on, sum(s.n_stuck for s in off), n_off,
                            ("with BN", "without BN"))
    ev = f"stuck (census rule): {d.evidence}"
    if all(len(s.exits) for s in rows.values()):
        held = prereg.fewer_events(sum(e is None for s in on for e in s.exits), n_on,
                                   sum(e is None for s in off for e in s.exits), n_off, ("with BN", "without BN"))
        window = int(PLATEAU_WINDOW * THESIS_S)
        ev += (f"; by the plan's held exit ({window:,}-step window, which confirms only crossings before step "
               f"{max(s.steps for s in rows.values()) - window:,} in these runs): {held.evidence}")
    return Verdict("with batch-norm, meta-training less often gets stuck at the beginning", "§5.2",
                   "prereg.fewer_events: runs that have not left the plateau by the end of the grid's runs "
                   "(analysis.plateau_end, the census rule), with BN against without, over all 4 (|m|, lr) "
                   "pairs; Fisher's exact test, one-sided at 0.05 (partly: fewer, not significant) "
                   "(meta-training dynamics: decided on the plateau too)",
                   ev, d.outcome, partly_rule=d.rule,
                   steps=max(s.steps for s in rows.values()), seeds=_seeds([(s,) for s in rows.values()]),
                   interval=f"Fisher p = {d.p:.3g}",
                   post_hoc=f"{MEND_COMMIT}: a claim added to the ledger after the grid's data was seen")


# Long runs (python -m mplp.longruns <group>): the decisive comparisons at 30,000 steps, 3 seeds
# per cell; the same at 60,000 (chosen after seeing them: at 30,000 claims 2.2 and 2.5 were not
# reached, their arms still falling), from step 0 because the 30,000-step runs finished before
# final states were kept (retired unfinished: its checkpoints were written by the previous fast
# engine, and a run resumes only on the engine that started it); the pre-registered grid at
# the thesis' 120,000 steps, 5 seeds per cell, in the plan's order: the thesis' best cell first
# (its claim needs that cell only), then the rest of |m| = 8, then |m| = 1.
DECISIVE_S, DECISIVE_LONGER_S = 30_000, 60_000
GRID_ORDER = (Cell(8, True, True), Cell(8, False, True), Cell(8, True, False), Cell(8, False, False),
              Cell(1, True, True), Cell(1, False, True), Cell(1, True, False), Cell(1, False, False))


def thesis_grid() -> list[list[ExperimentConfig]]:
    """§5.2's 8 cells at 120,000 outer steps, seeds ``PREREG_SEEDS``, one population per cell (``GRID_ORDER``)."""
    base = base_config(THESIS_S, 300, 20, adam_bias_correction=False)
    return [[cell_config(base, cell, s) for s in PREREG_SEEDS] for cell in GRID_ORDER]


def plan(p: dict) -> list[list[ExperimentConfig]]:
    """The training populations the study needs with the profile values ``p``."""
    base = base_config(p["S"], p["validation_every"], p["validation_runs"], p.get("adam_bias_correction", False))
    pops = list(grid_configs(base, p["n_seeds"]).values())
    if p.get("long_S"):
        pops.append([long_config(p["long_S"], p["long_validation_every"], p.get("adam_bias_correction", False))])
    if p.get("decisive_S"):
        pops += list(decisive_configs(p["decisive_S"], p["validation_every"], p["validation_runs"]).values())
    return pops


def run_groups(st: AblationStudy) -> dict[str, list[RunResult]]:
    """The study's meta-training runs, grouped as the chapter shows them."""
    groups = {c.label: rs for c, rs in st.runs.items()}
    if st.long_run is not None:
        groups["longer run, |m|=8, BN on, lr learned"] = [st.long_run]
    for c, rs in (st.decisive or {}).items():
        groups[f"decisive, {c.label}"] = rs
    return groups


RECORD = register(Chapter(
    "ablation", "8 cells x 5 seeds x 120,000 outer steps (§5.2)", ("thesis §5.2, Table 4", "thesis Fig. 8"),
    THESIS_S, study, plan,
    (Group("ablation", lambda: list(decisive_configs(DECISIVE_S).values())),
     Group("ablation-60k", lambda: list(decisive_configs(DECISIVE_LONGER_S).values()), chosen_after=DECISIVE_S),
     Group("grid-thesis", thesis_grid)),
    run_groups))
