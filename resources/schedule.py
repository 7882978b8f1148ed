"""schedule: this host offers itself in a scheduling pool of the cluster (mgmt's schedule
resource; the chosen hosts are read with `world.schedule(namespace)`). See
docs/resources/schedule.md.

check_apply joins the pool (the World's `schedule_join`: this host's key under
`/_mgmt/schedule/<namespace>/`, bound to a lease of `ttl` seconds that the agent renews), so a
host is offered only once everything before the resource in the graph is done. The membership
is held until the resource stops (a clean stop leaves at once; a host that dies leaves within
ttl); `withdraw: true` leaves it. Without a cluster (the agent starts one for this kind, as
mgmt always has one), check_apply fails saying so.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from engine.errors import ResourceError, ValidationError
from engine.handle import Handle
from engine.params import EMPTY_IS_UNSET
from engine.resource import Resource, register
from engine.world import World, check_key
from resources._lib.plan import Step, apply_steps, nothing_to_do

STRATEGIES = ("rr", "alpha")  # world.schedule's: join order, or host names sorted
DEFAULT_TTL = 10  # seconds, when ttl is not set (or 0)


@register("schedule")
@dataclass(kw_only=True, eq=False)
class ScheduleRes(Resource):
    # The pool's name (e.g. "db/primary"). Default None: the resource name.
    namespace: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # How hosts are chosen: "rr" (in the order they joined) or "alpha" (by name). Default None:
    # "rr". The choice itself is made by world.schedule's options here (see the docs).
    strategy: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # How many hosts are chosen (>= 1). Default None: 1, as above.
    max: int | None = None
    # Keep the entry after this host stops: not supported here (entries are bound to a lease).
    persist: bool = False
    # Seconds a host that dies stays in the pool (its lease). Default None (or 0): 10.
    ttl: int | None = None
    # Leave the pool instead of joining it. Default false.
    withdraw: bool = False

    def validate(self) -> None:
        super().validate()
        try:
            check_key(self._namespace)
        except ValidationError as err:
            raise ValidationError(err.message, "namespace" if self.namespace else "name") from None
        if self.strategy is not None and self.strategy not in STRATEGIES:
            raise ValidationError(
                f"unknown strategy {self.strategy!r}; strategies: {', '.join(STRATEGIES)}",
                "strategy",
            )
        if self.max is not None and self.max < 1:
            raise ValidationError(f"must be at least 1, got {self.max}", "max")
        if self.ttl is not None and self.ttl < 0:
            raise ValidationError(f"must be >= 0 seconds, got {self.ttl}", "ttl")
        if self.persist:
            raise ValidationError(
                "not supported here: a host's entry is bound to a lease, so it leaves the pool "
                "within ttl seconds of its agent stopping",
                "persist",
            )
        if self.withdraw:
            for key in ("strategy", "max", "ttl"):
                if getattr(self, key) is not None:
                    raise ValidationError("cannot be combined with withdraw: true", key)

    async def init(self, handle: Handle) -> None:
        await super().init(handle)
        self._membership: contextlib.AsyncExitStack | None = None
        handle.on_cleanup(self._leave)

    async def watch(self) -> None:
        world = self.handle.world
        if world is None:
            await super().watch()  # check_apply will say why it cannot work
            return
        changes = world.schedule_watch(self._namespace)
        async with changes:
            await self.handle.event()
            async for _ in changes:  # the pool changed: check that we are (not) in it
                await self.handle.event()

    async def check_apply(self, apply: bool) -> bool:
        world = self._world()
        namespace = self._namespace
        hosts = await world.schedule_hosts(namespace)
        joined = self._membership is not None
        if self.withdraw:
            if not joined:
                why = f"this host is not in {namespace!r} by this resource"
                if self.handle.hostname in hosts:
                    why += " (world.schedule in the program keeps it in the pool)"
                return nothing_to_do(self.handle, why)
            step = Step(
                f"leave the pool {namespace!r}", f"left the pool {namespace!r}", self._leave
            )
            await apply_steps(self.handle, [step], apply)
            return False
        if joined:
            return nothing_to_do(self.handle, f"in the pool {namespace!r}: {hosts}")
        step = Step(
            f"join the pool {namespace!r}",
            f"joined the pool {namespace!r}",
            lambda: self._join(world),
        )
        await apply_steps(self.handle, [step], apply)
        return False

    @property
    def _namespace(self) -> str:
        return self.namespace if self.namespace is not None else self.name

    def _world(self) -> World:
        world = self.handle.world
        if world is None:
            raise ResourceError("schedule needs the cluster, which this run did not start")
        return world

    async def _join(self, world: World) -> None:
        stack = contextlib.AsyncExitStack()
        await stack.enter_async_context(
            world.schedule_join(self._namespace, self.ttl or DEFAULT_TTL)
        )
        self._membership = stack

    async def _leave(self) -> None:
        stack, self._membership = self._membership, None
        if stack is not None:
            await stack.aclose()
