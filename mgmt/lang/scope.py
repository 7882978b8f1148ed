"""Scopes, name resolution and binding order: the checker's first pass over a block.

Each statement block is a scope (`Scope`); inner scopes (if blocks, lambdas, loop bodies,
includes) see the outer ones. `Resolver` declares a block's names (binding a name twice in one
scope is an error), points every `$var` and named call at what it names (a binding, a
parameter, a `func`, a builtin, a `$const...` value) and orders the block's bindings so that
each comes after the ones it uses: they may be written in any order, a cycle is an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

from engine.params import close_match
from mgmt.lang import ast, funcs
from mgmt.lang.errors import Abort, Problems
from mgmt.lang.kinds import CONST_PREFIX, constant
from mgmt.lang.modules import ImportName, parse_import
from mgmt.lang.types import STR, Type

# Variables every program sees (a binding of the same name shadows one): the agent's values.
CONTEXT_VARS: dict[str, Type] = {"hostname": STR}

Binding = ast.Bind | ast.FuncDef
# What a block orders: its bindings, and its `include ... as` (bindings may read their names).
Orderable = ast.Bind | ast.FuncDef | ast.Include


class Scope:
    def __init__(self, parent: Scope | None = None) -> None:
        self.parent = parent
        self.vars: dict[str, ast.Bind | ast.Param] = {}
        self.funcs: dict[str, ast.FuncDef] = {}
        self.imports: dict[str, str] = {}
        # class name -> its definition and the scope it was defined in (its body sees that)
        self.classes: dict[str, tuple[ast.ClassDef, Scope]] = {}
        # name -> the scope of a local module imported, or of an `include ... as name`: its
        # bindings, funcs and classes are `$name.x`, `name.f()`, `include name.c`.
        self.namespaces: dict[str, Scope] = {}
        # `include ... as name` statements of this block not checked yet (their namespace is
        # made when they are): a `$name.x` read before waits for it (Resolver.settle).
        self.includes: dict[str, ast.Include] = {}
        # The namespace of a module whose import failed (reported): its uses are not errors
        # of their own.
        self.broken = False
        # Names of funcs and imports refused in this block (a loop's body): their uses are
        # not errors of their own.
        self.refused: set[str] = set()

    def chain(self) -> Iterable[Scope]:
        """This scope, then each enclosing one."""
        scope: Scope | None = self
        while scope is not None:
            yield scope
            scope = scope.parent

    def var(self, name: str) -> ast.Bind | ast.Param | None:
        for scope in self.chain():
            if name in scope.vars:
                return scope.vars[name]
        return None

    def cls(self, name: str) -> tuple[ast.ClassDef, Scope] | None:
        if "." in name:
            prefix, _, short = name.rpartition(".")
            space = self.namespace(prefix)
            return None if space is None else space.classes.get(short)
        for scope in self.chain():
            if name in scope.classes:
                return scope.classes[name]
        return None

    def namespace(self, dotted: str) -> Scope | None:
        """The scope `a` or `a.b` (a namespace inside a namespace) names, if any."""
        first, *rest = dotted.split(".")
        space = next((s.namespaces[first] for s in self.chain() if first in s.namespaces), None)
        for name in rest:
            if space is None:
                return None
            space = space.namespaces.get(name)
        return space

    def was_refused(self, name: str) -> bool:
        """Whether `name` is a func or an import refused here or in an enclosing block."""
        return any(name in scope.refused for scope in self.chain())

    def func(self, name: str) -> ast.FuncDef | None:
        for scope in self.chain():
            if name in scope.funcs:
                return scope.funcs[name]
        return None

    def module(self, alias: str) -> str | None:
        for scope in self.chain():
            if alias in scope.imports:
                return scope.imports[alias]
        return None

    def all_vars(self) -> list[str]:
        return [n for s in self.chain() for n in s.vars]

    def all_classes(self) -> list[str]:
        return [n for s in self.chain() for n in s.classes]


class Resolver:
    """Declares names, resolves references and orders bindings, recording problems.

    `failed` holds the ids of bindings whose check failed (shared with the checker, which adds
    those whose typing failed): a reference to one stops the check of what uses it, silently
    (its own problem is already reported).
    """

    def __init__(
        self,
        problems: Problems,
        failed: set[int],
        load: Callable[[ast.Import, ImportName], Scope | None] | None = None,
    ) -> None:
        self.problems = problems
        self.failed = failed
        # Every system module whose functions are called, in any scope (imported only: not).
        self.modules: set[str] = set()
        # Loads and checks a local module: its scope (None when it failed, reported).
        self.load = load
        # `$i.x` read before `include ... as i` was checked: resolved by settle().
        self._unsettled: list[tuple[ast.Var, Scope]] = []

    # declarations ---------------------------------------------------------------------------

    def declare(self, stmts: list[ast.Stmt], scope: Scope) -> list[Binding]:
        """Declare a block's imports, bindings, funcs and classes in its scope; returns the
        bindings and funcs (a name declared twice keeps the first)."""
        binds: list[Binding] = []
        for stmt in stmts:
            if isinstance(stmt, ast.Import):
                self._import(stmt, scope)
            elif isinstance(stmt, ast.Bind):
                if self._unique(scope.vars, stmt, stmt, f"${stmt.name} is already bound"):
                    binds.append(stmt)
            elif isinstance(stmt, ast.FuncDef):
                if self._unique(scope.funcs, stmt, stmt, f"func {stmt.name} is already defined"):
                    binds.append(stmt)
            elif isinstance(stmt, ast.ClassDef):
                self._unique(
                    scope.classes, stmt, (stmt, scope), f"class {stmt.name} is already defined"
                )
        return binds

    def _unique(
        self,
        table: dict[str, Any],
        stmt: ast.Bind | ast.FuncDef | ast.ClassDef,
        value: Any,
        message: str,
    ) -> bool:
        """Declare `value` under the statement's name unless the scope has that name already
        (then say `message`, with where the first one is)."""
        known = table.get(stmt.name)
        if known is not None:
            first = known[0] if isinstance(known, tuple) else known
            self.problems.add(stmt.pos, f"{message} in this scope (at {first.pos})")
            return False
        table[stmt.name] = value
        return True

    def _import(self, stmt: ast.Import, scope: Scope) -> None:
        try:
            imp = parse_import(stmt.module)
        except ValueError as err:
            self.problems.add(stmt.pos, f'import "{stmt.module}": {err}')
            return
        if imp.system and stmt.module not in funcs.MODULES:
            scope.refused.add(stmt.alias or imp.alias)  # the one error: not its calls too
            missing = funcs.mgmt_only(stmt.module)
            if missing is not None:
                self.problems.add(stmt.pos, f'import "{stmt.module}": {missing}')
                return
            known = ", ".join(funcs.module_names())
            self.problems.add(
                stmt.pos,
                f'unknown module "{stmt.module}"{close_match(stmt.module, funcs.module_names())}; '
                f'modules: {known} (or a local "file.mcl" or "directory/")',
            )
            return
        alias = stmt.alias or imp.alias
        if alias in scope.imports or alias in scope.namespaces:
            self.problems.add(stmt.pos, f'"{alias}" is already imported in this scope')
            return
        if imp.system:
            if alias == "*":
                self.problems.add(stmt.pos, f'import "{stmt.module}" as *: only local modules')
                return
            scope.imports[alias] = stmt.module
            return
        space = self.load(stmt, imp) if self.load is not None else None
        if space is None:
            if alias != "*":
                scope.namespaces[alias] = space = Scope()
                space.broken = True
            return
        if alias != "*":
            scope.namespaces[alias] = space
            return
        for table, theirs in (
            (scope.vars, space.vars),
            (scope.funcs, space.funcs),
            (scope.classes, space.classes),
            (scope.namespaces, space.namespaces),
        ):
            for name, value in theirs.items():
                if name in table:
                    self.problems.add(
                        stmt.pos, f'import "{stmt.module}" as *: {name} is already defined here'
                    )
                    continue
                table[name] = value  # type: ignore[assignment]

    # binding order --------------------------------------------------------------------------

    def uses(self, node: Orderable, scope: Scope, local: set[int], found: list[Orderable]) -> None:
        """Resolve what a binding, func or named include reads; collect in `found` those of
        `local` (the block's) it uses."""
        if isinstance(node, ast.Include):
            first = node.name.split(".")[0]
            inc = self._include_named(first, scope) if "." in node.name else None
            if inc is not None and id(inc) in local and inc not in found:
                found.append(inc)
            for arg in node.args:
                self.resolve(arg, scope, local, found)
            return
        expr = node.expr if isinstance(node, ast.Bind) else node.lam
        self.resolve(expr, scope, local, found)

    def _include_named(self, alias: str, scope: Scope) -> ast.Include | None:
        """The `include ... as alias` not checked yet that `alias` names, if it is one."""
        for s in scope.chain():
            if alias in s.namespaces:
                return None
            if alias in s.includes:
                return s.includes[alias]
        return None

    def settle(self) -> None:
        """Resolve the `$i.x` read before their include was checked, now that it is."""
        waiting, self._unsettled = self._unsettled, []
        for expr, scope in waiting:
            prefix = expr.name.rpartition(".")[0]
            if scope.namespace(prefix) is None:
                if self._include_named(prefix.split(".")[0], scope) is not None:
                    self._unsettled.append((expr, scope))  # its include comes later
                continue  # (its include failed: reported)
            with contextlib.suppress(Abort):
                expr.target = self._dotted_var(expr, scope)

    def order(self, binds: list[Orderable], deps: dict[int, list[Orderable]]) -> list[Orderable]:
        """Bindings with each one after everything it uses; a cycle is reported and skipped."""
        order: list[Orderable] = []
        state: dict[int, int] = {}  # 1 = visiting, 2 = done
        path: list[Orderable] = []

        def visit(b: Orderable) -> None:
            state[id(b)] = 1
            path.append(b)
            for d in deps[id(b)]:
                if state.get(id(d)) == 1:
                    cycle = [*path[path.index(d) :], d]
                    names = " -> ".join(_label(c) for c in cycle)
                    self.problems.add(d.pos, f"dependency cycle: {names}")
                    for c in cycle:
                        self.failed.add(id(c))
                elif id(d) not in state:
                    visit(d)
            path.pop()
            state[id(b)] = 2
            order.append(b)

        for b in binds:
            if id(b) not in state:
                visit(b)
        return order

    # name resolution ------------------------------------------------------------------------

    def resolve(
        self, expr: ast.Expr, scope: Scope, local: set[int], found: list[Orderable]
    ) -> None:
        """Point every Var and named Call at what it names; collect in `found` what it uses
        among the bindings of the block being ordered (`local`: their ids)."""
        if isinstance(expr, ast.Var):
            if "." in expr.name:  # $const.res.file.state.exists, or a namespace's variable
                inc = self._include_named(expr.name.split(".")[0], scope)
                if inc is not None:  # `include ... as` not checked yet: wait for it
                    if id(inc) in local and inc not in found:
                        found.append(inc)
                    expr.target = None
                    self._unsettled.append((expr, scope))
                    return
                expr.target = self._dotted_var(expr, scope)
                if id(expr.target) in self.failed:
                    raise Abort()
                return
            target = scope.var(expr.name)
            if target is None and expr.name in CONTEXT_VARS:
                expr.target = ast.ContextVar(expr.pos, expr.name, CONTEXT_VARS[expr.name])
                return
            if target is None:
                raise self.problems.abort(
                    expr.pos,
                    f"undefined variable ${expr.name}{close_match(expr.name, scope.all_vars())}",
                )
            expr.target = target
            if id(target) in local and target not in found:
                found.append(target)  # type: ignore[arg-type]
            if id(target) in self.failed:
                raise Abort()
            return
        if isinstance(expr, ast.Call):
            if expr.func is not None:
                expr.target = self._resolve_func(expr, scope)
                if id(expr.target) in local and expr.target not in found:
                    found.append(expr.target)
            else:
                assert expr.callee is not None
                self.resolve(expr.callee, scope, local, found)
            for arg in expr.args:
                self.resolve(arg, scope, local, found)
            return
        if isinstance(expr, ast.Lambda):
            inner = Scope(scope)
            for param in expr.params:
                if param.name in inner.vars:
                    raise self.problems.abort(param.pos, f"parameter ${param.name} is given twice")
                inner.vars[param.name] = param
            self.resolve(expr.body, inner, local, found)
            return
        for child in ast.children(expr):  # Var, Call and Lambda are handled above
            self.resolve(child, scope, local, found)

    def _dotted_var(self, expr: ast.Var, scope: Scope) -> ast.Lit | ast.Bind | ast.Param:
        value = constant(expr.name)
        if value is not None:
            return ast.Lit(expr.pos, value)
        prefix, _, short = expr.name.rpartition(".")
        space = scope.namespace(prefix)
        if space is not None:
            if space.broken:
                raise Abort()
            target = space.vars.get(short)
            if target is None:
                raise self.problems.abort(
                    expr.pos,
                    f"undefined variable ${expr.name}: {prefix} has no ${short}"
                    f"{close_match(short, list(space.vars))}",
                )
            return target
        if expr.name.startswith(CONST_PREFIX):
            raise self.problems.abort(
                expr.pos,
                f"unknown constant ${expr.name}: constants are "
                "$const.res.<kind>.<param>.<value>, for a param with fixed values "
                "(e.g. $const.res.file.state.exists)",
            )
        if scope.module(prefix) is not None:
            raise self.problems.abort(
                expr.pos,
                f"undefined variable ${expr.name}: the built-in module {prefix} has functions only",
            )
        raise self.problems.abort(
            expr.pos,
            f"undefined variable ${expr.name}: no module or `include ... as` named {prefix} here",
        )

    def _resolve_func(self, call: ast.Call, scope: Scope) -> ast.FuncDef | funcs.Builtin:
        name = call.func or ""
        if "." not in name:
            fdef = scope.func(name)
            if fdef is not None:
                return fdef
            builtin = funcs.lookup("", name)
            if builtin is not None:
                return builtin
            if scope.was_refused(name):
                raise Abort()  # the func's refusal is the one error
            extra = f' (import "{name}" and call {name}.something)' if name in funcs.MODULES else ""
            names = list(funcs.MODULES[""])
            raise self.problems.abort(
                call.pos, f"undefined function {name}{close_match(name, names)}{extra}"
            )
        alias, _, short = name.rpartition(".")
        space = scope.namespace(alias)
        if space is not None:
            if space.broken:
                raise Abort()
            fdef = space.funcs.get(short)
            if fdef is None:
                raise self.problems.abort(
                    call.pos,
                    f"undefined function {name}: {alias} has no func {short}"
                    f"{close_match(short, list(space.funcs))}",
                )
            return fdef
        if "." in alias:
            alias, _, short = name.partition(".")
        module = scope.module(alias)
        if module is None:
            if scope.was_refused(alias):
                raise Abort()  # the import's refusal is the one error
            hint = f'; add import "{alias}"' if alias in funcs.MODULES else ""
            raise self.problems.abort(call.pos, f"unknown package {alias!r} in {name}(){hint}")
        builtin = funcs.lookup(module, short)
        if builtin is None:
            missing = funcs.mgmt_only(f"{module}.{short}")
            if missing is not None:
                raise self.problems.abort(call.pos, missing)
            renamed = funcs.RENAMED.get(f"{module}.{short}")
            hint = (
                f" (mgmt calls it {renamed})"
                if renamed
                else close_match(short, list(funcs.MODULES[module]))
            )
            raise self.problems.abort(call.pos, f"module {module} has no function {short}{hint}")
        self.modules.add(module)
        return builtin


def _label(b: Orderable) -> str:
    if isinstance(b, ast.Include):
        return f"include {b.name} as {b.alias}"
    return f"${b.name}" if isinstance(b, ast.Bind) else f"{b.name}()"
