"""The resource contract: capabilities are declared and checked when a kind registers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from engine.resource import (
    UID,
    Edgeable,
    Groupable,
    Refreshable,
    Resource,
    Reversible,
    kinds,
    lookup,
    members,
    register,
)
from tests.engine.probe import GroupProbe, ProbeRes


def test_every_shipped_kind_honours_the_contract() -> None:
    for kind in kinds():
        assert lookup(kind) is not None, kind  # importing it ran register()'s checks


def test_capabilities_of_the_shipped_kinds() -> None:
    declared = {
        kind: {
            c.__name__ for c in (Refreshable, Edgeable, Groupable, Reversible) if issubclass(cls, c)
        }
        for kind in kinds()
        if (cls := lookup(kind)) is not None
    }
    assert declared["file"] == {"Edgeable", "Reversible"}
    assert declared["pkg"] == {"Edgeable", "Groupable"}
    assert declared["svc"] == {"Refreshable", "Edgeable"}
    assert declared["exec"] == {"Refreshable", "Edgeable"}
    assert "Refreshable" not in declared["file"]


def test_a_declared_capability_without_its_methods_is_refused() -> None:
    with pytest.raises(
        TypeError, match=r"'half' \(Half\) declares Edgeable but does not define autoedges"
    ):

        @register("half")
        @dataclass(kw_only=True, eq=False)
        class Half(Edgeable, Resource):
            async def check_apply(self, apply: bool) -> bool:
                return True

            def uids(self) -> list[UID]:
                return []

    assert lookup("half") is None


def test_capability_methods_without_the_declaration_are_refused() -> None:
    with pytest.raises(
        TypeError, match=r"defines reversal, reverse but does not declare Reversible"
    ):

        @register("undeclared")
        @dataclass(kw_only=True, eq=False)
        class Undeclared(Resource):
            async def check_apply(self, apply: bool) -> bool:
                return True

            def reversal(self) -> object:
                return None

            async def reverse(self, data: object) -> None:
                pass


def test_a_kind_without_check_apply_is_refused() -> None:
    with pytest.raises(TypeError, match=r"'empty' \(Empty\) must define check_apply"):

        @register("empty")
        @dataclass(kw_only=True, eq=False)
        class Empty(Resource):
            pass


def test_sends_must_map_names_to_types() -> None:
    with pytest.raises(TypeError, match="SENDS must map names to type hints, got 'stdout'"):

        @register("badsends")
        @dataclass(kw_only=True, eq=False)
        class BadSends(Resource):
            SENDS: ClassVar[Mapping[str, Any]] = "stdout"  # type: ignore[assignment]

            async def check_apply(self, apply: bool) -> bool:
                return True


def test_a_groupable_resource_starts_with_no_members() -> None:
    res = GroupProbe(name="g")
    assert res.grouped == [] and members(res) == []
    assert members(ProbeRes(name="p")) == []  # not Groupable: never any
