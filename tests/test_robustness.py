"""Every defect a hostile user found, reproduced as it was found; each now gets a
clear error naming the field or file, or the correct behaviour."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
import yaml

from mplp.core.config import ConfigError, dump, load, shipped
from mplp.tasks import data
from mplp import paths
from mplp.store import (DamagedResultError, RunLockedError, StoreError, find_run, load_or_compute, result_dir, run_dir)
from mplp.meta import trainer
from mplp.meta import loop
from mplp.cli import main
from mplp.book.runner import run_chapter
from mplp.chapters.profiles import ProfileError, load_profile

from helpers import tiny_config

ROOT = paths.repo_root()


def _files(d):
    """{name: bytes} of a run directory (the lock file aside)."""
    return {f.name: f.read_bytes() for f in sorted(d.iterdir()) if f.name != ".lock"}


def _config_file(tmp_path, cfg, name="c.yaml"):
    p = tmp_path / name
    p.write_text(dump(cfg))
    return p


# -- 1. one owner per run directory ------------------------------------------------------------

def test_1_a_second_process_cannot_take_a_run_directory_in_use(tmp_path):
    cfg = tiny_config()
    d = run_dir(tmp_path, cfg)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from mplp.store import RunLock
        lock = RunLock({str(d)!r}).acquire()
        print("locked", flush=True)
        time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"in use by process {holder.pid}"):
            loop.train(cfg, tmp_path, progress=False)
        assert _files(d) == {}                                  # nothing written by the refused run
    finally:
        holder.kill()
        holder.wait()
    run = loop.train(cfg, tmp_path, progress=False)                # the holder died: the lock is free
    assert run.complete


def test_1_a_finished_run_is_not_rewritten_by_a_second_train(tmp_path):
    cfg = tiny_config()
    first = loop.train(cfg, tmp_path, progress=False)
    before = _files(first.path)
    again = loop.train(cfg, tmp_path, progress=False, backward=__import__("mplp.core.backward").core.backward.dense_backward)
    assert _files(first.path) == before and again.meta == first.meta


# -- 2. nothing a run wrote is overwritten by one that did not finish ---------------------------

def test_2_a_complete_run_with_a_missing_file_is_refused_not_retrained(tmp_path):
    cfg = tiny_config()
    run = loop.train(cfg, tmp_path, progress=False)
    (run.path / "theta.pt").unlink()
    before = _files(run.path)
    with pytest.raises(DamagedResultError, match="theta.pt is missing"):
        loop.train(cfg, tmp_path, progress=False, resume=True)
    assert _files(run.path) == before                          # validation.csv and snapshots.pt kept
    fresh = loop.train(cfg, tmp_path, progress=False, restart=True)   # asked for: discard and start over
    assert fresh.complete and (fresh.path / "theta.pt").exists()


def test_2_resume_without_a_checkpoint_is_refused_with_the_choices(tmp_path):
    cfg = tiny_config()
    part = loop.train(cfg, tmp_path, progress=False, max_steps=5)
    (part.path / "checkpoint.pt").unlink()                      # as in every clone (gitignored)
    before = _files(part.path)
    with pytest.raises(loop.RunExistsError, match=r"no checkpoint.pt to resume from.*--restart"):
        loop.train(cfg, tmp_path, progress=False, resume=True)
    assert _files(part.path) == before


# -- 3. every read verifies what it returns ------------------------------------------------------

def test_3_a_hand_edited_config_is_refused(tmp_path):
    cfg = tiny_config()
    run = loop.train(cfg, tmp_path, progress=False)
    y = yaml.safe_load((run.path / "config.yaml").read_text())
    y["learner"]["message_size"] = 4
    (run.path / "config.yaml").write_text(yaml.safe_dump(y))
    with pytest.raises(DamagedResultError, match="config.yaml hashes to"):
        loop.train(cfg, tmp_path, progress=False)


def test_3_a_copied_short_run_does_not_answer_for_a_long_one(tmp_path):
    short, long = tiny_config(**{"meta.S": 2}), tiny_config(**{"meta.S": 5000})
    run = loop.train(short, tmp_path, progress=False)
    shutil.copytree(run.path, run_dir(tmp_path, long))
    with pytest.raises(DamagedResultError, match="hashes to"):
        find_run(tmp_path, long)


def test_3_edited_files_and_foreign_keys_are_refused(tmp_path):
    cfg = tiny_config()
    run = loop.train(cfg, tmp_path, progress=False)
    lines = (run.path / "validation.csv").read_text().splitlines()
    step, loss, *rest = lines[1].split(",")
    lines[1] = ",".join([step, str(float(loss) * 0.5), *rest])          # a "better" step-0 loss, typed in
    (run.path / "validation.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DamagedResultError, match="validation.csv differs from"):
        find_run(tmp_path, cfg)
    from dataclasses import dataclass

    @dataclass
    class Out:
        x: float

    load_or_compute("k", {"a": 1}, lambda: Out(1.0), Out, root=tmp_path)
    shutil.copytree(result_dir("k", {"a": 1}, tmp_path), result_dir("k", {"a": 2}, tmp_path))
    with pytest.raises(DamagedResultError, match="another key"):
        load_or_compute("k", {"a": 2}, lambda: Out(2.0), Out, root=tmp_path)


def test_3_precision_and_backend_are_checked(tmp_path):
    cfg = tiny_config()
    loop.train(cfg, tmp_path, progress=False)
    with pytest.raises(StoreError, match="trained in float32, not float64"):
        loop.train(cfg, tmp_path, progress=False, dtype=torch.float64)
    from mplp.core.backward import dense_backward

    loop.train(cfg, tmp_path / "b", progress=False, max_steps=5)
    with pytest.raises(StoreError, match="written with backward"):
        loop.train(cfg, tmp_path / "b", progress=False, resume=True, backward=dense_backward)
    done = loop.train(cfg, tmp_path / "b", progress=False, resume=True)
    assert done.meta["resumes"] == [{"step": 5, "dtype": "float32", "backward": done.meta["backward"]}]


# -- 4. non-finite runs and values ----------------------------------------------------------------

@pytest.mark.parametrize("change, field", [
    ({"meta.outer_lr": float("inf")}, "meta.outer_lr"),
    ({"meta.eps": float("inf")}, "meta.eps"),
    ({"task.x_range": [-float("inf"), float("inf")]}, r"task.x_range\[0\]"),
    ({"task.amplitude": [1.0, float("inf")]}, r"task.amplitude\[1\]"),
    ({"meta.be_threshold": -1.0}, "meta.be_threshold"),
    ({"meta.be_threshold": float("nan")}, "meta.be_threshold"),
])
def test_4_non_finite_values_are_refused(change, field):
    with pytest.raises(ConfigError, match=field):
        tiny_config(**change)


def test_4_an_overflowing_run_ends_diverged_and_the_cli_says_so(tmp_path, capsys):
    cfg = tiny_config(**{"task.amplitude": [1e25, 1e25], "meta.S": 5, "validation.every": 5})
    assert main(["train", str(_config_file(tmp_path, cfg)), "--out", str(tmp_path), "--no-progress"]) == 1
    out, err = capsys.readouterr()
    assert "diverged after 5 outer steps" in out and "outer updates skipped" in out and "diverged" in err
    run = find_run(tmp_path, cfg)
    assert run.meta["status"] == "diverged" and not run.complete


def test_4_a_section_given_as_a_mapping_is_merged(tmp_path):
    cfg = shipped("sinewave_m8_bn")
    merged = cfg.replace(meta={"S": 2})
    assert merged.meta.S == 2 and merged.meta.beta1 == 0.99 and merged.meta.K == cfg.meta.K
    with pytest.raises(ConfigError, match="meta.bogus: unknown field"):
        cfg.replace(meta={"bogus": 1})


def test_4_an_empty_config_is_an_error(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        load(tmp_path / "empty.yaml")


# -- 5. tracebacks become one-line errors -----------------------------------------------------

def _cli_error(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_5_K_1_is_refused_at_validation():
    for est in ("tbptt", "es"):
        with pytest.raises(ConfigError, match="meta.K: must be >= 2"):
            tiny_config(**{"meta.K": 1, "meta.estimator": est})


def test_5_bad_set_yaml_and_seed_overflow_name_the_field(tmp_path, capsys):
    p = _config_file(tmp_path, tiny_config())
    assert "--set 'meta.S=[1': the value is not valid YAML" in _cli_error(
        ["train", str(p), "--set", "meta.S=[1", "--out", str(tmp_path)], capsys)
    assert "seed: must be in" in _cli_error(["train", str(p), "--set", f"seed={2**70}", "--out", str(tmp_path)],
                                            capsys)


@pytest.mark.parametrize("damage", [b"", b"\x00" * 10, os.urandom(200)])
def test_5_a_damaged_checkpoint_names_the_file(tmp_path, damage):
    cfg = tiny_config()
    part = loop.train(cfg, tmp_path, progress=False, max_steps=5)
    ckpt = part.path / "checkpoint.pt"
    (ckpt.write_bytes(damage) if damage else ckpt.write_bytes(ckpt.read_bytes()[:100]))
    with pytest.raises(DamagedResultError, match=r"checkpoint.pt cannot be read.*--restart"):
        loop.train(cfg, tmp_path, progress=False, resume=True)


def test_5_a_damaged_result_names_the_file(tmp_path):
    from dataclasses import dataclass

    @dataclass
    class Out:
        x: float

    load_or_compute("k", {"a": 1}, lambda: Out(1.0), Out, root=tmp_path)
    d = result_dir("k", {"a": 1}, tmp_path)
    (d / "result.pt").write_bytes(b"garbage")
    with pytest.raises(DamagedResultError, match="result.pt"):
        load_or_compute("k", {"a": 1}, lambda: Out(1.0), Out, root=tmp_path)


def _idx_files(directory, images, labels, raw=None):
    """MNIST-named files in ``directory`` with the given arrays (or raw bytes), and a
    ``files`` table whose checksums are theirs (so only the content check can fail)."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for (split, kind), (name, _) in data.FILES.items():
        p = directory / name
        if raw is not None and kind == "images":
            p.write_bytes(raw)
        else:
            data.write_idx(p, images if kind == "images" else labels)
        files[(split, kind)] = (name, data.md5(p))
    return files


@pytest.mark.parametrize("make, message", [
    (lambda d: _idx_files(d, None, np.arange(3, dtype=np.uint8), raw=b"not gzip at all"), "cannot be read"),
    (lambda d: _idx_files(d, None, np.arange(3, dtype=np.uint8), raw=b""), "cannot be read|empty"),
    (lambda d: _idx_files(d, np.zeros((3, 28, 28), np.uint8), np.arange(2, dtype=np.uint8)), "2 labels for 3 images"),
    (lambda d: _idx_files(d, np.zeros((3, 28, 28), np.uint8), np.array([0, 1, 12], np.uint8)), "labels must be 0-9"),
])
def test_5_bad_mnist_files_name_the_file(tmp_path, make, message):
    files = make(tmp_path / "mnist")
    with pytest.raises(data.MNISTFileError, match=message):
        data.load_raw("test", tmp_path / "mnist", allow_download=False, files=files)


def test_5_bad_command_line_values(tmp_path, capsys):
    p = _config_file(tmp_path, tiny_config())
    with pytest.raises(SystemExit) as e:
        main(["train", str(p), "--threads", "-1"])
    assert e.value.code == 2 and "must be >= 1" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert "is a file, not a results directory" in _cli_error(["train", str(p), "--out", str(tmp_path / "afile")],
                                                              capsys)


def test_5_an_unwritable_results_root_is_refused_before_any_work(tmp_path, monkeypatch):
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).startswith(str(tmp_path)) else real(p, mode))
    computed = []
    with pytest.raises(StoreError, match="not writable"):
        load_or_compute("k", {"a": 1}, lambda: computed.append(1), dict, root=tmp_path)
    with pytest.raises(StoreError, match="not writable"):
        loop.train(tiny_config(), tmp_path, progress=False)
    assert computed == [] and not any(tmp_path.iterdir())


# -- 6. runner and data gaps -------------------------------------------------------------------

def test_6_a_profile_device_is_checked_up_front():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ProfileError, match="runs on 'cuda'.*--device cpu"):
        run_chapter("sgd", "paper", output=ROOT / "never-written.ipynb")
    assert not (ROOT / "never-written.ipynb").exists()


def test_6_profile_numbers_are_typed(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLP_ROOT", str(tmp_path))
    (tmp_path / "book").mkdir()
    shutil.copy(ROOT / "book" / "00_sgd.ipynb", tmp_path / "book")
    (tmp_path / "params" / "sgd").mkdir(parents=True)
    good = yaml.safe_load((ROOT / "params" / "sgd" / "ci.yaml").read_text())
    (tmp_path / "params" / "sgd" / "ci.yaml").write_text(
        yaml.safe_dump({**good, "lr_sinewave": "x"}).replace("lr_sinewave: x", "lr_sinewave: 1e-1"))
    values = load_profile("sgd", "ci")
    assert values["lr_sinewave"] == 0.1 and isinstance(values["lr_sinewave"], float)
    (tmp_path / "params" / "sgd" / "ci.yaml").write_text(yaml.safe_dump({**good, "steps": "many"}))
    with pytest.raises(ProfileError, match="steps: expected a number"):
        load_profile("sgd", "ci")


def test_6_other_data_under_mnist_names_is_refused(tmp_path):
    fake = _idx_files(tmp_path / "fashion", np.zeros((3, 28, 28), np.uint8), np.arange(3, dtype=np.uint8))
    assert fake                                   # valid IDX files, but not MNIST's checksums
    with pytest.raises(data.MNISTFileError, match="not the original MNIST file.*Fashion-MNIST"):
        data.load_raw("test", tmp_path / "fashion", allow_download=False)


@pytest.mark.skipif(not (ROOT / ".venv" / ".installed").exists(), reason="needs the project's .venv (make install)")
def test_6_make_bench_fails_when_a_benchmark_fails(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "bench.jsonl"
    proc = subprocess.run(["make", "-C", str(ROOT), "bench", "DEVICE=cuda", f"BENCH_OUT={out}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and not out.exists()


# -- 7. Ctrl-C between the outer update and the step counter -------------------------------------

def test_7_an_interrupt_inside_an_outer_step_is_taken_at_the_step_boundary(tmp_path, monkeypatch):
    cfg = tiny_config()
    full = loop.train(cfg, tmp_path / "full", progress=False)
    real, calls = trainer.adam_update, []

    def interrupted_update(*args):
        calls.append(1)
        out = real(*args)
        if len(calls) == 4:                       # after the update, before step += 1
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        return out

    monkeypatch.setattr(trainer, "adam_update", interrupted_update)
    with pytest.raises(KeyboardInterrupt):
        loop.train(cfg, tmp_path / "cut", progress=False)
    monkeypatch.setattr(trainer, "adam_update", real)
    ck = torch.load(run_dir(tmp_path / "cut", cfg) / "checkpoint.pt", weights_only=False)
    assert ck["step"] == 4 and ck["adam"]["step"] == 4          # state and step saved together
    resumed = loop.train(cfg, tmp_path / "cut", progress=False, resume=True)
    for k in full.theta:
        assert torch.equal(full.theta[k], resumed.theta[k]), k  # the update is not applied twice
    assert json.loads((resumed.path / "meta.json").read_text())["status"] == "complete"
