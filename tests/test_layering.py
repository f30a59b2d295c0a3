"""The package order of docs/ARCHITECTURE.md holds: every import in src/ (function-level ones included)
points down the layers, and no module imports itself back through others."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "effnet"
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"


def read_layers(markdown: str) -> dict[str, int]:
    """Each unit's layer from the ```layers block: one line per layer, lowest first; a unit is a
    top-level module or a subpackage of effnet (``effnet`` itself is the public API)."""
    match = re.search(r"```layers\n(.*?)```", markdown, re.S)
    assert match, "docs/ARCHITECTURE.md has no ```layers block"
    layers = {}
    for level, line in enumerate(match.group(1).splitlines()):
        for unit in line.split("#")[0].split():
            assert unit not in layers, f"{unit} is in two layers"
            layers[unit] = level
    return layers


def module_name(path: Path, source: Path) -> str:
    parts = list(path.relative_to(source.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(source: Path) -> dict[str, set[str]]:
    """Module → the effnet modules it imports anywhere in its body (``from pkg import submodule`` counts
    as importing the submodule)."""
    paths = {module_name(path, source): path for path in source.rglob("*.py")}

    def known(name: str) -> str | None:
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in paths.items():
        graph[module]
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base for a in node.names]
            else:
                continue
            for target in targets:
                if target.split(".")[0] == source.name and (found := known(target)) and found != module:
                    graph[module].add(found)
    return graph


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def upward_imports(graph: dict[str, set[str]], layers: dict[str, int]) -> list[str]:
    return sorted(
        f"{module} imports {target} ({unit_of(target)} is above {unit_of(module)})"
        for module, targets in graph.items()
        for target in targets
        if layers[unit_of(target)] > layers[unit_of(module)]
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_every_unit_has_a_layer():
    layers = read_layers(ARCHITECTURE.read_text(encoding="utf-8"))
    units = {unit_of(module) for module in import_graph(SOURCE)}
    assert units - set(layers) == set(), "units missing from the ```layers block of docs/ARCHITECTURE.md"
    assert set(layers) - units == set(), "the ```layers block names units that do not exist"


def test_imports_point_down_the_layers():
    layers = read_layers(ARCHITECTURE.read_text(encoding="utf-8"))
    assert upward_imports(import_graph(SOURCE), layers) == []


def test_no_import_cycles():
    assert cycles(import_graph(SOURCE)) == []


@pytest.fixture
def toy(tmp_path):
    """A package with one upward import (low → high) and one cycle (high.a ↔ high.b, function-level)."""
    package = tmp_path / "toy"
    (package / "high").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("def f():\n    from toy.high import a\n")
    (package / "high" / "__init__.py").write_text("")
    (package / "high" / "a.py").write_text("from . import b\n")
    (package / "high" / "b.py").write_text("def g():\n    from toy.high.a import x\n")
    return package


def test_the_checks_find_upward_imports_and_cycles(toy):
    graph = import_graph(toy)
    assert graph["toy.low"] == {"toy.high.a"}
    layers = read_layers("```layers\nlow\nhigh\ntoy\n```")
    assert upward_imports(graph, layers) == ["toy.low imports toy.high.a (high is above low)"]
    assert cycles(graph) == [["toy.high.a", "toy.high.b"]]
