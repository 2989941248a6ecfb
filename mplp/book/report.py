"""The reproducibility report: claims ledger and cost table, from stored results only.

Every chapter's library has a ``study(**profile parameters, store=...)`` that assembles
the chapter from its results and a ``verdicts()`` on it; the report calls them with a
read-only ``Store`` on the committed results, so the ledger's verdicts are the
chapters' own, computed by tested code, never typed by hand, and nothing is recomputed.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

from mplp import chapters as _chapters  # noqa: F401  (every chapter registers its record)
from mplp import longruns, paths, sweep
from mplp.chapters import registry
from mplp.store import MissingResultError, Record, RunResult, committed_root
from mplp.meta.source import Store
from mplp.claims.analysis import plateau_end
from mplp.claims.verdicts import LABELS, Verdict, tally
from mplp.book.html import LABEL_COLOURS, evidence_href, ledger_html  # noqa: F401  (the report's API)
from mplp.chapters.profiles import load_profile, notebook_parameters

# From the chapters' records: each chapter's study (those with claims), what the papers spent
# (outer steps, runs x steps each; the thesis gives no wall times: §6, "a few hours" before one
# knows whether a run trains at all), the paper's outer steps per run, and what it reproduces.
STUDIES = {c.name: c.study for c in registry.chapters() if c.study is not None}
THESIS_BUDGET = {c.name: c.thesis_budget for c in registry.chapters()}
THESIS_STEPS = {c.name: c.thesis_steps for c in registry.chapters()}      # 0: the chapter has no thesis run
CHAPTER_SOURCES = {c.name: c.sources for c in registry.chapters() if c.sources is not None}


@dataclass
class LedgerRow:
    """One claim with its verdict and the ``profile`` whose results decided it."""

    chapter: str
    profile: str
    verdict: Verdict


@dataclass
class CostRow:
    """What one chapter's stored results cost: ``outer_steps`` summed over its meta-training
    runs, ``wall_time_s`` summed over its results (a population's time counted once),
    ``unrecorded`` results without a recorded time, and the machines they ran on."""

    chapter: str
    profile: str
    n_results: int
    outer_steps: int
    wall_time_s: float
    unrecorded: int
    machine: str
    thesis: str


@dataclass
class CensusRow:
    """How many of a group of meta-training runs left their initial plateau
    (``analysis.plateau_end``), where, and how far they ran."""

    chapter: str
    profile: str
    group: str
    n_runs: int
    n_left: int
    ends: list[int | None]
    steps: int
    thesis_steps: int

    @property
    def fraction(self) -> float:
        return self.steps / self.thesis_steps if self.thesis_steps else float("nan")


def run_groups(chapter: str, st) -> dict[str, list[RunResult]]:
    """A chapter study's meta-training runs, grouped as the chapter shows them."""
    record = registry.chapter(chapter)
    return record.run_groups(st) if record.run_groups is not None else {}


def census(chapter: str, profile: str, st) -> list[CensusRow]:
    """The plateau census of one chapter's runs (validation curves as stored)."""
    rows = []
    for group, runs in run_groups(chapter, st).items():
        ends = [plateau_end(r.validation["step"], r.validation["val_loss"]) for r in runs]
        steps = int(max(r.validation["step"][-1] for r in runs))
        rows.append(CensusRow(chapter, profile, group, len(runs), sum(e is not None for e in ends), ends, steps,
                              THESIS_STEPS[chapter]))
    return rows


@dataclass
class Report:
    """The ledger, the cost table, the plateau census and, per chapter whose results are not
    stored under any of the asked profiles, why (``missing``)."""

    ledger: list[LedgerRow]
    costs: list[CostRow]
    missing: dict[str, str]
    census: list[CensusRow] = None

    def tally(self, stage: str | None = None) -> dict[str, dict[str, int]]:
        """Outcome counts per kind of claim (thesis, Metz et al., implementation checks), of the
        rows of ``stage`` ("exploratory" or "confirmatory") only when given."""
        return tally([r.verdict for r in self.ledger], stage)

    @property
    def runs_left(self) -> tuple[int, int]:
        """(runs that left their plateau, runs) over the census."""
        return sum(c.n_left for c in self.census), sum(c.n_runs for c in self.census)


def duration(seconds: float) -> str:
    """Wall time for the cost table: seconds, minutes or hours."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def machine_label(meta: dict) -> str:
    """"2 CPU cores (1 thread)" or the GPU's name, from a result's meta.json."""
    if meta.get("gpu"):
        return str(meta["gpu"])
    if "cpu_count" not in meta:
        return "not recorded"
    t = meta.get("torch_threads")
    return f"{meta['cpu_count']} CPU cores" + (f" ({t} thread{'s' if t != 1 else ''})" if t else "")


def study_parameters(chapter: str, profile: str) -> dict:
    """The chapter's profile values that its ``study`` takes (the rest only shape plots)."""
    values = load_profile(chapter, profile)
    names = inspect.signature(STUDIES[chapter]).parameters
    return {k: v for k, v in values.items() if k in names}


def chapter_study(chapter: str, profile: str, root: Path | None = None):
    """``(study, store)`` of one chapter from the stored results of ``profile``; raises
    ``store.MissingResultError`` naming the first missing result."""
    if chapter not in STUDIES:
        raise ValueError(f"unknown chapter {chapter!r}; chapters with claims: {', '.join(STUDIES)}")
    store = Store(root if root is not None else committed_root(), read_only=True)
    return STUDIES[chapter](**study_parameters(chapter, profile), store=store), store


def cost_row(chapter: str, profile: str, records: list[Record]) -> CostRow:
    """The cost of ``records`` (each stored result counted once)."""
    seen, steps, wall, unrecorded, machines = set(), 0, 0.0, 0, []
    for r in records:
        if r.path in seen:              # e.g. the baselines read twice
            continue
        seen.add(r.path)
        steps += r.outer_steps
        if r.wall_time_s is None:
            unrecorded += 1
        else:
            wall += r.wall_time_s
            machines.append(machine_label(r.meta))
    machine = ", ".join(dict.fromkeys(machines)) or "not recorded"
    return CostRow(chapter, profile, len(seen), steps, wall, unrecorded, machine, THESIS_BUDGET[chapter])


def build(profiles: list[str], root: Path | None = None, chapters: list[str] | None = None) -> Report:
    """The report over ``chapters`` (default: all with claims); each chapter is read from the
    first of ``profiles`` whose results are all stored."""
    if not profiles:
        raise ValueError("profiles: give at least one profile to read results from (e.g. ['cpu'])")
    ledger, costs, missing, cens = [], [], {}, []
    for chapter in chapters or list(STUDIES):
        reasons = []
        for profile in profiles:
            try:
                st, store = chapter_study(chapter, profile, root)
            except MissingResultError as e:
                reasons.append(f"{profile}: {e}")
                continue
            ledger += [LedgerRow(chapter, profile, v) for v in st.verdicts()]
            costs.append(cost_row(chapter, profile, store.records))
            cens += census(chapter, profile, st)
            break
        else:
            missing[chapter] = "; ".join(reasons)
    return Report(ledger, costs, missing, cens)


def which_profile(chapter: str, values: dict) -> str:
    """The profile of ``params/<chapter>/`` whose values are ``values`` (the notebook's
    parameters after injection), or "custom" when none is."""
    for p in paths.PROFILES:
        try:
            if load_profile(chapter, p) == values:
                return p
        except Exception:  # a missing or broken profile simply does not match
            continue
    return "custom"


@dataclass
class ChapterBox:
    """A chapter's opening box: what it reproduces, with which profile, how far its runs got
    against the thesis' outer steps, their meta-training wall time, the re-run command and
    the bottom line (its verdicts, counted by label)."""

    chapter: str
    source: str
    figures: str
    profile: str
    runs: int
    steps: list[int]
    thesis_steps: int
    wall_time_s: float
    bottom_line: str
    running: int = 0             # runs still being trained across sessions (shown as far as they got)

    @property
    def command(self) -> str:
        return f"mplp run {self.chapter} --profile {self.profile}"


def chapter_box(chapter: str, st, values: dict) -> ChapterBox:
    """The box of ``chapter`` from its study ``st`` and its parameter ``values``."""
    runs = [r for rs in run_groups(chapter, st).values() for r in rs]
    steps = sorted({int(r.meta.get("steps_done", 0)) for r in runs})
    wall = sum(float(r.meta.get("wall_time_s", 0.0)) / max(1, int(r.meta.get("population_size", 1))) for r in runs)
    vs = st.verdicts()
    counts: dict[str, int] = {}
    for v in vs:
        key = "partly" if v.holds == "partly" else v.label
        counts[key] = counts.get(key, 0) + 1
    bottom = (f"{len(vs)} claim{'s' if len(vs) != 1 else ''} tested: "
              + ", ".join(f"{n} {k}" for k, n in counts.items()) + ".")
    src, figs = CHAPTER_SOURCES[chapter]
    return ChapterBox(chapter, src, figs, which_profile(chapter, values), len(runs), steps,
                      THESIS_STEPS[chapter], wall, bottom, sum(not r.finished for r in runs))


def box_markdown(b: ChapterBox) -> str:
    """The box as a MyST admonition (rendered by ``nb_render_markdown_format: myst``)."""
    if b.runs:
        got = ", ".join(f"{s:,}" for s in b.steps)
        paper = (f"; the thesis runs {b.thesis_steps:,} ({max(b.steps) / b.thesis_steps:.1%} at most)"
                 if b.thesis_steps else "")
        budget = (f"{b.runs} meta-training run(s) of {got} outer steps{paper}; meta-training wall time "
                  f"{duration(b.wall_time_s)} on this project's 2-core CPU machine")
    else:
        budget = "no meta-training"
    return "\n".join([
        "```{admonition} This chapter at a glance", ":class: note", "",
        f"- **Reproduces:** {b.source}; {b.figures}.",
        f"- **Profile:** `{b.profile}`. **Budget:** {budget}.",
        f"- **Re-run:** `{b.command}` (see the README for the profiles' costs).",
        f"- **Bottom line:** {b.bottom_line} Labels follow the report's one verdict policy.",
        "```"] + _budget_warning(b))


def _budget_warning(b: ChapterBox) -> list[str]:
    """The budget caveat as a ``{warning}`` admonition, when the runs fall short of the thesis'."""
    if not b.runs or not b.thesis_steps or max(b.steps) >= b.thesis_steps:
        return []
    text = (f"The longest run here got {max(b.steps) / b.thesis_steps:.1%} of the thesis' {b.thesis_steps:,} outer "
            "steps per run. A claim about what a trained MPLP achieves is *not reached at this budget* while its runs "
            "have not left their initial plateau; that is not the same as *not reproduced*.")
    if b.running:
        text += (f" {b.running} of the {b.runs} runs are still training across sessions "
                 "(`python -m mplp.longruns`); they are shown as far as they got.")
    return ["", "```{warning}", text, "```"]


def chapter_box_markdown(chapter: str, st, namespace: dict) -> str:
    """The opening box of a chapter executing with the parameter values in ``namespace`` (its
    notebook's globals)."""

    values = {k: namespace[k] for k in notebook_parameters(chapter) if k in namespace}
    return box_markdown(chapter_box(chapter, st, values))


def written_for(chapter: str, namespace: dict, profile: str, text: str) -> str:
    """``text`` (an interpretation written by hand for ``profile``'s results) when the chapter
    executes with that profile; otherwise a note saying it is left out, so a re-run with
    other parameters never shows a reading of numbers it did not produce."""

    values = {k: namespace[k] for k in notebook_parameters(chapter) if k in namespace}
    if which_profile(chapter, values) == profile:
        return text
    return (f"*The reading of these results written for the committed `{profile}` profile is left out: this "
            f"execution used other parameters, and its numbers are the ones glued above.*")


def claims_with(ledger: list[LedgerRow], outcome: str, kind: str = "thesis") -> str:
    """The ledger's claims of ``kind`` labelled ``outcome``, as prose: "claim (chapter N); ..."
    ("none" if there are none), so that the report's discussion names them from the data."""
    rows = [r for r in ledger if r.verdict.kind == kind and r.verdict.holds == outcome]
    return "; ".join(f"{r.verdict.claim} (chapter {paths.number(r.chapter)})" for r in rows) or "none"


@dataclass
class RunCost:
    """What one group of a chapter's meta-training runs cost: outer steps per run against the
    thesis', and the wall time per run (a population's wall time shared by its members)."""

    chapter: str
    group: str
    n_runs: int
    steps: int
    thesis_steps: int
    wall_per_run_s: float
    running: int                 # runs not finished yet (multi-session runs)


def run_costs(profile: str, root: Path | None = None) -> list[RunCost]:
    """``RunCost`` of every run group of every chapter with meta-training, from the stored
    results of ``profile`` (read-only)."""
    import numpy as np

    out = []
    for chapter in STUDIES:
        st, _ = chapter_study(chapter, profile, root)
        for group, runs in run_groups(chapter, st).items():
            walls = [float(r.meta.get("wall_time_s", 0.0)) / max(1, int(r.meta.get("population_size", 1))) for r in runs]
            out.append(RunCost(chapter, group, len(runs), max(int(r.meta.get("steps_done", 0)) for r in runs),
                               THESIS_STEPS[chapter], float(np.median(walls)),
                               sum(not r.finished for r in runs)))
    return out


def _cell(text: str) -> str:
    """``text`` as one Markdown table cell: its pipes escaped (GFM and markdown-it both read ``\\|``)."""
    return text.replace("|", "\\|")


def costs_markdown(rows: list[RunCost], profile: str) -> str:
    """The README's table of what each profile's runs cost (``mplp costs``)."""
    lines = [f"| ch. | runs (`{profile}`) | outer steps per run / thesis' | wall time per run |", "|---|---|---|---|"]
    for c in rows:
        state = f"; {c.running} still running" if c.running else ""
        steps = (f"{c.steps:,} / {c.thesis_steps:,} ({c.steps / c.thesis_steps:.1%})" if c.thesis_steps
                 else f"{c.steps:,} (no thesis run)")
        lines.append(f"| {paths.number(c.chapter)} | {_cell(c.group)}: {c.n_runs}{state} | {steps} | "
                     f"{duration(c.wall_per_run_s)} |")
    return "\n".join(lines)


def claim_costs_markdown(ledger: list[LedgerRow]) -> str:
    """Per claim judged on meta-training runs: the outer steps of those runs against the
    thesis' (what each decision cost), with its label."""
    lines = ["| ch. | claim | outer steps run / thesis' | verdict |", "|---|---|---|---|"]
    for r in ledger:
        v = r.verdict
        if not v.steps or not THESIS_STEPS[r.chapter]:
            continue
        t = THESIS_STEPS[r.chapter]
        lines.append(f"| {paths.number(r.chapter)} | {_cell(v.claim)} | {v.steps:,} / {t:,} "
                     f"({v.steps / t:.1%}) | {LABELS[v.holds]} |")
    return "\n".join(lines)


@dataclass
class BudgetGroup:
    """How far one group of the pre-registered thesis-budget runs (``mplp.longruns``) has got:
    ``runs`` in it, ``complete`` of them, outer ``steps_done`` over ``steps_total``, the
    population-time ``wall_time_s`` (each population counted once) and its rate."""

    group: str
    runs: int
    complete: int
    steps_done: int
    steps_total: int
    wall_time_s: float

    @property
    def steps_per_hour(self) -> float:
        """Outer steps (summed over runs) per hour of the populations' wall time."""
        return self.steps_done / (self.wall_time_s / 3600) if self.wall_time_s else 0.0

    @property
    def hours_left(self) -> float | None:
        """Hours of one worker's training the group still needs at ``steps_per_hour`` (None
        before it has a rate; two workers on different populations halve it)."""
        return (self.steps_total - self.steps_done) / self.steps_per_hour if self.steps_per_hour else None


BUDGET_GROUPS = ("sinewave-thesis", "grid-thesis", "mnist-thesis")


def thesis_budget(root: Path | None = None) -> list[BudgetGroup]:
    """``BudgetGroup`` per group of the plan (``book/preregistration.md``), read from the stored
    runs' own files; the runs of a population train together, so its wall time counts once."""
    root = root if root is not None else committed_root()
    out = []
    for name in BUDGET_GROUPS:
        pops = [sweep.status([cfgs], root) for cfgs in longruns.GROUPS[name]()]
        runs = [st for pop in pops for st in pop]
        out.append(BudgetGroup(name, len(runs), sum(st.state in ("complete", "diverged") for st in runs),
                               sum(st.steps_done for st in runs), sum(st.steps_total for st in runs),
                               sum(max(st.wall_time_s for st in pop) for pop in pops)))
    return out
