"""Claims of the thesis (and of Metz et al.) turned into tests on stored results: the ledger.

Each chapter's library returns its verdicts as ``Verdict`` rows, computed from its runs,
never typed by hand; the report chapter collects them.  Every row goes through one
written policy (``POLICY``, ``decide``), the same for every chapter, fixed before the
numbers are read:

1. A claim about what a *trained* MPLP achieves (its loss against a baseline, the
   functions it learns, what happens when meta-training leaves the initial plateau, the
   plateau's end) is tested only on runs that have left the plateau
   (``analysis.plateau_end``: the validation loss stays below 90 % of its start).  If
   the runs it is about have not, it is **not reached at this budget**, whatever its
   test says.  A claim about the *final* loss (after the thesis' outer steps) is also not
   reached while the runs that decide it are short of those steps and still falling:
   more than 1 % over the last quarter of the run, or more than 2 % over its last half.
2. A row whose test an *untrained* optimizer passes as well (e.g. "MPLP is worse than
   tuned Adam", where the step-0 optimizer already is) is **trivially true** and is not
   counted as a reproduction.
3. Otherwise the test decides: **reproduced**, **partly** (every "partly" carries its
   rule in the row) or **not reproduced**; **not decidable** where the data cannot
   answer for another reason, named in the evidence.
4. A test changed after its data was seen is marked **post hoc**, with the commit.
5. Seed-level spread is part of the evidence wherever a claim rests on several seeds.
6. Thesis claims, Metz et al.'s (and Vicol et al.'s), Andrychowicz et al.'s and Randazzo et
   al.'s claims, the book's own questions and its implementation checks are tallied
   separately; only decided rows (reproduced, partly, not reproduced) count.
7. Rows on the shorter runs are *exploratory*; the pre-registered tests on the thesis-budget
   runs (``book/preregistration.md``) give *confirmatory* rows, tallied apart.  Every row
   gives its seeds and, where it has one, its interval or p-value (``stats``, ``prereg``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OUTCOMES = ("yes", "partly", "no", "not_reached", "trivial", "undecided")
LABELS = {"yes": "reproduced", "partly": "partly", "no": "not reproduced",
          "not_reached": "not reached at this budget", "trivial": "trivially true (not counted)",
          "undecided": "not decidable"}
ANSWERS = {"yes": "yes", "no": "no"}      # a question of the book's own is answered, not reproduced
COUNTED = ("yes", "partly", "no")
STAGES = ("exploratory", "confirmatory")
KINDS = {"thesis": "thesis claims", "metz": "Metz et al. / Vicol et al. claims",
         "andrychowicz": "Andrychowicz et al. claims", "randazzo": "Randazzo et al. claims",
         "question": "this book's own questions (reproduced: yes, not reproduced: no)", "check": "implementation checks"}

# Rows whose test the policy changed cite its commit.
POLICY_COMMIT = "c5e5bca"            # the commit that wrote this policy and relabelled the rows
# Earlier test changes made after their data was seen.
PLATEAU_RULE_COMMIT = "8b40ac7"     # a diverged step-0 validation is not the start of the plateau
CH4_RULES_COMMIT = "7741a92"        # chapter 4: late geometric mean of the lr; three-way gradient growth
# The ledger mended by the pre-registered plan's rules (book/preregistration.md), applied evenly to
# the shorter runs after their data was seen: every row it changed says so.
MEND_COMMIT = "6b95b39"

POLICY = __doc__.split("numbers are read:", 1)[1].strip()

STILL_FALLING = (0.01, 0.02)   # rule 1: drops over the last quarter and the last half of the run


@dataclass
class Verdict:
    """One claim, the measurable test used here, our numbers and the outcome.

    holds: one of ``OUTCOMES`` (``LABELS`` names them), already through the policy
    (``decide``); where: the section that makes the claim; kind: "thesis", "metz" or
    "check"; partly_rule: when "partly" applies (required for a "partly" row);
    post_hoc: "" or "<commit>: what changed after the data was seen"; test_outcome:
    what the test alone said, before the policy (shown when the policy overrides it);
    steps: outer steps of the meta-training runs the verdict is judged on (0: none), for the
    report's cost of each claim; seeds: the runs behind the row in words ("3 seeds", "2 + 2
    seeds"); interval: the quantity's bootstrap interval or the test's p in words
    (``stats``, ``prereg``); stage: "exploratory" (the shorter runs, tests written or mended
    after their data) or "confirmatory" (the pre-registered tests on the thesis-budget runs,
    ``book/preregistration.md``).
    """

    claim: str
    where: str
    test: str
    evidence: str
    holds: str
    kind: str = "thesis"
    partly_rule: str = ""
    post_hoc: str = ""
    test_outcome: str = ""
    steps: int = 0
    seeds: str = ""
    interval: str = ""
    stage: str = "exploratory"

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"stage {self.stage!r} is not one of {STAGES}")
        if self.holds not in OUTCOMES:
            raise ValueError(f"verdict {self.holds!r} is not one of {OUTCOMES}")
        if self.kind not in KINDS:
            raise ValueError(f"kind {self.kind!r} is not one of {tuple(KINDS)}")
        if self.holds == "partly" and not self.partly_rule:
            raise ValueError(f"{self.claim!r}: a 'partly' verdict must state its rule (partly_rule)")
        if not self.test_outcome:
            self.test_outcome = self.holds

    @property
    def label(self) -> str:
        """The ledger's label: "partly (<rule>)" for a partly row; a question's "yes" or "no"."""
        return f"partly ({self.partly_rule})" if self.holds == "partly" else self.short_label

    @property
    def short_label(self) -> str:
        """The label without a partly row's rule (a badge's text)."""
        return ANSWERS.get(self.holds, LABELS[self.holds]) if self.kind == "question" else LABELS[self.holds]

    @property
    def row(self) -> str:
        """The plan's row a confirmatory verdict decides ("P1.3", the claim's prefix); "" for an exploratory one."""
        return self.claim.split(":", 1)[0] if self.stage == "confirmatory" else ""

    @property
    def counted(self) -> bool:
        return self.holds in COUNTED


def decide(test_outcome: str, *, about_trained: bool = False, reached: bool = True, trivial: bool = False) -> str:
    """The policy (rules 1-3) on one test outcome.

    about_trained: the claim is about what a trained MPLP achieves; reached: the runs it is
    about have left the plateau (and, for a final-loss claim, stopped falling or reached the
    thesis' budget); trivial: an untrained optimizer passes the test too."""
    if test_outcome not in OUTCOMES:
        raise ValueError(f"test outcome {test_outcome!r} is not one of {OUTCOMES}")
    if trivial and test_outcome in ("yes", "partly"):
        return "trivial"
    if about_trained and not reached:
        return "not_reached"
    return test_outcome


def final_loss_reached(left: bool, falling: bool, steps: int, thesis_steps: int) -> bool:
    """Rule 1 for a claim about the final loss: its runs have left the plateau, and have
    stopped falling (``still_falling``) or run the thesis' outer steps."""
    return left and (not falling or steps >= thesis_steps)


def still_falling(losses, drops: tuple[float, float] = STILL_FALLING) -> bool:
    """Rule 1's "still falling": the last validation loss is more than ``drops[0]`` below the
    one a quarter of the run earlier, or more than ``drops[1]`` below the one half of the run
    earlier (``losses`` in validation order, at least 3)."""
    n = len(losses)
    if n < 3:
        return False
    quarter, half = losses[min(int(0.75 * (n - 1)), n - 2)], losses[int(0.5 * (n - 1))]
    return bool(losses[-1] < (1 - drops[0]) * quarter or losses[-1] < (1 - drops[1]) * half)


def median_still_falling(curves) -> bool:
    """``still_falling`` of the seeds' median curve: ``curves`` are the seeds' validation
    losses (n_seeds sequences, same validation grid), cut to the shortest (as far as all got)."""
    n = min(len(c) for c in curves)
    return still_falling(np.median(np.stack([np.asarray(c[:n], dtype=float) for c in curves]), 0))


def tally(verdicts: list[Verdict], stage: str | None = None) -> dict[str, dict[str, int]]:
    """Counts per kind and outcome label (every outcome listed, zeros included), of the rows of
    ``stage`` only when given (exploratory and confirmatory rows are counted apart)."""
    rows = [v for v in verdicts if stage is None or v.stage == stage]
    return {KINDS[k]: {LABELS[o]: sum(v.kind == k and v.holds == o for v in rows) for o in OUTCOMES}
            for k in KINDS if any(v.kind == k for v in rows)}


def describe(v: Verdict, number: int | None = None, evidence: bool = True) -> str:
    """A verdict as the chapters print it: claim, label, test, our numbers, and where the
    policy overrode the test or the test was changed after its data was seen."""
    head = f"{number}. " if number is not None else ""
    lines = [f"{head}{v.claim} ({v.where}): {v.label.upper()}", f"   test: {v.test}"]
    if evidence:
        lines.append(f"   ours: {v.evidence}")
    if v.seeds or v.interval:
        lines.append(f"   {v.stage}: " + "; ".join(x for x in (v.seeds, v.interval) if x))
    if v.test_outcome != v.holds:
        lines.append(f"   the test alone: {LABELS[v.test_outcome]} (the policy decides: {LABELS[v.holds]})")
    if v.post_hoc:
        lines.append(f"   post hoc: {v.post_hoc}")
    return "\n".join(lines)
