"""Imports point one way only: engines ← export ← realtime ← benchmarks, and inside realtime/ too.

The test reads every import statement of our packages (module level and inside
functions, ``import x`` and ``from x import y``, relative ones resolved) with
:mod:`ast` and fails on an import from a lower layer into a higher one, naming
the file, the line and the imported module. Nothing of ours imports ``tests``.

Inside ``realtime/`` the packages are layered as well::

    settings, events, tasks  ←  media  ←  conversation  ←  web  ←  pipecat  ←  cli

(``media`` is AvatarStream, motion, the render scheduler, the pacer and the
tracks; it knows nothing of Pipecat pipelines, HTTP or the command line.) The
CLI names its subcommands' handlers as ``"module:function"`` strings, imported
only when that subcommand runs; those strings are not imports and are not
checked here (``splatcast bench`` dispatches to ``benchmarks/``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("engines", "export", "realtime", "benchmarks")
REALTIME_LAYERS = (
    ("settings", "events", "tasks"),
    ("media",),
    ("conversation",),
    ("web",),
    ("pipecat",),
    ("cli",),
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(module: str, is_package: bool, source: str) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import in ``source`` (the text of ``module``)."""
    tree = ast.parse(source)
    package = module.split(".") if is_package else module.split(".")[:-1]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this file's package
                base = package[: len(package) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            out.append((node.lineno, name))
            # `from realtime import media` imports realtime.media
            out += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
    return out


def _layer(module: str) -> int | None:
    top = module.split(".")[0]
    return LAYERS.index(top) if top in LAYERS else None


def _realtime_layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "realtime" or len(parts) < 2:
        return None
    return next((i for i, names in enumerate(REALTIME_LAYERS) if parts[1] in names), None)


def _our_files() -> list[Path]:
    return sorted(p for top in LAYERS for p in (ROOT / top).rglob("*.py"))


def back_edges(path: str, source: str) -> list[str]:
    """The imports of one file (``path`` relative to the repository) that go against the layering."""
    here = _module_name(ROOT / path)
    mine, mine_rt = _layer(here), _realtime_layer(here)
    found: list[str] = []
    reported: set[int] = set()  # one complaint per import statement
    for line, imported in _imports(here, path.endswith("__init__.py"), source):
        if line in reported:
            continue
        where = f"{path}:{line} imports {imported}"
        if imported.split(".")[0] == "tests":
            found.append(f"{where} (test helpers are for tests only)")
            reported.add(line)
            continue
        theirs = _layer(imported)
        if mine is not None and theirs is not None and theirs > mine:
            found.append(f"{where} ({LAYERS[mine]} sits below {LAYERS[theirs]})")
            reported.add(line)
            continue
        theirs_rt = _realtime_layer(imported)
        if mine_rt is not None and theirs_rt is not None and theirs_rt > mine_rt:
            found.append(
                f"{where} (realtime.{here.split('.')[1]} sits below realtime.{imported.split('.')[1]})"
            )
            reported.add(line)
    return found


def test_every_package_is_in_a_layer() -> None:
    """A new package under realtime/ must be given its place in REALTIME_LAYERS."""
    known = {name for names in REALTIME_LAYERS for name in names}
    children = {p.stem if p.is_file() else p.name for p in (ROOT / "realtime").iterdir()}
    children = {c for c in children if not c.startswith(("_", ".")) and c != "py.typed"}
    assert children <= known, f"realtime/ has modules with no layer: {sorted(children - known)}"


def test_imports_point_one_way() -> None:
    files = _our_files()
    assert len(files) > 50  # the walk found the tree
    edges = [e for f in files for e in back_edges(str(f.relative_to(ROOT)), f.read_text(encoding="utf-8"))]
    assert not edges, "imports against the layering:\n" + "\n".join(edges)


@pytest.mark.parametrize(
    ("path", "source", "complaint"),
    [
        ("engines/a2v/fake.py", "from export.onnx import export_onnx\n", "engines sits below export"),
        ("export/fake.py", "def f():\n    import realtime.settings\n", "export sits below realtime"),
        (
            "realtime/media/fake.py",
            "from realtime.web import sessions\n",
            "realtime.media sits below realtime.web",
        ),
        (
            "realtime/media/fake.py",
            "from ..conversation import loop\n",
            "realtime.media sits below realtime.conversation",
        ),
        ("benchmarks/fake.py", "from tests.servers import x\n", "test helpers are for tests only"),
    ],
)
def test_a_back_edge_is_reported(path: str, source: str, complaint: str) -> None:
    """The walk really sees imports at module level, inside functions, relative and `from pkg import mod`."""
    edges = back_edges(path, source)
    assert len(edges) == 1 and complaint in edges[0], edges


def test_allowed_edges_are_not_reported() -> None:
    source = "import engines.splat\nfrom export import onnx\nfrom realtime.cli import main\nfrom . import x\n"
    assert back_edges("benchmarks/fake.py", source) == []
    assert (
        back_edges("realtime/web/fake.py", "from realtime.media import pacer\nfrom ..settings import S\n")
        == []
    )
