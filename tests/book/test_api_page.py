"""The code on the book's API page and in the README runs as written, from outside the repository."""

import re

from mplp import paths


def test_the_api_pages_examples_run(tmp_path, monkeypatch):
    text = (paths.repo_root() / "book" / "api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    namespaces = []
    for code in blocks:
        ns = {}
        exec(compile(code.replace("/tmp/mplp-results", str(tmp_path / "results")), "book/api.md", "exec"), ns)
        namespaces.append(ns)
    result = namespaces[0]["result"]
    assert float(result.losses[-20:].mean()) < float(result.losses[0])      # the trained MPLP trains the new MLP
    assert namespaces[1]["run"].path.is_relative_to(tmp_path)


def test_the_readmes_example_runs(tmp_path, monkeypatch):
    text = (paths.repo_root() / "README.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, re.S)
    monkeypatch.chdir(tmp_path)
    ns = {}
    exec(compile(code, "README.md", "exec"), ns)
    assert float(ns["result"].losses[-20:].mean()) < float(ns["result"].losses[0])
