"""The book's contract: chapters run with their `ci` profile, profiles are complete,
and the book builds without warnings from the committed notebooks."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mplp import paths
from mplp.runner import ProfileError, load_profile, notebook_parameters, run, run_chapter

CHAPTERS = paths.available_chapters()
ROOT = paths.repo_root()


def test_there_are_chapters():
    assert "sgd" in CHAPTERS


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_notebook_starts_with_parameters_and_profiles_are_complete(chapter):
    cells = json.loads(paths.notebook(chapter).read_text())["cells"]
    assert "parameters" in cells[0]["metadata"].get("tags", [])
    names = set(notebook_parameters(chapter))
    for profile in paths.PROFILES:
        assert set(load_profile(chapter, profile)) == names      # every parameter, nothing else
    errors = [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{chapter}: committed notebook has error outputs"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_executes_with_ci_profile_without_cache(chapter, tmp_path, monkeypatch):
    monkeypatch.setenv("MPLP_CACHE", "off")       # compute, do not read or write results/
    monkeypatch.setenv("TQDM_DISABLE", "1")
    out = run_chapter(chapter, "ci", output=tmp_path / f"{chapter}.ipynb", progress=False)
    cells = json.loads(out.read_text())["cells"]
    injected = [c for c in cells if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(injected) == 1 and cells.index(injected[0]) == 1   # right after `parameters`
    assert any(o.get("output_type") == "display_data" for c in cells for o in c.get("outputs", []))


def test_runner_refuses_bad_input(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown profile 'gpu'; valid profiles: ci, cpu, paper"):
        run(["sgd"], "gpu")
    with pytest.raises(ValueError, match="unknown chapter 'cifar'"):
        run(["cifar"], "ci")
    # a copy of the repository layout with a broken profile
    monkeypatch.setenv("MPLP_ROOT", str(tmp_path))
    (tmp_path / "book").mkdir()
    shutil.copy(ROOT / "book" / "00_sgd.ipynb", tmp_path / "book")
    (tmp_path / "params" / "sgd").mkdir(parents=True)
    with pytest.raises(ProfileError, match="params/sgd/ci.yaml is missing"):
        load_profile("sgd", "ci")
    good = (ROOT / "params" / "sgd" / "ci.yaml").read_text()
    (tmp_path / "params" / "sgd" / "ci.yaml").write_text(good + "learning_rate: 3\n")
    with pytest.raises(ProfileError, match=r"sets unknown parameter\(s\) \['learning_rate'\]"):
        load_profile("sgd", "ci")
    (tmp_path / "params" / "sgd" / "ci.yaml").write_text("seed: 1\n")
    with pytest.raises(ProfileError, match="misses parameter"):
        load_profile("sgd", "ci")
    with pytest.raises(ValueError, match="has no notebook yet"):
        notebook_parameters("mnist")


def test_book_builds_without_warnings(tmp_path):
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run([str(jb), "build", str(ROOT), "--path-output", str(tmp_path), "-W", "-n", "--keep-going"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    html = tmp_path / "_build" / "html"
    assert (html / "index.html").exists()
    page = (html / "book" / "00_sgd.html").read_text()
    assert page.count("<img") >= 3 and "Traceback" not in page


def test_failed_run_leaves_the_notebook_as_it_was(tmp_path):
    target = tmp_path / "00_sgd.ipynb"
    target.write_text("previous contents")
    with pytest.raises(Exception, match="batch_size"):
        run_chapter("sgd", "ci", output=target, overrides={"batch_size": -1}, progress=False)
    assert target.read_text() == "previous contents"
    assert [p.name for p in tmp_path.iterdir()] == ["00_sgd.ipynb"]      # no scratch file left behind
