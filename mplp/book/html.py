"""The claims as HTML that wraps in the page column: the report's ledger and each chapter's
verdicts (colour-coded labels, the test and the numbers folded out under each claim)."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from mplp import paths
from mplp.claims.verdicts import LABELS, Verdict, describe

# Colours of the ledger's labels (background, text): decided outcomes in strong colours,
# "not reached" and "trivially true" (not counted) in greys
LABEL_COLOURS = {"yes": ("#1b7837", "#ffffff"), "partly": ("#f1a340", "#000000"), "no": ("#b2182b", "#ffffff"),
                 "not_reached": ("#d9d9d9", "#000000"), "trivial": ("#f0f0f0", "#555555"),
                 "undecided": ("#d9d9d9", "#000000")}


def evidence_href(chapter: str) -> str:
    """Where a chapter's verdicts are shown: its page and the ``(<chapter>-claims)=`` target
    before its claims section (pages sit side by side in ``book/``)."""
    return f"{paths.number(chapter):02d}_{chapter}.html#{chapter}-claims"


def _badge(v: Verdict) -> str:
    bg, fg = LABEL_COLOURS[v.holds]
    return (f'<span style="background:{bg};color:{fg};padding:1px 6px;border-radius:3px;'
            f'white-space:nowrap;font-weight:600">{escape(v.short_label)}</span>')


def ledger_html(ledger) -> str:
    """The ledger as an HTML table that fits the page column: the claim (linked to the
    chapter section with its evidence) and a colour-coded verdict per row; the test, the
    numbers and any post-hoc note fold out under the claim."""
    rows = []
    for k, r in enumerate(ledger, 1):
        v = r.verdict
        badge = _badge(v)
        extra = escape(v.partly_rule) if v.holds == "partly" else ""
        if v.test_outcome != v.holds:
            extra += (" " if extra else "") + f"(the test alone: {escape(LABELS[v.test_outcome])})"
        if v.post_hoc:
            extra += '<br><em>post hoc</em>'
        extra += f'<br><span style="color:#666">{escape(v.stage)}</span>'
        runs = "; ".join(x for x in (v.seeds, v.interval) if x)
        details = (f"<details><summary>test and numbers</summary><p><b>Test.</b> {escape(v.test)}</p>"
                   f"<p><b>Ours.</b> {escape(v.evidence)}</p>"
                   + (f"<p><b>Runs and statistics.</b> {escape(runs)}</p>" if runs else "")
                   + (f"<p><b>Post hoc.</b> {escape(v.post_hoc)}</p>" if v.post_hoc else "") + "</details>")
        chapter_no = paths.number(r.chapter)
        rows.append(f'<tr><td style="vertical-align:top">{k}</td><td style="vertical-align:top">'
                    f'<a href="{evidence_href(r.chapter)}">{escape(v.claim)}</a> '
                    f'<span style="color:#666">(ch. {chapter_no}, {escape(v.where)}; {escape(r.profile)})</span>'
                    f"{details}</td><td style=\"vertical-align:top\">{badge}<br>"
                    f'<span style="font-size:85%">{extra}</span></td></tr>')
    return ('<table class="mplp-ledger" style="width:100%;font-size:90%;table-layout:fixed">'
            '<colgroup><col style="width:2.2em"><col><col style="width:34%"></colgroup>'
            "<thead><tr><th>#</th><th>claim (link: its evidence)</th><th>verdict</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")



@dataclass
class VerdictCards:
    """A chapter's verdicts for display: HTML cards on the page; as text (what nbval checks)
    exactly ``describe``'s lines."""

    verdicts: list[Verdict]

    def __repr__(self) -> str:
        return "\n".join(describe(v, k) for k, v in enumerate(self.verdicts, 1))

    def _repr_html_(self) -> str:
        cards = []
        for k, v in enumerate(self.verdicts, 1):
            runs = "; ".join(x for x in (v.seeds, v.interval) if x)
            notes = [f"<b>Test.</b> {escape(v.test)}", f"<b>Ours.</b> {escape(v.evidence)}"]
            if runs:
                notes.append(f"<b>{escape(v.stage.capitalize())}.</b> {escape(runs)}")
            if v.test_outcome != v.holds:
                notes.append(f"<b>The test alone:</b> {escape(LABELS[v.test_outcome])} (the policy decides: "
                             f"{escape(LABELS[v.holds])})")
            if v.post_hoc:
                notes.append(f"<b>Post hoc.</b> {escape(v.post_hoc)}")
            cards.append(f'<div style="margin:0 0 0.9em 0"><p style="margin:0 0 0.2em 0">{k}. {escape(v.claim)} '
                         f'<span style="color:#666">({escape(v.where)})</span> {_badge(v)}</p>'
                         + "".join(f'<p style="margin:0 0 0.15em 1.2em;font-size:90%">{n}</p>' for n in notes)
                         + "</div>")
        return '<div class="mplp-verdicts" style="overflow-wrap:anywhere">' + "".join(cards) + "</div>"
