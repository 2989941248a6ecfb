import pytest

from mplp import paths


def test_chapter_paths_derive_from_the_name():
    assert paths.notebook("sgd").name == "00_sgd.ipynb"
    assert paths.notebook("report").name == "05_report.ipynb"
    assert paths.profile("mnist", "paper").parts[-3:] == ("params", "mnist", "paper.yaml")
    assert (paths.repo_root() / "_config.yml").exists()


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown chapter 'cifar'; valid chapters: sgd"):
        paths.notebook("cifar")
    with pytest.raises(ValueError, match="valid profiles: ci, cpu, paper"):
        paths.profile("sgd", "gpu")


def test_cache_switch(monkeypatch):
    monkeypatch.setenv("MPLP_CACHE", "on")
    assert paths.results_root() == paths.repo_root() / "results"
    monkeypatch.setenv("MPLP_CACHE", "off")
    assert paths.results_root() != paths.repo_root() / "results" and paths.results_root().exists()
