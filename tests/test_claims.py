import pytest

from mplp.claims import OUTCOMES, Verdict


def test_verdict_outcomes_are_a_closed_set():
    assert Verdict("c", "§5.1", "t", "e", "yes").holds in OUTCOMES
    with pytest.raises(ValueError, match="'maybe' is not one of"):
        Verdict("c", "§5.1", "t", "e", "maybe")
