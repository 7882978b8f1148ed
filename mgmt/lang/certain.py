"""Whether a run-time error of a program fails it on every host (`mgmt check`, `mgmt deploy`).

A program's first graph may fail for a reason of the machine that checks it (`os.readfile` of a
file only the hosts have): such an error does not fail the check. One that no host can escape
does (`panic(true)`, `$m["b"]` of a constant map without "b", `42 / 0`): the expression that
failed is **pure** (made of constants, variables bound to pure expressions, operators and the
builtins of PURE_MODULES, which read nothing of the host) and **certain** (evaluated whatever
the values: reached from a statement made unconditionally, outside any `if`, `for`, function
or class body not included so, through the parts of expressions always evaluated: not the
branches of an `if`, the right of `and`, `or` and `<|>`).
"""

from __future__ import annotations

from mgmt.lang import ast
from mgmt.lang.errors import Pos
from mgmt.lang.funcs.registry import Builtin

# The modules whose functions are pure: their value depends on their arguments alone (not
# `datetime`'s, which read the host's time zone, nor `golang`'s template, which may call any
# builtin, nor `os`, `sys`...). Their streams and functions of the context are not pure.
PURE_MODULES = frozenset(
    {
        "",
        "convert",
        "encoding",
        "fmt",
        "golang/html",
        "golang/math",
        "golang/strconv",
        "golang/strings",
        "list",
        "map",
        "math",
        "regexp",
        "strings",
    }
)
_IMPURE_CORE = frozenset({"template"})  # the core template: it may call any builtin

# The nodes whose evaluation raises a program's run-time errors (at their own position).
_FAILING = (ast.Call, ast.Index, ast.BinOp, ast.UnOp, ast.Panic)


def fails_everywhere(program: ast.Program, pos: Pos) -> bool:
    """Whether the run-time error raised at `pos` is raised on every host (module doc)."""
    certain = _Certain()
    certain.statements(program.body)
    failing = [n for n in certain.nodes if isinstance(n, _FAILING) and n.pos == pos]
    return bool(failing) and all(_pure(n, set()) for n in failing)


class _Certain:
    """The nodes evaluated whatever the values, from the statements made unconditionally."""

    def __init__(self) -> None:
        self.nodes: list[ast.Node] = []
        self._seen: set[int] = set()

    def statements(self, body: list[ast.Stmt]) -> None:
        for stmt in body:
            if isinstance(stmt, ast.Panic):
                self.nodes.append(stmt)
                self.expr(stmt.expr)
            elif isinstance(stmt, ast.Resource) and not stmt.collect:
                self.expr(stmt.name)
                items: list[ast.ResParam | ast.ResMeta] = [*stmt.params, *stmt.metas]
                for item in items:
                    self.expr(item.cond if item.cond is not None else item.expr)
            elif isinstance(stmt, ast.Edge):
                for half in stmt.halves:
                    self.expr(half.name)
            elif isinstance(stmt, ast.Include):
                for arg in stmt.args:
                    self.expr(arg)
                self.statements(stmt.expanded)
            elif isinstance(stmt, ast.IfStmt):
                self.expr(stmt.cond)
            elif isinstance(stmt, ast.For):
                self.expr(stmt.expr)

    def expr(self, expr: ast.Expr) -> None:
        if id(expr) in self._seen:
            return
        self._seen.add(id(expr))
        self.nodes.append(expr)
        if isinstance(expr, ast.Var) and isinstance(expr.target, ast.Bind):
            if not expr.target.in_loop:
                self.expr(expr.target.expr)
            return
        if isinstance(expr, ast.If):
            parts: list[ast.Expr] = [expr.cond]
        elif isinstance(expr, ast.Except) or (
            isinstance(expr, ast.BinOp) and expr.op in ("and", "or")
        ):
            parts = [expr.left]
        elif isinstance(expr, ast.Resolved):
            parts = [expr.inner]
        else:
            parts = ast.children(expr) if not isinstance(expr, ast.Lambda) else []
        for part in parts:
            self.expr(part)


def _pure(node: ast.Node, seen: set[int]) -> bool:
    """Whether `node`'s value depends on its expressions alone, read nowhere else (module doc)."""
    if isinstance(node, ast.Panic):
        return _pure(node.expr, seen)
    if not isinstance(node, ast.Expr) or id(node) in seen:
        return isinstance(node, ast.Expr)  # a chain of variables met again: pure so far
    seen.add(id(node))
    expr = ast.deref(node)
    if expr is not node:
        return _pure(expr, seen)
    if isinstance(expr, ast.Lit):
        return True
    if isinstance(expr, ast.Var | ast.Lambda):  # a parameter, a loop's value, $hostname...
        return False
    if isinstance(expr, ast.Call):
        target = expr.target
        if expr.callee is not None or not isinstance(target, Builtin) or not _pure_builtin(target):
            return False
    return all(_pure(part, seen) for part in ast.children(expr))


def _pure_builtin(builtin: Builtin, also: frozenset[str] = frozenset()) -> bool:
    """Whether a builtin is pure: of PURE_MODULES (or `also`), neither a stream nor a function
    of the context."""
    module, _, short = builtin.name.rpartition(".")
    if builtin.impl is None or builtin.stream is not None or builtin.ctx:
        return False
    if module in also:
        return True
    return module in PURE_MODULES and not (module == "" and short in _IMPURE_CORE)


# Modules whose functions are pure once every function they are handed is: `iter`'s call the
# program's own lambdas (host_independent walks those).
_PURE_WITH_PURE_ARGS = frozenset({"iter"})


def host_independent(program: ast.Program) -> bool:
    """Whether a program's first graph is the same on every host: nothing it may evaluate (any
    branch, loop body, class included, function called, module's code) calls a builtin that
    reads the host, the time or the world (a stream, a function of the context, one outside
    PURE_MODULES) nor reads `$hostname`, and it collects nothing. Then every error of its first
    graph (a param its kind refuses, a duplicate, an edge to nothing) is every host's."""
    stack: list[ast.Node] = list(program.body)
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, ast.Resource):
            if node.collect:
                return False
            stack += [node.name, *node.params, *node.metas, *node.edges]
        elif isinstance(node, ast.ResParam | ast.ResMeta):
            stack += [node.expr] if node.cond is None else [node.expr, node.cond]
        elif isinstance(node, ast.ResEdge):
            stack += [node.target] if node.cond is None else [node.target, node.cond]
        elif isinstance(node, ast.EdgeHalf):
            stack.append(node.name)
        elif isinstance(node, ast.Edge):
            stack += node.halves
        elif isinstance(node, ast.IfStmt):
            stack += [node.cond, *node.then, *node.other]
        elif isinstance(node, ast.For):
            stack += [node.expr, *node.body]
        elif isinstance(node, ast.Include):
            stack += [*node.args, *node.expanded]
        elif isinstance(node, ast.Panic | ast.Bind):
            stack.append(node.expr)
        elif isinstance(node, ast.FuncDef):
            stack.append(node.lam)
        elif isinstance(node, ast.Var):
            if isinstance(node.target, ast.ContextVar):
                return False  # $hostname
            if isinstance(node.target, ast.Node):
                stack.append(node.target)
        elif isinstance(node, ast.Call):
            target = node.target
            if isinstance(target, Builtin):
                if not _pure_builtin(target, _PURE_WITH_PURE_ARGS):
                    return False
            elif isinstance(target, ast.Node):
                stack.append(target)
            stack += ast.children(node)
        elif isinstance(node, ast.Resolved):
            stack.append(node.inner)
        elif isinstance(node, ast.Expr):
            stack += ast.children(node)
    return True
