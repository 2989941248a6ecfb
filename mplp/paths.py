"""Where things live: chapters, their notebooks and profiles, and the results root.

A chapter is its notebook: chapter ``c`` with number ``NN`` is ``book/NN_c.ipynb``, with
profiles ``params/c/{ci,cpu,paper}.yaml``.  Paths are resolved from the repository root
(``$MPLP_ROOT``, else the checkout holding this package), never from the working
directory, so papermill, nbval and jupyter-book find the same files.
``MPLP_RESULTS=DIR`` moves the results root (``mplp run`` does, for runs outside the book);
``MPLP_CACHE=off`` makes every run compute afresh into a temporary results root.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

PROFILES = ("ci", "cpu", "paper")


def repo_root() -> Path:
    env = os.environ.get("MPLP_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parent.parent
    if (here / "_config.yml").exists() or (here / "pyproject.toml").exists():
        return here
    return Path.cwd().resolve()


def cache_enabled() -> bool:
    return os.environ.get("MPLP_CACHE", "on").lower() not in ("off", "0", "false", "no")


@functools.lru_cache(maxsize=1)
def _scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="mplp-nocache-"))


def results_root() -> Path:
    """``$MPLP_RESULTS`` (an ad-hoc run's own store), else ``<repo>/results``; a fresh temporary
    directory when the cache is off."""
    if not cache_enabled():
        return _scratch()
    return Path(os.environ["MPLP_RESULTS"]).resolve() if results_moved() else repo_root() / "results"


def results_moved() -> bool:
    """Whether ``$MPLP_RESULTS`` points the results root away from the committed ``results/``."""
    return bool(os.environ.get("MPLP_RESULTS")) and cache_enabled()


def _notebooks() -> dict[str, Path]:
    """``{chapter: book/NN_<chapter>.ipynb}`` in book order."""
    return {p.stem.split("_", 1)[1]: p for p in sorted((repo_root() / "book").glob("[0-9][0-9]_*.ipynb"))}


def chapters() -> list[str]:
    """The chapters in book order: one per notebook ``book/NN_<name>.ipynb``."""
    return list(_notebooks())


def number(chapter: str) -> int:
    """A chapter's number ``NN``, from its notebook's name."""
    return int(notebook(chapter).name[:2])


def notebook(chapter: str) -> Path:
    check_chapter(chapter)
    return _notebooks()[chapter]


def profile(chapter: str, name: str) -> Path:
    check_chapter(chapter)
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; valid profiles: {', '.join(PROFILES)}")
    return repo_root() / "params" / chapter / f"{name}.yaml"


def available_chapters() -> list[str]:
    """Chapters whose notebook exists, in book order (every chapter: a chapter is its notebook)."""
    return chapters()


def check_chapter(chapter: str) -> None:
    if chapter not in chapters():
        raise ValueError(f"unknown chapter {chapter!r}; valid chapters: {', '.join(chapters())}")
