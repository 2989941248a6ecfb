"""``mplp run``: a chapter re-run with new parameters lands in a run folder and leaves the
repository as it was; parameters are checked against the notebook before anything runs."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from mplp import paths
from mplp.cli import main

ROOT = paths.repo_root()


def _git_status() -> str:
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return out


def test_a_ci_run_leaves_the_book_and_results_alone(capsys):
    before = _git_status()
    assert main(["run", "sgd", "--profile", "ci", "-p", "seed=3", "--no-progress"]) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    folder = Path(out.removeprefix("executed ")).parent
    try:
        assert folder.parent == ROOT / "_build" / "runs" and folder.name.startswith("sgd-ci-")
        executed = json.loads((folder / "00_sgd.ipynb").read_text())
        injected = [c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
        assert "seed = 3" in "".join(injected[0]["source"])
        assert (folder / "results" / "sgd").is_dir()          # what seed 3 computed, beside the notebook
        assert _git_status() == before                        # the book, results/ and the tree untouched
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_misspelt_parameter_is_refused_naming_the_valid_ones(capsys, tmp_path):
    assert main(["run", "sgd", "--profile", "ci", "-p", "seeed=3", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no parameter 'seeed'" in err and "'seed'" in err
    assert not (tmp_path / "run").exists()                   # refused before anything ran


@pytest.mark.parametrize("args, message", [
    (["-p", "seed"], "expected NAME=VALUE"),
    (["-p", "seed=[1"], "not valid YAML"),
    (["--in-place", "--out", "x"], "takes no -p, --out or --results"),
    (["--in-place", "-p", "seed=3"], "takes no -p, --out or --results"),
    (["--out", "book/x"], "would overwrite the committed book"),
    (["-p", "seed=abc"], "expected a number"),
])
def test_bad_run_arguments_are_one_line_errors(capsys, args, message):
    assert main(["run", "sgd", "--profile", "ci", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
