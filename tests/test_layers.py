"""The library's layers import in one direction: each module imports only from its own layer or
the layers below it (imports inside functions included), and no modules import each other in a
cycle.  CONTRIBUTING.md shows the same table."""

import ast
from pathlib import Path

import mplp

PACKAGE = Path(mplp.__file__).parent

# lowest first; a module may import from its own layer and the layers before it
LAYERS = [
    ("paths",),
    ("core",),
    ("tasks",),
    ("store",),
    ("meta",),
    ("claims",),
    ("chapters",),
    ("longruns", "sweep", "pretrained"),
    ("book",),
    ("cli", "bench"),
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = p.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``mplp`` that ``name`` imports, anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            if base.split(".")[0] != "mplp":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in known else base)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "mplp" and a.name in known}
    return found - {name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(m, p, set(mods)) for m, p in mods.items()}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_module_has_a_layer_and_imports_only_downwards():
    upward = []
    for m, targets in graph().items():
        if m == "mplp":
            continue
        assert layer(m) in RANK, f"{m} is in no layer: add it to LAYERS here and to CONTRIBUTING.md"
        upward += [(m, t) for t in targets if t != "mplp" and RANK[layer(t)] > RANK[layer(m)]]
    assert not upward, f"imports from a higher layer: {upward}"


def test_no_import_cycle():
    g = graph()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m):
        state[m] = 1
        path.append(m)
        for t in sorted(g.get(m, ())):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(t):] + [t]))
            if t not in state:
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)


def test_the_layers_are_subpackages_and_contributing_shows_them():
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert len(packages) >= 5 and packages <= set(RANK)
    text = (PACKAGE.parent / "CONTRIBUTING.md").read_text()
    assert all(f"`mplp/{p}/`" in text for p in packages), "CONTRIBUTING.md names every subpackage"


def test_tests_mirror_the_layers():
    """``tests/<layer>/test_<module>.py`` for the subpackages' modules; no test sits in a folder
    that is not a layer."""
    tests = PACKAGE.parent / "tests"
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    folders = {p.parent.name for p in tests.glob("*/test_*.py")}
    assert folders <= packages, f"test folders without a layer: {sorted(folders - packages)}"
