"""Execute book chapters with papermill, one profile at a time.

``run_chapter("sgd", "cpu")`` executes ``book/00_sgd.ipynb`` in place with the values
of ``params/sgd/cpu.yaml`` injected after its ``parameters`` cell (visible in the
notebook).  Profiles are checked against the notebook's parameters first: a profile
must set every parameter and nothing else.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import yaml

from . import config as C
from . import paths


class ProfileError(ValueError):
    """A profile file is missing, unreadable or does not match its notebook."""

    def _render_traceback_(self) -> list[str]:    # IPython (inside a notebook) shows this one line
        return [f"{type(self).__name__}: {self}"]


def notebook_parameters(chapter: str) -> dict:
    """The parameters cell of a chapter: ``{name: default value as source text}``."""
    import papermill

    nb = paths.notebook(chapter)
    if not nb.exists():
        raise ValueError(f"chapter {chapter!r} has no notebook yet ({nb.name}); "
                         f"valid chapters: {', '.join(paths.available_chapters())}")
    return {k: v["default"] for k, v in papermill.inspect_notebook(str(nb)).items()}


def load_profile(chapter: str, profile: str) -> dict:
    """The parameter values of ``params/<chapter>/<profile>.yaml``, checked against the notebook."""
    p = paths.profile(chapter, profile)
    if not p.exists():
        raise ProfileError(f"{p.relative_to(paths.repo_root())} is missing")
    try:
        values = C.read_yaml(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ProfileError(f"{p}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(values, dict):
        raise ProfileError(f"{p}: expected a mapping of parameter names to values")
    expected = notebook_parameters(chapter)
    unknown = sorted(set(values) - set(expected))
    missing = sorted(set(expected) - set(values))
    if unknown:
        raise ProfileError(f"{p.name} of chapter {chapter!r} sets unknown parameter(s) {unknown}; "
                           f"the notebook's parameters are {sorted(expected)}")
    if missing:
        raise ProfileError(f"{p.name} of chapter {chapter!r} misses parameter(s) {missing}")
    return {k: _typed(v, expected[k], f"{p.name} of chapter {chapter!r}: {k}") for k, v in values.items()}


def _typed(value, default_source: str, where: str):
    """A profile value checked against the type of the notebook's default (YAML 1.1 reads
    ``1e-1`` as a string: a numeric parameter gets the number)."""
    import ast

    try:
        default = ast.literal_eval(default_source)
    except (ValueError, SyntaxError):
        return value                       # a default that is an expression: nothing to check against
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ProfileError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ProfileError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProfileError(f"{where}: expected a number, got {value!r}")
        if isinstance(default, int) and not isinstance(default, bool):
            if isinstance(value, float) and not value.is_integer():
                raise ProfileError(f"{where}: expected an integer, got {value!r}")
            return int(value) if isinstance(value, float) else value
        return float(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise ProfileError(f"{where}: expected a string, got {value!r}")
    if isinstance(default, (list, tuple)) and not isinstance(value, (list, tuple)):
        raise ProfileError(f"{where}: expected a list, got {value!r}")
    return value


def check_parameters(chapter: str, namespace: dict) -> None:
    """Inside a chapter's notebook, after the values papermill injected: each parameter has its
    default's type (converted where text stands for a number); a wrong one stops the notebook
    with a one-line ``ProfileError`` naming it, before anything is computed."""
    for name, default in notebook_parameters(chapter).items():
        if name in namespace:
            namespace[name] = _typed(namespace[name], default,
                                     f"parameter {name!r} of chapter {chapter!r} (papermill -p / -y, or the profile)")


def run_chapter(chapter: str, profile: str = "cpu", device: str | None = None, output: Path | None = None,
                overrides: dict | None = None, progress: bool = True) -> Path:
    """Execute one chapter with a profile (plus ``device`` and other overrides).

    Writes to ``output`` (default: the chapter's notebook itself, in place) and returns it;
    ``output`` is replaced only when every cell ran.
    """
    import papermill

    params = load_profile(chapter, profile)
    if device is None and "device" in params:       # the profile's own device, checked up front as --device
        from .trainer import resolve_device

        try:
            resolve_device(params["device"])
        except ValueError as e:
            raise ProfileError(f"profile {profile!r} of chapter {chapter!r} runs on {params['device']!r}: {e}; "
                               "pass --device cpu to run it here") from None
    if device is not None:
        from .trainer import resolve_device

        resolve_device(device)
        if "device" in params:
            params["device"] = device
        elif device != "cpu":
            # CPU-only chapters (e.g. the truncation toy) have no device parameter
            print(f"chapter {chapter!r} has no 'device' parameter; it runs on the CPU")
    expected = notebook_parameters(chapter)
    for k, v in (overrides or {}).items():
        if k not in params:
            raise ProfileError(f"chapter {chapter!r} has no parameter {k!r}; it has {sorted(params)}")
        params[k] = _typed(v, expected[k], f"parameter {k!r} of chapter {chapter!r}")
    nb = paths.notebook(chapter)
    out = Path(output) if output is not None else nb
    # execute into a scratch file outside the book and replace the target only on success:
    # a failed or interrupted run leaves the previous notebook as it was
    with tempfile.TemporaryDirectory(prefix="mplp-run-") as scratch:
        tmp = Path(scratch) / out.name
        papermill.execute_notebook(str(nb), str(tmp), parameters=params, kernel_name="python3",
                                   progress_bar=progress, cwd=str(nb.parent))
        _hide_parameter_cells(tmp)
        shutil.move(tmp, out)
    return out


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
        progress: bool = True) -> list[Path]:
    """Execute chapters (default: all that exist) in book order; validate everything first."""
    if profile not in paths.PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid profiles: {', '.join(paths.PROFILES)}")
    chapters = list(chapters or paths.available_chapters())
    for c in chapters:
        paths.check_chapter(c)
        load_profile(c, profile)
    return [run_chapter(c, profile, device, progress=progress) for c in chapters]
