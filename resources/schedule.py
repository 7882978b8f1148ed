"""schedule: this host offers itself in a scheduling pool of the cluster (mgmt's schedule
resource; the chosen hosts are read with `world.schedule(namespace)`). See
docs/resources/schedule.md.

check_apply puts this host's key under `/_mgmt/scheduled/<host>/<namespace>`, so a host is
offered only once everything before the resource in the graph is done. How the key is held is
mgmt's choice of an etcd session lease or none:

- by default, on a lease of 10 s that the agent renews (the World's `schedule_join`): a clean
  stop of the resource (the agent exits, a graph swap removes it) revokes the lease, the key
  goes at once; a host that dies leaves within 10 s;
- `ttl: N` (N > 0): on a lease of N s, which a clean stop lets run out: the host stays N s
  after its agent stopped (as after a crash);
- `persist: true` (without a ttl): without a lease (`schedule_persist`): the key outlives the
  agent until a `withdraw: true` resource (of any later run) deletes it.

`withdraw: true` deletes this host's key unless a join of this agent still holds the namespace.
Without a cluster (the agent starts one for this kind, as mgmt always has one), check_apply
fails saying so.
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
    # Keep the entry after this host stops: without a ttl it has no lease and stays until
    # withdrawn; with one it expires ttl seconds after the agent stopped. Default false.
    persist: bool = False
    # Seconds the entry outlives its agent (its lease, which a clean stop lets run out). Default
    # None (or 0): a lease of 10 s that a clean stop revokes (a host that dies leaves in 10 s).
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
        if self.withdraw:
            for key in ("strategy", "max", "persist", "ttl"):
                if getattr(self, key) not in (None, False):
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
        if self.withdraw:
            step = await self._withdraw_step(world, namespace)
        elif self._keeps:
            step = await self._persist_step(world, namespace)
        else:
            step = await self._join_step(world, namespace)
        if step is None:
            return True
        await apply_steps(self.handle, [step], apply)
        return False

    async def _join_step(self, world: World, namespace: str) -> Step | None:
        if self._membership is not None:
            hosts = await world.schedule_hosts(namespace)
            nothing_to_do(self.handle, f"in the pool {namespace!r}: {hosts}")
            return None
        how = f" (kept {self.ttl}s after the agent stops)" if self.ttl else ""
        return Step(
            f"join the pool {namespace!r}{how}",
            f"joined the pool {namespace!r}{how}",
            lambda: self._join(world),
        )

    async def _persist_step(self, world: World, namespace: str) -> Step | None:
        if await world.schedule_entry(namespace) == "persisted":
            nothing_to_do(self.handle, f"in the pool {namespace!r} without a lease (persist)")
            return None
        return Step(
            f"join the pool {namespace!r} without a lease (persist)",
            f"joined the pool {namespace!r} without a lease (persist)",
            lambda: world.schedule_persist(namespace),
        )

    async def _withdraw_step(self, world: World, namespace: str) -> Step | None:
        if self._membership is not None:  # joined by this very resource (its params changed)
            return Step(
                f"leave the pool {namespace!r}", f"left the pool {namespace!r}", self._leave
            )
        if await world.schedule_entry(namespace) is None:
            nothing_to_do(self.handle, f"this host is not in {namespace!r}")
            return None
        if world.memberships.held(namespace):
            why = f"this agent still joins {namespace!r} (world.schedule in the program)"
            nothing_to_do(self.handle, why)
            return None

        async def withdraw() -> None:
            await world.schedule_withdraw(namespace)

        return Step(
            f"withdraw from the pool {namespace!r}",
            f"withdrew from the pool {namespace!r}",
            withdraw,
        )

    @property
    def _keeps(self) -> bool:
        """persist without a ttl: the key has no lease at all."""
        return self.persist and not self.ttl

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
            world.schedule_join(self._namespace, self.ttl or DEFAULT_TTL, linger=bool(self.ttl))
        )
        self._membership = stack

    async def _leave(self) -> None:
        stack, self._membership = self._membership, None
        if stack is not None:
            await stack.aclose()
