"""Typed construction of parameter dataclasses from plain data (a parsed graph file).

`build(cls, data)` checks every key against the dataclass fields and every value against the
field's type hint, and raises `ValidationError` naming the key (dotted for nested dataclasses).
Supported hints: str, int, float, bool, Literal[...], list[X], dict[str, X], X | None and nested
dataclasses. A `str` field given a YAML scalar takes the scalar's source text (so `mode: 0644`
stays "0644", as in mgmt), which the caller passes in `raw`.

Numbers are bounded the same way everywhere: integers are 64-bit (mgmt's int64), floats finite
(`inf` only where a field's metadata says `{"inf": True}`, e.g. meta `limit`), and integers given
as text (flags, `sema: ["id:N"]`, a uid) go through `parse_int`: ASCII digits only, since
`str.isdigit()` accepts "²" and `int()` accepts "٣".

A field declared with `metadata=EMPTY_IS_UNSET` takes an empty string as "not set" (its default),
as mgmt does for string params it checks with `!= ""` (e.g. exec's `shell: ''`).
"""

from __future__ import annotations

import builtins
import dataclasses
import functools
import math
import re
import reprlib
import sys
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from engine.errors import ValidationError

T = TypeVar("T")

INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # what every integer param and flag must fit in

# Field metadata: an empty string given for this field means "not set" (the field's default).
EMPTY_IS_UNSET: Mapping[str, Any] = types.MappingProxyType({"empty_is_unset": True})


@functools.cache
def hints(cls: type) -> dict[str, Any]:
    """Resolved type hints of a dataclass, as `typing.get_type_hints(cls)` gives them (cached).

    Each annotation's text that is a plain type expression (names, `X | Y`, `X[A, B]`, and
    quoted words in `Literal[...]`: every kind's params, `Meta`) is evaluated by `_evaluate`, as
    typing's `eval` of it would be: typing compiles each text, ~0.7 ms of a run's first graph
    load for the file kind's 21 annotations. A class with any other annotation is typing's."""
    found: dict[str, Any] = {}
    for base in reversed(cls.__mro__):
        module = getattr(sys.modules.get(base.__module__), "__dict__", {})
        own = base.__dict__  # as typing reads them (inspect.get_annotations: not imported)
        done: dict[str, Any] = {}  # each text once per class (`str | None`: most of a kind's)
        for name, text in own.get("__annotations__", {}).items():
            if not isinstance(text, str):
                return typing.get_type_hints(cls)
            value = done.get(text)
            if value is None:
                value = done[text] = _evaluate(text, module, own)
                if value is None:
                    return typing.get_type_hints(cls)
            found[name] = value
    return found


_PUNCTUATION = frozenset("|[],")


def _tokens(text: str) -> list[str] | None:
    """The names (dotted), punctuation and quoted words of a type expression; None for any
    other text (numbers, calls, escapes, operators but `|`...)."""
    tokens, i, end = [], 0, len(text)
    while i < end:
        c = text[i]
        if c == " ":
            i += 1
        elif c in _PUNCTUATION:
            tokens.append(c)
            i += 1
        elif c in "'\"":
            close = text.find(c, i + 1)
            word = text[i : close + 1]
            if close < 0 or "\\" in word:
                return None
            tokens.append(word)
            i = close + 1
        else:
            start = i
            while i < end and (text[i].isalnum() or text[i] in "_."):
                i += 1
            word = text[start:i]
            if not word.replace(".", "_").isidentifier() or word[0].isdigit():
                return None
            tokens.append(word)
    return tokens


_MISSING = object()


def _evaluate(text: str, module: Mapping[str, Any], own: Mapping[str, Any]) -> Any:
    """`text` evaluated as typing's get_type_hints evaluates a class's annotation (names looked
    up in the class's module, then in the class, then in builtins), if it is a plain type
    expression (`_tokens`; `None` and `Annotated` aside, which typing changes); else None."""
    tokens = _tokens(text)
    if not tokens:
        return None
    at = 0

    def name(word: str) -> Any:
        head, *attrs = word.split(".")
        value = module.get(head, _MISSING)
        if value is _MISSING:
            value = own.get(head, _MISSING)
        if value is _MISSING:
            value = getattr(builtins, head, _MISSING)
        for attr in attrs:
            value = getattr(value, attr, _MISSING)
        if value is _MISSING or value is Annotated:
            raise LookupError(word)
        return value

    def union() -> Any:
        nonlocal at
        value = term()
        while at < len(tokens) and tokens[at] == "|":
            at += 1
            value = value | term()
        return value

    def term() -> Any:
        nonlocal at
        word = tokens[at]
        if word in _PUNCTUATION or word[0] in "'\"":
            raise LookupError(word)
        at += 1
        value: Any = None if word == "None" else name(word)
        if at < len(tokens) and tokens[at] == "[":
            at += 1
            args = [quoted() if value is Literal else union()]
            while tokens[at] == ",":
                at += 1
                args.append(quoted() if value is Literal else union())
            if tokens[at] != "]":
                raise LookupError(tokens[at])
            at += 1
            value = value[args[0] if len(args) == 1 else tuple(args)]
        return value

    def quoted() -> str:
        nonlocal at
        word = tokens[at]
        if word[0] not in "'\"":
            raise LookupError(word)
        at += 1
        return word[1:-1]

    try:
        value = union()
    except (LookupError, TypeError):
        return None
    return None if at != len(tokens) or value is None else value


# Field metadata: the key that names this field where the field's name cannot (meta `async`,
# a Python keyword, is the field `async_`). Such a field must have a default.
def key_of(f: dataclasses.Field[Any]) -> str:
    """The key that names dataclass field `f` in a graph, a program or an export."""
    key: str = f.metadata.get("key", f.name)
    return key


def field_names(cls: type) -> list[str]:
    """The keys of the init-able dataclass fields of `cls`, in declaration order."""
    return list(_plan(cls).names)


def key_hints(cls: type) -> Mapping[str, Any]:
    """The resolved type hint of each init-able field of `cls`, by its key (key_of)."""
    return _plan(cls).types


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What build() needs of a dataclass, computed once per class."""

    names: tuple[str, ...]  # the keys of the init-able fields, in declaration order
    types: dict[str, Any]  # key -> resolved type hint
    attrs: dict[str, str]  # key -> field name, of the fields named otherwise (key_of)
    unset_empty: frozenset[str]  # fields where "" means "not set" (EMPTY_IS_UNSET)
    inf: frozenset[str]  # float fields that may be inf
    required: tuple[str, ...]  # init-able fields without a default
    text: frozenset[str]  # fields a string is given to as it is (str, str | None)


@functools.cache
def _plan(cls: type) -> _Plan:
    fields = [f for f in dataclasses.fields(cls) if f.init]
    attrs = {key_of(f): f.name for f in fields if key_of(f) != f.name}
    return _Plan(
        names=tuple(key_of(f) for f in fields),
        types={key_of(f): hints(cls)[f.name] for f in fields},
        attrs=attrs,
        unset_empty=frozenset(f.name for f in fields if f.metadata.get("empty_is_unset")),
        inf=frozenset(f.name for f in fields if f.metadata.get("inf")),
        required=tuple(
            f.name
            for f in fields
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ),
        text=frozenset(
            f.name
            for f in fields
            if hints(cls)[f.name] in (str, str | None)
            and not f.metadata.get("empty_is_unset")
            and f.name not in attrs.values()
        ),
    )


def plain_keys(cls: type) -> tuple[frozenset[str], frozenset[str]]:
    """The keys whose string values build() passes to `cls` as they are (str and `str | None`
    fields, not renamed, "" not "unset"), and the keys `cls` requires: a mapping of only the
    former, all strings, with the latter, builds as `cls(**mapping)` (given what else it
    needs: a resource's meta)."""
    plan = _plan(cls)
    return plan.text, frozenset(plan.required)


def close_match(key: str, names: list[str]) -> str:
    """A ' (did you mean 'x'?)' hint, or '': the one suggestion of every front-end (YAML, mcl,
    puppet). Of difflib's close names, the fewest edits away wins, a swap of two neighbours
    being one edit (`flie` is `file`, not `line`, though difflib scores them alike)."""
    import difflib  # an error's hint: not imported by every run (~2.5 ms)

    matches = difflib.get_close_matches(key, names, n=5)
    if not matches:
        return ""
    best = min(matches, key=lambda name: _edits(key, name))  # ties: difflib's order
    return f" (did you mean '{best}'?)"


def _edits(a: str, b: str) -> int:
    """Edits from `a` to `b`: insert, delete, replace, or swap two neighbours (optimal string
    alignment distance)."""
    two_back: list[int] = []  # the rows of a[: i - 2], a[: i - 1] and a[:i]
    row = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        before, row = row, [i, *[0] * len(b)]
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            row[j] = min(row[j - 1] + 1, before[j] + 1, before[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], two_back[j - 2] + 1)
        two_back = before
    return row[-1]


def build(
    cls: type[T],
    data: Mapping[str, Any],
    *,
    raw: Mapping[str, str] | None = None,
    prefix: str = "",
    skip: frozenset[str] = frozenset(),
    given: Mapping[str, Any] | None = None,
) -> T:
    """Build `cls` from `data`; unknown keys and wrong types raise ValidationError (the first
    one, with the others of `data` in its `others`). `given`: fields already built (e.g.
    `meta`), passed to `cls` as they are (keys of `skip` in data)."""
    plan = _plan(cls)  # type: ignore[arg-type]
    types_ = plan.types
    kwargs: dict[str, Any] = dict(given) if given else {}
    problems: list[ValidationError] = []
    for key, value in data.items():
        if key in skip:
            continue
        if type(value) is str and key in plan.text:
            kwargs[key] = value  # the common case, at no call
            continue
        hint = types_.get(key) if isinstance(key, str) else None
        if hint is None:
            problems.append(
                ValidationError(
                    f"unknown key{close_match(str(key), list(plan.names))}", prefix + str(key)
                )
            )
            continue
        if value == "" and key in plan.unset_empty:
            continue  # mgmt's zero value: the default applies
        source = raw.get(key) if raw else None
        try:
            converted = convert(hint, value, prefix + key, source, inf=key in plan.inf)
            kwargs[plan.attrs.get(key, key)] = converted
        except ValidationError as err:
            problems.append(err)
    if plan.required:  # (none for most kinds: no list made)
        problems += [
            ValidationError("is required", prefix + name)
            for name in plan.required
            if name not in kwargs and name not in data  # given but wrong: told above
        ]
    if problems:
        problems[0].others = problems[1:]
        raise problems[0]
    try:
        return cls(**kwargs)
    except ValidationError as err:
        if err.key and not err.key.startswith(prefix):
            err.key = prefix + err.key
        raise


def describe(hint: Any) -> str:
    """A human name for a type hint: 'a string', 'a list of strings', 'one of a, b'."""
    hint = _bare(hint)
    origin = get_origin(hint)
    if hint is Any:
        return "any value"
    if hint is str:
        return "a string"
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if origin is list:
        return f"a list of {describe(get_args(hint)[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return "a mapping"
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in get_args(hint) if a is not type(None))
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    return str(hint)


def convert(
    hint: Any,
    value: Any,
    key: str,
    raw: str | None = None,
    *,
    inf: bool = False,
    exact: bool = False,
) -> Any:
    """Check (and lightly coerce) one value against a type hint; `inf`: a float may be inf;
    `exact`: a number is not taken for a string (a value received along a send/recv edge is
    what its sender sent, not a YAML scalar)."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        members = get_args(hint)
        if value is None and type(None) in members:
            return None
        errors: list[ValidationError] = []
        for member in members:
            if member is type(None):
                continue
            try:
                return convert(member, value, key, raw, inf=inf, exact=exact)
            except ValidationError as err:
                errors.append(err)
        if len(errors) == 1:
            raise errors[0]
        raise ValidationError(f"expected {describe(hint)}, got {show(value)}", key)
    if hint is Any:
        return value
    if hint is str:
        if isinstance(value, str):
            return value
        if raw is not None and isinstance(value, int | float) and not isinstance(value, bool):
            return raw
        if isinstance(value, int | float) and not isinstance(value, bool) and not exact:
            return str(value) if not isinstance(value, int) else str(check_int(value, key))
        if raw is not None and isinstance(value, bool):  # YAML's `yes`, `off`...
            raise ValidationError(
                f"expected a string, got {raw} (a boolean to YAML unquoted): quote it, '{raw}'",
                key,
            )
        raise ValidationError(f"expected a string, got {show(value)}", key)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ValidationError(f"expected true or false, got {show(value)}", key)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return check_int(value, key)
        raise ValidationError(f"expected an integer, got {show(value)}", key)
    if hint is float:
        return _float(value, key, inf)
    if origin is Literal:
        if value in get_args(hint):
            return value
        raise ValidationError(f"expected {describe(hint)}, got {show(value)}", key)
    if origin is list:
        if not isinstance(value, list):
            raise ValidationError(f"expected {describe(hint)}, got {show(value)}", key)
        (item,) = get_args(hint)
        return [convert(item, v, f"{key}[{i}]", exact=exact) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ValidationError(f"expected a mapping, got {show(value)}", key)
        _, item = get_args(hint)
        return {str(k): convert(item, v, f"{key}.{k}", exact=exact) for k, v in value.items()}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ValidationError(f"expected a mapping, got {show(value)}", key)
        return build(hint, value, raw=getattr(value, "raw", None), prefix=key + ".")
    raise ValidationError(f"unsupported parameter type {hint!r}", key)


# The mark of a sent value that is a secret (password's `password`): `Annotated[str, SECRET]`
# in a kind's SENDS. Its value is never shown in a message.
SECRET = "secret"


def is_secret(hint: Any) -> bool:
    """Whether a type hint of a kind's SENDS marks a secret (SECRET)."""
    return get_origin(hint) is Annotated and SECRET in hint.__metadata__


# A secret value shorter than this is redacted only where it is a whole token (no letter,
# digit or _ right before or after it): a short one ("ab", "1234", "root") is found inside
# other words by chance, and replacing it there garbled the line and, where the text around
# it is known ("f***ed"), showed the secret. A longer one is redacted wherever it appears.
SHORT_SECRET = 8


def secrets_pattern(secrets: Iterable[str]) -> re.Pattern[str] | None:
    """What redact_secrets replaces: each non-empty secret, longest first (one that holds
    another is replaced whole), a short one (SHORT_SECRET) only as a whole token."""
    parts = [
        re.escape(s) if len(s) >= SHORT_SECRET else rf"(?<!\w){re.escape(s)}(?!\w)"
        for s in sorted({s for s in secrets if s}, key=len, reverse=True)
    ]
    return re.compile("|".join(parts)) if parts else None


def redact_secrets(text: str, secrets: Iterable[str]) -> str:
    """`text` with each of `secrets` as "***" (secrets_pattern's rule)."""
    pattern = secrets_pattern(secrets)
    return text if pattern is None else pattern.sub("***", text)


# The secrets this process knows (a received secret, the cluster's password): "***" in every
# line any logger writes (mgmt.log's handlers: a task's unexpected failure and a reversal's
# error are logged by the engine's own logger, not the resource's) and in every text the
# status model keeps (/api/status, `mgmt status`, the page). The last KNOWN_SECRETS are kept
# (a secret regenerated again and again must not grow the pattern for ever); none: no cost.
KNOWN_SECRETS = 64
_known: dict[str, None] = {}  # an ordered set, oldest first
_known_pattern: re.Pattern[str] | None = None


def hide_secret(secret: str) -> None:
    """Redact `secret` from every line logged and every status text from now on."""
    global _known_pattern  # noqa: PLW0603 (the process's one registry)
    if not secret or secret in _known:
        return
    _known[secret] = None
    while len(_known) > KNOWN_SECRETS:
        del _known[next(iter(_known))]
    _known_pattern = secrets_pattern(_known)


def redact_known(text: str) -> str:
    """`text` with every secret hide_secret() was given as "***" (secrets_pattern's rule)."""
    pattern = _known_pattern
    return text if pattern is None else pattern.sub("***", text)


def knows_secrets() -> bool:
    """Whether hide_secret() was given any (else redact_known() returns its text as is)."""
    return _known_pattern is not None


def sendable(sent: Any, param: Any) -> bool:
    """Whether a value of type `sent` (a hint of a kind's SENDS) fits a param of type `param`
    (its field's hint): mgmt's StructFieldCompat, checked before the graph runs. `Any` on
    either side fits (the value is checked when it is received); an int fits a float; a str
    fits a Literal of strs (the value is checked when it is received); a param that may be
    None takes what its other members take; a sent union fits if each of its members does."""
    sent, param = _bare(sent), _bare(param)
    if sent is Any or param is Any:
        return True
    if get_origin(param) in (Union, types.UnionType):
        return any(sendable(sent, m) for m in get_args(param) if m is not type(None))
    if get_origin(sent) in (Union, types.UnionType):
        return all(sendable(m, param) for m in get_args(sent) if m is not type(None))
    if get_origin(param) is Literal:
        return sent is str or (
            get_origin(sent) is Literal and set(get_args(sent)) <= set(get_args(param))
        )
    if get_origin(sent) is Literal:
        return all(type(v) is param for v in get_args(sent))
    if param is float:
        return sent in (int, float)
    if get_origin(param) in (list, dict):
        return get_origin(sent) is get_origin(param) and all(
            sendable(a, b) for a, b in zip(get_args(sent), get_args(param), strict=True)
        )
    return bool(sent is param)


def _bare(hint: Any) -> Any:
    """`hint` without its Annotated marks."""
    return get_args(hint)[0] if get_origin(hint) is Annotated else hint


def _float(value: Any, key: str, inf: bool) -> float:
    """A finite number (or inf when `inf`); never nan."""
    if inf and isinstance(value, str) and value.strip().lower() in ("inf", "+inf", ".inf"):
        return math.inf
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValidationError(f"expected a number, got {show(value)}", key)
    try:
        number = float(value)
    except OverflowError:  # an integer beyond 1.8e308
        number = math.nan
    if math.isnan(number) or (math.isinf(number) and not (inf and number > 0)):
        what = "a finite number (or inf)" if inf else "a finite number"
        raise ValidationError(f"expected {what}, got {show(value)}", key)
    return number


def check_int(
    value: int, key: str | None = None, *, low: int = INT_MIN, high: int = INT_MAX
) -> int:
    """`value` if low <= value <= high (by default: a 64-bit integer), else ValidationError."""
    if not low <= value <= high:
        raise ValidationError(f"expected {_int_range(low, high)}, got {show(value)}", key)
    return value


def parse_int(text: str, key: str | None = None, *, low: int = INT_MIN, high: int = INT_MAX) -> int:
    """An integer written as text (a flag, "id:N", a uid): an optional sign, ASCII digits."""
    body = text[1:] if text[:1] in ("+", "-") else text
    value = int(text) if body.isascii() and body.isdigit() and len(body) <= 30 else None
    if value is None or not low <= value <= high:
        raise ValidationError(f"expected {_int_range(low, high)}, got {show(text)}", key)
    return value


def _int_range(low: int, high: int) -> str:
    if (low, high) == (INT_MIN, INT_MAX):
        return "a 64-bit integer"
    if high == INT_MAX:
        return f"an integer >= {low}"
    return f"an integer from {low} to {high}"


class _Short(reprlib.Repr):
    """repr() bounded in length and depth; dict and list subclasses shown as such."""

    def repr1(self, x: Any, level: int) -> str:
        if isinstance(x, int) and not isinstance(x, bool) and x.bit_length() > 64:
            return f"<an integer of {x.bit_length()} bits>"  # repr() may refuse (4,300 digits)
        if isinstance(x, dict):
            return self.repr_dict(x, level)
        if isinstance(x, list):
            return self.repr_list(x, level)
        return super().repr1(x, level)


_SHORT = _Short()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlist = _SHORT.maxdict = 5
_SHORT.maxlevel = 3


def show(value: Any) -> str:
    """repr(value) for an error message: one line, at most ~80 characters, never a traceback."""
    return _SHORT.repr(value)


def to_plain(obj: Any) -> dict[str, Any]:
    """The fields of a dataclass instance as plain data (for cmp, export and --graphviz)."""
    return {key_of(f): getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}
