"""Claims of the thesis turned into tests on stored results (the claims ledger).

Each chapter's library code returns its verdicts as ``Verdict`` rows, computed from
its runs, never typed by hand; the report chapter collects them.
"""

from __future__ import annotations

from dataclasses import dataclass

OUTCOMES = ("yes", "partly", "no", "undecided")
LABELS = {"yes": "reproduced", "partly": "partly", "no": "not reproduced", "undecided": "not decidable at this budget"}


@dataclass
class Verdict:
    """One claim, the measurable test used here, our numbers and the outcome.

    holds: "yes" (reproduced), "partly", "no" (not reproduced) or "undecided" (not
    decidable at this budget); where: the thesis section that makes the claim.
    """

    claim: str
    where: str
    test: str
    evidence: str
    holds: str

    def __post_init__(self):
        if self.holds not in OUTCOMES:
            raise ValueError(f"verdict {self.holds!r} is not one of {OUTCOMES}")
