import pytest

from mplp.claims.verdicts import OUTCOMES, Verdict


def test_verdict_outcomes_are_a_closed_set():
    assert Verdict("c", "§5.1", "t", "e", "yes").holds in OUTCOMES
    with pytest.raises(ValueError, match="'maybe' is not one of"):
        Verdict("c", "§5.1", "t", "e", "maybe")


from mplp.claims.verdicts import COUNTED, LABELS, POLICY, decide, describe, median_still_falling, still_falling, tally   # noqa: E402


def test_policy_rules_in_order():
    # rule 2 first: a pass that an untrained optimizer shares is trivially true, plateau or not
    assert decide("yes", about_trained=True, reached=False, trivial=True) == "trivial"
    assert decide("partly", trivial=True) == "trivial"
    assert decide("no", trivial=True) == "no"
    # rule 1: about a trained MPLP and not reached -> one label, whatever the test said
    assert {decide(o, about_trained=True, reached=False) for o in ("yes", "partly", "no", "undecided")} == \
        {"not_reached"}
    # rule 3: otherwise the test decides
    assert decide("no", about_trained=True, reached=True) == "no"
    assert decide("yes") == "yes"
    with pytest.raises(ValueError):
        decide("maybe")


def test_partly_must_show_its_rule_and_the_label_carries_it():
    with pytest.raises(ValueError, match="must state its rule"):
        Verdict("c", "§5.2", "t", "e", "partly")
    v = Verdict("c", "§5.2", "t", "e", "partly", partly_rule="2 of 4 pairs")
    assert v.label == "partly (2 of 4 pairs)" and v.counted
    assert not Verdict("c", "§5.2", "t", "e", "not_reached", test_outcome="no").counted
    with pytest.raises(ValueError, match="kind"):
        Verdict("c", "§5.2", "t", "e", "yes", kind="folklore")


def test_describe_shows_overrides_and_post_hoc():
    v = Verdict("c", "§5.1", "t", "e", "not_reached", test_outcome="no", post_hoc="abc1234: window")
    text = describe(v, 3)
    assert text.startswith("3. c (§5.1): NOT REACHED AT THIS BUDGET")
    assert "the test alone: not reproduced" in text and "post hoc: abc1234: window" in text
    assert "ours:" not in describe(v, evidence=False)


def test_tally_separates_kinds_and_counts_only_decided_rows():
    vs = [Verdict("a", "", "", "", "yes"), Verdict("b", "", "", "", "trivial"),
          Verdict("c", "", "", "", "yes", kind="metz"), Verdict("d", "", "", "", "yes", kind="check")]
    t = tally(vs)
    assert t["thesis claims"][LABELS["yes"]] == 1 and t["thesis claims"][LABELS["trivial"]] == 1
    assert t["Metz et al. / Vicol et al. claims"][LABELS["yes"]] == 1
    assert t["implementation checks"][LABELS["yes"]] == 1
    assert set(COUNTED) == {"yes", "partly", "no"}
    assert "not reached at this budget" in POLICY and "post hoc" in POLICY


def test_still_falling():
    assert still_falling([10, 9, 8, 7, 6])           # falls steadily
    assert not still_falling([10, 5, 5, 5, 5.0])     # settled
    assert not still_falling([10, 9])                # too short to tell


def test_median_still_falling_cuts_to_the_shortest_seed():
    settled, falling = [10, 5, 5, 5, 5.0], [10, 9, 8, 7, 6]
    assert median_still_falling([falling, falling, settled]) and not median_still_falling([settled, settled, falling])
    # a seed that got further is cut to the others' length: its late drop is not counted
    assert not median_still_falling([settled[:4], settled[:4], [10, 5, 5, 5, 1]])
    assert median_still_falling([falling[:4], falling, falling + [5]])


def test_a_confirmatory_verdict_names_its_plan_row_and_an_exploratory_one_none():
    assert Verdict("P2.12: the best cell is worse than Adam", "§5.2.2", "t", "e", "yes", stage="confirmatory").row == "P2.12"
    assert Verdict("P2.12: a claim", "§5.2.2", "t", "e", "yes").row == ""
