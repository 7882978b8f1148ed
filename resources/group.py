"""group: a local group exists (with a gid) or is absent (mgmt's group).

Changes go through shadow's tools (groupadd, groupmod, groupdel) run from argv lists; lookups
go through the system's name service (grp). The watch is inotify on /etc/group and
/etc/gshadow. This module also holds what user.py shares: name rules and `run_shadow`.
See docs/resources/group.md.
"""

from __future__ import annotations

import asyncio
import grp
import pwd
import re
from dataclasses import dataclass
from typing import Literal

from engine.errors import ResourceError, ValidationError
from engine.resource import UID, Edgeable, Resource, register
from engine.watcher import PathWatcher
from resources.command import loop_lock, run_command

# Seconds a shadow tool (useradd, groupmod...) may take.
SHADOW_TIMEOUT = 60
# Largest uid/gid (2**32 - 1 is "no id" to the kernel).
MAX_ID = 2**32 - 2
# What shadow accepts as a user or group name (at most 32 characters, not all digits).
_NAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*\$?")
NAME_MAX = 32
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
        log = self.handle.logger
        current, gid_owner = await asyncio.to_thread(self._observe)
        if self.state == "absent":
            if current is None:
                log.debug("nothing to do: group %s does not exist", self.name)
                return True
            return await self._change(apply, ["groupdel", self.name], f"group {self.name}", "del")
        if self.gid is not None and gid_owner not in (None, self.name):
            raise ResourceError(f"gid {self.gid} already belongs to group {gid_owner!r}")
        gid_args = ["--gid", str(self.gid)] if self.gid is not None else []
        if current is None:
            what = f"group {self.name}" + (f" with gid {self.gid}" if self.gid is not None else "")
            return await self._change(apply, ["groupadd", *gid_args, self.name], what, "add")
        if self.gid is None or current == self.gid:
            why = f"with gid {current}" if self.gid is not None else "(gid not managed)"
            log.debug("nothing to do: group %s exists %s", self.name, why)
            return True
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
        return []

    # helpers -------------------------------------------------------------------------------

    def _observe(self) -> tuple[int | None, str | None]:
        """(this group's gid or None if missing, the name of the group holding `gid`)."""
        current = lookup_group(self.name)
        owner = lookup_gid(self.gid) if self.gid is not None else None
        return (current.gr_gid if current else None), (owner.gr_name if owner else None)

    async def _change(self, apply: bool, argv: list[str], what: str, verb: str) -> bool:
        log = self.handle.logger
        would, done = _VERBS[verb]
        if not apply:
            log.info("would %s %s", would, what)
            return False
        await run_shadow(argv)
        log.info("%s %s", done, what)
        return False


_VERBS = {
    "add": ("create", "created"),
    "mod": ("change", "changed"),
    "del": ("delete", "deleted"),
}


def check_name(name: str, key: str) -> None:
    """A user or group name shadow accepts, or ValidationError naming `key`."""
    if not _NAME.fullmatch(name) or len(name) > NAME_MAX or name.isdigit() or name in (".", ".."):
        raise ValidationError(
            f"expected a name of at most {NAME_MAX} letters, digits, '_', '.', '-' (not "
            f"starting with '-', not all digits), got {name!r}",
            key,
        )


def check_id(value: int | None, key: str) -> None:
    if value is not None and not 0 <= value <= MAX_ID:
        raise ValidationError(f"expected 0 to {MAX_ID}, got {value}", key)


def lookup_group(name: str) -> grp.struct_group | None:
    try:
        return grp.getgrnam(name)
    except KeyError:
        return None


def lookup_gid(gid: int) -> grp.struct_group | None:
    try:
        return grp.getgrgid(gid)
    except KeyError:
        return None


def lookup_user(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def lookup_uid(uid: int) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(uid)
    except KeyError:
        return None


async def run_shadow(argv: list[str]) -> None:
    """Run one of shadow's tools (useradd, groupmod...) to completion, or raise ResourceError.

    Calls from this process are serialised: the tools lock /etc/passwd and /etc/group and fail
    at once ("cannot lock") instead of waiting for each other.
    """
    async with loop_lock("shadow"):
        await run_command(argv, timeout=SHADOW_TIMEOUT, env={"LC_ALL": "C"})
