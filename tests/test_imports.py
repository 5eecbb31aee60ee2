"""The project's layering, read from the source: no import cycle among its modules; the library (``amr``) imports
no entry point, trainer or evaluator; ``train`` and ``eval`` do not import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("amr", "jobs", "train", "eval")
FORBIDDEN = {"amr": ("jobs", "train", "eval"), "train": ("jobs", "eval"), "eval": ("jobs", "train")}

pytestmark = pytest.mark.timeout(60)


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules ``path`` imports, at any depth of its code (a lazy import is still a dependency)."""
    found = set()
    package = _module(path) if path.name == "__init__.py" else _module(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            # a submodule where the name is one, else the module the name is taken from
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def graph() -> nx.DiGraph:
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    modules = {_module(p) for p in files}
    g = nx.DiGraph()
    for path in files:
        g.add_node(_module(path))
        g.add_edges_from((_module(path), target) for target in _imports(path, modules) if target != _module(path))
    return g


def test_the_graph_is_read_from_the_source():
    g = graph()
    assert ("jobs.cli", "jobs.distill") in g.edges and ("amr.pipelines.waves", "amr.stages") in g.edges
    assert ("jobs.run", "eval.evaluate") in g.edges and ("train.trainer", "amr.config") in g.edges


def test_no_import_cycle():
    cycles = list(nx.simple_cycles(graph()))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join([*c, c[0]]) for c in cycles[:5])


def test_layers():
    wrong = [f"{a} imports {b}" for a, b in graph().edges if b.split(".")[0] in FORBIDDEN.get(a.split(".")[0], ())]
    assert not wrong, wrong
