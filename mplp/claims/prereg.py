"""The pre-registered tests (``book/preregistration.md``): one function per kind of claim,
fed the per-seed quantities of the thesis-budget runs, unchanged once a decisive run starts.

Every function takes plain numbers (one value per seed, from ``analysis.plateau_exit``,
``final_level``, ``log_mean_loss``, ``spike_fraction``, ...) and returns a ``Decision``:
the outcome before the policy (``claims.verdicts.decide`` applies rules 1-3 afterwards), the p-value
and the bootstrap interval it rests on, and the numbers in words.  One-sided tests at
``stats.ALPHA``; "every configuration" claims need every stratum significant on its own
(an intersection-union test: no correction for the number of strata is needed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mplp.claims import stats
from mplp.claims.analysis import nan_as_worst
from mplp.claims.stats import ALPHA, Interval


@dataclass(frozen=True)
class Decision:
    """A pre-registered test's answer: ``outcome`` in ("yes", "partly", "no", "undecided"),
    ``rule`` the condition that made a "partly", ``p`` the test's one-sided p (None: no test),
    ``interval`` the bootstrap interval of the quantity compared, ``evidence`` in words,
    ``post_hoc`` the plan's amendment that changed how this answer was computed ("" if none)."""

    outcome: str
    evidence: str
    p: float | None = None
    interval: Interval | None = None
    rule: str = ""
    post_hoc: str = ""


def _fmt(values) -> str:
    return ", ".join("never" if v is None else (stats.number(v) if abs(v) >= 1000 else f"{v:.4g}") for v in values)


def _censor(exits, S: int) -> np.ndarray:
    """Plateau exits with "never" (None) counted as the run's full length ``S`` (ranks: last)."""
    return np.array([S if e is None else e for e in exits], dtype=float)


def exit_in_window(exits: list[int | None], S: int, lo: int, hi: int) -> Decision:
    """"The flat phase ends around X": the seeds' median ``plateau_exit`` (never = ``S``) lies in
    [lo, hi] -> yes; within twice as far ([lo / 2, 2 hi]) -> partly; otherwise no."""
    x = _censor(exits, S)
    iv = stats.bootstrap_interval(x)
    med = iv.estimate
    ev = f"plateau exits {_fmt(exits)} (of {S:,} steps); median {iv}"
    if lo <= med <= hi:
        return Decision("yes", ev, interval=iv)
    if lo / 2 <= med <= 2 * hi:
        return Decision("partly", ev, interval=iv, rule=f"median exit outside [{lo:,}, {hi:,}], within 2x of it")
    return Decision("no", ev, interval=iv)


def exit_within(exits: list[int | None], S: int, limit: int, compare: list[int | None] | None = None) -> Decision:
    """"Training starts at once / early": every seed's ``plateau_exit`` is at most ``limit`` -> yes;
    otherwise, when ``compare`` (the other arm's exits) is given and the exits are earlier
    (Mann-Whitney, one-sided) -> partly; otherwise no."""
    x = _censor(exits, S)
    iv = stats.bootstrap_interval(x)
    ev = f"plateau exits {_fmt(exits)}; median {iv}; limit {limit:,}"
    if (x <= limit).all():
        return Decision("yes", ev, interval=iv)
    if compare is not None:
        p = stats.mann_whitney(x, _censor(compare, S), "less")
        ev += f"; against the other arm's {_fmt(compare)}: p = {p:.3g}"
        if p < ALPHA:
            return Decision("partly", ev, p, iv, rule=f"not every exit within {limit:,}, but earlier than the other arm")
        return Decision("no", ev, p, iv)
    return Decision("no", ev, interval=iv)


def long_and_unpredictable(exits: list[int | None], S: int, long: int, spread: float = 2.0) -> Decision:
    """"A long and unpredictable plateau": long = median ``plateau_exit`` (never = ``S``) later than
    ``long``; unpredictable = the latest exit at least ``spread`` times the earliest, or some
    seeds never leaving while others do.  Both -> yes, one -> partly, neither -> no."""
    x = _censor(exits, S)
    iv = stats.bootstrap_interval(x)
    is_long = iv.estimate > long
    left = [e for e in exits if e is not None]
    unpredictable = (0 < len(left) < len(exits)) or (len(left) == len(exits) and max(left) >= spread * max(min(left), 1))
    ev = f"plateau exits {_fmt(exits)}; median {iv} (long: > {long:,}); " \
         f"{'unpredictable' if unpredictable else 'predictable'} (spread rule: >= {spread}x, or some never while " \
         "others exit)"
    if is_long and unpredictable:
        return Decision("yes", ev, interval=iv)
    if is_long or unpredictable:
        return Decision("partly", ev, interval=iv, rule="long" if is_long else "unpredictable, not long")
    return Decision("no", ev, interval=iv)


def _against_baseline(values, baseline: float, name: str, alternative: str) -> Decision:
    x = np.asarray(values, dtype=float)
    p = stats.sign_test(x, baseline, alternative)
    iv = stats.bootstrap_ratio(x, [baseline])
    ev = f"per seed {_fmt(x)} vs {name} {baseline:.4g}; median / {name} {iv}; sign test p = {p:.3g}"
    if p < ALPHA:
        return Decision("yes", ev, p, iv)
    med = np.median(x)
    if (med < baseline) if alternative == "less" else (med > baseline):
        side = "below" if alternative == "less" else "above"
        return Decision("partly", ev, p, iv, rule=f"median {side} {name}, not significant")
    return Decision("no", ev, p, iv)


def below_baseline(values, baseline: float, name: str = "baseline") -> Decision:
    """"Better than a tuned baseline": each seed's value against the baseline's one number, exact
    sign test (one-sided, below).  p < alpha (with 5 seeds: all 5 below) -> yes; median below,
    p >= alpha -> partly; median not below -> no.  Interval: median / baseline."""
    return _against_baseline(values, baseline, name, "less")


def above_baseline(values, baseline: float, name: str = "baseline") -> Decision:
    """"Worse than a tuned baseline": ``below_baseline`` mirrored (every seed above: p = 1/32 with 5)."""
    return _against_baseline(values, baseline, name, "greater")


def within_factor(values, baseline: float, tolerance: float = 0.25, name: str = "baseline") -> Decision:
    """"About as good as a baseline": the bootstrap 95 % interval of median / baseline inside
    [1 / (1 + tol), 1 + tol] -> yes (an equivalence test); the median alone inside -> partly;
    otherwise no."""
    x = np.asarray(values, dtype=float)
    iv = stats.bootstrap_ratio(x, [baseline])
    lo, hi = 1 / (1 + tolerance), 1 + tolerance
    # 4 digits: an interval end just outside the band must not print as its edge
    ev = (f"per seed {_fmt(x)} vs {name}{'' if name == f'{baseline:.4g}' else f' {baseline:.4g}'}; median / {name} "
          f"{iv.estimate:.4g} [{iv.low:.4g}, {iv.high:.4g}]; band [{lo:.4g}, {hi:.4g}]")
    if lo <= iv.low and iv.high <= hi:
        return Decision("yes", ev, interval=iv)
    if lo <= iv.estimate <= hi:
        return Decision("partly", ev, interval=iv, rule="median within the band, its interval not")
    return Decision("no", ev, interval=iv)


def shift(x, y, alternative: str = "less", names: tuple[str, str] = ("x", "y"), ratio: bool = True) -> Decision:
    """Two arms, one comparison: exact one-sided Mann-Whitney.  p < alpha -> yes; medians in the
    predicted direction only -> partly; otherwise no.  Interval: median(x) / median(y) for
    positive quantities (``ratio``), else median(x) - median(y)."""
    p = stats.mann_whitney(x, y, alternative)
    iv = stats.bootstrap_ratio(x, y) if ratio else stats.bootstrap_difference(x, y)
    mx, my = float(np.median(x)), float(np.median(y))
    ev = f"{names[0]} {_fmt(x)} vs {names[1]} {_fmt(y)}; median {'ratio' if ratio else 'difference'} {iv}; " \
         f"Mann-Whitney p = {p:.3g}"
    if p < ALPHA:
        return Decision("yes", ev, p, iv)
    if (mx < my) if alternative == "less" else (mx > my):
        return Decision("partly", ev, p, iv, rule="direction only, not significant")
    return Decision("no", ev, p, iv)


def every_stratum(pairs: dict[str, tuple], alternative: str = "less", max_ratio: float | None = None) -> Decision:
    """"In every configuration": one ``shift`` per stratum (``pairs``: stratum -> (x, y)); with
    ``max_ratio`` a stratum also needs median(x) / median(y) <= max_ratio ("much lower").
    Every stratum passing -> yes; at least one passing and every median in the predicted
    direction -> partly; otherwise no.  ``p`` is the largest stratum p (the IUT's p)."""
    parts, passed, direction, ps = [], 0, 0, []
    for name, (x, y) in pairs.items():
        d = shift(x, y, alternative)
        ratio = d.interval.estimate
        ok = d.outcome == "yes" and (max_ratio is None or ratio <= max_ratio)
        passed += ok
        direction += d.outcome in ("yes", "partly")
        ps.append(d.p)
        parts.append(f"{name}: ratio {d.interval}, p = {d.p:.3g}{' (passes)' if ok else ''}")
    ev = "; ".join(parts) + (f"; needed ratio <= {max_ratio}" if max_ratio is not None else "")
    n = len(pairs)
    if passed == n:
        return Decision("yes", ev, max(ps))
    if passed and direction == n:
        return Decision("partly", ev, max(ps), rule=f"{passed} of {n} strata pass, every median in the direction")
    return Decision("no", ev, max(ps))


def largest_in(effects: dict[str, tuple], target: str, alternative: str = "greater") -> Decision:
    """"X helps most in stratum t": per stratum (x, y) the effect median(x) - median(y) (with
    ``alternative="greater"``: x larger means helped).  ``target`` alone has the largest effect
    (an effect of inf - inf ranking last) and its own ``shift`` is significant -> yes; largest
    only -> partly; otherwise no."""
    eff = {k: float(np.median(x) - np.median(y)) for k, (x, y) in effects.items()}
    sign = 1.0 if alternative == "greater" else -1.0
    largest = _strictly_first({k: sign * v for k, v in eff.items()}, target)
    before = max(eff, key=lambda k: sign * eff[k]) == target          # the reading before A4
    amended = AMENDMENT_A4 if largest != before else ""
    d = shift(*effects[target], alternative=alternative, ratio=False)
    ev = "; ".join(f"{k}: {v:+.3g}" for k, v in eff.items()) + f"; {target}: Mann-Whitney p = {d.p:.3g}"
    if largest and d.outcome == "yes":
        return Decision("yes", ev, d.p, post_hoc=amended)
    if largest:
        return Decision("partly", ev, d.p, rule="largest effect, not significant in its stratum", post_hoc=amended)
    return Decision("no", ev, d.p, post_hoc=amended)


# The plan's amendments (book/preregistration.md, "Amendments"), as a row that one changed says it.
AMENDMENT_A1 = ("amendment A1 (2026-12-03, the plan's Amendments): a value was not finite, so the stratified "
                "test ran on mid-ranks within strata")
AMENDMENT_A2 = ("amendment A2 (2026-12-03, before the §5.3 runs started): 'or some never' in P3.1's labels reads "
                "'or some never while others exit', as its function always did")
AMENDMENT_A3 = ("amendment A3 (2026-12-03): policy rule 2 on the Adam row is its own test on the step-0 "
                "validations, which here disagrees with the median reading the code first used")
AMENDMENT_A4 = ("amendment A4 (2026-12-03, before the row was decided): this row's answer rests on policy "
                "rule 2 as A4 applies it, or on a non-finite value A4 ranks last")


def _strictly_first(score: dict[str, float], target: str) -> bool:
    """Whether ``target`` alone has the highest ``score``, NaN ranking last (amendment A4)."""
    clean = {k: (-np.inf if np.isnan(v) else v) for k, v in score.items()}
    return all(clean[target] > v for k, v in clean.items() if k != target)


def _ranked_within_strata(pairs: dict[str, tuple]) -> dict[str, tuple] | None:
    """Amendment A1: when a value is not finite (a diverged run: +inf, last), each stratum's two
    arms as mid-ranks of the stratum's pooled values; None when every value is finite."""
    arms = {k: (np.asarray(x, dtype=float), np.asarray(y, dtype=float)) for k, (x, y) in pairs.items()}
    if all(np.isfinite(x).all() and np.isfinite(y).all() for x, y in arms.values()):
        return None
    out = {}
    for k, (x, y) in arms.items():
        r = stats.midranks(nan_as_worst(np.concatenate([x, y])))         # NaN and +inf tie, last
        out[k] = (r[:len(x)], r[len(x):])
    return out


def stratified_shift(pairs: dict[str, tuple], alternative: str = "greater") -> Decision:
    """"X makes Y larger", pooled over strata: a permutation test that relabels within strata
    (``stats.stratified_permutation_test``; on mid-ranks within strata when a value is not
    finite, amendment A1).  p < alpha -> yes; the direction in a majority of strata -> partly;
    otherwise no."""
    ranked = _ranked_within_strata(pairs)
    used = ranked if ranked is not None else pairs
    p = stats.stratified_permutation_test(list(used.values()), alternative)
    sign = 1.0 if alternative == "greater" else -1.0
    agree = sum(sign * (np.mean(x) - np.mean(y)) > 1e-12 * max(abs(np.mean(x)), abs(np.mean(y)), 1e-300)
                for x, y in used.values())
    ev = "; ".join(f"{k}: {_fmt(x)} vs {_fmt(y)}" for k, (x, y) in pairs.items()) + \
         f"; stratified permutation p = {p:.3g}{' (on ranks)' if ranked is not None else ''}; " \
         f"direction in {agree} of {len(pairs)} strata"
    amended = AMENDMENT_A1 if ranked is not None else ""
    if p < ALPHA:
        return Decision("yes", ev, p, post_hoc=amended)
    if agree > len(pairs) / 2:
        return Decision("partly", ev, p, rule=f"direction in {agree} of {len(pairs)} strata, not significant",
                        post_hoc=amended)
    return Decision("no", ev, p, post_hoc=amended)


def fewer_events(events_x: int, n_x: int, events_y: int, n_y: int, names: tuple[str, str] = ("x", "y")) -> Decision:
    """"X less often gets stuck": Fisher's exact test, one-sided (x's event rate the smaller).
    p < alpha -> yes; fewer but not significant -> partly; otherwise no."""
    p = stats.fisher_exact(events_x, n_x - events_x, events_y, n_y - events_y, "less")
    ev = f"{names[0]}: {events_x} of {n_x}; {names[1]}: {events_y} of {n_y}; Fisher p = {p:.3g}"
    if p < ALPHA:
        return Decision("yes", ev, p)
    if events_x / n_x < events_y / n_y:
        return Decision("partly", ev, p, rule="fewer, not significant")
    return Decision("no", ev, p)


def every_seed(holds: list[bool | None], what: str) -> Decision:
    """A property claimed of every run: every judged run has it (and more than half the runs
    can be judged) -> yes; a majority of the judged runs -> partly; otherwise no; undecided when
    at most half the runs can be judged (None).  ``p``: the exact sign test of the count against
    chance (5 of 5: 1/32)."""
    decided = [h for h in holds if h is not None]
    if len(decided) <= len(holds) / 2:
        return Decision("undecided", f"{what}: {len(decided)} of {len(holds)} runs can be judged")
    k = sum(decided)
    p = stats.sign_test([0.0] * k + [1.0] * (len(decided) - k), 0.5, "less")
    ev = f"{what}: {k} of {len(decided)} judged runs (of {len(holds)}); sign test p = {p:.3g}"
    if k == len(decided):
        return Decision("yes", ev, p)
    if k > len(decided) / 2:
        return Decision("partly", ev, p, rule=f"{k} of {len(decided)} runs")
    return Decision("no", ev, p)


def some_run(holds: list[bool], what: str) -> Decision:
    """An existence claim ("there are still runs that ..."): at least one run has it -> yes."""
    k = sum(bool(h) for h in holds)
    return Decision("yes" if k else "no", f"{what}: {k} of {len(holds)} runs")


def lowest_of(cells: dict[str, list], target: str) -> Decision:
    """"Configuration t performs best": ``target`` alone has the lowest median (e.g. ``final_level``)
    of all ``cells`` (a tie is not lowest) and is below the runner-up by a one-sided Mann-Whitney
    -> yes; lowest median only -> partly; otherwise no."""
    med = {k: float(np.median(nan_as_worst(v))) for k, v in cells.items()}
    order = sorted(med, key=med.get)
    ev = "; ".join(f"{k}: {med[k]:.4g}" for k in order)
    lowest = _strictly_first({k: -v for k, v in med.items()}, target)
    amended = AMENDMENT_A4 if lowest != (order[0] == target) else ""
    if not lowest:
        return Decision("no", ev + f"; lowest: {order[0]}{' (a tie)' if order[0] == target else ''}",
                        post_hoc=amended)
    d = shift(cells[target], cells[order[1]], "less")
    ev += f"; against the runner-up {order[1]}: Mann-Whitney p = {d.p:.3g}"
    if d.outcome == "yes":
        return Decision("yes", ev, d.p)
    return Decision("partly", ev, d.p, rule="lowest median, not significantly below the runner-up")


def smallest_in(effects: dict[str, tuple], targets: list[str], alternative: str = "greater") -> Decision:
    """"The effect is minimal, if even significant, in strata ts": per stratum (x, y) the effect
    median(x) - median(y); every target's effect below every other stratum's and no target's
    ``shift`` significant -> yes; one of the two -> partly; neither -> no."""
    eff = {k: float(np.median(x) - np.median(y)) for k, (x, y) in effects.items()}
    sign = 1.0 if alternative == "greater" else -1.0
    others = [k for k in effects if k not in targets]
    smallest = all(sign * eff[t] < sign * eff[o] for t in targets for o in others)
    ps = {t: shift(*effects[t], alternative=alternative, ratio=False).p for t in targets}
    insignificant = all(p >= ALPHA for p in ps.values())
    ev = "; ".join(f"{k}: {v:+.3g}" for k, v in eff.items()) + "; " + \
         "; ".join(f"{t}: Mann-Whitney p = {p:.3g}" for t, p in ps.items())
    if smallest and insignificant:
        return Decision("yes", ev, min(ps.values()))
    if smallest or insignificant:
        return Decision("partly", ev, min(ps.values()),
                        rule="smallest, but significant" if smallest else "not significant, not the smallest")
    return Decision("no", ev, min(ps.values()))
