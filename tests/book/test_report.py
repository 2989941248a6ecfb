"""The report: the ledger over the committed results, the cost table and missing results."""

from pathlib import Path

import pytest

from mplp.book import report
from mplp.store import Record
from mplp.claims.verdicts import OUTCOMES

# The claims the ledger must cover, by a word of each claim.
REQUIRED = {
    "sgd": ["is SGD"],
    "sinewave": ["flat phase", "better than learning-rate-tuned SGD", "worse than learning-rate-tuned Adam",
                 "resemble SGD"],
    "ablation": ["batch-norm converges faster", "|m| = 8", "learned lr helps", "less stable", "best configuration"],
    "mnist": ["plateau", "batch entropy rises", "no plateau", "near zero", "as fast as tuned Adam"],
    "truncation": ["bias the learned lr", "PES"],
}


def test_ledger_of_the_committed_results_has_every_claim():
    rep = report.build(["cpu"])
    assert rep.missing == {}
    for chapter, words in REQUIRED.items():
        claims = [r.verdict.claim for r in rep.ledger if r.chapter == chapter]
        for w in words:
            assert any(w in c for c in claims), f"{chapter}: no claim about {w!r} in {claims}"
    assert all(r.verdict.holds in OUTCOMES and r.profile == "cpu" for r in rep.ledger)
    assert all(r.verdict.evidence and r.verdict.test for r in rep.ledger)
    costs = {c.chapter: c for c in rep.costs}
    assert set(costs) == set(report.STUDIES)
    for chapter in ("sinewave", "ablation"):       # outer steps: summed over the chapter's runs, as stored
        st, _ = report.chapter_study(chapter, "cpu")
        runs = [r for rs in report.run_groups(chapter, st).values() for r in rs]
        assert costs[chapter].outer_steps >= sum(int(r.meta["steps_done"]) for r in runs) > 0
    assert costs["mnist"].wall_time_s > 0 and "CPU cores" in costs["mnist"].machine


def test_ledger_follows_the_written_policy():
    """Every row of the committed ledger, checked against the policy (claims.POLICY)."""
    rep = report.build(["cpu"])
    for r in rep.ledger:
        v = r.verdict
        assert v.holds != "partly" or v.partly_rule, v.claim          # every partly shows its rule
        assert v.kind in ("thesis", "metz", "check", "andrychowicz", "randazzo", "question")
        assert v.kind != "metz" or r.chapter == "truncation"           # tallied apart
        # chapter 6's own-paper checks and questions are its alone, and it tests no thesis claim
        assert (v.kind in ("andrychowicz", "randazzo", "question")) == (r.chapter == "learned_optimizers")
        assert r.chapter != "truncation" or v.kind in ("metz", "check")
    counts = rep.tally()
    assert set(counts) >= {"thesis claims", "Metz et al. / Vicol et al. claims", "Andrychowicz et al. claims",
                           "Randazzo et al. claims"}
    # the headline comes from the plateau census, and it is not "no run left its plateau"
    left, runs = rep.runs_left
    assert 0 < left < runs
    long = [c for c in rep.census if c.group == "longer run, |m|=8, BN on, lr learned"]
    assert long and long[0].n_left == 1 and long[0].ends[0] is not None
    # no claim about a trained MPLP is "not reproduced" while the runs it is judged on (the
    # chapter's census groups at the verdict's outer steps) are all on the plateau

    def on_plateau(r):
        groups = [c for c in rep.census if c.chapter == r.chapter and c.steps == r.verdict.steps]
        return r.chapter in ("sinewave", "mnist") and bool(groups) and sum(c.n_left for c in groups) == 0
    for r in rep.ledger:
        if on_plateau(r) and r.verdict.test_outcome in ("no", "undecided"):
            assert r.verdict.holds in ("not_reached", "no") 
            if r.verdict.holds == "no":
                assert "batch-entropy loss" in r.verdict.claim           # a claim about the regulariser itself
    # and every "not reproduced" of chapters 1 and 3 rests on runs that left (claim 1.1 at 150,000 steps)
    nos = [r for r in rep.ledger if r.chapter in ("sinewave", "mnist") and r.verdict.holds == "no"]
    assert all(not on_plateau(r) or "batch-entropy loss" in r.verdict.claim for r in nos)


def test_missing_profile_is_reported_not_raised(tmp_path):
    rep = report.build(["paper"], root=tmp_path, chapters=["sgd", "ablation"])
    assert rep.ledger == [] and set(rep.missing) == {"sgd", "ablation"}
    assert "paper:" in rep.missing["sgd"] and str(tmp_path) in rep.missing["sgd"]
    with pytest.raises(ValueError, match="at least one profile"):
        report.build([])
    with pytest.raises(ValueError, match="unknown chapter 'cifar'"):
        report.chapter_study("cifar", "cpu")


def test_cost_row_counts_a_population_once_and_unrecorded_results():
    meta = {"steps_done": 100, "wall_time_s": 50.0, "population_size": 5, "cpu_count": 2, "torch_threads": 1}
    recs = [Record("a", Path(f"/r/{i}"), meta) for i in range(5)]
    recs += [Record("a", Path("/r/0"), meta), Record("b", Path("/r/x"), {})]     # a repeat, an old result
    row = report.cost_row("ablation", "cpu", recs)
    assert (row.n_results, row.outer_steps, row.unrecorded) == (6, 500, 1)
    assert row.wall_time_s == pytest.approx(50.0)
    assert row.machine == "2 CPU cores (1 thread)"
    assert report.machine_label({"gpu": "NVIDIA H100"}) == "NVIDIA H100"
    assert report.machine_label({}) == "not recorded"


def test_thesis_budget_rate_and_hours_left():
    """The plan's groups as far as they got: the rate is outer steps summed over runs per hour of
    the populations' wall time, and what is left follows at that rate (none before a rate)."""
    g = report.BudgetGroup("g", 5, 0, 100_000, 1_500_000, 2 * 3600.0)
    assert g.steps_per_hour == 50_000 and g.hours_left == 28.0
    assert report.BudgetGroup("g", 5, 0, 0, 1_500_000, 0.0).hours_left is None


def test_thesis_budget_of_an_empty_store_lists_every_group_unstarted(tmp_path):
    got = {g.group: g for g in report.thesis_budget(tmp_path)}
    assert list(got) == list(report.BUDGET_GROUPS)
    assert [got[k].runs for k in report.BUDGET_GROUPS] == [5, 40, 10]
    assert all(g.steps_done == g.complete == 0 and g.hours_left is None for g in got.values())
    assert got["grid-thesis"].steps_total == 40 * 120_000


def test_duration_units():
    assert [report.duration(t) for t in (5.4, 600, 9000)] == ["5 s", "10 min", "2.5 h"]


def test_chapter_boxes_come_from_the_data():
    from mplp.chapters.profiles import load_profile

    st, _ = report.chapter_study("sinewave", "cpu")
    b = report.chapter_box("sinewave", st, load_profile("sinewave", "cpu"))
    runs = [r for rs in report.run_groups("sinewave", st).values() for r in rs]
    assert b.profile == "cpu" and 60000 in b.steps and b.thesis_steps == 300000 and b.runs == len(runs)
    assert b.steps == sorted({int(r.meta["steps_done"]) for r in runs})
    assert b.command == "mplp run sinewave --profile cpu"
    assert b.bottom_line.startswith(f"{len(st.verdicts())} claims tested")
    assert b.running == sum(not r.finished for r in runs)
    md = report.box_markdown(b)
    assert md.startswith("```{admonition}") and md.endswith("```") and f"{max(b.steps) / 300000:.1%} at most" in md
    assert "```{warning}" in md and "not reached at this budget" in md       # the budget caveat
    assert report.which_profile("sinewave", {**load_profile("sinewave", "cpu"), "S": 7}) == "custom"


def test_generated_blocks_are_the_committed_results():
    """The README's bottom line and CONTRIBUTING's cost table are generated from the data
    (``mplp costs --profile cpu --write``), and the README's figure exists."""
    from mplp import paths
    from mplp.book import readme

    for file, parts in readme.blocks("cpu").items():
        for marker, want in parts.items():
            have = readme.written(file, marker)
            assert have is not None, f"{file} lacks the generated block <!-- {marker} -->"
            assert have == want, f"{file}'s block {marker!r} is stale: run `mplp costs --profile cpu --write`"
    assert (paths.repo_root() / readme.FIGURE).stat().st_size > 10_000
    assert f"]({readme.FIGURE.as_posix()})" in (paths.repo_root() / "README.md").read_text()


def test_the_discussion_names_the_claims_of_each_label_from_the_ledger():
    from mplp.claims.verdicts import Verdict

    def row(chapter, claim, holds, kind="thesis"):
        return report.LedgerRow(chapter, "cpu", Verdict(claim, "§x", "t", "e", holds, kind=kind, partly_rule="r"))

    ledger = [row("sinewave", "a flat phase", "yes"), row("mnist", "no plateau", "yes"),
              row("ablation", "BN faster", "partly"), row("truncation", "PES unbiased", "yes", "metz")]
    assert report.claims_with(ledger, "yes") == "a flat phase (chapter 1); no plateau (chapter 3)"
    assert report.claims_with(ledger, "partly") == "BN faster (chapter 2)"
    assert report.claims_with(ledger, "no") == "none"
    assert report.claims_with(ledger, "yes", "metz") == "PES unbiased (chapter 4)"
