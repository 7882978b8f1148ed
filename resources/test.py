"""test: mgmt's mostly harmless testing kind. See docs/resources/test.md.

It changes nothing: each check_apply logs its params (all, or those named in `onlyshow`), the
params it received along send/recv edges and a refresh, then sends `hello` (its `sendvalue`)
and `answer` (42), and is in the desired state. `validatebool` and `validateerror` make
validation fail, `comparefail` makes every graph swap replace it, `alwaysgroup` lets resources
of the kind group into it, and `expectrecv` fails a check_apply that received a different
number of values along send/recv edges. Params are named as in mgmt's language (`anotherstr`,
`onlyshow`); the log shows mgmt's field names (`AnotherStr: ...`), which `onlyshow` matches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

from engine.errors import ResourceError, ValidationError
from engine.params import check_int
from engine.resource import Groupable, Refreshable, Resource, register

# The kind has params named bool, str and int (mgmt's): its annotations use these names.
Bool: TypeAlias = bool
Str: TypeAlias = str
Int: TypeAlias = int

# Integer params bounded like mgmt's Go types: param -> (low, high).
INT_RANGES: dict[str, tuple[int, int]] = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint": (0, 2**63 - 1),
    "uint8": (0, 2**8 - 1),
    "uint16": (0, 2**16 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**63 - 1),
    "byte": (0, 2**8 - 1),
    "rune": (-(2**31), 2**31 - 1),
    "int8ptr": (-(2**7), 2**7 - 1),
    "uint8ptr": (0, 2**8 - 1),
    "int8ptrptrptr": (-(2**7), 2**7 - 1),
}

# What check_apply logs, in order: param -> mgmt's field name (what `onlyshow` names).
SHOWN: dict[str, str] = {
    "bool": "Bool",
    "str": "Str",
    "int": "Int",
    "int8": "Int8",
    "int16": "Int16",
    "int32": "Int32",
    "int64": "Int64",
    "uint": "Uint",
    "uint8": "Uint8",
    "uint16": "Uint16",
    "uint32": "Uint32",
    "uint64": "Uint64",
    "byte": "Byte",
    "rune": "Rune",
    "float32": "Float32",
    "float64": "Float64",
    "boolptr": "BoolPtr",
    "stringptr": "StringPtr",
    "int64ptr": "Int64Ptr",
    "int8ptr": "Int8Ptr",
    "uint8ptr": "Uint8Ptr",
    "int8ptrptrptr": "Int8PtrPtrPtr",
    "slicestring": "SliceString",
    "interface": "Interface",
    "anotherstr": "AnotherStr",
}


@register("test")
@dataclass(kw_only=True, eq=False)
class TestRes(Groupable, Refreshable, Resource):
    __test__: ClassVar[Bool] = False  # not a pytest test class

    SENDS: ClassVar[Mapping[Str, Any]] = {"hello": Str, "answer": Int}

    # Values of mgmt's Go types, logged by check_apply. Default: the type's zero value.
    bool: Bool = False
    # A string. Default "".
    str: Str = ""
    # Integers of each width (int and int64 are 64-bit). Default 0.
    int: Int = 0
    # An 8-bit integer. Default 0.
    int8: Int = 0
    # A 16-bit integer. Default 0.
    int16: Int = 0
    # A 32-bit integer. Default 0.
    int32: Int = 0
    # A 64-bit integer. Default 0.
    int64: Int = 0
    # Unsigned integers (64-bit ones up to 2**63-1 here). Default 0.
    uint: Int = 0
    # An unsigned 8-bit integer. Default 0.
    uint8: Int = 0
    # An unsigned 16-bit integer. Default 0.
    uint16: Int = 0
    # An unsigned 32-bit integer. Default 0.
    uint32: Int = 0
    # An unsigned 64-bit integer. Default 0.
    uint64: Int = 0
    # A byte (0-255). Default 0.
    byte: Int = 0
    # A Unicode code point (a 32-bit integer). Default 0.
    rune: Int = 0
    # Floats. Default 0.0.
    float32: float = 0.0
    # A 64-bit float. Default 0.0.
    float64: float = 0.0
    # Optional ("pointer") values: None when not set. Default None.
    boolptr: Bool | None = None
    # An optional string. Default None.
    stringptr: Str | None = None
    # An optional 64-bit integer. Default None.
    int64ptr: Int | None = None
    # An optional 8-bit integer. Default None.
    int8ptr: Int | None = None
    # An optional unsigned 8-bit integer. Default None.
    uint8ptr: Int | None = None
    # mgmt's ***int8 (legal, if pointless): an optional 8-bit integer. Default None.
    int8ptrptrptr: Int | None = None
    # A list of strings. Default None (mgmt's nil slice).
    slicestring: list[Str] | None = None
    # Any value. Default None.
    interface: Any = None
    # Another string, the one mgmt's examples use (often received along a send/recv edge).
    anotherstr: Str = ""
    # Fail validation. Default false.
    validatebool: Bool = False
    # Fail validation with this message. Default "" (none).
    validateerror: Str = ""
    # Let other test resources group into this one. Default false.
    alwaysgroup: Bool = False
    # Never compare equal: a graph swap always replaces this resource. Default false.
    comparefail: Bool = False
    # The value sent as `hello`. Default "".
    sendvalue: Str = ""
    # The params expected along send/recv edges: a check_apply that received a different
    # number of them fails. Default None (not checked).
    expectrecv: list[Str] | None = None
    # mgmt field names to log (e.g. ["AnotherStr"]). Default none: all of them.
    onlyshow: list[Str] | None = None
    # A comment, not used. Default "".
    comment: Str = ""

    def validate(self) -> None:
        super().validate()
        if self.validatebool:
            raise ValidationError("the validate param was set to true", "validatebool")
        if self.validateerror:
            raise ValidationError(
                f"the validate error param was set to: {self.validateerror}", "validateerror"
            )
        for name, (low, high) in INT_RANGES.items():
            value = getattr(self, name)
            if value is not None:
                check_int(value, name, low=low, high=high)
        unknown = sorted(set(self.onlyshow or ()) - set(SHOWN.values()))
        if unknown:
            raise ValidationError(
                f"unknown field {unknown[0]!r}; fields: {', '.join(SHOWN.values())}", "onlyshow"
            )

    async def check_apply(self, apply: Bool) -> Bool:
        for res in [self, *self.grouped]:
            assert isinstance(res, TestRes)
            res._show(self, self.handle.received() if res is self else {})
        if self.handle.refresh():
            self.handle.logger.info("received a notification")
        received = self.handle.received()
        if self.expectrecv is not None and len(self.expectrecv) != len(received):
            raise ResourceError(
                f"the received keys differ from expected ({sorted(self.expectrecv)}), "
                f"got: {sorted(received)}"
            )
        self.handle.send(hello=self.sendvalue, answer=42)
        return True  # the state is always fine

    def cmp(self, other: Resource) -> Bool:
        if isinstance(other, TestRes) and (self.comparefail or other.comparefail):
            return False
        return super().cmp(other)

    def group_cmp(self, other: Resource) -> Bool:
        """Another test resource, when this one asks for it (`alwaysgroup`)."""
        return isinstance(other, TestRes) and self.alwaysgroup

    def _show(self, leader: TestRes, received: dict[Str, Bool]) -> None:
        """Log this resource's fields, by `leader`'s handle (itself, or its group's leader:
        a member has none of its own)."""
        log = leader.handle.logger
        prefix = "" if self is leader else f"{self}: "
        for key, changed in sorted(received.items()):
            log.info("%sreceived %r, changed: %s", prefix, key, changed)
        for param, field in SHOWN.items():
            if not self.onlyshow or field in self.onlyshow:
                log.info("%s%s: %s", prefix, field, _go(getattr(self, param)))


def _go(value: Any) -> str:
    """A value as mgmt logs it (Go's %v): true, [a b], <nil>."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + " ".join(_go(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{_go(k)}:{_go(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)
