from mplp.core.config import dump
from mplp.cli import main

from helpers import tiny_config


def test_train_writes_results(tmp_path, capsys):
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(dump(tiny_config()))
    assert main(["train", str(cfg_path), "--out", str(tmp_path / "res"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "complete after 12 outer steps" in out and "validation outer-loss" in out
    run_dir = tmp_path / "res" / "tiny" / tiny_config().hash()
    assert (run_dir / "validation.csv").exists() and (run_dir / "theta.pt").exists()


def test_bad_input_is_one_line_naming_the_problem(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("meta: {K: 0}\n")
    assert main(["train", str(bad), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mplp train: error: meta.K: must be >= 2") and "Traceback" not in err
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    good = tmp_path / "good.yaml"
    good.write_text(dump(tiny_config()))
    assert main(["train", str(good), "--device", "tpu", "--out", str(tmp_path)]) == 2
    assert "unknown device" in capsys.readouterr().err


def test_set_overrides_fields(tmp_path, capsys):
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(dump(tiny_config()))
    args = ["train", str(cfg_path), "--out", str(tmp_path), "--no-progress", "--set", "meta.S=4",
            "--set", "learner.message_size=1"]
    assert main(args) == 0
    changed = tiny_config(**{"meta.S": 4, "learner.message_size": 1})
    assert (tmp_path / "tiny" / changed.hash() / "theta.pt").exists()
    assert main(["train", str(cfg_path), "--set", "meta.nope=1"]) == 2
    assert "meta.nope: unknown field" in capsys.readouterr().err
    assert main(["train", str(cfg_path), "--set", "meta.S"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_train_seeds_as_a_population(tmp_path, capsys):
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(dump(tiny_config(**{"meta.S": 3})))
    assert main(["train", str(cfg_path), "--out", str(tmp_path), "--no-progress", "--seeds", "0", "1"]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if "complete after 3 outer steps" in l]
    assert len(lines) == 2
    assert main(["train", str(cfg_path), "--out", str(tmp_path / "d"), "--no-progress", "--backward", "dense"]) == 0
