"""Name resolution, binding order and type inference: everything checked before anything runs.

- Each statement block is a scope. Its bindings (`$x = ...`, `func f(...) {...}`) may appear
  in any order: they are checked in dependency order; binding a name twice in one scope and a
  dependency cycle are errors. Inner scopes (if blocks, lambdas) see the outer ones.
- Types are inferred by unification (Hindley-Milner style). A lambda bound to a name, and a
  `func` statement, are generalised (usable at several types). Overloaded operators and
  functions (+ on int/float/str, len on str/list/map...) are constraints solved once the
  argument types are known; `->field` and `[index]` wait for their operand's type likewise.
- Resources are checked against the registered kinds: known kind, known params with the right
  types, required params present, constant values validated by the kind itself.
Every problem is reported as `file:line:col: message`; type errors show both types.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import resources  # noqa: F401  # lets lookup() load every kind on first use
from engine.errors import ValidationError
from engine.meta import Meta
from engine.params import build
from engine.resource import kinds as known_kinds
from engine.resource import lookup as lookup_kind
from mgmt.collectscope import check_kind as collect_refusal
from mgmt.lang import ast, funcs
from mgmt.lang.errors import CompileError, Pos
from mgmt.lang.gofmt import VERB_TYPES, verbs
from mgmt.lang.kinds import (
    CONST_PREFIX,
    EXPORT_PREFIX,
    ParamType,
    capitalized,
    constant,
    kind_params,
    meta_params,
    sends,
)
from mgmt.lang.types import (
    BASIC,
    BOOL,
    COLLECTED,
    FLOAT,
    INT,
    STR,
    TFunc,
    TList,
    TMap,
    TStruct,
    TVar,
    Type,
    Unifier,
    UnifyError,
    free_vars,
    instantiate,
    parse_type,
    prune,
    show,
)


class _Abort(Exception):
    """Stop checking the current binding or statement (its problem is already recorded)."""


def _hint(name: str, names: Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(names), n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""


class Scope:
    def __init__(self, parent: Scope | None = None) -> None:
        self.parent = parent
        self.vars: dict[str, ast.Bind | ast.Param] = {}
        self.funcs: dict[str, ast.FuncDef] = {}
        self.imports: dict[str, str] = {}
        # class name -> its definition and the scope it was defined in (its body sees that)
        self.classes: dict[str, tuple[ast.ClassDef, Scope]] = {}

    def _chain(self) -> Iterable[Scope]:
        scope: Scope | None = self
        while scope is not None:
            yield scope
            scope = scope.parent

    def var(self, name: str) -> ast.Bind | ast.Param | None:
        for scope in self._chain():
            if name in scope.vars:
                return scope.vars[name]
        return None

    def cls(self, name: str) -> tuple[ast.ClassDef, Scope] | None:
        for scope in self._chain():
            if name in scope.classes:
                return scope.classes[name]
        return None

    def func(self, name: str) -> ast.FuncDef | None:
        for scope in self._chain():
            if name in scope.funcs:
                return scope.funcs[name]
        return None

    def module(self, alias: str) -> str | None:
        for scope in self._chain():
            if alias in scope.imports:
                return scope.imports[alias]
        return None

    def all_vars(self) -> set[str]:
        return {n for s in self._chain() for n in s.vars}


# deferred constraints ------------------------------------------------------------------------


@dataclass
class _OneOf:
    """`actual` must unify with one of `options` (each a list of the same length)."""

    pos: Pos
    actual: list[Type]
    options: list[list[Type]]
    message: Callable[[], str]


@dataclass
class _HasField:
    pos: Pos
    obj: Type
    name: str
    result: Type


@dataclass
class _Indexable:
    pos: Pos
    obj: Type
    index: Type
    result: Type


Constraint = _OneOf | _HasField | _Indexable


@dataclass
class Checked:
    """A checked program, ready to run."""

    program: ast.Program
    # Every binding and func statement, in every scope.
    bindings: list[ast.Bind | ast.FuncDef] = field(default_factory=list)
    # Every module imported, in any scope ("world": the program needs the cluster).
    modules: set[str] = field(default_factory=set)


class Checker:
    def __init__(self) -> None:
        self.u = Unifier()
        self.problems: list[str] = []
        self.pending: list[Constraint] = []
        self.mono: list[ast.Bind] = []
        self.failed: set[int] = set()  # ids of bindings whose check failed
        self.bindings: list[ast.Bind | ast.FuncDef] = []
        self._including: list[ast.ClassDef] = []  # the includes being checked, outermost first
        self._loops = 0  # for loops around the block being checked
        self.modules: set[str] = set()

    def problem(self, pos: Pos, message: str) -> None:
        self.problems.append(f"{pos}: {message}")

    def abort(self, pos: Pos, message: str) -> _Abort:
        self.problem(pos, message)
        return _Abort()

    def check(self, program: ast.Program) -> Checked:
        self._block(program.body, Scope())
        self._solve(final=True)
        if self.problems:
            raise CompileError(self.problems)
        return Checked(program, self.bindings, self.modules)

    # blocks ---------------------------------------------------------------------------------

    def _block(self, stmts: list[ast.Stmt], scope: Scope) -> None:
        binds: list[ast.Bind | ast.FuncDef] = []
        if self._loops:
            stmts = self._loop_body(stmts)
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
        self.bindings += binds
        local = {id(b) for b in binds}
        deps: dict[int, list[ast.Bind | ast.FuncDef]] = {}
        for b in binds:
            found: list[ast.Bind | ast.FuncDef] = []
            try:
                with self._depth_guard(b.pos):
                    self._resolve(b.expr if isinstance(b, ast.Bind) else b.lam, scope, local, found)
            except _Abort:
                self.failed.add(id(b))
            deps[id(b)] = found
        for b in self._order(binds, deps):
            if id(b) in self.failed or any(id(d) in self.failed for d in deps[id(b)]):
                self.failed.add(id(b))
                continue
            try:
                with self._depth_guard(b.pos):
                    self._binding(b)
            except _Abort:
                self.failed.add(id(b))
        for stmt in stmts:
            if isinstance(stmt, ast.Bind | ast.FuncDef | ast.Import | ast.ClassDef):
                continue
            with contextlib.suppress(_Abort), self._depth_guard(stmt.pos):
                self._statement(stmt, scope)

    @contextlib.contextmanager
    def _depth_guard(self, pos: Pos) -> Iterator[None]:
        """A RecursionError becomes a problem here. The parser bounds how deeply the syntax
        nests, but types and calls can nest through a long chain of bindings each adding a
        level (`$a2 = [$a1]`): the innermost binding or statement that overflows is named."""
        try:
            yield
        except RecursionError:
            raise self.abort(pos, "the program nests too deeply (through its bindings)") from None

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
            self.problem(stmt.pos, f"{message} in this scope (at {first.pos})")
            return False
        table[stmt.name] = value
        return True

    def _import(self, stmt: ast.Import, scope: Scope) -> None:
        if stmt.module not in funcs.MODULES or not stmt.module:
            known = ", ".join(funcs.module_names())
            self.problem(
                stmt.pos,
                f'unknown module "{stmt.module}"{_hint(stmt.module, funcs.module_names())}; '
                f"modules: {known}",
            )
            return
        alias = stmt.alias or stmt.module.rsplit("/", 1)[-1]
        if alias in scope.imports:
            self.problem(stmt.pos, f'"{alias}" is already imported in this scope')
            return
        scope.imports[alias] = stmt.module
        self.modules.add(stmt.module)

    def _order(
        self, binds: list[ast.Bind | ast.FuncDef], deps: dict[int, list[ast.Bind | ast.FuncDef]]
    ) -> list[ast.Bind | ast.FuncDef]:
        """Bindings with each one after everything it uses; a cycle is reported and skipped."""
        order: list[ast.Bind | ast.FuncDef] = []
        state: dict[int, int] = {}  # 1 = visiting, 2 = done
        path: list[ast.Bind | ast.FuncDef] = []

        def visit(b: ast.Bind | ast.FuncDef) -> None:
            state[id(b)] = 1
            path.append(b)
            for d in deps[id(b)]:
                if state.get(id(d)) == 1:
                    cycle = [*path[path.index(d) :], d]
                    names = " -> ".join(_label(c) for c in cycle)
                    self.problem(d.pos, f"dependency cycle: {names}")
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

    def _resolve(
        self,
        expr: ast.Expr,
        scope: Scope,
        local: set[int],
        found: list[ast.Bind | ast.FuncDef],
    ) -> None:
        """Point every Var and named Call at what it names; collect same-scope dependencies."""
        if isinstance(expr, ast.Var):
            if "." in expr.name:  # $const.res.file.state.exists, or a package's variable
                expr.target = self._dotted_var(expr)
                return
            target = scope.var(expr.name)
            if target is None:
                raise self.abort(
                    expr.pos, f"undefined variable ${expr.name}{_hint(expr.name, scope.all_vars())}"
                )
            expr.target = target
            if id(target) in local and target not in found:
                found.append(target)  # type: ignore[arg-type]
            if id(target) in self.failed:
                raise _Abort()
            return
        if isinstance(expr, ast.Call):
            if expr.func is not None:
                expr.target = self._resolve_func(expr, scope)
                if id(expr.target) in local and expr.target not in found:
                    found.append(expr.target)
            else:
                assert expr.callee is not None
                self._resolve(expr.callee, scope, local, found)
            for arg in expr.args:
                self._resolve(arg, scope, local, found)
            return
        if isinstance(expr, ast.Lambda):
            inner = Scope(scope)
            for param in expr.params:
                if param.name in inner.vars:
                    raise self.abort(param.pos, f"parameter ${param.name} is given twice")
                inner.vars[param.name] = param
            self._resolve(expr.body, inner, local, found)
            return
        for child in ast.children(expr):  # Var, Call and Lambda are handled above
            self._resolve(child, scope, local, found)

    def _dotted_var(self, expr: ast.Var) -> ast.Lit:
        value = constant(expr.name)
        if value is not None:
            return ast.Lit(expr.pos, value)
        if expr.name.startswith(CONST_PREFIX):
            raise self.abort(
                expr.pos,
                f"unknown constant ${expr.name}: constants are "
                "$const.res.<kind>.<param>.<value>, for a param with fixed values "
                "(e.g. $const.res.file.state.exists)",
            )
        raise self.abort(expr.pos, f"${expr.name}: variables of packages are not supported yet")

    def _resolve_func(self, call: ast.Call, scope: Scope) -> ast.FuncDef | funcs.Builtin:
        name = call.func or ""
        if "." not in name:
            fdef = scope.func(name)
            if fdef is not None:
                return fdef
            builtin = funcs.lookup("", name)
            if builtin is not None:
                return builtin
            extra = f' (import "{name}" and call {name}.something)' if name in funcs.MODULES else ""
            names = list(funcs.MODULES[""])
            raise self.abort(call.pos, f"undefined function {name}{_hint(name, names)}{extra}")
        alias, _, short = name.partition(".")
        module = scope.module(alias)
        if module is None:
            hint = f'; add import "{alias}"' if alias in funcs.MODULES else ""
            raise self.abort(call.pos, f"unknown package {alias!r} in {name}(){hint}")
        builtin = funcs.lookup(module, short)
        if builtin is None:
            raise self.abort(
                call.pos,
                f"module {module} has no function {short}{_hint(short, funcs.MODULES[module])}",
            )
        return builtin

    # bindings -------------------------------------------------------------------------------

    def _binding(self, b: ast.Bind | ast.FuncDef) -> None:
        if isinstance(b, ast.FuncDef):
            b.type = self._infer(b.lam)
            b.quantified = self._generalise(b.type)
            return
        t = self._infer(b.expr)
        if b.ann is not None:
            self.expect(t, b.ann, b.expr.pos, f"${b.name} is declared as {show(b.ann)}")
        b.type = t
        if isinstance(b.expr, ast.Lambda):
            b.quantified = self._generalise(t)
        else:
            self.mono.append(b)

    def _generalise(self, t: Type) -> frozenset[int] | None:
        self._solve()
        fixed: set[TVar] = set()
        for c in self.pending:
            for part in _constraint_types(c):
                fixed |= free_vars(part)
        for m in self.mono:
            if m.type is not None:
                fixed |= free_vars(m.type)
        quantified = frozenset(v.id for v in free_vars(t) - fixed)
        return quantified or None

    # statements -----------------------------------------------------------------------------

    def _statement(self, stmt: ast.Stmt, scope: Scope) -> None:
        if isinstance(stmt, ast.IfStmt):
            self._check_expr(stmt.cond, scope)
            assert stmt.cond.type is not None
            self.expect(stmt.cond.type, BOOL, stmt.cond.pos, "the condition of an if")
            self._block(stmt.then, Scope(scope))
            self._block(stmt.other, Scope(scope))
        elif isinstance(stmt, ast.Resource):
            self._resource(stmt, scope)
        elif isinstance(stmt, ast.Edge):
            self._edge(stmt, scope)
        elif isinstance(stmt, ast.Include):
            self._include(stmt, scope)
        elif isinstance(stmt, ast.For):
            self._for(stmt, scope)

    def _for(self, loop: ast.For, scope: Scope) -> None:
        """The body once, with the loop's names as parameters: index int and the element type
        (for a list), or the key and value types (for a map, with forkv)."""
        t = self._check_expr(loop.expr, scope)
        first, second = TVar(), TVar()
        if loop.kv:
            self.expect(t, TMap(first, second), loop.expr.pos, "forkv needs a map")
        else:
            self.expect(t, TList(second), loop.expr.pos, "for needs a list")
            self.expect(first, INT, loop.first.pos, "a for index")
        inner = Scope(scope)
        for param, ptype in ((loop.first, first), (loop.second, second)):
            param.type = ptype
            param.env_key = f"{param.name}@{id(loop)}"  # a lambda's $x cannot shadow it
            inner.vars[param.name] = param
        self._loops += 1
        try:
            self._block(loop.body, inner)
        finally:
            self._loops -= 1

    def _loop_body(self, stmts: list[ast.Stmt]) -> list[ast.Stmt]:
        """What a loop's body (or an if inside it) may hold: declarations and bindings, made
        once per element. Functions, classes, includes and imports are made once."""
        kept: list[ast.Stmt] = []
        for stmt in stmts:
            if isinstance(stmt, ast.Bind):
                stmt.in_loop = True  # evaluated per element, not as a cell of its own
            what = LOOP_REFUSED.get(type(stmt))
            if what is not None:
                self.problem(
                    stmt.pos,
                    f"{what} cannot be inside a for loop (yet): use the loop's values directly",
                )
            else:
                kept.append(stmt)
        return kept

    def _include(self, inc: ast.Include, scope: Scope) -> None:
        """Check a copy of the class's body, in a scope of its own under the class's defining
        scope, after one binding per parameter to the argument (typed where it is written)."""
        found = scope.cls(inc.name)
        if found is None:
            names = [n for s in scope._chain() for n in s.classes]
            raise self.abort(inc.pos, f"undefined class {inc.name}{_hint(inc.name, names)}")
        cls, home = found
        if len(inc.args) != len(cls.params):
            raise self.abort(
                inc.pos,
                f"class {inc.name} takes {len(cls.params)} argument"
                f"{'s' * (len(cls.params) != 1)}, got {len(inc.args)}",
            )
        if cls in self._including:  # expanded statically: any self-include never ends
            chain = " -> ".join(c.name for c in [*self._including, cls])
            raise self.abort(
                inc.pos, f"include {inc.name}: a class cannot include itself ({chain})"
            )
        for arg in inc.args:
            self._check_expr(arg, scope)
        params: list[ast.Stmt] = [
            ast.Bind(p.pos, p.name, p.ann, ast.Resolved(arg.pos, arg))
            for p, arg in zip(cls.params, inc.args, strict=True)
        ]
        inc.expanded = params + copy.deepcopy(cls.body)
        self._including.append(cls)
        before = len(self.problems)
        try:
            self._block(inc.expanded, Scope(home))
        finally:
            self._including.pop()
            if not self._including:  # say which top-level include it came through
                where = f" (in include {inc.name} at {inc.pos})"
                self.problems[before:] = [p + where for p in self.problems[before:]]

    def _check_expr(self, expr: ast.Expr, scope: Scope) -> Type:
        self._resolve(expr, scope, set(), [])
        return self._infer(expr)

    def _names(self, expr: ast.Expr, scope: Scope, what: str) -> None:
        t = self._check_expr(expr, scope)
        self.one_of(
            expr.pos,
            [t],
            [[STR], [TList(STR)]],
            lambda: f"type error: {what} must be a str or a list of str, got {show(t)}",
        )

    def _collect_names(self, expr: ast.Expr, scope: Scope, kind: str) -> None:
        t = self._check_expr(expr, scope)
        self.one_of(
            expr.pos,
            [t],
            [[STR], [TList(STR)], [TList(COLLECTED)]],
            lambda: (
                f"type error: what a collect {kind} names must be a str, a list of str or "
                f"a list of {show(COLLECTED)}, got {show(t)}"
            ),
        )

    def _resource(self, res: ast.Resource, scope: Scope) -> None:
        table = kind_params(res.kind)
        if table is None:
            raise self.abort(
                res.pos,
                f"unknown resource kind '{res.kind}'{_hint(res.kind, known_kinds())}; "
                f"known kinds: {', '.join(known_kinds())}",
            )
        if res.collect:
            if (refused := collect_refusal(res.kind)) is not None:
                self.problem(res.pos, refused)
            self._collect_names(res.name, scope, res.kind)
            for edge in res.edges:
                self.problem(edge.pos, "a collect statement cannot have edges")
        else:
            self._names(res.name, scope, f"the name of a {res.kind}")
        ok = True
        given: set[str] = set()
        items: list[ast.ResParam | ast.ResMeta] = [*res.params, *res.metas]
        for item in items:
            if item.cond is not None:  # `param => cond ?: value`
                try:
                    t = self._check_expr(item.cond, scope)
                    self.expect(t, BOOL, item.cond.pos, f"the condition of {item.name} (before ?:)")
                except _Abort:
                    ok = False
        for param in res.params:
            ok &= self._param(
                res.kind,
                table=table,
                name=param.name,
                expr=param.expr,
                pos=param.pos,
                scope=scope,
                given=given,
            )
        meta_given: set[str] = set()
        for meta in res.metas:
            ok &= self._param(
                "Meta",
                table=meta_params(),
                name=meta.name,
                expr=meta.expr,
                pos=meta.pos,
                scope=scope,
                given=meta_given,
            )
        for edge in res.edges:
            if edge.target.field is not None:
                self.problem(
                    edge.target.pos,
                    f"{edge.name} => names a resource; send/recv goes in an edge statement: "
                    f'{capitalized(res.kind)}["a"].value -> Kind["b"].param',
                )
                ok = False
                continue
            try:
                self._edge_half(edge.target, scope)
            except _Abort:
                ok = False
        if res.collect:
            return  # overrides only: the exported resource has the rest
        self._required(res, given)
        if ok:
            self._validate_constant(res)

    def _param(
        self,
        kind: str,
        *,
        table: dict[str, ParamType],
        name: str,
        expr: ast.Expr,
        pos: Pos,
        scope: Scope,
        given: set[str],
    ) -> bool:
        what = "Meta:" + name if kind == "Meta" else f"{kind} param {name}"
        if name in given:
            self.problem(pos, f"{what} is set twice")
            return False
        given.add(name)
        ptype = table.get(name)
        if ptype is None:
            prefix = "Meta:" if kind == "Meta" else ""
            accepted = ", ".join(prefix + n for n in table)
            self.problem(
                pos, f"{kind} has no param '{name}'{_hint(name, table)}; params: {accepted}"
            )
            return False
        if ptype.type is None:
            self.problem(
                pos, f"{what} cannot be set from the language yet (its type is {ptype.why})"
            )
            return False
        try:
            t = self._check_expr(expr, scope)
            if ptype.numeric:
                self.one_of(
                    expr.pos,
                    [t],
                    [[FLOAT], [INT]],
                    lambda: f"type error: {what}: expected float (or int), got {show(t)}",
                )
            else:
                self.expect(t, ptype.type, expr.pos, what)
        except _Abort:
            return False
        if ptype.choices and isinstance(expr, ast.Lit) and expr.value not in ptype.choices:
            accepted = ", ".join(repr(c) for c in ptype.choices)
            self.problem(expr.pos, f"{what}: expected one of {accepted}, got {expr.value!r}")
            return False
        return True

    def _required(self, res: ast.Resource, given: set[str]) -> None:
        cls = lookup_kind(res.kind)
        if cls is None:
            return
        import dataclasses

        for f in dataclasses.fields(cls):
            if (
                f.init
                and f.name not in ("name", "meta")
                and f.name not in given
                and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING
            ):
                self.problem(res.pos, f"{res.kind}: param {f.name} is required")

    def _validate_constant(self, res: ast.Resource) -> None:
        """A resource whose name and params are all constants is validated by its kind now."""
        cls = lookup_kind(res.kind)
        exprs = [res.name] + [p.expr for p in res.params] + [m.expr for m in res.metas]
        fields: list[ast.ResParam | ast.ResMeta] = [*res.params, *res.metas]
        conditional = any(f.cond is not None for f in fields)
        if cls is None or conditional or not all(isinstance(e, ast.Lit) for e in exprs):
            return
        assert isinstance(res.name, ast.Lit)
        data: dict[str, Any] = {p.name: p.expr.value for p in res.params}  # type: ignore[attr-defined]
        meta: dict[str, Any] = {m.name: m.expr.value for m in res.metas}  # type: ignore[attr-defined]
        lines = {p.name: p.pos for p in res.params}
        try:
            obj = build(cls, {"name": res.name.value.removeprefix(EXPORT_PREFIX), **data})
            obj.meta = build(Meta, meta, prefix="Meta:")
            obj.validate()
        except ValidationError as err:
            key = (err.key or "").split(".")[0].split("[")[0]
            where = lines.get(key, res.pos)
            self.problem(where, f"{res.kind}[{res.name.value}]: {err}")

    def _edge_half(self, half: ast.EdgeHalf, scope: Scope) -> None:
        if kind_params(half.kind) is None:
            cap = capitalized(half.kind)
            names = [capitalized(k) for k in known_kinds()]
            raise self.abort(half.pos, f"unknown resource kind {cap}{_hint(cap, names)}")
        self._names(half.name, scope, f"the name in {capitalized(half.kind)}[...]")

    def _edge(self, edge: ast.Edge, scope: Scope) -> None:
        for half in edge.halves:
            self._edge_half(half, scope)
        fields = [h.field for h in edge.halves]
        if all(f is None for f in fields):
            return
        if len(edge.halves) != 2 or None in fields:
            raise self.abort(
                edge.pos,
                "a send/recv edge joins exactly two resources, each with a value: "
                'Exec["x"].output -> File["y"].content',
            )
        sender, receiver = edge.halves
        offered = sends(sender.kind)
        if sender.field not in offered:
            raise self.abort(
                sender.pos,
                f"{capitalized(sender.kind)} sends {', '.join(offered) or 'nothing'}, "
                f"not '{sender.field}'",
            )
        table = kind_params(receiver.kind) or {}
        if receiver.field not in table:
            raise self.abort(
                receiver.pos,
                f"{capitalized(receiver.kind)} has no param '{receiver.field}'"
                f"{_hint(receiver.field or '', table)}",
            )

    # inference ------------------------------------------------------------------------------

    def expect(self, actual: Type, expected: Type, pos: Pos, context: str) -> None:
        mark = self.u.mark()
        try:
            self.u.unify(actual, expected)
        except UnifyError as err:
            self.u.undo(mark)
            names: dict[int, str] = {}
            want, got = show(expected, names), show(actual, names)
            inner = f"{show(err.right, names)} vs {show(err.left, names)}"  # expected vs got
            detail = f" ({inner}{': ' + err.detail if err.detail else ''})"
            if inner in (f"{want} vs {got}", f"{got} vs {want}") and not err.detail:
                detail = ""
            raise self.abort(
                pos, f"type error: {context}: expected {want}, got {got}{detail}"
            ) from None

    def one_of(
        self, pos: Pos, actual: list[Type], options: list[list[Type]], message: Callable[[], str]
    ) -> None:
        self._add(_OneOf(pos, actual, options, message))

    def _add(self, c: Constraint) -> None:
        if not self._step(c, final=False):
            self.pending.append(c)

    def _solve(self, final: bool = False) -> None:
        progress = True
        while progress and self.pending:
            progress = False
            for c in list(self.pending):
                try:
                    done = self._step(c, final=False)
                except _Abort:
                    done = True
                if done:
                    self.pending.remove(c)
                    progress = True
        if final:
            for c in list(self.pending):
                with contextlib.suppress(_Abort):
                    self._step(c, final=True)
            self.pending.clear()

    def _step(self, c: Constraint, final: bool) -> bool:
        """Try to solve one constraint: True when done (solved or reported)."""
        if isinstance(c, _OneOf):
            viable = []
            for option in c.options:
                mark = self.u.mark()
                try:
                    for a, b in zip(c.actual, option, strict=True):
                        self.u.unify(a, b)
                    viable.append(option)
                except UnifyError:
                    pass
                self.u.undo(mark)
            if not viable:
                raise self.abort(c.pos, c.message())
            if len(viable) == 1 or final:
                for a, b in zip(c.actual, viable[0], strict=True):
                    self.u.unify(a, b)
                return True
            return False
        obj = prune(c.obj)
        if isinstance(obj, TVar):
            if final:
                what = f"->{c.name}" if isinstance(c, _HasField) else "[...]"
                raise self.abort(
                    c.pos,
                    f"type error: cannot infer the type of the value before {what}; "
                    "annotate it (e.g. func($s struct{x int}) ...)",
                )
            return False
        if isinstance(c, _HasField):
            if not isinstance(obj, TStruct):
                raise self.abort(c.pos, f"type error: ->{c.name} needs a struct, got {show(obj)}")
            ftype = obj.field(c.name)
            if ftype is None:
                fields = [n for n, _ in obj.fields]
                raise self.abort(
                    c.pos, f"type error: {show(obj)} has no field {c.name}{_hint(c.name, fields)}"
                )
            self.expect(c.result, ftype, c.pos, f"->{c.name}")
            return True
        if isinstance(obj, TList):
            self.expect(c.index, INT, c.pos, "a list index")
            self.expect(c.result, obj.elem, c.pos, "a list item")
            return True
        if isinstance(obj, TMap):
            self.expect(c.index, obj.key, c.pos, "a map key")
            self.expect(c.result, obj.val, c.pos, "a map value")
            return True
        raise self.abort(c.pos, f"type error: [...] needs a list or a map, got {show(obj)}")

    def _infer(self, e: ast.Expr) -> Type:
        t = self._infer_inner(e)
        e.type = t
        return t

    def _infer_inner(self, e: ast.Expr) -> Type:
        if isinstance(e, ast.Lit):
            return {bool: BOOL, int: INT, float: FLOAT, str: STR}[type(e.value)]
        if isinstance(e, ast.Interp):
            for part in e.parts:
                if isinstance(part, ast.Expr):
                    t = self._infer(part)
                    self.expect(
                        t, STR, part.pos, "an interpolated ${...} must be a str (use fmt.printf)"
                    )
            return STR
        if isinstance(e, ast.Resolved):
            assert e.inner.type is not None  # typed where the include is written
            return e.inner.type
        if isinstance(e, ast.Var) and isinstance(e.target, ast.Lit):
            return STR  # a constant
        if isinstance(e, ast.Var):
            target = e.target
            if isinstance(target, ast.Param):
                assert target.type is not None
                return target.type
            assert isinstance(target, ast.Bind)
            if target.type is None:
                raise _Abort()  # its own error is already reported
            if target.quantified:
                return instantiate(target.type, target.quantified)
            return target.type
        if isinstance(e, ast.Call):
            return self._call(e)
        if isinstance(e, ast.Lambda):
            for p in e.params:
                p.type = p.ann if p.ann is not None else TVar()
            body = self._infer(e.body)
            if e.ret is not None:
                self.expect(body, e.ret, e.body.pos, f"the function returns {show(e.ret)}")
            return TFunc(tuple(p.type for p in e.params if p.type is not None), body)
        if isinstance(e, ast.If):
            self.expect(self._infer(e.cond), BOOL, e.cond.pos, "the condition of an if")
            then = self._infer(e.then)
            other = self._infer(e.other)
            self.expect(other, then, e.other.pos, "both branches of an if must have one type")
            return then
        if isinstance(e, ast.ListLit):
            elem: Type = TVar()
            for item in e.items:
                self.expect(self._infer(item), elem, item.pos, "the items of a list")
            return TList(elem)
        if isinstance(e, ast.MapLit):
            key: Type = TVar()
            val: Type = TVar()
            for k, v in e.pairs:
                self.expect(self._infer(k), key, k.pos, "the keys of a map")
                self.expect(self._infer(v), val, v.pos, "the values of a map")
            return TMap(key, val)
        if isinstance(e, ast.StructLit):
            return TStruct(tuple((name, self._infer(v)) for name, v in e.fields))
        if isinstance(e, ast.Field):
            result: Type = TVar()
            self._add(_HasField(e.pos, self._infer(e.obj), e.name, result))
            return result
        if isinstance(e, ast.Index):
            result = TVar()
            self._add(_Indexable(e.pos, self._infer(e.obj), self._infer(e.index), result))
            return result
        if isinstance(e, ast.BinOp):
            return self._binop(e)
        if isinstance(e, ast.UnOp):
            t = self._infer(e.operand)
            if e.op == "not":
                self.expect(t, BOOL, e.operand.pos, "not")
                return BOOL
            result = TVar()
            self.one_of(
                e.pos,
                [t, result],
                [[INT, INT], [FLOAT, FLOAT]],
                lambda: f"type error: unary - needs an int or a float, got {show(t)}",
            )
            return result
        raise self.abort(e.pos, f"cannot type {type(e).__name__}")

    def _binop(self, e: ast.BinOp) -> Type:
        left = self._infer(e.left)
        right = self._infer(e.right)
        op = e.op
        if op in ("and", "or"):
            self.expect(left, BOOL, e.left.pos, f"the left side of {op}")
            self.expect(right, BOOL, e.right.pos, f"the right side of {op}")
            return BOOL
        if op in ("==", "!="):
            self.expect(right, left, e.right.pos, f"both sides of {op} must have one type")
            return BOOL

        def message() -> str:
            names: dict[int, str] = {}
            return (
                f"type error: operator {op} cannot combine {show(left, names)} "
                f"and {show(right, names)}"
            )

        if op in ("<", ">", "<=", ">="):
            self.one_of(e.pos, [left, right], [[INT, INT], [FLOAT, FLOAT], [STR, STR]], message)
            return BOOL
        if op == "in":
            a = TVar()
            self.one_of(
                e.pos,
                [left, right],
                [[a, TList(a)], [a, TMap(a, TVar())], [STR, STR]],
                message,
            )
            return BOOL
        result = TVar()
        options = [[INT, INT, INT], [FLOAT, FLOAT, FLOAT]]
        if op == "+":
            options.append([STR, STR, STR])
        self.one_of(e.pos, [left, right, result], options, message)  # type: ignore[arg-type]
        return result

    def _call(self, e: ast.Call) -> Type:
        args = [self._infer(a) for a in e.args]
        if e.callee is not None:
            callee = prune(self._infer(e.callee))
            if isinstance(callee, TFunc):
                return self._apply(callee, args, e, "the function")
            result: Type = TVar()
            self.expect(callee, TFunc(tuple(args), result), e.callee.pos, "calling a value")
            return result
        target = e.target
        if isinstance(target, ast.FuncDef):
            if target.type is None:
                raise _Abort()
            ftype = (
                instantiate(target.type, target.quantified) if target.quantified else target.type
            )
            assert isinstance(ftype, TFunc)
            return self._apply(ftype, args, e, e.func or "")
        assert isinstance(target, funcs.Builtin)
        if target.special == "printf":
            return self._printf(e, args)
        if target.special == "schedule":
            return self._schedule(e, args)
        if target.special == "structlookup":
            if len(args) != 2 or not (
                isinstance(e.args[1], ast.Lit) and isinstance(e.args[1].value, str)
            ):
                raise self.abort(
                    e.pos, 'structlookup(struct, "field"): the field must be a constant'
                )
            result = TVar()
            self._add(_HasField(e.pos, args[0], e.args[1].value, result))
            return result
        sigs = [parse_type(s) for s in target.sigs]
        fitting = [s for s in sigs if isinstance(s, TFunc) and len(s.args) == len(args)]
        if not fitting:
            counts = sorted({len(s.args) for s in sigs if isinstance(s, TFunc)})
            raise self.abort(
                e.pos,
                f"{target.name}: expected {' or '.join(map(str, counts))} "
                f"argument{'s' if counts != [1] else ''}, got {len(args)}",
            )
        if len(fitting) == 1:
            sig = fitting[0]
            assert isinstance(sig, TFunc)
            return self._apply(sig, args, e, target.name)
        result = TVar()

        def message() -> str:
            names: dict[int, str] = {}
            got = ", ".join(show(a, names) for a in args)
            accepted = "; ".join(target.sigs)
            return f"type error: {target.name} does not accept ({got}); accepted: {accepted}"

        options: list[list[Type]] = []
        for sig in fitting:
            assert isinstance(sig, TFunc)
            options.append([*sig.args, sig.ret])
        self.one_of(e.pos, [*args, result], options, message)
        return result

    def _apply(self, ftype: TFunc, args: list[Type], e: ast.Call, name: str) -> Type:
        if len(ftype.args) != len(args):
            raise self.abort(
                e.pos, f"{name}: expected {len(ftype.args)} arguments, got {len(args)}"
            )
        for index, (want, got) in enumerate(zip(ftype.args, args, strict=True)):
            self.expect(got, want, e.args[index].pos, f"argument {index + 1} of {name}")
        return ftype.ret

    def _schedule(self, e: ast.Call, args: list[Type]) -> Type:
        """world.schedule(namespace[, opts]): opts is a struct with any of SCHEDULE_OPTS's
        fields, in any order (as in mgmt), known when the call is checked."""
        if len(args) not in (1, 2):
            raise self.abort(e.pos, f"world.schedule: expected 1 or 2 arguments, got {len(args)}")
        self.expect(args[0], STR, e.args[0].pos, "argument 1 of world.schedule")
        if len(args) == 2:
            opts = prune(args[1])
            if isinstance(opts, TVar):  # not known here (a parameter): all the fields, then
                full = TStruct(tuple(SCHEDULE_OPTS.items()))
                self.expect(opts, full, e.args[1].pos, "world.schedule options")
                return TList(STR)
            if not isinstance(opts, TStruct):
                raise self.abort(
                    e.args[1].pos,
                    f"type error: world.schedule options: expected a struct with any of the "
                    f"fields of {_schedule_opts()}, got {show(opts)}",
                )
            for name, t in opts.fields:
                want = SCHEDULE_OPTS.get(name)
                if want is None:
                    self.problem(
                        e.args[1].pos,
                        f"world.schedule options: unknown field {name!r}; fields: "
                        + ", ".join(SCHEDULE_OPTS),
                    )
                else:
                    self.expect(t, want, e.args[1].pos, f"world.schedule option {name}")
        return TList(STR)

    def _printf(self, e: ast.Call, args: list[Type]) -> Type:
        if not e.args or not isinstance(e.args[0], ast.Lit) or not isinstance(e.args[0].value, str):
            raise self.abort(e.pos, "fmt.printf: the format must be a constant string")
        try:
            wanted = verbs(e.args[0].value)
        except ValueError as err:
            raise self.abort(e.args[0].pos, f"fmt.printf: {err}") from None
        if len(wanted) != len(args) - 1:
            raise self.abort(
                e.pos,
                f"fmt.printf: the format has {len(wanted)} verb{'s' * (len(wanted) != 1)} "
                f"but {len(args) - 1} value{'s' * (len(args) != 2)} follow",
            )
        for index, (verb, t) in enumerate(zip(wanted, args[1:], strict=True)):
            type_name = VERB_TYPES[verb.verb]
            if type_name:
                self.expect(t, BASIC[type_name], e.args[index + 1].pos, f"fmt.printf %{verb.verb}")
        return STR


# Statements made once, not per element: a for loop's body cannot hold them (yet).
LOOP_REFUSED: dict[type, str] = {
    ast.FuncDef: "a func",
    ast.ClassDef: "a class",
    ast.Include: "an include",
    ast.Import: "an import",
}
SCHEDULE_OPTS = {"strategy": STR, "max": INT, "reuse": BOOL, "ttl": INT}


def _schedule_opts() -> str:
    return "struct{" + "; ".join(f"{k} {show(t)}" for k, t in SCHEDULE_OPTS.items()) + "}"


def _label(b: ast.Bind | ast.FuncDef) -> str:
    return f"${b.name}" if isinstance(b, ast.Bind) else f"{b.name}()"


def _constraint_types(c: Constraint) -> list[Type]:
    if isinstance(c, _OneOf):
        return list(c.actual)
    if isinstance(c, _HasField):
        return [c.obj, c.result]
    return [c.obj, c.index, c.result]


def check(program: ast.Program) -> Checked:
    """Resolve names, order bindings and infer types; CompileError lists every problem."""
    return Checker().check(program)
