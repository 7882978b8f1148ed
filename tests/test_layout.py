"""The layout of the code: kinds import only `engine` and `resources._lib`, never each other;
no import cycles between our modules (docs/resources/README.md, "The shared layer";
docs/architecture.md, the module map).

A cycle counts every import that runs, a lazy one inside a function too (it still needs the
other module whole). Imports under `if TYPE_CHECKING:` never run: they only let two modules
name each other's types (an event names the `Vertex` it is about), so outside `resources`
(which has none at all) they are not cycles.

`python -m tests.test_layout` prints the import graph's offending edges and cycles.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from tests.pysource import parse

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "resources", "mgmt")
LIB = "resources._lib"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of our packages, by dotted name."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST, runtime_only: bool) -> list[ast.AST]:
    """Every node of `tree`; with `runtime_only`, not those under `if TYPE_CHECKING:`."""
    found: list[ast.AST] = []
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        found.append(node)
        if runtime_only and isinstance(node, ast.If) and _is_type_checking(node):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return found


def imports(name: str, path: Path, known: dict[str, Path], runtime_only: bool = False) -> set[str]:
    """The modules of ours that `name` imports, wherever the import is (function bodies
    included: a lazy import is still a dependency; TYPE_CHECKING blocks unless
    `runtime_only`)."""
    tree = parse(path)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _import_nodes(tree, runtime_only):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for dotted in targets:
            target = dotted
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(f"{target}."):
                found.add(target)  # (a module's own parent packages are imported anyway)
    return found


def graph(runtime_only: bool = False) -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known, runtime_only) for name, path in known.items()}


def kind_of(module: str) -> str | None:
    """The kind a module of resources/ belongs to ("svc", "virt"...), None for the rest."""
    parts = module.split(".")
    if parts[0] != "resources" or len(parts) < 2 or parts[1] == "_lib":
        return None
    return parts[1]


def layout_errors(edges: dict[str, set[str]]) -> list[str]:
    """Imports the layout forbids: a kind importing another kind (or anything of resources/
    but its own package and _lib), _lib importing a kind, engine importing resources."""
    errors = []
    for source, targets in sorted(edges.items()):
        for target in sorted(targets):
            kind, other = kind_of(source), kind_of(target)
            if kind is not None and other is not None and other != kind:
                errors.append(f"{source} imports {target}: a kind imports another kind")
            if kind is not None and target == "resources":
                errors.append(f"{source} imports resources: use engine or {LIB}")
            if source.startswith(LIB) and other is not None:
                errors.append(f"{source} imports {target}: {LIB} imports a kind")
            if source.startswith("engine") and target.startswith("resources"):
                errors.append(f"{source} imports {target}: engine imports a resource module")
    return errors


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles (one per strongly connected component of two or more modules)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_kinds_import_only_engine_and_the_shared_layer() -> None:
    assert layout_errors(graph()) == []


def test_no_import_cycles_in_resources() -> None:
    """Not even through type-only imports."""
    resource_cycles = [c for c in cycles(graph()) if any(m.startswith("resources") for m in c)]
    assert resource_cycles == []


def test_no_import_cycles_anywhere() -> None:
    """engine, resources, mgmt, mgmt.cluster, mgmt.lang...: no imports that run make a cycle
    (lazy ones in functions included)."""
    assert cycles(graph(runtime_only=True)) == []


def test_type_checking_imports_are_not_runtime_edges(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import engine.graph\n"
        "if TYPE_CHECKING:\n    from engine.handle import Handle\n"
        "def f() -> None:\n    from engine import errors\n"
    )
    known = modules()
    everything = {"engine", "engine.graph", "engine.handle", "engine.errors"}
    assert imports("x.m", source, known) == everything
    assert imports("x.m", source, known, runtime_only=True) == everything - {"engine.handle"}


# kv's compare-and-set may lose to another host and compare again: not one Step.
OWN_PLAN_LINES = {"resources/kv.py": 1}


def test_kinds_plan_and_apply_through_one_helper() -> None:
    """Only resources/_lib/plan.py writes "would ..." and "nothing to do: ..." lines."""
    found: dict[str, int] = {}
    for path in sorted((ROOT / "resources").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "resources/_lib/plan.py":
            continue
        text = path.read_text(encoding="utf-8")
        count = text.count('"would ') + text.count('"nothing to do')
        if count:
            found[rel] = count
    assert found == OWN_PLAN_LINES


def test_the_check_sees_a_forbidden_import_and_a_cycle() -> None:
    edges = {
        "resources.cron": {"resources.svc", "resources._lib.systemd"},
        "resources._lib.systemd": {"engine.handle"},
        "resources.pkg.apt": {"resources.pkg.backend"},
        "resources.pkg.backend": {"resources.pkg.apt"},
    }
    assert layout_errors(edges) == [
        "resources.cron imports resources.svc: a kind imports another kind"
    ]
    assert cycles(edges) == [["resources.pkg.apt", "resources.pkg.backend"]]


def main() -> int:
    """Print every forbidden import and every cycle (type-only ones marked); exit 1 if one
    the tests forbid is there."""
    edges = graph()
    runtime = cycles(graph(runtime_only=True))
    problems = layout_errors(edges)
    for cycle in cycles(edges):
        kind = "cycle" if any(set(cycle) >= set(c) for c in runtime) else "type-only cycle"
        problems.append(" <-> ".join(cycle) + f" ({kind})")
    for line in problems:
        print(line)
    forbidden = [p for p in problems if "resources" in p or not p.endswith("(type-only cycle)")]
    return 1 if forbidden else 0


if __name__ == "__main__":
    sys.exit(main())
