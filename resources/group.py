"""group: a local group exists (with a gid) or is absent (mgmt's group).

Changes go through shadow's tools (groupadd, groupmod, groupdel) run from argv lists; lookups
go through the system's name service (grp). The watch is inotify on /etc/group and
/etc/gshadow. Name rules, lookups and `run_shadow` are in resources/_lib/ids.py.
See docs/resources/group.md.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Literal

from engine.errors import ResourceError, ValidationError
from engine.resource import UID, Edgeable, Resource, register
from engine.watcher import PathWatcher
from resources._lib.ids import (
    PRIMARY_REMOVED,
    USER_REMOVED,
    check_id,
    check_name,
    lookup_gid,
    lookup_group,
    run_shadow,
)
from resources._lib.plan import Step, apply_steps, nothing_to_do

GROUP_FILES = ("/etc/group", "/etc/gshadow")


@register("group")
@dataclass(kw_only=True, eq=False)
class GroupRes(Edgeable, Resource):
    # "exists" or "absent". Default "exists".
    state: Literal["exists", "absent"] = "exists"
    # The group's numeric id; None lets groupadd pick one and leaves it alone. Default None.
    gid: int | None = None

    def validate(self) -> None:
        super().validate()
        check_name(self.name, "name")
        check_id(self.gid, "gid")
        if self.state == "absent" and self.gid is not None:
            raise ValidationError(f"cannot be set with state 'absent' (got {self.gid})", "gid")

    async def watch(self) -> None:
        async with PathWatcher(GROUP_FILES) as watcher:
            await self.handle.event()
            async for _ in watcher:
                await self.handle.event()

    async def check_apply(self, apply: bool) -> bool:
        current, gid_owner = await asyncio.to_thread(self._observe)
        if self.state == "absent":
            if current is None:
                return nothing_to_do(self.handle, f"group {self.name} does not exist")
            return await self._change(apply, ["groupdel", self.name], f"group {self.name}", "del")
        if self.gid is not None and gid_owner not in (None, self.name):
            raise ResourceError(f"gid {self.gid} already belongs to group {gid_owner!r}")
        gid_args = ["--gid", str(self.gid)] if self.gid is not None else []
        if current is None:
            what = f"group {self.name}" + (f" with gid {self.gid}" if self.gid is not None else "")
            return await self._change(apply, ["groupadd", *gid_args, self.name], what, "add")
        if self.gid is None or current == self.gid:
            why = f"with gid {current}" if self.gid is not None else "(gid not managed)"
            return nothing_to_do(self.handle, f"group {self.name} exists {why}")
        what = f"gid of group {self.name} from {current} to {self.gid}"
        return await self._change(apply, ["groupmod", *gid_args, self.name], what, "mod")

    # capabilities --------------------------------------------------------------------------

    def uids(self) -> list[UID]:
        """The group by name; with a gid also by number (names are never all digits)."""
        uids = [UID("group", self.name)]
        if self.gid is not None:
            uids.append(UID("group", str(self.gid)))
        return uids

    def autoedges(self) -> list[list[UID]]:
        """Absent: after the absent user of its name, and those naming it as their primary
        group: groupdel refuses a user's primary group; mgmt reverses its user -> group edges
        for an absent user the same way."""
        if self.state != "absent":
            return []
        return [[UID(USER_REMOVED, self.name)], [UID(PRIMARY_REMOVED, self.name)]]

    # helpers -------------------------------------------------------------------------------

    def _observe(self) -> tuple[int | None, str | None]:
        """(this group's gid or None if missing, the name of the group holding `gid`)."""
        current = lookup_group(self.name)
        owner = lookup_gid(self.gid) if self.gid is not None else None
        return (current.gr_gid if current else None), (owner.gr_name if owner else None)

    async def _change(self, apply: bool, argv: list[str], what: str, verb: str) -> bool:
        would, done = _VERBS[verb]
        run = functools.partial(run_shadow, argv, self.handle.shared)
        await apply_steps(self.handle, [Step(f"{would} {what}", f"{done} {what}", run)], apply)
        return False


_VERBS = {
    "add": ("create", "created"),
    "mod": ("change", "changed"),
    "del": ("delete", "deleted"),
}
