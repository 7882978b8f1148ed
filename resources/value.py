"""value: a value kept on this host, set directly or received, and sent on. See
docs/resources/value.md.

mgmt's value resource: `any` holds any value (a string, a number, a list...), given as a param
or received along a send/recv edge (a received value replaces the param for the life of the
resource). check_apply stores it in the host's local values (engine.local) under the
resource's name, where the language's `value.get_*(name)` functions read and watch it, and
sends it on as `any`. A stored value survives an agent restart. No value (None) deletes the
stored one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from engine.errors import ResourceError, ValidationError
from engine.local import LocalValues, plain
from engine.resource import Resource, register
from resources._lib.plan import Step, apply_steps, nothing_to_do, value_change


@register("value")
@dataclass(kw_only=True, eq=False)
class ValueRes(Resource):
    DRIFTS = True  # its repairs are watched for churn (engine.churn)
    SENDS: ClassVar[Mapping[str, Any]] = {"any": Any}

    # The value: any plain data. Default None (no value: a stored one is deleted).
    any: Any = None

    def validate(self) -> None:
        super().validate()
        try:
            plain(self.any)
        except (TypeError, ValueError) as err:
            raise ValidationError(f"must be plain data: {err}", "any") from None

    async def watch(self) -> None:
        local = self._local()
        changes = asyncio.Event()
        loop = asyncio.get_running_loop()

        def signal() -> None:  # called from the thread that changed it
            loop.call_soon_threadsafe(changes.set)

        self.handle.on_cleanup(local.subscribe(self.name, signal))
        await self.handle.event()
        while True:  # someone else changed the stored value: put ours back
            await changes.wait()
            changes.clear()
            await self.handle.event()

    async def check_apply(self, apply: bool) -> bool:
        # A received value has replaced the param (for the life of the resource).
        local = self._local()
        stored = await asyncio.to_thread(local.get, self.name)
        value = None if self.any is None else plain(self.any)
        self.handle.send(any=value)  # under --noop too: what runs after shows what would change
        # The lines never show the value (a secret received from another resource).
        if stored == value:
            return nothing_to_do(self.handle, "holds the value")
        what, done = value_change("the value", stored is not None)
        if value is None:
            what, done = "delete the value", "deleted the value"
        await apply_steps(
            self.handle,
            [Step(what, done, lambda: local.set(self.name, value), slow=True)],
            apply,
        )
        return False

    def _local(self) -> LocalValues:
        if self.handle.local is None:
            raise ResourceError("value needs the engine's local values, which this run lacks")
        return self.handle.local
