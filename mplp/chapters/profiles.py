"""A chapter's parameters: the ``parameters`` cell of its notebook, and its profiles
``params/<chapter>/{ci,cpu,paper}.yaml``, checked against each other (every parameter set,
nothing else, each of its default's type)."""

from __future__ import annotations

import yaml

from mplp import paths
from mplp.core.config import read_yaml


class ProfileError(ValueError):
    """A profile file is missing, unreadable or does not match its notebook."""

    def _render_traceback_(self) -> list[str]:    # IPython (inside a notebook) shows this one line
        return [f"{type(self).__name__}: {self}"]


def notebook_parameters(chapter: str) -> dict:
    """The parameters cell of a chapter: ``{name: default value as source text}``."""
    import papermill

    return {k: v["default"] for k, v in papermill.inspect_notebook(str(paths.notebook(chapter))).items()}


def load_profile(chapter: str, profile: str) -> dict:
    """The parameter values of ``params/<chapter>/<profile>.yaml``, checked against the notebook."""
    p = paths.profile(chapter, profile)
    if not p.exists():
        raise ProfileError(f"{p.relative_to(paths.repo_root())} is missing")
    try:
        values = read_yaml(p.read_text()) or {}
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


def override(chapter: str, params: dict, overrides: dict) -> dict:
    """``params`` with ``overrides`` applied, each checked against the notebook's parameters: an
    unknown name or a value of the wrong type is a ``ProfileError``."""
    expected = notebook_parameters(chapter)
    out = dict(params)
    for k, v in overrides.items():
        if k not in params:
            raise ProfileError(f"chapter {chapter!r} has no parameter {k!r}; it has {sorted(params)}")
        out[k] = _typed(v, expected[k], f"parameter {k!r} of chapter {chapter!r}")
    return out


def check_parameters(chapter: str, namespace: dict) -> None:
    """Inside a chapter's notebook, after the values papermill injected: each parameter has its
    default's type (converted where text stands for a number); a wrong one stops the notebook
    with a one-line ``ProfileError`` naming it, before anything is computed."""
    for name, default in notebook_parameters(chapter).items():
        if name in namespace:
            namespace[name] = _typed(namespace[name], default,
                                     f"parameter {name!r} of chapter {chapter!r} (papermill -p / -y, or the profile)")
