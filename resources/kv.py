"""kv: a string in the cluster's key-value store (mgmt's kv resource). See docs/resources/kv.md.

The key is `/_mgmt/strings/<key>`, or `/_mgmt/hoststrings/<hostname>/<key>` with `mapped: true`
(a per-host map: every host writes its own entry). `value: null` (or no value) deletes it.
With `skiplessthan`, a stored value greater than ours is left alone (counters that only go up);
the comparison and the write are one transaction, so two hosts racing never lower the value.
The resource watches its key, so a change made anywhere is repaired at once; a refresh (notify)
re-writes the value even when it is unchanged, which wakes every watcher of the key.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

from engine.errors import ResourceError, ValidationError
from engine.handle import Handle
from engine.resource import Refreshable, Resource, register
from engine.world import World, check_key
from resources._lib.fight import Fight
from resources._lib.plan import Step, apply_steps, nothing_to_do, value_change

# skiplessthan compares and sets in one transaction; a lost race is retried this many times.
CAS_ATTEMPTS = 10


@register("kv")
@dataclass(kw_only=True, eq=False)
class KVRes(Refreshable, Resource):
    DRIFTS = True  # its repairs are watched for churn (engine.churn)
    # The key, e.g. "app/version" (no leading or trailing "/"). Default None: the name.
    key: str | None = None
    # The value to store; None deletes the key. Default None.
    value: str | None = None
    # Store under this host's entry of a per-host map (hoststrings/<hostname>/<key>). Default false.
    mapped: bool = False
    # Leave a stored value alone when it is greater than ours. Default false.
    skiplessthan: bool = False
    # How skiplessthan compares: "int" (as integers) or "string" (lexically). Default "int".
    skipcmpstyle: Literal["int", "string"] = "int"

    @property
    def _key(self) -> str:
        return self.key if self.key is not None else self.name

    def validate(self) -> None:
        super().validate()
        try:
            check_key(self._key)
        except ValidationError as err:
            raise ValidationError(err.message, "key" if self.key is not None else "name") from None
        if self.skiplessthan and self.skipcmpstyle == "int" and self.value is not None:
            try:
                int(self.value)
            except ValueError:
                raise ValidationError(
                    "skiplessthan with skipcmpstyle 'int' needs an integer value", "value"
                ) from None

    def _world(self) -> World:
        world = self.handle.world
        if world is None:
            raise ResourceError("kv needs the cluster, which this run did not start")
        return world

    def _where(self) -> str:
        """The key, as logged (mapped: this host's entry of the map)."""
        return f"{self._key} ({self.handle.hostname}'s entry)" if self.mapped else self._key

    async def init(self, handle: Handle) -> None:
        await super().init(handle)
        self._fight = Fight()  # another writer of the key (resources/_lib/fight.py)

    async def watch(self) -> None:
        world = self.handle.world
        if world is None:
            await super().watch()  # check_apply will say why it cannot work
            return
        changes = world.str_watch(self._key, self.mapped)
        async with changes:
            await self.handle.event()
            async for _ in changes:
                await self.handle.event()

    async def check_apply(self, apply: bool) -> bool:
        world = self._world()
        where = self._where()
        refresh = self.handle.refresh()
        if apply:
            await self._fight.pace(self.handle)
        # A compare-and-set whose reply was lost may have written after all (the client retries
        # it, and the retry's compare fails): after a failed one, our value counts as a change.
        raced = False
        for _ in range(CAS_ATTEMPTS):
            current = await world.str_get(self._key, self.mapped)
            if self.value is None:
                if current is None:
                    return nothing_to_do(self.handle, f"{where} is absent")
                delete = functools.partial(world.str_del, self._key, self.mapped)
                await apply_steps(
                    self.handle, [Step(f"delete {where}", f"deleted {where}", delete)], apply
                )
                return False
            # The lines name the key, never the value (a token: docs/security.md, "Secrets").
            if current is not None and self.skiplessthan and self._greater(current, self.value):
                why = f"{where} holds a value greater than ours (skiplessthan)"
                return nothing_to_do(self.handle, why)
            if current == self.value and not refresh:
                nothing_to_do(self.handle, f"{where} already holds the value")
                return not raced
            would, done = value_change(where, current is not None)
            if current == self.value:
                would, done = f"refresh {where}", f"{where} refreshed"
            if not apply:
                self.handle.logger.info("would %s", would)
                return False
            if not self.skiplessthan:
                await world.str_set(self._key, self.value, self.mapped)
            elif not await world.str_cas(self._key, current, self.value, self.mapped):
                raced = True  # another host wrote meanwhile: compare with its value
                continue
            self.handle.logger.info("%s", done)
            self._fight.wrote(self.handle, where)
            return False
        raise ResourceError(f"{where} kept changing while being compared ({CAS_ATTEMPTS} times)")

    def _greater(self, stored: str, ours: str) -> bool:
        """Whether the stored value is greater than ours (skiplessthan's comparison)."""
        if self.skipcmpstyle == "string":
            return stored > ours
        try:
            return int(stored) > int(ours)
        except ValueError:
            return False  # not a number: ours replaces it
