"""One record per chapter: what the report, the sweeps and the long runs need to know of it.

Each chapter module registers its ``Chapter`` when it is imported; importing ``mplp.chapters``
imports every chapter module, so the registry is whole.  Adding a chapter means adding its
module (with its record), its notebook ``book/NN_name.ipynb`` and its profiles
``params/name/{ci,cpu,paper}.yaml``; nothing else lists chapters.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

from mplp import paths
from mplp.core.config import ExperimentConfig

Populations = list[list[ExperimentConfig]]

# The seeds of the pre-registered thesis-budget runs (book/preregistration.md): never run before here.
PREREG_SEEDS = (100, 101, 102, 103, 104)


@dataclass(frozen=True)
class Group:
    """Runs trained outside the notebooks, resumable across sessions, by ``python -m mplp.longruns
    <name>``: ``populations()`` lists them, one training population per list."""

    name: str
    populations: Callable[[], Populations]
    chosen_after: int | None = None    # S of the shorter runs of its configs seen before it was chosen (post hoc)
    extends: int | None = None         # its runs continue the finished runs of their configs at this S


@dataclass(frozen=True)
class Chapter:
    """A chapter as the library knows it.  ``study(**profile values, store=...)`` computes what
    the notebook shows and has ``.verdicts()`` (None: a chapter without claims of its own);
    ``plan(profile values)`` lists the training populations that study needs (None: it trains
    nothing worth a sweep); ``run_groups(study)`` its runs as the chapter groups them."""

    name: str
    thesis_budget: str                                  # what the paper spent
    sources: tuple[str, str] | None = None              # (what it reproduces, which figures)
    thesis_steps: int = 0                               # outer steps per run in the paper (0: none)
    study: Callable[..., Any] | None = None
    plan: Callable[[dict], Populations] | None = None
    groups: tuple[Group, ...] = ()
    run_groups: Callable[[Any], dict] | None = None


_RECORDS: dict[str, Chapter] = {}


def register(record: Chapter) -> Chapter:
    """Add a chapter's record (once per chapter module, when it is imported)."""
    _RECORDS[record.name] = record
    return record


def chapters() -> list[Chapter]:
    """Every registered chapter, in book order."""
    order = paths.chapters()
    return sorted(_RECORDS.values(), key=lambda c: order.index(c.name) if c.name in order else len(order))


def chapter(name: str) -> Chapter:
    if name not in _RECORDS:
        raise ValueError(f"unknown chapter {name!r}; chapters: {', '.join(c.name for c in chapters())}")
    return _RECORDS[name]


def groups() -> dict[str, Group]:
    """Every chapter's long-run groups by name, in book order."""
    return {g.name: g for c in chapters() for g in c.groups}


def group_of(cfgs: list[ExperimentConfig]) -> str | None:
    """The first group that holds every config of ``cfgs`` (None: no group does)."""
    want = {c.hash() for c in cfgs}
    return next((name for name, hashes in _group_hashes(tuple(groups())).items() if want <= hashes), None)


@functools.lru_cache(maxsize=4)
def _group_hashes(names: tuple[str, ...]) -> dict[str, frozenset[str]]:
    """The config hashes of each group, built once (groups are fixed by the code)."""
    return {n: frozenset(c.hash() for pop in groups()[n].populations() for c in pop) for n in names}


def chosen_after(cfgs: list[ExperimentConfig]) -> int | None:
    """The S of the shorter runs that were seen before the group holding ``cfgs`` was chosen
    (None: the group was planned before any of its runs were seen)."""
    name = group_of(cfgs)
    return groups()[name].chosen_after if name is not None else None


def how_to_train(cfgs: list[ExperimentConfig]) -> str:
    """The command that trains ``cfgs``, for the message of a chapter that reads them before they exist."""
    name = group_of(cfgs)
    if name is None:
        return "no group of python -m mplp.longruns holds these configs; train them with mplp train"
    return f"python -m mplp.longruns {name} (resumable, several sessions on 2 CPU cores)"
