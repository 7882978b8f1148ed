"""The language's modules import one another without cycles (each part can be read, and
loaded, after the ones it uses)."""

from __future__ import annotations

import ast
from pathlib import Path

import mgmt.lang
from tests.pysource import parse

PACKAGE = Path(mgmt.lang.__file__).parent


def _imports(path: Path) -> set[str]:
    """The mgmt.lang modules `path` imports, anywhere but under `if TYPE_CHECKING:`."""
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            for name in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, name, None)
                if isinstance(inner, list):
                    visit(inner)

    visit(parse(path).body)
    return found


def _name(path: Path) -> str:
    """mgmt.lang.runtime for runtime.py, mgmt.lang.funcs for funcs/__init__.py."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(("mgmt.lang", *(parts[:-1] if parts[-1] == "__init__" else parts)))


def test_no_import_cycles_inside_the_language() -> None:
    modules = {_name(p): p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py"}
    # (`from mgmt.lang.funcs import os` in funcs/__init__.py names its own package: no edge)
    graph = {name: sorted(_imports(path) & set(modules) - {name}) for name, path in modules.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        path.append(name)
        for dep in graph[name]:
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep, path)
        path.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert cycles == []
    assert "mgmt.lang.checker" in graph["mgmt.lang.runtime"]  # the scan does see imports
    assert "mgmt.lang.funcs.registry" in graph["mgmt.lang.funcs.os"]  # and sub-packages
