"""The longer runs that decide claims, resumable across sessions.

Each group is one population of stored runs with the released code's outer Adam; running
a group again continues every run from its checkpoint (``checkpoint.pt`` and its record
``checkpoint.json`` are committed with the partial curves at the end of a session, so a fresh clone resumes too).  Chapters read
the runs once they are complete.

    python -m mplp.longruns mnist       # §5.3: batch-entropy term on / off, seeds 0-1, 20,000 steps
    python -m mplp.longruns mnist-40k   # §5.3: the same four runs continued to 40,000 steps
    python -m mplp.longruns ablation    # §5.2: |m| = 8 with / without BN, |m| = 1 with BN, 3 seeds, 30,000 steps
    python -m mplp.longruns ablation-60k    # §5.2: the same nine runs to 60,000 steps, from step 0 (retired)
    python -m mplp.longruns sinewave    # §5.1: Table 3, the text's setting, seeds 0-2, 150,000 steps
    python -m mplp.longruns sinewave-300k     # §5.1: the three text-setting runs continued to Table 3's 300,000
    python -m mplp.longruns sinewave-script   # §5.1: the released script's setting, seed 0, 100,000 steps
    python -m mplp.longruns learned-optimizers   # chapter 6's cpu profile: 3 seeds x 4 optimizers x 2 tasks
    python -m mplp.longruns status      # steps done per run

The thesis-budget runs of the pre-registered plan (``book/preregistration.md``), seeds
``PREREG_SEEDS``, the thesis' own outer steps, in the plan's order:

    python -m mplp.longruns tranche1    # §5.1 sinewave (5 x 300,000), then §5.2's 8 cells (5 x 120,000 each)
    python -m mplp.longruns tranche2    # §5.3 MNIST, term off and on (5 + 5 x 150,000)
    python -m mplp.longruns thesis      # tranche 1, then tranche 2: what a worker runs
    python -m mplp.longruns tranche3    # then chapter 4's Figure 4 problem per seed (PM.1-PM.3), one core

Start one such worker per core: each takes the next population in order that is neither
complete nor held by another worker, so two workers share the queue (of any group).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np

from mplp import chapters as _chapters  # noqa: F401  (every chapter registers its groups)
from mplp import paths, sweep
from mplp.chapters import registry
from mplp.chapters.ablation import GRID_ORDER  # noqa: F401  (named by book/preregistration.md)
from mplp.chapters.registry import PREREG_SEEDS  # noqa: F401  (named by book/preregistration.md)
from mplp.core.config import ExperimentConfig
from mplp.meta.loop import train_population
from mplp.store import RunLockedError, RunResult, committed_root, load_run, run_dir
# every chapter's groups, and the work queues of the pre-registered runs in the plan's order: a
# worker on a queue skips a population that another worker holds
GROUPS = {name: g.populations for name, g in registry.groups().items()}
QUEUES = {"tranche1": ("sinewave-thesis", "grid-thesis"), "tranche2": ("mnist-thesis",),
          "thesis": ("sinewave-thesis", "grid-thesis", "mnist-thesis")}
for _queue, _names in QUEUES.items():
    GROUPS[_queue] = (lambda names: lambda: [pop for n in names for pop in GROUPS[n]()])(_names)


def extend_sources(group: str, cfgs: list[ExperimentConfig], root) -> list | None:
    """Per config of ``group``, the directory of the shorter finished run it continues (None
    for groups that start at step 0)."""
    g = registry.groups().get(group)
    S = g.extends if g is not None else None
    if S is None:
        return None
    return [run_dir(root, c.replace(**{"meta.S": S})) for c in cfgs]


@dataclass
class GroupProgress:
    """The plan's runs of one group as far as they got (``book/preregistration.md``):
    ``planned`` configs per population, ``populations`` the stored runs ([] for one not
    started).  A chapter shows them and decides nothing from them until all are finished."""

    group: str
    planned: list[list[ExperimentConfig]]
    populations: list[list[RunResult]]

    @property
    def runs(self) -> list[RunResult]:
        return [r for pop in self.populations for r in pop]

    def curves(self):
        """Per started population: (its first config, validation steps ``(V,)``, losses ``(n, V)``),
        cut to the validations every run has (runs of a population are written one after another,
        so a live read can catch one a validation ahead); a diverged validation counts as inf."""
        for pop in self.populations:
            if not pop:
                continue
            n = min(len(r.validation["step"]) for r in pop)
            L = np.stack([np.asarray(r.validation["val_loss"][:n], dtype=float) for r in pop])
            yield pop[0].config, np.asarray(pop[0].validation["step"][:n]), np.where(np.isnan(L), np.inf, L)

    @property
    def complete(self) -> bool:
        return all(pop and all(r.finished for r in pop) for pop in self.populations)

    def status(self) -> str:
        """Where the group stands, in words, for a chapter's text."""
        n = sum(len(p) for p in self.planned)
        S = self.planned[0][0].meta.S
        done = sum(int(r.meta.get("steps_done", 0)) for r in self.runs)
        if not self.runs:
            return f"not started (0 of {n} runs; {S:,} outer steps each)"
        started = sorted({int(r.meta.get("steps_done", 0)) for r in self.runs})
        reach = f"{started[0]:,}" if len(started) == 1 else f"{started[0]:,} to {started[-1]:,}"
        return (f"{'complete' if self.complete else 'in progress'}: {len(self.runs)} of {n} runs started, at "
                f"{reach} of {S:,} outer steps ({done / (n * S):.1%} of the group's {n * S:,})")


def progress(group: str, root=None) -> GroupProgress:
    """``GroupProgress`` of ``group`` read from ``root`` (the results store; nothing is trained)."""
    if root is None:        # the long runs train into the committed results; an ad-hoc run's store is elsewhere
        root = committed_root() if paths.results_moved() else paths.results_root()
    planned = GROUPS[group]()
    pops = []
    for cfgs in planned:
        try:
            pops.append([load_run(run_dir(root, c)) for c in cfgs])
        except FileNotFoundError:
            pops.append([])
    return GroupProgress(group, planned, pops)


def status(root=None) -> list[tuple[str, sweep.RunStatus]]:
    """(group, run status) per run of every group, read from its files (``sweep.status``)."""
    root = root if root is not None else committed_root()
    return [(name, st) for name, groups in GROUPS.items() if name not in QUEUES for st in sweep.status(groups(), root)]


def _steps_done(cfgs: list[ExperimentConfig], root) -> int:
    """Outer steps the stored runs of one population reached (0 if none was written)."""
    try:
        return min(int(load_run(run_dir(root, c)).meta.get("steps_done", 0)) for c in cfgs)
    except FileNotFoundError:
        return 0


def tranche3(root=None) -> int:
    """Tranche 3 of the plan: chapter 4's Figure 4 problem in its ``cpu`` setting, seeds
    ``PREREG_SEEDS``, computed and stored once tranches 1 and 2 are complete (the plan's order)."""
    waiting = [g for g in QUEUES["thesis"] if not progress(g, root).complete]
    if waiting:
        print(f"tranche 3 waits for tranches 1 and 2 (the plan's order): {', '.join(waiting)} not complete",
              file=sys.stderr)
        return 2
    from mplp.chapters import truncation
    from mplp.meta.source import Store

    fig4, truncations = truncation.plan_setting(Store(root if root is not None else paths.results_root()))
    for seed, r in zip(PREREG_SEEDS, truncation.tranche3(fig4, truncations)):
        print(f"seed {seed}: {r}", flush=True)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mplp.longruns", description=__doc__.splitlines()[0])
    p.add_argument("group", choices=(*GROUPS, "tranche3", "status"))
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: two groups share 2 cores)")
    args = p.parse_args(argv)
    if args.group == "status":
        for name, r in status():
            print(f"{name:15s} {r.state:8s} {r.steps_done:>7,}/{r.steps_total:,} {r.wall_time_s / 3600:5.2f} h  {r.run}")
        return 0
    import torch

    torch.set_num_threads(args.threads)
    if args.group == "tranche3":
        return tranche3()
    root = paths.results_root()
    for cfgs in GROUPS[args.group]():
        try:
            runs = train_population(cfgs, out_root=root, resume=True, progress=True,
                                    extend_from=extend_sources(args.group, cfgs, root))
        except RunLockedError as e:                 # workers share a group's queue
            print(f"skipped (another worker holds it): {e}", flush=True)
            continue
        except KeyboardInterrupt:                   # the loop checkpointed at a step boundary
            print(f"interrupted at step {_steps_done(cfgs, root):,}: continue from the last checkpoint with "
                  f"python -m mplp.longruns {args.group}", file=sys.stderr, flush=True)
            return 130
        for r in runs:
            print(f"{r.path}: {r.meta['status']}, {r.meta['steps_done']} steps, "
                  f"validation {r.validation['val_loss'][0]:.4g} -> {r.validation['val_loss'][-1]:.4g}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
