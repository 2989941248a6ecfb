import pytest

from mplp.chapters.equivalence import compare_with_sgd


@pytest.mark.parametrize("problem, lr", [("sinewave", 0.1), ("mnist", 0.1)])
def test_mplp_with_table_2_tracks_sgd_on_the_chapter_problems(problem, lr):
    r = compare_with_sgd(problem, steps=15, lr=lr, batch_size=8, subset=200)
    assert r.mplp_loss.shape == r.sgd_loss.shape == (15,)
    assert r.max_loss_diff < 1e-10 and r.max_param_rel_diff < 1e-8
    assert r.sgd_loss[-3:].mean() < r.sgd_loss[:3].mean()       # SGD does learn: not a vacuous match


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown problem"):
        compare_with_sgd("cifar", 3, 0.1)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        compare_with_sgd("sinewave", 0, 0.1)


def test_the_probability_clip_is_what_separates_them_on_mnist():
    """With saturated softmax outputs the clipped loss' autograd gradient is not p - y."""
    from mplp.core import optimizee

    kw = dict(steps=150, lr=0.1, batch_size=8, subset=32)   # 4 batches, memorised: outputs saturate
    clipped = compare_with_sgd("mnist", **kw)
    plain = compare_with_sgd("mnist", prob_clip=0.0, **kw)
    assert plain.max_loss_diff < 1e-12 and plain.max_param_rel_diff < 1e-10
    assert clipped.max_param_rel_diff > 1e3 * max(plain.max_param_rel_diff, 1e-16)
    assert optimizee.PROB_CLIP == 1e-8                    # restored after the comparison


def test_verdict_is_decided_on_the_unclipped_problems():
    import numpy as np
    from mplp.chapters.equivalence import Equivalence, SgdStudy

    def eq(loss_gap, weight_gap):
        return Equivalence("p", 0.1, 0.0, np.zeros(5), np.zeros(5), loss_gap, weight_gap)

    ok = SgdStudy({"sinewave": eq(1e-16, 1e-15), "mnist": eq(1e-8, 1e-7), "mnist, no clip": eq(1e-15, 1e-15)})
    (v,) = ok.verdicts()
    assert v.holds == "yes" and "mnist: loss gap 1.0e-08" in v.evidence and "T = 5" in v.evidence
    bad = SgdStudy({"sinewave": eq(1e-16, 1e-15), "mnist": eq(1e-16, 1e-15), "mnist, no clip": eq(1e-9, 1e-15)})
    assert bad.verdicts()[0].holds == "no"
