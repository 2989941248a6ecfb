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
from .claims import Verdict
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
class Report:
    """The ledger, the cost table and, per chapter whose results are not stored under any
    of the asked profiles, why (``missing``)."""

    ledger: list[LedgerRow]
    costs: list[CostRow]
    missing: dict[str, str]


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
    ledger, costs, missing = [], [], {}
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
            break
        else:
            missing[chapter] = "; ".join(reasons)
    return Report(ledger, costs, missing)
