"""import "value": the values `value` resources store (engine/local.py), by resource name.

value.get_str(key) (and get_bool, get_int, get_float) is struct{value; ready}: `ready` is
false (and `value` the zero value) while the key has no value; it follows every change the
resource makes. A stored value of another type is an error naming the key."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from mgmt.lang import streams
from mgmt.lang.funcs.registry import define
from mgmt.lang.values import Struct


class Get(streams.Stream):
    """value.get_<type>(key): what `value` resource `key` stores, as it changes."""

    TYPE: ClassVar[type[Any]] = object
    ZERO: ClassVar[Any] = None
    KIND: ClassVar[str] = ""

    def start(self) -> None:
        key = self.args[0]
        if not key:
            self.fail("can't use an empty key")
            return
        local = self.host.local
        if local is None:
            self.fail("no local values here (the agent gives them)")
            return
        self.local = local
        loop = asyncio.get_running_loop()

        # A resource may set the value from a thread: read it back on the loop.
        def signal() -> None:
            loop.call_soon_threadsafe(self._read)

        self.unsubscribe = local.subscribe(key, signal)
        self._read()

    def _read(self) -> None:
        key = self.args[0]
        value = self.local.get(key)
        if value is None:
            self.emit(Struct(value=self.ZERO, ready=False))
        elif type(value) is not self.TYPE and not (self.TYPE is float and type(value) is int):
            self.fail(f"type mismatch, check the type in Value[{key}]: expected {self.KIND}")
        else:
            self.emit(Struct(value=self.TYPE(value), ready=True))

    def close(self) -> None:
        unsubscribe = getattr(self, "unsubscribe", None)
        if unsubscribe is not None:
            unsubscribe()
        super().close()


def _getter(kind: str, cls: type, zero: Any) -> type[Get]:
    return type(f"Get{kind.title()}", (Get,), {"TYPE": cls, "ZERO": zero, "KIND": kind})


for _kind, _cls, _zero in (
    ("str", str, ""),
    ("bool", bool, False),
    ("int", int, 0),
    ("float", float, 0.0),
):
    define(
        f"value.get_{_kind}",
        f"func(str) struct{{value {_kind}; ready bool}}",
        stream=_getter(_kind, _cls, _zero),
        doc="a value resource's value, as it changes",
    )
