"""import "value": the values `value` resources store (engine/local.py), by resource name.

value.get_str(key) (and get_bool, get_int, get_float) is struct{value; ready}: `ready` is
false (and `value` the zero value) while the key has no value; it follows every change the
resource makes. value.get(key) is the same, of the type the program's use gives `value` (as
mgmt's, `func(str) struct{value ?1; ready bool}`). A stored value of another type is an error
naming the key."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from engine.local import LocalValues
from mgmt.lang import streams
from mgmt.lang.errors import FuncError
from mgmt.lang.funcs.encoding import from_json, zero
from mgmt.lang.funcs.registry import define
from mgmt.lang.types import BASIC, TStruct, TVar, Type, resolve
from mgmt.lang.values import Struct


class FollowsLocal(streams.Stream):
    """A stream of one of the host's local values (engine/local.py): `read()` runs on the loop
    at the start and whenever the key changes (a resource may set it from a thread)."""

    local: LocalValues

    def follow(self, key: str) -> None:
        local = self.host.local
        if local is None:
            self.fail("no local values here (the agent gives them)")
            return
        self.local = local
        loop = asyncio.get_running_loop()

        def signal() -> None:
            loop.call_soon_threadsafe(self.read)

        self.unsubscribe = local.subscribe(key, signal)
        self.read()

    def read(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        unsubscribe = getattr(self, "unsubscribe", None)
        if unsubscribe is not None:
            unsubscribe()
        super().close()


class Get(FollowsLocal):
    """value.get(key): what `value` resource `key` stores, as it changes, as the type the
    call's use gave `value`."""

    def value_type(self) -> Type | None:
        t = resolve(self.result_type) if self.result_type is not None else None
        if isinstance(t, TStruct):
            found = dict(t.fields).get("value")
            return None if found is None or isinstance(found, TVar) else found
        return None

    def start(self) -> None:
        key = self.args[0]
        if not key:
            self.fail("can't use an empty key")
            return
        self.type = self.value_type()
        if self.type is None:
            self.fail(f"the type of Value[{key}]'s value is not known: use get_str... instead")
            return
        self.follow(key)

    def read(self) -> None:
        key = self.args[0]
        value = self.local.get(key)
        if value is None:
            self.emit(Struct(value=zero(self.type), ready=False))
            return
        try:
            converted = from_json(value, self.type, flexible=False)
        except FuncError:
            self.fail(f"type mismatch, check the type in Value[{key}]: expected {self.type}")
        else:
            self.emit(Struct(value=converted, ready=True))


class _Typed(Get):
    """value.get_<kind>(key): value.get of one type."""

    KIND: ClassVar[str] = ""

    def value_type(self) -> Type | None:
        return BASIC[self.KIND]


define(
    "value.get",
    "func(str) struct{value ?1; ready bool}",
    stream=Get,
    doc="a value resource's value, of the type the program's use gives it",
)
for _kind in ("str", "bool", "int", "float"):
    define(
        f"value.get_{_kind}",
        f"func(str) struct{{value {_kind}; ready bool}}",
        stream=type(f"Get{_kind.title()}", (_Typed,), {"KIND": _kind}),
        doc="a value resource's value, as it changes",
    )
