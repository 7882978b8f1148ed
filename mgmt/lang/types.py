"""The language's types and their unification (Hindley-Milner style, with a trail for undo).

Types are written as in mgmt: `bool`, `str`, `int`, `float`, `[]str`, `map{str: int}`,
`struct{x1 float; x5 float}`, `func(int, str) bool`; `?1` is a type variable.
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass, field


class Type:
    """Base of every type. Compare resolved types with `==` only after `resolve()`."""

    def __str__(self) -> str:
        return show(self)


@dataclass(frozen=True, eq=True)
class TCon(Type):
    """A basic type: bool, str, int or float."""

    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, eq=True)
class TList(Type):
    elem: Type

    def __str__(self) -> str:
        return show(self)


@dataclass(frozen=True, eq=True)
class TMap(Type):
    key: Type
    val: Type

    def __str__(self) -> str:
        return show(self)


@dataclass(frozen=True, eq=True)
class TStruct(Type):
    fields: tuple[tuple[str, Type], ...]

    def field(self, name: str) -> Type | None:
        for fname, ftype in self.fields:
            if fname == name:
                return ftype
        return None

    def __str__(self) -> str:
        return show(self)


@dataclass(frozen=True, eq=True)
class TFunc(Type):
    args: tuple[Type, ...]
    ret: Type

    def __str__(self) -> str:
        return show(self)


_ids = itertools.count(1)


@dataclass(eq=False)
class TVar(Type):
    """A type variable; `ref` is what it was unified with (None while unknown)."""

    id: int = field(default_factory=lambda: next(_ids))
    ref: Type | None = None

    def __str__(self) -> str:
        return show(self)


BOOL = TCon("bool")
STR = TCon("str")
INT = TCon("int")
FLOAT = TCon("float")
BASIC = {"bool": BOOL, "str": STR, "int": INT, "float": FLOAT}
# An exported resource as `collect` and `collect.res` name it: its name and the host exporting it.
COLLECTED = TStruct((("name", STR), ("host", STR)))


def prune(t: Type) -> Type:
    """Follow a variable's bindings to the type it stands for (or an unbound variable)."""
    while isinstance(t, TVar) and t.ref is not None:
        t = t.ref
    return t


def resolve(t: Type) -> Type:
    """The type with every bound variable replaced by what it stands for."""
    t = prune(t)
    if isinstance(t, TList):
        return TList(resolve(t.elem))
    if isinstance(t, TMap):
        return TMap(resolve(t.key), resolve(t.val))
    if isinstance(t, TStruct):
        return TStruct(tuple((n, resolve(f)) for n, f in t.fields))
    if isinstance(t, TFunc):
        return TFunc(tuple(resolve(a) for a in t.args), resolve(t.ret))
    return t


def free_vars(t: Type) -> set[TVar]:
    t = prune(t)
    if isinstance(t, TVar):
        return {t}
    if isinstance(t, TList):
        return free_vars(t.elem)
    if isinstance(t, TMap):
        return free_vars(t.key) | free_vars(t.val)
    if isinstance(t, TStruct):
        return set().union(*(free_vars(f) for _, f in t.fields)) if t.fields else set()
    if isinstance(t, TFunc):
        out = free_vars(t.ret)
        for a in t.args:
            out |= free_vars(a)
        return out
    return set()


def is_ground(t: Type) -> bool:
    return not free_vars(t)


def show(t: Type, names: dict[int, str] | None = None) -> str:
    """The mgmt spelling of a type; unknown parts are ?1, ?2... in order of appearance."""
    names = {} if names is None else names
    t = prune(t)
    if isinstance(t, TVar):
        if t.id not in names:
            names[t.id] = f"?{len(names) + 1}"
        return names[t.id]
    if isinstance(t, TCon):
        return t.name
    if isinstance(t, TList):
        return "[]" + show(t.elem, names)
    if isinstance(t, TMap):
        return f"map{{{show(t.key, names)}: {show(t.val, names)}}}"
    if isinstance(t, TStruct):
        return "struct{" + "; ".join(f"{n} {show(f, names)}" for n, f in t.fields) + "}"
    if isinstance(t, TFunc):
        args = ", ".join(show(a, names) for a in t.args)
        return f"func({args}) {show(t.ret, names)}"
    return repr(t)


class UnifyError(Exception):
    """Two types cannot be made equal; `left` and `right` are the mismatching parts."""

    def __init__(self, left: Type, right: Type, detail: str = "") -> None:
        super().__init__()
        self.left = left
        self.right = right
        self.detail = detail

    def __str__(self) -> str:  # built only when shown: overload trials fail often
        return f"{show(self.left)} vs {show(self.right)}"


class Unifier:
    """Unification with a trail, so that a trial (for overloads) can be undone."""

    def __init__(self) -> None:
        self.trail: list[TVar] = []

    def mark(self) -> int:
        return len(self.trail)

    def undo(self, mark: int) -> None:
        while len(self.trail) > mark:
            self.trail.pop().ref = None

    def bind(self, var: TVar, t: Type) -> None:
        if var in free_vars(t):
            raise UnifyError(var, t, "a type cannot contain itself")
        var.ref = t
        self.trail.append(var)

    def unify(self, a: Type, b: Type) -> None:
        a, b = prune(a), prune(b)
        if a is b:
            return
        if isinstance(a, TVar):
            self.bind(a, b)
            return
        if isinstance(b, TVar):
            self.bind(b, a)
            return
        if isinstance(a, TCon) and isinstance(b, TCon):
            if a.name != b.name:
                raise UnifyError(a, b)
            return
        if isinstance(a, TList) and isinstance(b, TList):
            self.unify(a.elem, b.elem)
            return
        if isinstance(a, TMap) and isinstance(b, TMap):
            self.unify(a.key, b.key)
            self.unify(a.val, b.val)
            return
        if isinstance(a, TStruct) and isinstance(b, TStruct):
            if [n for n, _ in a.fields] != [n for n, _ in b.fields]:
                raise UnifyError(a, b, "the fields differ")
            for (_, fa), (_, fb) in zip(a.fields, b.fields, strict=True):
                self.unify(fa, fb)
            return
        if isinstance(a, TFunc) and isinstance(b, TFunc):
            if len(a.args) != len(b.args):
                raise UnifyError(a, b, f"{len(a.args)} vs {len(b.args)} arguments")
            for x, y in zip(a.args, b.args, strict=True):
                self.unify(x, y)
            self.unify(a.ret, b.ret)
            return
        raise UnifyError(a, b)

    def try_unify(self, a: Type, b: Type) -> bool:
        """Unify if possible; on failure leave everything as it was."""
        mark = self.mark()
        try:
            self.unify(a, b)
        except UnifyError:
            self.undo(mark)
            return False
        return True


def instantiate(
    t: Type, quantified: frozenset[int] | None = None, fresh: dict[int, TVar] | None = None
) -> Type:
    """A copy of `t` with fresh variables for its free (or only the quantified) variables
    (`fresh`: the ones already chosen, by variable id, shared by several calls)."""
    fresh = {} if fresh is None else fresh

    def go(t: Type) -> Type:
        t = prune(t)
        if isinstance(t, TVar):
            if quantified is not None and t.id not in quantified:
                return t
            if t.id not in fresh:
                fresh[t.id] = TVar()
            return fresh[t.id]
        if isinstance(t, TList):
            return TList(go(t.elem))
        if isinstance(t, TMap):
            return TMap(go(t.key), go(t.val))
        if isinstance(t, TStruct):
            return TStruct(tuple((n, go(f)) for n, f in t.fields))
        if isinstance(t, TFunc):
            return TFunc(tuple(go(a) for a in t.args), go(t.ret))
        return t

    return go(t)


# parsing mgmt's type syntax (for builtin signatures and annotations) ----------------------

_TOKEN = re.compile(r"\s*(\?\d+|\[\]|[A-Za-z_][A-Za-z0-9_]*|[{}():;,])")


@functools.cache
def _tokens(text: str) -> tuple[str, ...]:
    out: list[str] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"bad type syntax at {text[pos:]!r}")
        out.append(m.group(1))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return tuple(out)


def parse_type(text: str) -> Type:
    """Parse a type in mgmt syntax; every `?N` becomes a fresh variable (shared within text)."""
    tokens = list(_tokens(text))
    vars_: dict[str, TVar] = {}
    pos = 0

    def peek() -> str:
        return tokens[pos] if pos < len(tokens) else ""

    def take(expected: str | None = None) -> str:
        nonlocal pos
        tok = peek()
        if expected is not None and tok != expected:
            raise ValueError(f"expected {expected!r} in type {text!r}, got {tok!r}")
        pos += 1
        return tok

    def one() -> Type:
        tok = take()
        if tok.startswith("?"):
            return vars_.setdefault(tok, TVar())
        if tok in BASIC:
            return BASIC[tok]
        if tok == "[]":
            return TList(one())
        if tok == "map":
            take("{")
            key = one()
            take(":")
            val = one()
            take("}")
            return TMap(key, val)
        if tok == "struct":
            take("{")
            fields: list[tuple[str, Type]] = []
            while peek() != "}":
                name = take()
                fields.append((name, one()))
                if peek() == ";":
                    take(";")
            take("}")
            return TStruct(tuple(fields))
        if tok == "func":
            take("(")
            args: list[Type] = []
            while peek() != ")":
                if (
                    peek() not in BASIC
                    and peek() not in ("[]", "map", "struct", "func")
                    and not peek().startswith("?")
                    and pos + 1 < len(tokens)
                ):
                    take()  # an argument name, as in mgmt's `func(a int) str`
                args.append(one())
                if peek() == ",":
                    take(",")
            take(")")
            return TFunc(tuple(args), one())
        raise ValueError(f"unknown type {tok!r} in {text!r}")

    result = one()
    if pos != len(tokens):
        raise ValueError(f"trailing text in type {text!r}")
    return result
