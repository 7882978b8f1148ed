"""engine.params.hints: a dataclass's resolved type hints, as typing.get_type_hints gives them,
without typing's compile of each annotation's text where the text is a plain type expression."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import pytest

import resources
from engine import params
from engine.meta import Meta
from engine.resource import lookup


def _exact(cls: type) -> tuple[dict[str, Any], list[type]]:
    """hints(cls) computed afresh (not the cache's), and the classes typing was asked for."""
    asked: list[type] = []
    real = typing.get_type_hints

    def get_type_hints(obj: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(obj)
        return real(obj, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(typing, "get_type_hints", get_type_hints)
        found = params.hints.__wrapped__(cls)
    return found, asked


def _same(found: dict[str, Any], want: dict[str, Any]) -> None:
    assert list(found) == list(want)
    for name, hint in want.items():
        assert found[name] == hint and type(found[name]) is type(hint), name


def test_every_kinds_params_and_meta_resolve_as_typing_resolves_them_without_it() -> None:
    """Every registered kind (its params, the Resource fields and ClassVars it inherits) and
    Meta: the same names, in the same order, equal hints of the same types as typing's; none
    of them left to typing."""
    resources.load_all()
    for cls in [*(lookup(kind) for kind in resources.KINDS), Meta]:
        assert cls is not None
        found, asked = _exact(cls)
        assert asked == [], cls
        _same(found, typing.get_type_hints(cls))


Word = str  # a module-level alias: annotations name it


@dataclasses.dataclass
class _Plain:
    a: Word
    b: int | None
    c: list[str] | None
    d: dict[str, list[int]]
    e: Literal["x", "y"] | None
    f: None | typing.Mapping[str, Any]  # noqa: RUF036 (None first: what is tested)
    g: ClassVar[Mapping[str, Any]] = {}


def test_plain_expressions_resolve_as_typing_resolves_them() -> None:
    """Aliases, unions either side of None, nested subscripts, Literal's quoted words, dotted
    names and ClassVar; a word in either quote."""
    found, asked = _exact(_Plain)
    assert asked == []
    _same(found, typing.get_type_hints(_Plain))
    either = params._evaluate("Literal['x', \"y\"]", {"Literal": Literal}, {})
    assert either == Literal["x", "y"]


@dataclasses.dataclass
class _Annotated:
    a: typing.Annotated[int, "meta"]  # typing strips it


@dataclasses.dataclass
class _NoneHint:
    a: None  # typing makes it NoneType


@dataclasses.dataclass
class _Forward:
    a: list["int"]  # noqa: UP037 (the string inside is what is tested)


@pytest.mark.parametrize("cls", [_Annotated, _NoneHint, _Forward])
def test_what_typing_changes_or_a_plain_expression_cannot_say_is_typings(cls: type) -> None:
    """Annotated (stripped), a bare None (NoneType), a string forward reference inside a
    subscript: left to typing, whose answer hints() gives."""
    found, asked = _exact(cls)
    assert asked == [cls]
    _same(found, typing.get_type_hints(cls))


def test_an_unknown_name_is_typings_error() -> None:
    """A name only TYPE_CHECKING imports: typing's NameError, as before."""

    @dataclasses.dataclass
    class Late:
        a: Unknown  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(NameError, match="Unknown"):
        params.hints.__wrapped__(Late)


@pytest.mark.parametrize(
    "text",
    [
        "int(3)",
        "1",
        "a + b",
        "x[",
        "x]",
        "x[1]",
        "'a'",
        "Literal[a]",
        "str |",
        "x.",
        "a b",
        "'a\\'",
    ],
)
def test_texts_that_are_not_plain_type_expressions_are_refused(text: str) -> None:
    """Calls, numbers, operators, unbalanced brackets, a quoted word outside Literal (or a
    name inside it), escapes: not evaluated here (typing's, with its errors)."""
    namespace = {"x": list, "a": int, "b": int, "Literal": Literal}
    assert params._evaluate(text, namespace, {}) is None
