import math

import numpy as np
import pytest
import torch

from mplp import results as R

from helpers import tiny_config


def test_csv_round_trip_keeps_full_precision(tmp_path):
    rows = [{"step": 0, "val_loss": 1 / 3}, {"step": 10, "val_loss": float("nan")}]
    R.write_csv(tmp_path / "v.csv", rows)
    got = R.read_csv(tmp_path / "v.csv")
    assert got["step"].tolist() == [0.0, 10.0] and got["val_loss"][0] == 1 / 3 and math.isnan(got["val_loss"][1])


def test_atomic_writes_leave_no_temporaries(tmp_path):
    R.save_torch(tmp_path / "t.pt", {"a": torch.ones(2)})
    R.write_json(tmp_path / "m.json", {"x": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "t.pt"]
    assert torch.equal(R.load_torch(tmp_path / "t.pt")["a"], torch.ones(2))


def test_run_dir_and_missing_files(tmp_path):
    c = tiny_config()
    assert R.run_dir(tmp_path, c) == tmp_path / "tiny" / c.hash()
    assert R.find_run(tmp_path, c) is None
    with pytest.raises(FileNotFoundError, match="config.yaml is missing"):
        R.load_run(tmp_path)


def test_load_or_compute(tmp_path, monkeypatch):
    from dataclasses import dataclass

    @dataclass
    class Out:
        x: np.ndarray
        note: str

    calls = []

    def compute():
        calls.append(1)
        return Out(np.arange(3.0), "hi")

    monkeypatch.setenv("MPLP_CACHE", "on")
    a = R.load_or_compute("exp", {"k": 1}, compute, Out, root=tmp_path)
    b = R.load_or_compute("exp", {"k": 1}, compute, Out, root=tmp_path)
    assert len(calls) == 1 and b.note == "hi" and np.array_equal(a.x, b.x)
    R.load_or_compute("exp", {"k": 2}, compute, Out, root=tmp_path)
    assert len(calls) == 2 and len(list((tmp_path / "exp").iterdir())) == 2
    monkeypatch.setenv("MPLP_CACHE", "off")
    R.load_or_compute("exp", {"k": 1}, compute, Out, root=tmp_path)
    assert len(calls) == 3 and len(list((tmp_path / "exp").iterdir())) == 2
