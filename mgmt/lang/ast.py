"""The syntax tree of a program. Every node has a position; the checker fills in types.

Expressions are evaluated by `mgmt.lang.runtime`; statements produce resources and edges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mgmt.lang.errors import Pos
from mgmt.lang.types import Type


@dataclass(eq=False)
class Node:
    pos: Pos


# expressions ---------------------------------------------------------------------------------


@dataclass(eq=False)
class Expr(Node):
    # Filled in by the checker.
    type: Type | None = field(default=None, init=False)


@dataclass(eq=False)
class Lit(Expr):
    """A bool, int, float or str constant."""

    value: Any


@dataclass(eq=False)
class Interp(Expr):
    """A string with "${...}" parts: literal strings and expressions, concatenated."""

    parts: list[str | Expr]


@dataclass(eq=False)
class Var(Expr):
    """`$name`; the checker points `target` at the Bind, FuncDef or Param it names."""

    name: str
    target: Any = field(default=None, init=False)


@dataclass(eq=False)
class Call(Expr):
    """`pkg.fn(args)` (func is the dotted name) or `$f(args)` / `expr(args)` (callee)."""

    func: str | None
    callee: Expr | None
    args: list[Expr]
    # Filled in by the checker: the builtin or FuncDef called, for named calls.
    target: Any = field(default=None, init=False)


@dataclass(eq=False)
class Resolved(Expr):
    """An expression already resolved and typed in another scope (an include's argument,
    bound to a class parameter): its names are not looked up again."""

    inner: Expr


@dataclass(eq=False)
class Param(Node):
    name: str
    ann: Type | None = None
    type: Type | None = field(default=None, init=False)
    # Where the runtime keeps its value: the name, or for a loop's names a key of their own.
    env_key: str = field(default="", init=False)

    def __post_init__(self) -> None:
        self.env_key = self.name


@dataclass(eq=False)
class Lambda(Expr):
    """`func($a, $b) { body }`."""

    params: list[Param]
    ret: Type | None
    body: Expr


@dataclass(eq=False)
class If(Expr):
    """`if cond { then } else { other }` (an expression: both branches are required)."""

    cond: Expr
    then: Expr
    other: Expr


@dataclass(eq=False)
class ListLit(Expr):
    items: list[Expr]


@dataclass(eq=False)
class MapLit(Expr):
    pairs: list[tuple[Expr, Expr]]


@dataclass(eq=False)
class StructLit(Expr):
    fields: list[tuple[str, Expr]]


@dataclass(eq=False)
class Field(Expr):
    """`$s->name`."""

    obj: Expr
    name: str


@dataclass(eq=False)
class Index(Expr):
    """`$list[0]`, `$map["key"]`."""

    obj: Expr
    index: Expr


@dataclass(eq=False)
class BinOp(Expr):
    """`a op b` for + - * / == != < > <= >= and or in."""

    op: str
    left: Expr
    right: Expr


@dataclass(eq=False)
class Except(Expr):
    """`a <|> b` (mgmt's except operator): the value of a, or, while evaluating a is a run-time
    error, the value of b (evaluated only then)."""

    left: Expr
    right: Expr


@dataclass(eq=False)
class ContextVar(Node):
    """What a built-in variable (`$hostname`) names: a value of the agent's context."""

    name: str
    type: Type


@dataclass(eq=False)
class UnOp(Expr):
    """`not a`, `-a`."""

    op: str
    operand: Expr


def deref(expr: Expr) -> Expr:
    """What `expr` stands for: through any chain of variables bound to an expression (and
    include arguments; not a loop's per-element binding) to the first one that is not such a
    variable."""
    seen: set[int] = set()
    while id(expr) not in seen:
        seen.add(id(expr))
        if isinstance(expr, Resolved):
            expr = expr.inner
        elif isinstance(expr, Var) and isinstance(expr.target, Bind) and not expr.target.in_loop:
            expr = expr.target.expr
        elif isinstance(expr, Var) and isinstance(expr.target, Lit):  # $const.res... constants
            expr = expr.target
        else:
            break
    return expr


def constant(expr: Expr) -> Lit | None:
    """The constant `expr` is once resolved, else None: a literal, a negated number literal
    (`-1`), or a variable bound to one (through any chain of bindings and include arguments;
    not a loop's per-element binding), or one the checker resolved to a literal."""
    expr = deref(expr)
    if isinstance(expr, Lit):
        return expr
    if isinstance(expr, UnOp) and expr.op == "-" and isinstance(expr.operand, Lit):
        value = expr.operand.value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return Lit(expr.pos, -value)
    return None


def children(expr: Expr) -> list[Expr]:
    """The expressions directly inside one. A Resolved's inner expression is not listed: it
    belongs to another scope (an include's argument) and is never walked again."""
    if isinstance(expr, Interp):
        return [p for p in expr.parts if isinstance(p, Expr)]
    if isinstance(expr, Call):
        return [*([expr.callee] if expr.callee is not None else []), *expr.args]
    if isinstance(expr, Lambda):
        return [expr.body]
    if isinstance(expr, If):
        return [expr.cond, expr.then, expr.other]
    if isinstance(expr, ListLit):
        return list(expr.items)
    if isinstance(expr, MapLit):
        return [x for pair in expr.pairs for x in pair]
    if isinstance(expr, StructLit):
        return [v for _, v in expr.fields]
    if isinstance(expr, Field):
        return [expr.obj]
    if isinstance(expr, Index):
        return [expr.obj, expr.index]
    if isinstance(expr, BinOp):
        return [expr.left, expr.right]
    if isinstance(expr, UnOp):
        return [expr.operand]
    if isinstance(expr, Except):
        return [expr.left, expr.right]
    return []


# statements ----------------------------------------------------------------------------------


@dataclass(eq=False)
class Stmt(Node):
    pass


@dataclass(eq=False)
class Bind(Stmt):
    """`$name = expr` (optionally `$name type = expr`)."""

    name: str
    ann: Type | None
    expr: Expr
    # Filled in by the checker: the binding's (possibly generalised) type.
    type: Type | None = field(default=None, init=False)
    quantified: frozenset[int] | None = field(default=None, init=False)
    # Set by the checker for a binding inside a for loop: its value is per element.
    in_loop: bool = field(default=False, init=False)


@dataclass(eq=False)
class FuncDef(Stmt):
    """`func name($a, $b) { body }`: a named function, called as `name(a, b)`."""

    name: str
    lam: Lambda
    type: Type | None = field(default=None, init=False)
    quantified: frozenset[int] | None = field(default=None, init=False)


@dataclass(eq=False)
class Import(Stmt):
    """`import "fmt"` or `import "fmt" as f`."""

    module: str
    alias: str | None


@dataclass(eq=False)
class EdgeHalf(Node):
    """`Kind["name"]` (the name may be a list of names); kind is the lower-case kind."""

    kind: str
    name: Expr
    # For send/recv: `Kind["name"].field`.
    field: str | None = None


@dataclass(eq=False)
class ResParam(Node):
    name: str
    expr: Expr
    # `param => cond ?: value` (mgmt's elvis): the param is set only while cond is true.
    cond: Expr | None = None


@dataclass(eq=False)
class ResMeta(Node):
    name: str
    expr: Expr
    cond: Expr | None = None  # as ResParam's


@dataclass(eq=False)
class ResEdge(Node):
    """`Depend => Kind["x"]`, `Before`, `Notify` or `Listen`."""

    name: str
    target: EdgeHalf
    cond: Expr | None = None  # `Depend => cond ?: Kind["x"]`: the edge only while cond is true


@dataclass(eq=False)
class Resource(Stmt):
    """`kind "name" { param => expr, Meta:noop => true, Notify => Svc["x"], }`.

    With `collect` in front: the exported resources of that kind and name (a str, a list of
    str, or a list of struct{name; host}) are collected, with these params and metas overriding
    theirs.
    """

    kind: str
    name: Expr
    params: list[ResParam]
    metas: list[ResMeta]
    edges: list[ResEdge]
    collect: bool = False


@dataclass(eq=False)
class Edge(Stmt):
    """`A["a"] -> B["b"] -> C["c"]`, or send/recv `A["a"].out -> B["b"].param`."""

    halves: list[EdgeHalf]


@dataclass(eq=False)
class IfStmt(Stmt):
    """`if cond { statements } else { statements }`."""

    cond: Expr
    then: list[Stmt]
    other: list[Stmt]


@dataclass(eq=False)
class For(Stmt):
    """`for $i, $x in list { statements }` (index, value) or, with `kv`, `forkv $k, $v in map`
    (key, value; keys in sorted order): the statements are declared once per element."""

    first: Param
    second: Param
    expr: Expr
    body: list[Stmt]
    kv: bool = False


@dataclass(eq=False)
class ClassDef(Stmt):
    """`class name($a, $b str) { statements }`: statements to include with arguments."""

    name: str
    params: list[Param]
    body: list[Stmt]


@dataclass(eq=False)
class Include(Stmt):
    """`include name(args)` or `include name(args) as alias` (then the body's bindings and
    classes are `$alias.x` and `alias.cls`); `name` may be `alias.cls` of an earlier include or
    `module.cls` of an imported module. The checker fills `expanded` with a copy of the class's
    body (after a binding per parameter), checked in a scope of its own."""

    name: str
    args: list[Expr]
    alias: str | None = None
    expanded: list[Stmt] = field(default_factory=list, init=False)


@dataclass(eq=False)
class Panic(Stmt):
    """`panic(x)`: a run-time error of the program while x is true (a bool) or not empty (a
    str), as mgmt's panic statement."""

    expr: Expr


@dataclass(eq=False)
class Program(Node):
    body: list[Stmt]
    source: str = ""
