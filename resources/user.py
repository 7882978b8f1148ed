"""user: a local user account exists with the wanted ids, groups, home and shell, or is absent.

mgmt's user. Changes go through shadow's tools (useradd, usermod, userdel) run from argv
lists, all differing fields in one usermod call; lookups go through the system's name service
(pwd, grp). The watch is inotify on /etc/passwd, /etc/group and /etc/shadow. Home directories
are neither created, moved nor removed. See docs/resources/user.md.
"""

from __future__ import annotations

import asyncio
import functools
import grp
import os
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
    lookup_uid,
    lookup_user,
    run_shadow,
)
from resources._lib.plan import Step, apply_steps, nothing_to_do

USER_FILES = ("/etc/passwd", "/etc/group", "/etc/shadow")
_MANAGED = ("uid", "gid", "group", "groups", "homedir", "shell")


@dataclass(frozen=True)
class Account:
    """What the name service says about the user and the groups it names."""

    uid: int
    gid: int
    home: str
    shell: str
    # Supplementary groups: those listing the user as a member.
    groups: frozenset[str]


@dataclass(frozen=True)
class Seen:
    """One observation, made in a thread (the name service may be slow)."""

    account: Account | None
    # gid of every group the params name (None: no such group).
    gids: dict[str, int | None]
    # Group names by gid, for messages.
    names: dict[int, str]
    # The user that has the wanted uid, if any.
    uid_owner: str | None


@dataclass(frozen=True)
class Field:
    """One field to change with usermod."""

    what: str
    old: str
    new: str
    args: tuple[str, ...]


@register("user")
@dataclass(kw_only=True, eq=False)
class UserRes(Edgeable, Resource):
    # "exists" or "absent". Default "exists".
    state: Literal["exists", "absent"] = "exists"
    # The numeric user id; None lets useradd pick one and leaves it alone. Default None.
    uid: int | None = None
    # The primary group by number (excludes `group`). Default None: not managed.
    gid: int | None = None
    # The primary group by name (excludes `gid`). Default None: not managed; a new user gets
    # the group of its own name if one exists, else useradd's default.
    group: str | None = None
    # Exactly these supplementary groups ([] = none). Default None: not managed.
    groups: list[str] | None = None
    # Absolute path of the home directory (recorded, not created or moved). Default None.
    homedir: str | None = None
    # Absolute path of the login shell. Default None: not managed (useradd's default).
    shell: str | None = None
    # Allow `uid` to be one that another user already has (useradd/usermod --non-unique).
    # Default false.
    allowduplicateuid: bool = False

    def validate(self) -> None:
        super().validate()
        check_name(self.name, "name")
        check_id(self.uid, "uid")
        check_id(self.gid, "gid")
        if self.gid is not None and self.group is not None:
            raise ValidationError("cannot be combined with gid: set one of them", "group")
        if self.group is not None:
            check_name(self.group, "group")
        for i, name in enumerate(self.groups or []):
            check_name(name, f"groups[{i}]")
            if name in (self.groups or [])[:i]:
                raise ValidationError(f"lists {name!r} twice", "groups")
        for key in ("homedir", "shell"):
            path = getattr(self, key)
            if path is not None and (not os.path.isabs(path) or any(c in path for c in ":\n\0")):
                raise ValidationError(
                    f"expected an absolute path without ':' or newlines, got {path!r}", key
                )
        if self.allowduplicateuid and self.uid is None:
            raise ValidationError("needs uid: it allows that uid to be shared", "allowduplicateuid")

    async def watch(self) -> None:
        async with PathWatcher(USER_FILES) as watcher:
            await self.handle.event()
            async for _ in watcher:
                await self.handle.event()

    async def check_apply(self, apply: bool) -> bool:
        seen = await asyncio.to_thread(self._observe)
        if self.state == "absent":
            if seen.account is None:
                return nothing_to_do(self.handle, f"user {self.name} does not exist")
            return await self._run(apply, ["userdel", self.name], [f"delete user {self.name}"])
        self._check_uid(seen)
        missing = [name for name in self._group_names() if seen.gids.get(name) is None]
        if seen.account is None:
            argv = ["useradd", *self._create_args(seen), self.name]
            return await self._run(apply, argv, [self._describe_new()], missing)
        fields = self._diff(seen.account, seen)
        if not fields:
            return nothing_to_do(self.handle, self._why)
        args = [arg for f in fields for arg in f.args]
        if self.allowduplicateuid and any(f.what == "uid" for f in fields):
            args.insert(0, "--non-unique")
        changes = [f"change {f.what} of user {self.name} from {f.old} to {f.new}" for f in fields]
        return await self._run(apply, ["usermod", *args, self.name], changes, missing)

    # capabilities --------------------------------------------------------------------------

    def uids(self) -> list[UID]:
        """The user by name; with a uid also by number (names are never all digits)."""
        uids = [UID("user", self.name)]
        if self.uid is not None:
            uids.append(UID("user", str(self.uid)))
        if self.state == "absent":  # its groups, if removed too, come after it (group.py)
            uids.append(UID(USER_REMOVED, self.name))
            if self.group is not None and self.group != self.name:
                uids.append(UID(PRIMARY_REMOVED, self.group))
        return uids

    def autoedges(self) -> list[list[UID]]:
        """One request per group the user needs, so that a group resource runs first."""
        if self.state == "absent":
            return []
        requests = [[UID("group", name)] for name in self._group_names()]
        if self.gid is not None:
            requests.append([UID("group", str(self.gid))])
        elif self.group is None:
            requests.append([UID("group", self.name)])  # a new user joins its namesake group
        return requests

    # helpers -------------------------------------------------------------------------------

    def _group_names(self) -> list[str]:
        """Every group name the params need to exist (primary first)."""
        names = [self.group] if self.group is not None else []
        return names + [g for g in self.groups or [] if g not in names]

    def _observe(self) -> Seen:
        wanted = [*self._group_names(), self.name]
        gids: dict[str, int | None] = {}
        for name in wanted:
            found = lookup_group(name)
            gids[name] = found.gr_gid if found else None
        account = None
        names: dict[int, str] = {}
        entry = lookup_user(self.name)
        if entry is not None:
            supplementary = frozenset(g.gr_name for g in grp.getgrall() if self.name in g.gr_mem)
            account = Account(
                entry.pw_uid, entry.pw_gid, entry.pw_dir, entry.pw_shell, supplementary
            )
            primary = lookup_gid(entry.pw_gid)
            if primary is not None:
                names[entry.pw_gid] = primary.gr_name
        owner = lookup_uid(self.uid) if self.uid is not None else None
        return Seen(account, gids, names, owner.pw_name if owner else None)

    def _check_uid(self, seen: Seen) -> None:
        """The wanted uid must be free (or ours) unless allowduplicateuid."""
        if self.uid is None or self.allowduplicateuid:
            return
        if seen.uid_owner is not None and seen.uid_owner != self.name:
            raise ResourceError(
                f"uid {self.uid} already belongs to user {seen.uid_owner!r} "
                "(set allowduplicateuid: true to share it)"
            )

    def _create_args(self, seen: Seen) -> list[str]:
        args: list[str] = []
        if self.uid is not None:
            args += ["--non-unique"] if self.allowduplicateuid else []
            args += ["--uid", str(self.uid)]
        if self.gid is not None:
            args += ["--gid", str(self.gid)]
        elif self.group is not None:
            args += ["--gid", self.group]
        elif seen.gids.get(self.name) is not None:
            args += ["--gid", self.name]  # useradd refuses to create a same-named group
        if self.groups:
            args += ["--groups", ",".join(self.groups)]
        if self.homedir is not None:
            args += ["--home-dir", self.homedir]
        if self.shell is not None:
            args += ["--shell", self.shell]
        return args

    def _describe_new(self) -> str:
        parts = [f"{key} {value}" for key, value in self._wanted().items()]
        return f"create user {self.name}" + (f" ({', '.join(parts)})" if parts else "")

    def _wanted(self) -> dict[str, str]:
        """The managed fields, as shown in messages."""
        shown = {key: getattr(self, key) for key in _MANAGED}
        if self.groups is not None:
            shown["groups"] = _list(self.groups)
        return {key: str(value) for key, value in shown.items() if value is not None}

    def _diff(self, account: Account, seen: Seen) -> list[Field]:
        fields: list[Field] = []
        if self.uid is not None and account.uid != self.uid:
            fields.append(Field("uid", str(account.uid), str(self.uid), ("--uid", str(self.uid))))
        primary = seen.names.get(account.gid, str(account.gid))
        if self.gid is not None and account.gid != self.gid:
            fields.append(Field("gid", str(account.gid), str(self.gid), ("--gid", str(self.gid))))
        if self.group is not None and account.gid != seen.gids.get(self.group):
            fields.append(Field("group", primary, self.group, ("--gid", self.group)))
        if self.groups is not None and account.groups != frozenset(self.groups):
            new = ",".join(self.groups)
            old, wanted = _list(account.groups), _list(self.groups)
            fields.append(Field("groups", old, wanted, ("--groups", new)))
        if self.homedir is not None and account.home != self.homedir:
            fields.append(Field("homedir", account.home, self.homedir, ("--home", self.homedir)))
        if self.shell is not None and account.shell != self.shell:
            fields.append(Field("shell", account.shell, self.shell, ("--shell", self.shell)))
        return fields

    def _why(self) -> str:
        managed = list(self._wanted())
        what = f" with the wanted {', '.join(managed)}" if managed else ""
        return f"user {self.name} exists{what}"

    async def _run(
        self, apply: bool, argv: list[str], changes: list[str], missing: list[str] | None = None
    ) -> bool:
        """Log what would change (noop), or run `argv` and log each change done."""
        if missing:
            needed = ", ".join(repr(name) for name in missing)
            if apply:
                raise ResourceError(
                    f"group {needed} does not exist (create it first, e.g. with a group resource)"
                )
            changes = [*changes[:-1], f"{changes[-1]} (once group {needed} exists)"]
        run = functools.partial(run_shadow, argv, self.handle.shared)
        steps = [Step(change, _past(change)) for change in changes]  # one call does them all
        steps[0] = Step(changes[0], _past(changes[0]), run)
        await apply_steps(self.handle, steps, apply)
        return False


def _list(names: frozenset[str] | list[str]) -> str:
    return "[" + ", ".join(sorted(names)) + "]"


def _past(change: str) -> str:
    """`create user x` -> `created user x` (the logged form of a done change)."""
    verb, _, rest = change.partition(" ")
    return {"create": "created", "change": "changed", "delete": "deleted"}[verb] + " " + rest
