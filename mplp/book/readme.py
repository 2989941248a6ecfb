"""The generated blocks of README.md and CONTRIBUTING.md, written from the committed results
(``mplp costs --profile cpu --write``) and checked against them by the tests: the ledger's
bottom line and its figure in the README, the cost of every run in CONTRIBUTING."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from mplp import paths
from mplp.book.html import LABEL_COLOURS
from mplp.book.report import Report, build, costs_markdown, run_costs
from mplp.claims.verdicts import LABELS, OUTCOMES

FIGURE = Path("book") / "images" / "ledger.png"     # relative to the repository root


def bottom_line_markdown(rep: Report) -> str:
    """The ledger's tally as the README shows it: claims per kind and stage, one column per label."""
    lines = ["| claims | " + " | ".join(LABELS[o] for o in OUTCOMES) + " |", "|---" * (len(OUTCOMES) + 1) + "|"]
    for stage in ("exploratory", "confirmatory"):
        for kind, counts in rep.tally(stage).items():
            lines.append(f"| {kind} ({stage}) | " + " | ".join(str(counts[LABELS[o]]) for o in OUTCOMES) + " |")
    return "\n".join(lines)


def ledger_figure(rep: Report):
    """The ledger at a glance: claims per chapter and label (the report's figure, the README's)."""
    from mplp.book.plotting import ledger_heatmap

    chapters = list(dict.fromkeys(r.chapter for r in rep.ledger))
    counts = np.array([[sum(r.chapter == ch and r.verdict.holds == o for r in rep.ledger) for o in OUTCOMES]
                       for ch in chapters])
    shown = [j for j in range(len(OUTCOMES)) if counts[:, j].any()]
    names = [LABELS[OUTCOMES[j]].replace(" (", "\n(").replace(" at this", "\nat this") for j in shown]
    return ledger_heatmap([f"{paths.number(ch)}. {ch}" for ch in chapters], names, counts[:, shown],
                          [LABEL_COLOURS[OUTCOMES[j]][0] for j in shown])


def blocks(profile: str, rep: Report | None = None) -> dict[str, dict[str, str]]:
    """``{file: {marker: generated text}}`` for ``profile``'s committed results (``rep``: its report)."""
    rep = rep if rep is not None else build([profile])
    return {"README.md": {f"mplp ledger --profile {profile}": bottom_line_markdown(rep)},
            "CONTRIBUTING.md": {f"mplp costs --profile {profile}": costs_markdown(run_costs(profile), profile)}}


def _end(marker: str) -> str:
    return f"<!-- end {marker.split(' --')[0]} -->"


def block_pattern(marker: str) -> re.Pattern:
    return re.compile(rf"<!-- {re.escape(marker)} -->\n(.*?){re.escape(_end(marker))}", re.S)


def written(file: str, marker: str) -> str | None:
    """The text now between ``marker``'s comments in ``file`` (None: no such block)."""
    m = block_pattern(marker).search((paths.repo_root() / file).read_text())
    return m.group(1).strip() if m else None


def write(profile: str) -> list[Path]:
    """Write every generated block, and the ledger figure, from the committed results."""
    import matplotlib

    matplotlib.use("Agg")
    rep, out = build([profile]), []
    for file, parts in blocks(profile, rep).items():
        path = paths.repo_root() / file
        text = path.read_text()
        for marker, body in parts.items():
            pattern = block_pattern(marker)
            if not pattern.search(text):
                raise ValueError(f"{path} has no block <!-- {marker} --> ... to write into")
            text = pattern.sub(lambda _: f"<!-- {marker} -->\n{body}\n{_end(marker)}", text)
        path.write_text(text)
        out.append(path)
    figure = paths.repo_root() / FIGURE
    figure.parent.mkdir(parents=True, exist_ok=True)
    ledger_figure(rep).savefig(figure, dpi=120)
    return out + [figure]
