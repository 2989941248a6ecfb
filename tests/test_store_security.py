"""Stored files are read as data only: a crafted pickle in a run or result directory, even with a
manifest recomputed to match it, is refused with a clear error and never runs its payload."""

import os

import pytest
import torch

from mplp import results as R
from mplp.stats import Interval
from mplp.trainer import train

from helpers import tiny_config


class Payload:
    """Unpickling this writes ``marker``: what a hostile ``theta.pt`` could do if loaded as code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant(path, marker):
    torch.save({"theta": Payload(marker)}, path)


@pytest.fixture
def finished(tmp_path):
    cfg = tiny_config(**{"meta.S": 2, "validation.every": 1, "checkpoint_every": 1})
    run = train(cfg, tmp_path / "store", progress=False)
    return cfg, run.path, tmp_path / "marker"


def test_a_crafted_theta_with_a_matching_manifest_is_refused(finished):
    cfg, d, marker = finished
    plant(d / "theta.pt", marker)
    R.write_manifest(d, [p.name for p in d.iterdir() if p.name not in (R.MANIFEST, ".lock")])
    with pytest.raises(R.DamagedResultError, match="theta.pt cannot be read"):
        R.load_run(d).theta
    assert not marker.exists()


def test_a_crafted_checkpoint_is_refused_on_resume(tmp_path):
    cfg = tiny_config(**{"meta.S": 4, "validation.every": 1, "checkpoint_every": 1})
    run = train(cfg, tmp_path / "store", progress=False, max_steps=2)
    marker = tmp_path / "marker"
    plant(run.path / "checkpoint.pt", marker)
    with pytest.raises(R.DamagedResultError, match="checkpoint.pt cannot be read"):
        train(cfg, tmp_path / "store", resume=True, progress=False)
    assert not marker.exists()


def test_a_crafted_result_is_refused(tmp_path):
    store = R.Store(tmp_path / "store")
    key = {"what": "x"}
    store.load_or_compute("probe", key, lambda: Interval(1.0, 0.0, 2.0), Interval)
    d = next((tmp_path / "store" / "probe").iterdir())
    marker = tmp_path / "marker"
    plant(d / "result.pt", marker)
    R.write_manifest(d, ("result.pt", "key.json", "meta.json"))
    with pytest.raises(R.DamagedResultError, match="result.pt cannot be read"):
        R.Store(tmp_path / "store", read_only=True).load_or_compute("probe", key, lambda: None, Interval)
    assert not marker.exists() and not os.path.exists("marker")


def test_numeric_numpy_arrays_still_load(tmp_path):
    import numpy as np

    R.save_torch(tmp_path / "a.pt", {"x": np.arange(3.0), "i": np.arange(2), "t": torch.zeros(1)})
    got = R.load_torch(tmp_path / "a.pt")
    assert got["x"].tolist() == [0.0, 1.0, 2.0] and got["i"].dtype == np.int64
