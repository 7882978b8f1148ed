"""Users and groups: name rules, uid/gid checks, and lookups through the name service.

Lookups go through the system's name service (pwd, grp: /etc/passwd, NSS...); they may block,
so kinds call them from `asyncio.to_thread` where it matters. An id written in ASCII digits is
a number ("²".isdigit() is true too, but is no id).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
from collections.abc import Callable
from typing import TypeVar

from engine.autoedge import MARKERS
from engine.errors import ResourceError, ValidationError
from engine.handle import Handle, Shared
from engine.watcher import PathWatcher
from resources._lib.proc import run_command, tool_lock

# Largest uid/gid (2**32 - 1 is "no id" to the kernel, and "unchanged" to chown).
MAX_ID = 2**32 - 2
# What shadow accepts as a user or group name (at most 32 characters, not all digits).
_NAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*\$?")
NAME_MAX = 32
PASSWD = "/etc/passwd"
T = TypeVar("T")
# Seconds a shadow tool (useradd, groupmod...) may take.
SHADOW_TIMEOUT = 60
# What an absent user provides (its name) so that the absent group of its name, its primary
# group as useradd makes it, is removed after it: groupdel refuses a user's primary group.
USER_REMOVED = "user:removed"
# What an absent user provides for the primary group it names (`group`), so that the group,
# absent too, is removed after it (an absent group has no gid to match a user's `gid`). Several users may name one group: a
# marker (engine/autoedge.py): each of them is ordered before the group.
PRIMARY_REMOVED = "user:primary-removed"
MARKERS.add(PRIMARY_REMOVED)


def check_name(name: str, key: str) -> None:
    """A user or group name shadow accepts, or ValidationError naming `key`."""
    if not _NAME.fullmatch(name) or len(name) > NAME_MAX or name.isdigit() or name in (".", ".."):
        raise ValidationError(
            f"expected a name of at most {NAME_MAX} letters, digits, '_', '.', '-' (not "
            f"starting with '-', not all digits), got {name!r}",
            key,
        )


def check_id(value: int | None, key: str) -> None:
    """A uid/gid in range (None: not managed), or ValidationError naming `key`."""
    if value is not None and not 0 <= value <= MAX_ID:
        raise ValidationError(f"expected 0 to {MAX_ID}, got {value}", key)


def id_number(value: str) -> int | None:
    """A numeric user or group (ASCII digits), else None."""
    return int(value) if value.isascii() and value.isdigit() else None


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


class NoSuchAccount(ResourceError):
    """A user or group named in a param does not exist (yet: a resource may make it)."""


def passwd(user: str, key: str) -> pwd.struct_passwd:
    """The account of a user given by name or number, or ResourceError naming `key`."""
    number = id_number(user)
    entry = lookup_uid(number) if number is not None else lookup_user(user)
    if entry is None:
        raise NoSuchAccount(f"{key}: no such user {user!r}")
    return entry


async def await_account(handle: Handle, lookup: Callable[[], T | None]) -> T:
    """What `lookup` finds once it finds it (a user an earlier resource adds): meanwhile the
    user database is watched and each change reported as an event (the first is the startup
    event), as mgmt does; a check_apply meanwhile fails or, under --noop, says "once"."""
    async with PathWatcher([PASSWD]) as accounts:
        await handle.event()
        async for _ in accounts:
            if (found := lookup()) is not None:
                await handle.event()
                return found
            await handle.event()
    raise AssertionError("the watch of the user database ended")


# What a command run as another user gets of the agent's environment (as `runuser -l`): the
# agent's own (root's tokens, root's PATH, its working directory) is not handed to their
# process, where they could read it in /proc/PID/environ.
USER_PATH = "/usr/local/bin:/usr/bin:/bin"
USER_KEEP = ("LANG", "LANGUAGE", "LC_ALL", "TERM", "TZ")


def user_env(entry: pwd.struct_passwd) -> dict[str, str]:
    """A fresh environment for a command run as `entry`: USER_KEEP of the agent's, USER_PATH,
    and the user's HOME, USER, LOGNAME and SHELL."""
    env = {k: v for k, v in os.environ.items() if k in USER_KEEP}
    env.update(
        PATH=USER_PATH,
        HOME=entry.pw_dir,
        USER=entry.pw_name,
        LOGNAME=entry.pw_name,
        SHELL=entry.pw_shell or "/bin/sh",
    )
    return env


def resolve_uid(user: str, key: str) -> int:
    """A uid from a name or a numeric string (a number need not have an account)."""
    number = id_number(user)
    return number if number is not None else passwd(user, key).pw_uid


def resolve_gid(group: str, key: str) -> int:
    """A gid from a name or a numeric string, or ResourceError naming `key`."""
    number = id_number(group)
    if number is not None:
        return number
    entry = lookup_group(group)
    if entry is None:
        raise NoSuchAccount(f"{key}: no such group {group!r}")
    return entry.gr_gid


def user_name(uid: int) -> str:
    """The name of a uid, or the number itself if it has no account."""
    with contextlib.suppress(KeyError):
        return pwd.getpwuid(uid).pw_name
    return str(uid)


def group_name(gid: int) -> str:
    """The name of a gid, or the number itself if it has no group."""
    with contextlib.suppress(KeyError):
        return grp.getgrgid(gid).gr_name
    return str(gid)


async def run_shadow(argv: list[str], shared: Shared) -> None:
    """Run one of shadow's tools (useradd, groupmod...) to completion, or raise ResourceError.

    Calls from one engine are serialised: the tools lock /etc/passwd and /etc/group and fail
    at once ("cannot lock") instead of waiting for each other.
    """
    async with tool_lock(shared, "shadow"):
        await run_command(argv, timeout=SHADOW_TIMEOUT, env={"LC_ALL": "C"})
