"""Execute book chapters with papermill, one profile at a time.

``run(["sgd"], "ci")`` executes ``book/00_sgd.ipynb`` with the values of
``params/sgd/ci.yaml`` (and any overrides) injected after its ``parameters`` cell, into a
run folder ``_build/runs/<chapters>-<profile>-<time>/`` with its own results store beside
it (reading the committed results first): the book and ``results/`` stay as they are.
``in_place=True`` refreshes the committed book instead.  Profiles and overrides are checked
against the notebook's parameters first: a profile must set every parameter and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from mplp import paths
from mplp.chapters.profiles import ProfileError, load_profile, override
from mplp.meta.trainer import resolve_device


def run_chapter(chapter: str, profile: str = "cpu", device: str | None = None, output: Path | None = None,
                overrides: dict | None = None, progress: bool = True, keep_failed: bool = False) -> Path:
    """Execute one chapter with a profile (plus ``device`` and other overrides).

    Writes to ``output`` (default: the chapter's notebook itself, in place) and returns it;
    ``output`` is replaced only when every cell ran (``keep_failed``: a failed run is kept
    beside it as ``<name>.failed.ipynb``, the failing cell and its error in it).
    """
    import papermill

    params = load_profile(chapter, profile)
    if device is None and "device" in params:       # the profile's own device, checked up front as --device
        try:
            resolve_device(params["device"])
        except ValueError as e:
            raise ProfileError(f"profile {profile!r} of chapter {chapter!r} runs on {params['device']!r}: {e}; "
                               "pass --device cpu to run it here") from None
    if device is not None:
        resolve_device(device)
        if "device" in params:
            params["device"] = device
        elif device != "cpu":
            # CPU-only chapters (e.g. the truncation toy) have no device parameter
            print(f"chapter {chapter!r} has no 'device' parameter; it runs on the CPU")
    params = override(chapter, params, overrides or {})
    nb = paths.notebook(chapter)
    out = Path(output) if output is not None else nb
    # execute into a scratch file outside the book and replace the target only on success:
    # a failed or interrupted run leaves the previous notebook as it was
    with tempfile.TemporaryDirectory(prefix="mplp-run-") as scratch, _training_bar(Path(scratch), progress):
        tmp = Path(scratch) / out.name
        try:
            papermill.execute_notebook(str(nb), str(tmp), parameters=params, kernel_name="python3",
                                       progress_bar=progress, cwd=str(nb.parent))
        except Exception:
            if keep_failed and tmp.exists():
                shutil.copyfile(tmp, out.with_suffix(".failed.ipynb"))
            raise
        _hide_parameter_cells(tmp)
        shutil.move(tmp, out)
    return out


@contextlib.contextmanager
def _training_bar(scratch: Path, show: bool):
    """A second progress bar under papermill's (which counts cells): the outer steps of the
    meta-training running inside the notebook, read from ``$MPLP_PROGRESS_FILE``."""
    if not show:
        yield
        return
    import json
    import threading

    from tqdm import tqdm

    path, stop, bar = scratch / "progress.json", threading.Event(), None

    def follow():
        nonlocal bar
        while not stop.wait(1.0):
            try:
                p = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if bar is None or bar.desc != f"training {p['what']}":
                if bar is not None:
                    bar.close()
                bar = tqdm(total=p["total"], desc=f"training {p['what']}", unit="step", position=1, leave=False)
            bar.n = p["step"]
            bar.refresh()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        with _env("MPLP_PROGRESS_FILE", str(path)):
            yield
    finally:
        stop.set()
        thread.join()
        if bar is not None:
            bar.close()


def _hide_parameter_cells(path: Path) -> None:
    """Tag the parameters cell and papermill's injected one ``hide-cell``: the book shows them
    folded (still executable, and the injected values one click away)."""
    import json

    nb = json.loads(Path(path).read_text())
    for c in nb["cells"]:
        tags = c.setdefault("metadata", {}).setdefault("tags", [])
        if ("parameters" in tags or "injected-parameters" in tags) and "hide-cell" not in tags:
            tags.append("hide-cell")
    Path(path).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def run(chapters: list[str] | None = None, profile: str = "cpu", device: str | None = None,
        progress: bool = True, overrides: dict | None = None, in_place: bool = False,
        out: Path | None = None, results: Path | None = None, check: bool = False) -> list[Path]:
    """Execute chapters (default: all that exist) in book order, every profile and override
    validated first.  Into a run folder (``out``, default ``run_folder(...)``) with its results
    store at ``results`` (default ``<out>/results``), or with ``in_place`` the book itself;
    ``check``: validate only, run nothing."""
    if profile not in paths.PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid profiles: {', '.join(paths.PROFILES)}")
    chapters = list(chapters or paths.available_chapters())
    for c in chapters:
        paths.check_chapter(c)
        override(c, load_profile(c, profile), overrides or {})
    if check:
        return []
    if in_place:
        if out is not None or results is not None or overrides:
            raise ValueError("--in-place refreshes the committed book and results/ with a profile as it is; "
                             "it takes no -p, --out or --results (run without --in-place for those)")
        with _results_at(None):
            return [run_chapter(c, profile, device, progress=progress) for c in chapters]
    folder = Path(out).resolve() if out is not None else run_folder(chapters, profile)
    if folder.is_relative_to(paths.repo_root() / "book") or folder.is_relative_to(paths.repo_root() / "results"):
        raise ValueError(f"--out {out}: a run folder inside book/ or results/ would overwrite the committed book; "
                         "use --in-place to refresh it, or another folder")
    folder.mkdir(parents=True, exist_ok=True)
    with _results_at(Path(results) if results is not None else folder / "results"):
        return [run_chapter(c, profile, device, folder / paths.notebook(c).name, overrides, progress, keep_failed=True)
                for c in chapters]


def run_folder(chapters: list[str], profile: str) -> Path:
    """A new ``<repo>/_build/runs/<chapters>-<profile>-<UTC time>[-n]/`` (ignored by git)."""
    name = "all" if chapters == paths.available_chapters() else "+".join(chapters)
    base = paths.repo_root() / "_build" / "runs" / f"{name}-{profile}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder


@contextlib.contextmanager
def _env(name: str, value: str | None):
    """``$name`` set to ``value`` (None: unset) while the chapters run (their kernels inherit it)."""
    before = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _results_at(root: Path | None):
    """The results root of the chapters' kernels: ``root``, or (None) the committed ``results/``."""
    return _env("MPLP_RESULTS", None if root is None else str(root.resolve()))
