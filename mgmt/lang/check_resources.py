"""Resource and edge statements checked against the registered kinds.

A resource's kind must be known, its params and metas known to the kind and typed as its
dataclass hints say (mgmt.lang.kinds), each set once, the required ones present; a resource
whose name and params are all constants is validated by its kind now, and when it is declared
unconditionally (not in an `if` or a `for`), a second such declaration of its kind and name must
be compatible with the first (engine.graph.merge_duplicate, the rule the run applies to every
graph): two that cannot be one vertex are an error now rather than when the graph is built. An
edge names known kinds; a send/recv edge joins a value the sender sends to a param of the
receiver.

An edge made unconditionally (an edge statement, or a resource's `Before => Kind["x"]` without
`?:`, outside any `if` or `for`) to a constant kind and name that no statement of the program
can declare is an error now, as the run says when it builds the graph ("no such resource in the
graph"). Only when that is certain: a kind of which any resource has a name known only when run
(a variable, an interpolation, a loop's element) or which the program collects may have it at
run time, and a resource declared under a condition may be there: those edges are left to the
run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.errors import GraphError, ValidationError
from engine.graph import fmt_key, merge_duplicate
from engine.params import close_match
from engine.resource import (
    Resource,
    refused_together,
    send_mismatch,
    unsupported,
    validates_together,
)
from engine.resource import kinds as known_kinds
from engine.resource import lookup as lookup_kind
from mgmt.collectscope import check_kind as collect_refusal
from mgmt.lang import ast
from mgmt.lang.errors import Abort, Pos, Problems
from mgmt.lang.infer import Inference
from mgmt.lang.kinds import (
    EXPORT_PREFIX,
    ParamType,
    build_resource,
    capitalized,
    kind_params,
    meta_params,
    required_params,
    sends,
)
from mgmt.lang.scope import Scope
from mgmt.lang.types import BOOL, COLLECTED, FLOAT, INT, STR, TList, Type, show

# Resolve the names of an expression in a scope, then type it.
CheckExpr = Callable[[ast.Expr, Scope], Type]


class ResourceChecker:
    def __init__(
        self,
        problems: Problems,
        inference: Inference,
        check_expr: CheckExpr,
        unconditional: Callable[[], bool] = lambda: True,
    ) -> None:
        self.problems = problems
        self.inference = inference
        self.check_expr = check_expr
        # Whether the statement being checked is made whatever the values (no if, no for).
        self.unconditional = unconditional
        # (kind, name) -> the constant resource declared unconditionally, where, and the
        # top-level include that made it (None: not in an include).
        self._static: dict[tuple[str, str], tuple[Resource, Pos, ast.Include | None]] = {}
        # The top-level include being checked (the checker sets it): a duplicate made by two
        # includes of one class names both.
        self.include: ast.Include | None = None
        # Every (kind, name) a resource statement may declare, conditionally or not; the kinds
        # whose names are known only when run, or which are collected (see the module doc).
        # (Few objects: a big program's checks run between the garbage collector's passes.)
        self._declared: dict[str, set[str]] = {}  # kind -> names
        self._open_kinds: set[str] = set()
        # The ends of the edges made unconditionally whose kind and names are constants.
        self._ends: list[ast.EdgeHalf] = []

    def resource(self, res: ast.Resource, scope: Scope) -> None:
        table = kind_params(res.kind)
        if table is None and (refused := unsupported(res.kind)) is not None:
            raise self.problems.abort(res.pos, refused)
        if table is None:
            raise self.problems.abort(
                res.pos,
                f"unknown resource kind '{res.kind}'{close_match(res.kind, known_kinds())}; "
                f"known kinds: {', '.join(known_kinds())}",
            )
        if res.collect:
            if (refused := collect_refusal(res.kind)) is not None:
                self.problems.add(res.pos, refused)
            self._collect_names(res.name, scope, res.kind)
            for edge in res.edges:
                self.problems.add(edge.pos, "a collect statement cannot have edges")
        else:
            self._names(res.name, scope, f"the name of a {res.kind}")
        names = _constant_names(res.name)
        if res.collect or names is None:
            self._open_kinds.add(res.kind)
        else:
            declared = self._declared.get(res.kind)
            if declared is None:
                declared = self._declared[res.kind] = set()
            declared.update(names)
        ok = True
        given: set[str] = set()
        label = _label(res)
        items: list[ast.ResParam | ast.ResMeta | ast.ResEdge] = [*res.params, *res.metas]
        items += res.edges
        for item in items:
            if item.cond is not None:  # `param => cond ?: value`
                try:
                    t = self.check_expr(item.cond, scope)
                    self.inference.expect(
                        t, BOOL, item.cond.pos, f"the condition of {item.name} (before ?:)"
                    )
                except Abort:
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
                label=label,
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
                label=label,
            )
        for edge in res.edges:
            if edge.target.field is not None:
                self.problems.add(
                    edge.target.pos,
                    f"{edge.name} => names a resource; send/recv goes in an edge statement: "
                    f'{capitalized(res.kind)}["a"].value -> Kind["b"].param',
                )
                ok = False
                continue
            try:
                self._edge_half(edge.target, scope)
            except Abort:
                ok = False
                continue
            if edge.cond is None and not res.collect:
                self._end(edge.target)
        if res.collect:
            return  # overrides only: the exported resource has the rest
        self._required(res, given)
        if ok:
            self._validate_constant(res)

    def edge(self, edge: ast.Edge, scope: Scope) -> None:
        for half in edge.halves:
            self._edge_half(half, scope)
        for half in edge.halves:
            self._end(half)
        fields = [h.field for h in edge.halves]
        if all(f is None for f in fields):
            return
        if len(edge.halves) != 2 or None in fields:
            raise self.problems.abort(
                edge.pos,
                "a send/recv edge joins exactly two resources, each with a value: "
                'Exec["x"].output -> File["y"].content',
            )
        sender, receiver = edge.halves
        offered = sends(sender.kind)
        if sender.field not in offered:
            raise self.problems.abort(
                sender.pos,
                f"{capitalized(sender.kind)} sends {', '.join(offered) or 'nothing'}, "
                f"not '{sender.field}'",
            )
        table = kind_params(receiver.kind) or {}
        if receiver.field not in table:
            raise self.problems.abort(
                receiver.pos,
                f"{capitalized(receiver.kind)} has no param '{receiver.field}'"
                f"{close_match(receiver.field or '', list(table))}",
            )
        sender_cls, receiver_cls = lookup_kind(sender.kind), lookup_kind(receiver.kind)
        if sender_cls is not None and receiver_cls is not None and sender.field in offered:
            mismatch = send_mismatch(sender_cls, sender.field, receiver_cls, receiver.field)
            if mismatch:
                raise self.problems.abort(
                    receiver.pos,
                    f"{_half_label(sender)} -> {_half_label(receiver)}: {mismatch}",
                )

    def _names(self, expr: ast.Expr, scope: Scope, what: str) -> None:
        t = self.check_expr(expr, scope)
        self.inference.one_of(
            expr.pos,
            [t],
            [[STR], [TList(STR)]],
            lambda: f"type error: {what} must be a str or a list of str, got {show(t)}",
        )

    def _collect_names(self, expr: ast.Expr, scope: Scope, kind: str) -> None:
        t = self.check_expr(expr, scope)
        self.inference.one_of(
            expr.pos,
            [t],
            [[STR], [TList(STR)], [TList(COLLECTED)]],
            lambda: (
                f"type error: what a collect {kind} names must be a str, a list of str or "
                f"a list of {show(COLLECTED)}, got {show(t)}"
            ),
        )

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
        label: str,
    ) -> bool:
        """Check one param (or meta param, `kind` "Meta") of a resource (`label`: _label)."""
        what = "Meta:" + name if kind == "Meta" else f"{kind} param {name}"
        if name in given:
            twice = "Meta:" + name if kind == "Meta" else f"param {name}"
            self.problems.add(pos, f"{label}: {twice} is set twice")
            return False
        given.add(name)
        ptype = table.get(name)
        if ptype is None:
            prefix = "Meta:" if kind == "Meta" else ""
            accepted = ", ".join(prefix + n for n in table)
            self.problems.add(
                pos,
                f"{kind} has no param '{name}'{close_match(name, list(table))}; params: {accepted}",
            )
            return False
        if ptype.type is None:
            self.problems.add(
                pos, f"{what} cannot be set from the language yet (its type is {ptype.why})"
            )
            return False
        try:
            t = self.check_expr(expr, scope)
            if ptype.any:
                pass  # any type (value's `any`)
            elif ptype.alternatives:
                self.inference.one_of(
                    expr.pos,
                    [t],
                    [[alt] for alt in ptype.alternatives],
                    lambda: (
                        f"type error: {what}: expected one of "
                        f"{', '.join(show(a) for a in ptype.alternatives)}, got {show(t)}"
                    ),
                )
            elif ptype.numeric:
                self.inference.one_of(
                    expr.pos,
                    [t],
                    [[FLOAT], [INT]],
                    lambda: f"type error: {what}: expected float (or int), got {show(t)}",
                )
            else:
                self.inference.expect(t, ptype.type, expr.pos, what)
        except Abort:
            return False
        if ptype.choices and isinstance(expr, ast.Lit) and expr.value not in ptype.choices:
            accepted = ", ".join(repr(c) for c in ptype.choices)
            self.problems.add(expr.pos, f"{what}: expected one of {accepted}, got {expr.value!r}")
            return False
        return True

    def _required(self, res: ast.Resource, given: set[str]) -> None:
        cls = lookup_kind(res.kind)
        if cls is None:
            return
        for name in required_params(cls):
            if name not in given:
                self.problems.add(res.pos, f"{res.kind}: param {name} is required")

    def _validate_constant(self, res: ast.Resource) -> None:
        """A resource whose name and params are all constants (literals, lists, maps and
        structs of them, or variables bound to them) is validated by its kind now."""
        cls = lookup_kind(res.kind)
        fields: list[ast.ResParam | ast.ResMeta] = [*res.params, *res.metas]
        if cls is None or any(f.cond is not None for f in fields):
            return
        name = ast.constant(res.name)
        values = {id(f): plain_constant(f.expr) for f in fields}
        if name is None or not isinstance(name.value, str) or NOT_CONSTANT in values.values():
            return
        data: dict[str, Any] = {p.name: values[id(p)] for p in res.params}
        meta: dict[str, Any] = {m.name: values[id(m)] for m in res.metas}
        lines = {p.name: p.pos for p in res.params}
        try:
            built = build_resource(cls, name.value.removeprefix(EXPORT_PREFIX), data, meta)
        except ValidationError as err:
            key = (err.key or "").split(".")[0].split("[")[0]
            where = lines.get(key, res.pos)
            self.problems.add(where, f"{fmt_key((res.kind, name.value))}: {err}")
            return
        if self.unconditional() and not name.value.startswith(EXPORT_PREFIX):
            self._duplicate(built, res.pos)

    def _duplicate(self, built: Resource, pos: Pos) -> None:
        """A second unconditional constant declaration of a kind and name: compatible with
        the first (then the two are one vertex, as the run merges them), or an error."""
        key = (built.kind, built.name)
        first = self._static.get(key)
        if first is None:
            self._static[key] = (built, pos, self.include)
            return
        try:
            self._static[key] = (merge_duplicate(first[0], built), first[1], first[2])
        except GraphError as err:
            other = first[2]
            via = "" if other is None or other is self.include else f", {_via(other)}"
            self.problems.add(pos, f"{err} (also at {first[1]}{via})")

    def _end(self, half: ast.EdgeHalf) -> None:
        """Note an end of an edge, if it is made unconditionally and constant (`finish`)."""
        if self.unconditional() and _constant_names(half.name) is not None:
            self._ends.append(half)

    def finish(self) -> None:
        """Check the constant resources declared unconditionally together, as their kinds do
        (Resource.validate_together: two inputs of one UI with one id), once all are seen;
        and that each certain end of an edge is declared (see the module doc)."""
        for half in self._ends:
            kind = half.kind
            if kind in self._open_kinds:
                continue
            declared = self._declared.get(kind, set())
            for name in _constant_names(half.name) or ():
                if name not in declared and not name.startswith(EXPORT_PREFIX):
                    self.problems.add(
                        half.pos,
                        f"edge to {fmt_key((kind, name))}: no such resource in the program",
                    )
        together: dict[type[Resource], list[Resource]] = {}
        for built, _pos, _include in self._static.values():
            if validates_together(type(built)):
                together.setdefault(type(built), []).append(built)
        for res, err in refused_together(together):
            self.problems.add(self._static[(res.kind, res.name)][1], f"{res}: {err}")

    def _edge_half(self, half: ast.EdgeHalf, scope: Scope) -> None:
        if kind_params(half.kind) is None and (refused := unsupported(half.kind)) is not None:
            raise self.problems.abort(half.pos, refused)
        if kind_params(half.kind) is None:
            cap = capitalized(half.kind)
            names = [capitalized(k) for k in known_kinds()]
            raise self.problems.abort(
                half.pos, f"unknown resource kind {cap}{close_match(cap, names)}"
            )
        self._names(half.name, scope, f"the name in {capitalized(half.kind)}[...]")


NOT_CONSTANT = object()  # plain_constant's answer for an expression known only when run


def plain_constant(expr: ast.Expr) -> Any:
    """The value a resource param gets from `expr` (plain data, as mgmt.lang.values.to_plain
    gives it when run) if it is a constant (ast.constant), or a list, map or struct literal of
    constants, through variables bound to one; else NOT_CONSTANT."""
    lit = ast.constant(expr)
    if lit is not None:
        return lit.value
    expr = ast.deref(expr)
    if isinstance(expr, ast.ListLit):
        items = [plain_constant(item) for item in expr.items]
        return NOT_CONSTANT if NOT_CONSTANT in items else items
    pairs: list[tuple[Any, Any]]
    if isinstance(expr, ast.StructLit):
        pairs = [(name, plain_constant(value)) for name, value in expr.fields]
    elif isinstance(expr, ast.MapLit):
        pairs = [(plain_constant(key), plain_constant(value)) for key, value in expr.pairs]
    else:
        return NOT_CONSTANT
    if any(NOT_CONSTANT in pair for pair in pairs):
        return NOT_CONSTANT
    try:
        return dict(pairs)
    except TypeError:  # a list or map key: the run has its own hashable form of it
        return NOT_CONSTANT


def _constant_names(expr: ast.Expr) -> tuple[str, ...] | list[str] | None:
    """The names `expr` gives a resource or an edge's end (a str or a list of str) if it is a
    constant; else None."""
    if type(expr) is ast.Lit and type(expr.value) is str:  # most names: no walk
        return (expr.value,)
    value = plain_constant(expr)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _half_label(half: ast.EdgeHalf) -> str:
    """An end of a send/recv edge as problems name it: `Exec["e"].output` when its name is a
    constant string, else `Exec[...].output`."""
    name = ast.constant(half.name)
    shown = f'"{name.value}"' if name is not None and isinstance(name.value, str) else "..."
    return f"{capitalized(half.kind)}[{shown}].{half.field}"


def _label(res: ast.Resource) -> str:
    """A resource as problems name it: `file[f1]` when its name is a constant string (as its
    validation's problems name it), else its kind."""
    name = ast.constant(res.name)
    return (
        fmt_key((res.kind, name.value))
        if name is not None and isinstance(name.value, str)
        else res.kind
    )


def _via(include: ast.Include) -> str:
    return f"in include {include.name} at {include.pos}"
