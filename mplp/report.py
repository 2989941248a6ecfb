"""The reproducibility report: claims ledger and cost table, from stored results only.

Every chapter's library has a ``study(**profile parameters, store=...)`` that assembles
the chapter from its results and a ``verdicts()`` on it; the report calls them with a
read-only ``results.Store`` on the committed results, so the ledger's verdicts are the
chapters' own, computed by tested code, never typed by hand, and nothing is recomputed.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

from . import ablation, equivalence, mnist_be, sinewave, truncation
from . import results as R
from .analysis import plateau_end
from .claims import KINDS, Verdict, tally
from .runner import load_profile

STUDIES = {"sgd": equivalence.study, "sinewave": sinewave.study, "ablation": ablation.study,
           "mnist": mnist_be.study, "truncation": truncation.study}

# What the papers spent: outer steps (runs x steps each); the thesis gives no wall times
# (§6: "a few hours" before one knows whether a run trains at all).
THESIS_BUDGET = {
    "sgd": "no meta-training (a check of Table 2)",
    "sinewave": "1 run x 300,000 outer steps (Table 3)",
    "ablation": "8 cells x 5 seeds x 120,000 outer steps (§5.2)",
    "mnist": "(5 + 5) runs x 150,000 outer steps (Table 5)",
    "truncation": "Metz et al.: 10,000 inner steps per inner problem (Fig. 4)",
    "deviations": "none: the thesis runs one choice",
}


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


# outer steps per run in the thesis (chapter 4's MPLP runs: §5.2's setting)
THESIS_STEPS = {"sinewave": 300_000, "ablation": 120_000, "mnist": 150_000, "truncation": 120_000}


def run_groups(chapter: str, st) -> dict[str, list[R.RunResult]]:
    """A chapter study's meta-training runs, grouped as the chapter shows them."""
    if chapter == "sinewave":
        return {"Table 3 run": [st.run]}
    if chapter == "ablation":
        groups = {c.label: rs for c, rs in st.runs.items()}
        if st.long_run is not None:
            groups["longer run, |m|=8, BN on, lr learned"] = [st.long_run]
        return groups
    if chapter == "mnist":
        return {f"batch-entropy term {'on' if be else 'off'}": rs for be, rs in st.runs.items()}
    if chapter == "truncation":
        return {f"MPLP with {k}": [r] for k, r in st.mplp_runs.items()}
    return {}


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

    def tally(self) -> dict[str, dict[str, int]]:
        """Outcome counts per kind of claim (thesis, Metz et al., implementation checks)."""
        return tally([r.verdict for r in self.ledger])

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
    ``results.MissingResultError`` naming the first missing result."""
    if chapter not in STUDIES:
        raise ValueError(f"unknown chapter {chapter!r}; chapters with claims: {', '.join(STUDIES)}")
    store = R.Store(root if root is not None else R.committed_root(), read_only=True)
    return STUDIES[chapter](**study_parameters(chapter, profile), store=store), store


def cost_row(chapter: str, profile: str, records: list[R.Record]) -> CostRow:
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
            except R.MissingResultError as e:
                reasons.append(f"{profile}: {e}")
                continue
            ledger += [LedgerRow(chapter, profile, v) for v in st.verdicts()]
            costs.append(cost_row(chapter, profile, store.records))
            cens += census(chapter, profile, st)
            break
        else:
            missing[chapter] = "; ".join(reasons)
    return Report(ledger, costs, missing, cens)
