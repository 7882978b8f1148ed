"""Type inference: unification (Hindley-Milner style) with deferred constraints.

`Inference.infer(expr)` types an expression whose names are resolved (mgmt.lang.scope) and
records the type on the node. A lambda bound to a name, and a `func` statement, are
generalised (usable at several types: `binding`). What cannot be decided when it is met waits
as a constraint, solved once the types it involves are known:
- `_OneOf`: overloaded operators and functions (+ on int/float/str, len on str/list/map...):
  the argument types must fit one of the signatures; decided when one fits.
- `_HasField` (`->field`) and `_Indexable` (`[index]`): wait for their operand's type.
At the end (`solve(final=True)`) an overload still open takes its first fitting signature and
an operand still unknown is an error. Builtins typed by rules of their own (fmt.printf...) are
typed by those rules, defined next to them in mgmt.lang.funcs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from engine.params import close_match
from mgmt.lang import ast, funcs
from mgmt.lang.errors import Abort, Pos, Problems
from mgmt.lang.types import (
    BOOL,
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


class Inference:
    """Types expressions and bindings; implements `funcs.Typer` for the builtins' rules."""

    def __init__(self, problems: Problems) -> None:
        self.problems = problems
        self.u = Unifier()
        self.pending: list[Constraint] = []
        # Bindings typed but not generalised: their free variables stay fixed.
        self.mono: list[ast.Bind] = []
        # The constraints of a generalised binding (by id) that only its own variables are in
        # (`func($a, $b) { $a + $b }`): copied, for fresh variables, at each use.
        self.schemes: dict[int, list[Constraint]] = {}

    def problem(self, pos: Pos, message: str) -> None:
        self.problems.add(pos, message)

    def abort(self, pos: Pos, message: str) -> Abort:
        return self.problems.abort(pos, message)

    # bindings -------------------------------------------------------------------------------

    def binding(self, b: ast.Bind | ast.FuncDef) -> None:
        """Type a binding or func statement (its dependencies are typed already)."""
        if isinstance(b, ast.FuncDef):
            b.type = self.infer(b.lam)
            b.quantified = self._generalise(b, b.type)
            return
        t = self.infer(b.expr)
        if b.ann is not None:
            self.expect(t, b.ann, b.expr.pos, f"${b.name} is declared as {show(b.ann)}")
        b.type = t
        if isinstance(b.expr, ast.Lambda):
            b.quantified = self._generalise(b, t)
        else:
            self.mono.append(b)

    def _generalise(self, b: ast.Bind | ast.FuncDef, t: Type) -> frozenset[int] | None:
        """The variables of `t` that each use may choose afresh: those of no binding still
        being inferred (`mono`) nor of a constraint involving one. The constraints among
        only those variables (an overloaded operator on the parameters) go with the binding,
        copied at each use (`instantiate`): the lambda is typed per use."""
        self.solve()
        fixed: set[TVar] = set()
        for m in self.mono:
            if m.type is not None:
                fixed |= free_vars(m.type)
        free = free_vars(t) - fixed
        parts = [(c, _constraint_vars(c)) for c in self.pending]
        changed = True
        while changed:  # a constraint reaching a fixed variable fixes all of its own
            changed = False
            for _c, found in parts:
                if found & free and not found <= free:
                    free -= found
                    changed = True
        own = [c for c, found in parts if found and found <= free]
        if own:
            self.pending = [c for c in self.pending if c not in own]
            self.schemes[id(b)] = own
        quantified = frozenset(v.id for v in free)
        return quantified or None

    def instantiate(self, b: ast.Bind | ast.FuncDef, pos: Pos) -> Type:
        """A generalised binding's type at one use (at `pos`): fresh variables, and a copy of
        its own constraints on them."""
        assert b.type is not None and b.quantified is not None
        fresh: dict[int, TVar] = {}
        t = instantiate(b.type, b.quantified, fresh)
        for c in self.schemes.get(id(b), []):
            self._add(self._copy(c, b.quantified, fresh, pos))
        return t

    def _copy(
        self, c: Constraint, quantified: frozenset[int], fresh: dict[int, TVar], use: Pos
    ) -> Constraint:
        def new(t: Type) -> Type:
            return instantiate(t, quantified, fresh)

        if isinstance(c, _HasField):
            return _HasField(c.pos, new(c.obj), c.name, new(c.result))
        if isinstance(c, _Indexable):
            return _Indexable(c.pos, new(c.obj), new(c.index), new(c.result))
        actual = [new(t) for t in c.actual]
        options = [[new(t) for t in option] for option in c.options]

        def message() -> str:
            # The original's message, shown with this use's types (its variables bound to
            # them for the time it takes to say it).
            mark = self.u.mark()
            with contextlib.suppress(UnifyError):
                for mine, theirs in zip(c.actual, actual, strict=True):
                    self.u.unify(mine, theirs)
            text = c.message()
            self.u.undo(mark)
            return f"{text} (in a function used at {use})"

        return _OneOf(c.pos, actual, options, message)

    # unification and constraints ------------------------------------------------------------

    def expect(self, actual: Type, expected: Type, pos: Pos, context: str, hint: str = "") -> None:
        """Unify; else a type error at `pos` (`hint`: said after it, in parentheses)."""
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
            hint = f" ({hint})" if hint else ""
            raise self.abort(
                pos, f"type error: {context}: expected {want}, got {got}{detail}{hint}"
            ) from None

    def one_of(
        self, pos: Pos, actual: list[Type], options: list[list[Type]], message: Callable[[], str]
    ) -> None:
        self._add(_OneOf(pos, actual, options, message))

    def has_field(self, pos: Pos, obj: Type, name: str) -> Type:
        result: Type = TVar()
        self._add(_HasField(pos, obj, name, result))
        return result

    def _add(self, c: Constraint) -> None:
        if not self._step(c, final=False):
            self.pending.append(c)

    def solve(self, final: bool = False) -> None:
        progress = True
        while progress and self.pending:
            progress = False
            for c in list(self.pending):
                try:
                    done = self._step(c, final=False)
                except Abort:
                    done = True
                if done:
                    self.pending.remove(c)
                    progress = True
        if final:
            for c in list(self.pending):
                with contextlib.suppress(Abort):
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
                    c.pos,
                    f"type error: {show(obj)} has no field {c.name}{close_match(c.name, fields)}",
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

    # expressions ----------------------------------------------------------------------------

    def infer(self, e: ast.Expr) -> Type:
        t = self._infer(e)
        e.type = t
        return t

    def _infer(self, e: ast.Expr) -> Type:
        if isinstance(e, ast.Lit):
            return {bool: BOOL, int: INT, float: FLOAT, str: STR}[type(e.value)]
        if isinstance(e, ast.Interp):
            for part in e.parts:
                if isinstance(part, ast.Expr):
                    t = self.infer(part)
                    self.expect(
                        t, STR, part.pos, "an interpolated ${...} must be a str (use fmt.printf)"
                    )
            return STR
        if isinstance(e, ast.Resolved):
            assert e.inner.type is not None  # typed where the include is written
            return e.inner.type
        if isinstance(e, ast.Var) and isinstance(e.target, ast.Lit):
            return self._infer(e.target)  # a constant: str, or int (gzip's levels...)
        if isinstance(e, ast.Var):
            return self._var(e)
        if isinstance(e, ast.Except):
            left = self.infer(e.left)
            right = self.infer(e.right)
            self.expect(right, left, e.right.pos, "both sides of <|> must have one type")
            return left
        if isinstance(e, ast.Call):
            return self._call(e)
        if isinstance(e, ast.Lambda):
            for p in e.params:
                p.type = p.ann if p.ann is not None else TVar()
            body = self.infer(e.body)
            if e.ret is not None:
                self.expect(body, e.ret, e.body.pos, f"the function returns {show(e.ret)}")
            return TFunc(tuple(p.type for p in e.params if p.type is not None), body)
        if isinstance(e, ast.If):
            self.expect(self.infer(e.cond), BOOL, e.cond.pos, "the condition of an if")
            then = self.infer(e.then)
            other = self.infer(e.other)
            self.expect(other, then, e.other.pos, "both branches of an if must have one type")
            return then
        if isinstance(e, ast.ListLit):
            elem: Type = TVar()
            for item in e.items:
                self.expect(self.infer(item), elem, item.pos, "the items of a list")
            return TList(elem)
        if isinstance(e, ast.MapLit):
            key: Type = TVar()
            val: Type = TVar()
            for k, v in e.pairs:
                self.expect(self.infer(k), key, k.pos, "the keys of a map")
                self.expect(self.infer(v), val, v.pos, "the values of a map")
            return TMap(key, val)
        if isinstance(e, ast.StructLit):
            return TStruct(tuple((name, self.infer(v)) for name, v in e.fields))
        if isinstance(e, ast.Field):
            return self.has_field(e.pos, self.infer(e.obj), e.name)
        if isinstance(e, ast.Index):
            result: Type = TVar()
            self._add(_Indexable(e.pos, self.infer(e.obj), self.infer(e.index), result))
            return result
        if isinstance(e, ast.BinOp):
            return self._binop(e)
        if isinstance(e, ast.UnOp):
            t = self.infer(e.operand)
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

    def _var(self, e: ast.Var) -> Type:
        target = e.target
        if isinstance(target, ast.Lit):
            return STR  # a constant
        if isinstance(target, ast.ContextVar):
            return target.type  # $hostname
        if isinstance(target, ast.Param):
            assert target.type is not None
            return target.type
        if target is None:
            raise Abort()  # `$i.x` of an include that failed: its error is reported
        assert isinstance(target, ast.Bind)
        if target.type is None:
            raise Abort()  # its own error is already reported
        if target.quantified:
            return self.instantiate(target, e.pos)
        return target.type

    def _binop(self, e: ast.BinOp) -> Type:
        left = self.infer(e.left)
        right = self.infer(e.right)
        op = e.op
        if op in ("and", "or"):
            self.expect(left, BOOL, e.left.pos, f"the left side of {op}", _default_hint(e))
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
        # mgmt's `/` is a float division, of ints too (7 / 2 is 3.5)
        options = [[INT, INT, FLOAT if op == "/" else INT], [FLOAT, FLOAT, FLOAT]]
        if op == "+":
            options.append([STR, STR, STR])
        self.one_of(e.pos, [left, right, result], options, message)  # type: ignore[arg-type]
        return result

    # calls ----------------------------------------------------------------------------------

    def _call(self, e: ast.Call) -> Type:
        args = [self.infer(a) for a in e.args]
        if e.callee is not None:
            callee = prune(self.infer(e.callee))
            if isinstance(callee, TFunc):
                return self._apply(callee, args, e, "the function")
            result: Type = TVar()
            self.expect(callee, TFunc(tuple(args), result), e.callee.pos, "calling a value")
            return result
        target = e.target
        if isinstance(target, ast.FuncDef):
            if target.type is None:
                raise Abort()
            ftype = self.instantiate(target, e.pos) if target.quantified else target.type
            assert isinstance(ftype, TFunc)
            return self._apply(ftype, args, e, e.func or "")
        assert isinstance(target, funcs.Builtin)
        if target.typing is not None:
            return target.typing(self, e, args)
        result = self._builtin(target, e, args)
        if target.check is not None:
            target.check(self, e)
        return result

    def _builtin(self, target: funcs.Builtin, e: ast.Call, args: list[Type]) -> Type:
        """A builtin typed by its signatures: the one of its arity, or an overload."""
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


def _constraint_vars(c: Constraint) -> set[TVar]:
    found: set[TVar] = set()
    for part in _constraint_types(c):
        found |= free_vars(part)
    return found


def _constraint_types(c: Constraint) -> list[Type]:
    if isinstance(c, _OneOf):
        return list(c.actual)
    if isinstance(c, _HasField):
        return [c.obj, c.result]
    return [c.obj, c.index, c.result]


def _default_hint(e: ast.BinOp) -> str:
    """For `$m["k"] || "d"` (mgmt's 2024 grammar: `||` after a lookup is its default; here,
    as in mgmt's earlier one, `||` is `or`): the way to write it here."""
    if e.op != "or" or not isinstance(e.left, ast.Index | ast.Field):
        return ""
    if isinstance(e.left, ast.Index):
        return "mgmt's `$m[key] || default` is `$m[key] <|> default` here: `||` is `or`"
    return (
        "mgmt's `$s->field || default`, for a field the struct may lack, has no equivalent "
        "here: a struct's fields are known when the program is checked; `||` is `or`"
    )
