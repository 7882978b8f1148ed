"""pkg: a package installed, uninstalled, at the newest version, or at an exact version.

The resource name is the package name. The work is done by a backend (resources/pkg/backend.py)
chosen for the host: Debian's apt today. Compatible pkg resources are grouped by the engine
into one vertex (`grouped`); its check_apply resolves all of them and applies every change in
ONE transaction. The watch is inotify on the package database (dpkg's status file) and on
apt's package lists: a package removed by hand is reinstalled at once. See docs/resources/pkg.md.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import stat
from dataclasses import dataclass

from engine.errors import ResourceError, ValidationError
from engine.handle import Handle
from engine.params import to_plain
from engine.resource import UID, Edgeable, Groupable, Resource, register
from engine.watcher import PathWatcher
from resources._lib.plan import Step, apply_steps, nothing_to_do
from resources._lib.proc import tool_lock
from resources.pkg.apt import AptBackend
from resources.pkg.backend import DONE, Available, Backend, Change, Installed

BACKENDS: tuple[type[Backend], ...] = (AptBackend,)  # tried in order
# The top directories a merged /usr makes links into /usr (/bin -> usr/bin: Debian since
# bookworm, Fedora, Arch), where dpkg may list a file under either name.
USRMERGE = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")

STATES = ("installed", "uninstalled", "newest")
# Names and versions as apt and rpm accept them; never starting with "-" (an option).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9+._-]*")
_VERSION = re.compile(r"[0-9][A-Za-z0-9.+~:_^-]*")
# States people write that mean one of ours.
_HINTS = {
    "latest": "newest",
    "present": "installed",
    "absent": "uninstalled",
    "removed": "uninstalled",
    "purged": "uninstalled",
}


@register("pkg")
@dataclass(kw_only=True, eq=False)
class PkgRes(Edgeable, Groupable, Resource):
    # "installed", "uninstalled", "newest", or an exact version to install (e.g. "2.10-3").
    # Default "installed".
    state: str = "installed"
    # With a version state, allow installing a version older than the installed one.
    # Default false.
    allowdowngrade: bool = False
    # Allow packages whose origin cannot be authenticated (apt's --allow-unauthenticated).
    # Default false.
    allowuntrusted: bool = False
    # Allow packages PackageKit calls non-free (mgmt's filter). apt has no such filter: every
    # package apt offers is allowed, set or not. Default false.
    allownonfree: bool = False
    # Allow packages PackageKit calls unsupported (mgmt's filter). apt has no such filter: every
    # package apt offers is allowed, set or not. Default false.
    allowunsupported: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        # Other pkg resources merged into this vertex by the engine (Groupable).
        self.grouped: list[Resource] = []
        self._backend: Backend | None = None

    def validate(self) -> None:
        super().validate()
        if not _NAME.fullmatch(self.name):
            raise ValidationError(
                f"expected a package name (letters, digits, '+', '.', '_', '-'), got {self.name!r}",
                "name",
            )
        if self.state in STATES:
            return
        hint = _HINTS.get(self.state.lower())
        if hint is not None:
            raise ValidationError(f"unknown state {self.state!r}: did you mean {hint!r}?", "state")
        if not _VERSION.fullmatch(self.state):
            raise ValidationError(
                "expected 'installed', 'uninstalled', 'newest' or an exact version such as "
                f"'2.10-3', got {self.state!r}",
                "state",
            )

    async def init(self, handle: Handle) -> None:
        await super().init(handle)
        self._backend = detect()
        if self._backend is None:
            raise ResourceError("no supported package manager here (looked for apt-get, dpkg)")

    async def watch(self) -> None:
        async with PathWatcher(self._require_backend().watch_paths) as watcher:
            await self.handle.event()
            async for _ in watcher:
                await self.handle.event()

    async def check_apply(self, apply: bool) -> bool:
        backend = self._require_backend()
        members = self._members()
        plan = await _plan(backend, members)
        if not (plan[0] and apply):
            return await self._change(backend, plan, apply)
        # The agent's own transactions take turns on its lock (a resource's turn: its wait for
        # the package manager, its decision, its transaction); then one that holds the package
        # manager all the same (another's, or one of the agent's that a stop or timeout left
        # running) is waited for. After either wait, what is installed is read again.
        lock = tool_lock(self.handle.shared, backend.name)
        queued = lock.locked()
        if queued:
            self.handle.logger.debug("waiting for the agent's other %s transaction", backend.name)
        async with lock:
            if await backend.wait_idle(self.handle.logger) or queued:
                plan = await _plan(backend, members)
            return await self._change(backend, plan, apply)

    async def _change(
        self,
        backend: Backend,
        plan: tuple[list[Change], list[str], list[tuple[str, str]]],
        apply: bool,
    ) -> bool:
        """check_apply's changes made (apply: under the backend's tool lock) or said."""
        members = self._members()
        changes, reasons, failures = plan
        if not changes:
            if failures:
                raise ResourceError(_failed(failures, len(members), None))
            return nothing_to_do(self.handle, "; ".join(reasons))

        async def transaction() -> None:
            await backend.apply(
                changes,
                allow_downgrade=self.allowdowngrade,
                allow_untrusted=self.allowuntrusted,
                logger=self.handle.logger,
            )
            await _verify(backend, changes)

        # One transaction makes every change: the first step runs it.
        steps = [
            Step(f"{c.action} {c.describe()}", f"{DONE[c.action]} {c.describe()}") for c in changes
        ]
        steps[0] = Step(steps[0].would, steps[0].done, transaction)
        await apply_steps(self.handle, steps, apply)
        if failures:  # the group's other packages were changed (or would be): this one fails
            raise ResourceError(_failed(failures, len(members), apply))
        return False

    def cmp(self, other: Resource) -> bool:
        """Same params and meta, and the same grouped resources (in any order)."""
        if not (super().cmp(other) and isinstance(other, PkgRes)):
            return False
        return _specs(self.grouped) == _specs(other.grouped)

    def merge(self, other: Resource) -> Resource:
        """Two declarations of one package (mgmt's Adapts/Merge): `installed` and `newest`
        give `newest`; `uninstalled` or an exact version goes with nothing else; the flags
        must agree."""
        if not isinstance(other, PkgRes):
            raise ValidationError(f"{other} is not a pkg", "kind")
        if self.state != other.state:
            states = {self.state, other.state}
            if states != {"installed", "newest"}:
                raise ValidationError(
                    f"{self.state!r} vs {other.state!r} (only 'installed' and 'newest' merge, "
                    "into 'newest')",
                    "state",
                )
        for flag in ("allowdowngrade", "allowuntrusted", "allownonfree", "allowunsupported"):
            if getattr(self, flag) != getattr(other, flag):
                raise ValidationError(f"{getattr(self, flag)} vs {getattr(other, flag)}", flag)
        state = "newest" if "newest" in (self.state, other.state) else self.state
        return dataclasses.replace(self, state=state)

    # capabilities --------------------------------------------------------------------------

    # What a package provides when something asks for a path: its files (as in mgmt).
    LAZY = frozenset({"pkgfile"})

    def uids(self) -> list[UID]:
        return [UID("pkg", member.name) for member in self._members()]

    def autoedges(self) -> list[list[UID]]:
        return []

    def lazy_uids(self, wanted: set[UID]) -> list[UID]:
        """The asked-for paths (UID("pkgfile", path)) the package owns, as the package database
        lists them: known once it is installed (as in mgmt on Debian, whose PackageKit lists
        only an installed package's files). A package to remove provides none: nothing waits
        for its removal."""
        backend = self._backend or detect()
        paths = {uid.key for uid in wanted if uid.kind == "pkgfile"}
        if backend is None or not paths:
            return []
        # On a merged /usr a path has two names (/usr/bin/ls, /bin/ls): dpkg lists one.
        aliases = {alias: path for path in paths if (alias := usrmerge_alias(path))}
        found = []
        for member in self._members():
            if member.state == "uninstalled":
                continue
            owned = backend.files(member.name)
            hits = (paths & owned) | {aliases[alias] for alias in aliases.keys() & owned}
            found += [UID("pkgfile", path) for path in sorted(hits)]
        return found

    def group_cmp(self, other: Resource) -> bool:
        """Another package that can share this one's transaction.

        Same backend, same transaction flags (allowdowngrade, allowuntrusted) and the same meta
        (noop, retry, timeout, sema... are the vertex's); any states mix, because one apt-get
        call installs, upgrades, pins and removes together.
        """
        return (
            isinstance(other, PkgRes)
            and other is not self
            and other.name != self.name
            and self.allowdowngrade == other.allowdowngrade
            and self.allowuntrusted == other.allowuntrusted
            and self.meta == other.meta
            and _backend_name(self) == _backend_name(other)
        )

    # helpers -------------------------------------------------------------------------------

    def _members(self) -> list[PkgRes]:
        """This resource and the ones grouped into it."""
        return [self, *(r for r in self.grouped if isinstance(r, PkgRes))]

    def _require_backend(self) -> Backend:
        if self._backend is None:
            raise RuntimeError(f"{self}: used before init()")
        return self._backend

    def _needs_available(self, have: Installed | None) -> bool:
        """Whether deciding needs the package manager's candidates (a slower query)."""
        complete = have is not None and have.complete
        if self.state == "uninstalled":
            return False
        if self.state == "installed":
            return not complete
        if self.state == "newest":
            return True
        return not (complete and have is not None and have.version == self.state)

    async def _decide(
        self, backend: Backend, have: Installed | None, can: Available | None
    ) -> Change | str:
        """The change this package needs, or why it needs none. Raises ResourceError."""
        name, state = self.name, self.state
        current = have.version if have is not None else None
        complete = have is not None and have.complete
        if state == "uninstalled":
            if have is None:
                return f"{name} is not installed"
            return Change(name, "remove", None, current)
        if state == "installed" and complete:
            return f"{name} is installed ({current})"
        if state == "newest" and complete and (can is None or can.candidate in (None, current)):
            return f"{name} is installed at the newest version ({current})"
        if state not in STATES and complete and current == state:
            return f"{name} is installed at version {state}"
        if can is None or (can.candidate is None and state in STATES):
            raise ResourceError(
                f"no package named {name!r} in the {backend.cache} "
                "(check the name, or refresh the package lists: apt-get update)"
            )
        if state in STATES:
            target = can.candidate or ""
            return Change(name, "upgrade" if complete else "install", target, current)
        if state not in can.versions:
            known = ", ".join(can.versions) or "none"
            raise ResourceError(
                f"no version {state!r} of {name!r} in the {backend.cache} (known: {known})"
            )
        if not complete or current is None:
            return Change(name, "install", state, current, pin=True)
        if await backend.older(state, current):
            if not self.allowdowngrade:
                raise ResourceError(
                    f"{name} {current} is installed, newer than the wanted {state}: "
                    "set allowdowngrade: true to downgrade"
                )
            return Change(name, "downgrade", state, current, pin=True)
        return Change(name, "upgrade", state, current, pin=True)


async def _plan(
    backend: Backend, members: list[PkgRes]
) -> tuple[list[Change], list[str], list[tuple[str, str]]]:
    """What must change for every member (observations only); why the rest need nothing; and
    the members that cannot be decided (an unknown name or version), as (name, why): known
    before any change, so they fail alone and the others' changes go ahead.

    Only packages that are not already right cost an `available` query (apt-cache loads
    the whole package cache); a settled `installed` package costs one dpkg-query.
    """
    names = [m.name for m in members]
    have = await backend.installed(names)
    wanted = [m.name for m in members if m._needs_available(have.get(m.name))]
    can = await backend.available(wanted) if wanted else {}
    changes: list[Change] = []
    reasons: list[str] = []
    failures: list[tuple[str, str]] = []
    for member in members:
        try:
            decision = await member._decide(backend, have.get(member.name), can.get(member.name))
        except ResourceError as err:
            failures.append((member.name, str(err)))
            continue
        if isinstance(decision, Change):
            changes.append(decision)
        else:
            reasons.append(decision)
    return changes, reasons, failures


def _failed(failures: list[tuple[str, str]], members: int, applied: bool | None) -> str:
    """The failure of a vertex some of whose packages cannot be decided, naming them in a
    group; and what became of the others' changes (`applied`: None, there were none)."""
    text = "; ".join(why if members == 1 else f"pkg[{name}]: {why}" for name, why in failures)
    if applied is not None:
        text += f" (the group's other changes {'were' if applied else 'would be'} made)"
    return text


async def _verify(backend: Backend, changes: list[Change]) -> None:
    """After a transaction, every change must show in the package database."""
    have = await backend.installed([c.name for c in changes])
    wrong: list[str] = []
    for change in changes:
        now = have.get(change.name)
        if change.action == "remove":
            if now is not None:
                wrong.append(f"{change.name} is still installed ({now.version})")
        elif now is None or not now.complete:
            wrong.append(f"{change.name} is not installed")
        elif change.version and now.version != change.version:
            wrong.append(f"{change.name} is at {now.version}, not {change.version}")
    if wrong:
        raise ResourceError(
            "the transaction succeeded but "
            + "; ".join(wrong)
            + " (held back? see apt-mark showhold)"
        )


def _backend_name(res: PkgRes) -> str | None:
    backend = res._backend or detect()
    return backend.name if backend is not None else None


def _specs(resources: list[Resource]) -> list[tuple[str, object]]:
    return sorted(((r.name, to_plain(r)) for r in resources), key=lambda spec: spec[0])


@functools.cache
def detect() -> Backend | None:
    """The backend for this host (the first usable one), or None. It keeps no state of its own
    (its lock is the engine's), so one instance serves every engine of the process."""
    for backend in BACKENDS:
        if backend.usable():
            return backend()
    return None


@functools.cache
def usrmerged(root: str = "/") -> frozenset[str]:
    """The directories of USRMERGE that are, under `root`, a link owned by root to `usr/<name>`
    (relative or absolute): read with lstat and readlink, no link followed. Another link there
    (another target, another owner) is not trusted to say that two paths are one."""
    found = set()
    for name in USRMERGE:
        path = os.path.join(root, name)
        try:
            st = os.lstat(path)
            target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
        except OSError:
            continue
        if st.st_uid == 0 and target.rstrip("/") in (f"usr/{name}", f"/usr/{name}"):
            found.add(name)
    return frozenset(found)


def usrmerge_alias(path: str, root: str = "/") -> str | None:
    """The other name of absolute `path` on a merged /usr (`/usr/bin/ls` for `/bin/ls`, and
    back), or None when it has none here."""
    top, _, rest = path[1:].partition("/")
    merged = usrmerged(root)
    if top in merged and rest:
        return f"/usr/{top}/{rest}"
    if top == "usr":
        below, _, rest = rest.partition("/")
        if below in merged and rest:
            return f"/{below}/{rest}"
    return None
