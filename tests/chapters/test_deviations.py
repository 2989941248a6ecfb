"""Runs of the other choice: configs match the chapters' runs; the comparison is fair."""

import math

import pytest

from mplp.chapters import ablation, deviations as D
from mplp.core.config import load
from mplp import paths
from mplp.store import committed_root, find_run
from mplp.meta.source import Store
from mplp.chapters.profiles import load_profile

from helpers import tiny_config


def test_book_side_configs_are_the_chapters_runs():
    p = load_profile("ablation", "cpu")
    base = load(paths.repo_root() / "mplp" / "configs" / "ablation.yaml").replace(**{
        "meta.S": p["S"], "validation.every": p["validation_every"], "validation.n_runs": p["validation_runs"],
        "meta.adam_bias_correction": p["adam_bias_correction"]})
    chapter = ablation.grid_configs(base, p["n_seeds"])[D.BEST_CELL]
    assert [c.hash() for c in D.ablation_configs("cpu", 3)] == [c.hash() for c in chapter[:3]]
    for c in D.ablation_configs("cpu", 3) + D.mnist_configs("cpu", 2):      # committed, so the report can read them
        assert find_run(committed_root(), c) is not None
    with pytest.raises(ValueError, match="has 5 seeds"):
        D.ablation_configs("cpu", 6)


def test_other_choice_is_trained_and_validated_by_the_book_config(tmp_path):
    cfgs = [tiny_config(seed=s) for s in (0, 1)]
    ch = D._compare("unroll", "tiny", "code", "text", cfgs, {"meta.unroll": "text"}, Store(tmp_path))
    assert ch.steps == 12 and ch.seeds == [0, 1]
    assert all(math.isfinite(v) for v in ch.book + ch.other)
    others = Store(tmp_path, read_only=True).train([c.replace(**{"experiment": "deviations",
                                                                 "meta.unroll": "text"}) for c in cfgs])
    assert [r.config.meta.unroll for r in others] == ["text", "text"]
    # the book side is the stored run of the same config, validated afresh: same number
    assert ch.book[0] == pytest.approx(find_run(tmp_path, cfgs[0]).validation["val_loss"][-1], rel=1e-6)
    assert ch.book != ch.other


def test_ratio_and_separation():
    ch = D.OtherChoice("p", "s", "a", "b", 10, [0, 1], [1.0, 2.0], [2.0, 4.0])
    assert ch.ratio == 2.0 and not ch.separated
    assert D.OtherChoice("p", "s", "a", "b", 10, [0, 1], [1.0, 2.0], [3.0, 4.0]).separated
