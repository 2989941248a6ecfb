"""The positive control: Table 2's functions fixed, only the lr meta-learned (tiny runs)."""

import numpy as np
import pytest

from mplp.core.config import ConfigError
from mplp.chapters import controls
from mplp.meta.source import Store
from mplp.claims.verdicts import OUTCOMES


def test_control_config_is_table_2_with_a_learned_log_lr():
    cfg = controls.control_config("pes", 40, 2)
    assert cfg.learner.kind == "sgd" and cfg.meta.estimator == "pes" and cfg.meta.S == 40 and cfg.seed == 2
    with pytest.raises(ValueError, match="unknown estimator"):
        controls.control_config("adam", 40, 0)
    with pytest.raises(ConfigError, match="learner.kind: 'sgd'.*needs learned_lr: true"):
        cfg.replace(**{"learner.learned_lr": False})
    with pytest.raises(ConfigError, match="learner.kind: must be one of 'neural', 'sgd', 'l2l', 'mlp-optimizer'"):
        cfg.replace(**{"learner.kind": "rnn"})


def test_tiny_control_learns_the_lr_upwards_and_gives_verdicts(tmp_path):
    c = controls.study(30, 1, Store(tmp_path))
    assert set(c.lr) == {"tbptt", "pes"} and c.lr["tbptt"].shape == (1, len(c.steps))
    assert c.lr["tbptt"][0, 0] == pytest.approx(1e-3)              # Table 3's fixed lr to start from
    assert c.lr["tbptt"][0, -1] > 1e-3                              # the outer gradient asks for more
    assert 1e-3 <= c.tuned_lr <= 1.0 and len(c.grid.lrs) == controls.GRID[0]
    vs = c.verdicts()
    assert [v.kind for v in vs] == ["check", "metz"] and all(v.holds in OUTCOMES for v in vs)
    again = controls.study(30, 1, Store(tmp_path, read_only=True))   # stored: read back, not recomputed
    assert np.array_equal(again.lr["pes"], c.lr["pes"])
