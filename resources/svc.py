"""svc: a systemd unit: running or stopped, enabled or disabled at boot (mgmt's svc).

Everything goes through systemd's `org.freedesktop.systemd1` Manager over D-Bus (dbus-fast,
imported lazily): concurrent Properties.Get calls on the unit's object path (+ GetUnitFileState)
to observe, in one round trip; StartUnit/StopUnit/RestartUnit/ReloadOrRestartUnit waiting for
the job's `JobRemoved` signal (a job that ends with any result but "done" is a failure naming
that result); EnableUnitFiles/DisableUnitFiles; Reload after them or when systemd's copy of the
unit is stale. The watch is Subscribe + the unit's PropertiesChanged (a changed value of
ActiveState, SubState, LoadState or UnitFileState) + the Manager's Reloading and
UnitFilesChanged signals, plus inotify on the unit's file and its enablement links (which
`systemctl enable/disable` and admins change without a word to the manager): a unit stopped,
crashed or disabled by hand is repaired within milliseconds. The echo of the resource's own
calls is muted (Mute, UnitChanges). The watch survives a D-Bus restart: it reconnects,
subscribes again and checks the unit (BusUser._watch_bus). A refresh (notify) does ReloadOrRestartUnit, or RestartUnit
for a new definition. See docs/resources/svc.md.

The D-Bus and systemd client lives in resources/_lib/systemd.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, cast

from engine.errors import ResourceError, ValidationError
from engine.handle import Handle
from engine.resource import UID, Edgeable, Refreshable, Resource, register
from resources._lib.plan import Step, nothing_to_do
from resources._lib.systemd import (
    CALL_TIMEOUT,
    ENABLED,
    FIXED,
    PROPERTIES,
    RUNNING,
    STOPPED,
    SYSTEMD,
    UNIT_TYPES,
    Bus,
    BusUser,
    check_unit_name,
    daemon_reload,
    job,
    unit_dir,
    unit_file_names,
    unit_key,
    unit_object_path,
    unit_search_dirs,
)

# How long check_apply lets a start, stop or restart it did not ask for finish (the unit
# activating or deactivating) before starting the unit anyway.
SETTLE_TIMEOUT = CALL_TIMEOUT
# The ActiveStates of a unit systemd is changing: a start waits for the state it reaches.
SETTLING = frozenset({"activating", "deactivating"})

# the resource --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """What systemd says about the unit."""

    load: str
    active: str
    file_state: str | None  # None: not asked (startup unmanaged) or no unit file
    stale: bool  # its unit file changed since systemd loaded it (NeedDaemonReload)

    @property
    def running(self) -> bool:
        return self.active in RUNNING


@register("svc")
@dataclass(kw_only=True, eq=False)
class SvcRes(BusUser, Refreshable, Edgeable, Resource):
    # "running" or "stopped" ("failed" counts as stopped). Default None: not managed.
    state: Literal["running", "stopped"] | None = None
    # "enabled" or "disabled": started at boot or not. Default None: not managed.
    startup: Literal["enabled", "disabled"] | None = None
    # Manage a unit of the user's service manager (session bus) instead of the system's.
    # Default false.
    session: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self._bus_init()
        self._new_definition = False

    @property
    def unit(self) -> str:
        """The unit's full name: the resource name, with ".service" unless it has a type."""
        suffix = self.name.rpartition(".")[2]
        return self.name if "." in self.name and suffix in UNIT_TYPES else f"{self.name}.service"

    def validate(self) -> None:
        super().validate()
        check_unit_name(self.unit, "name")
        if self.state not in (None, "running", "stopped"):
            raise ValidationError(f"expected 'running' or 'stopped', got {self.state!r}", "state")
        if self.startup not in (None, "enabled", "disabled"):
            raise ValidationError(
                f"expected 'enabled' or 'disabled', got {self.startup!r}", "startup"
            )

    async def init(self, handle: Handle) -> None:
        await super().init(handle)
        self._bus_init()
        # A daemon-reload of ours loaded a new definition of the running unit: the next
        # refresh restarts it, even if our watch saw the file change before the refresh came.
        self._new_definition = False

    async def cleanup(self) -> None:
        """Nothing of our own: the subscriptions and the connection are released by the
        handle's cleanups (registered where they are made)."""

    async def watch(self) -> None:
        await self._watch_unit(self.handle, self.session, self.unit)

    async def check_apply(self, apply: bool) -> bool:
        refresh = self.handle.refresh()
        if self.state is None and self.startup is None and not refresh:
            why = "neither state nor startup is set, and no refresh"
            return nothing_to_do(self.handle, why)
        bus = await self._connect(self.handle, self.session)
        await bus.subscribe_systemd()
        seen = await self._observe(bus)
        if self.state == "running" and seen.active in SETTLING:
            seen = await self._settled(bus, seen)
        startup, failure = self._plan_startup(bus, seen)
        changes = self._plan(bus, seen, refresh, bool(startup))
        if not startup and not changes:
            if failure is not None:
                raise failure
            return nothing_to_do(self.handle, functools.partial(self._why, seen, refresh))
        # What can be applied is: a unit that cannot be enabled is still started (or
        # stopped, or refreshed), and the resource fails afterwards, naming the enable problem.
        try:
            await self._apply(self.handle, startup, apply)
        except ResourceError as err:
            failure = err
        await self._apply(self.handle, changes, apply)
        if apply:
            stays_up = seen.running and self.state != "stopped"
            new_definition = seen.stale or self._new_definition
            self._new_definition = stays_up and new_definition and not refresh
        if failure is not None:
            raise failure
        return False

    # check_apply's parts -----------------------------------------------------------------

    async def _observe(self, bus: Bus) -> Observed:
        names = ("LoadState", "ActiveState", "NeedDaemonReload")
        props, file_state = await bus.unit_state(self.unit, names, self.startup is not None)
        load, active = str(props["LoadState"]), str(props["ActiveState"])
        stale = bool(props["NeedDaemonReload"])
        return Observed(load=load, active=active, file_state=file_state, stale=stale)

    async def _settled(self, bus: Bus, seen: Observed) -> Observed:
        """What systemd says once the unit has stopped activating or deactivating (bounded by
        SETTLE_TIMEOUT; `seen` is what it said last).

        A job not ours is starting, stopping or restarting the unit, or an auto-restart waits
        for its hold-off (`Restart=`): systemd is already changing it. A StartUnit now would
        cancel a stop job (mode "replace"), and each start call is counted against the unit's
        start limit (StartLimitBurst) however it ends: a start queued behind a stop, or a
        "hurry up" during an auto-restart, is run again and again (see docs/resources/svc.md):
        a few stops by hand and a crash left it failed with start-limit-hit. And while the unit
        is activating it is being started already: one that comes up needs nothing, one that
        fails is started then. Let systemd finish, then plan on the state it reached."""
        route = (unit_object_path(self.unit), PROPERTIES, "PropertiesChanged")
        signals = await bus.signals(SYSTEMD, [route], lambda _msg: True)
        try:
            self.handle.logger.debug("waiting for %s to finish %s", self.unit, seen.active)
            changes = cast("AsyncGenerator[None, None]", aiter(signals))
            async with contextlib.aclosing(changes) as wakes:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(SETTLE_TIMEOUT):
                        while (seen := await self._observe(bus)).active in SETTLING:
                            await anext(wakes)
                        return seen
            seen = await self._observe(bus)
            self.handle.logger.debug("%s is still %s: starting it anyway", self.unit, seen.active)
            return seen
        finally:
            await signals.aclose()

    def _plan(self, bus: Bus, seen: Observed, refresh: bool, startup: bool) -> list[Step]:
        """What must change after the startup steps (`startup`: there are some), from the
        params and what systemd says (no I/O)."""
        unit = self.unit
        restart = seen.stale or self._new_definition
        changes: list[Step] = []
        if startup or seen.stale:
            changes.append(daemon_reload(bus))
        if self.state == "running" and not seen.running:
            self._need_unit(seen, "start")
            run = self._job(bus, "StartUnit", "start")
            changes.append(Step(f"start {unit}", f"started {unit}", run))
        elif self.state == "stopped" and seen.active not in STOPPED:
            run = self._job(bus, "StopUnit", "stop")
            changes.append(Step(f"stop {unit}", f"stopped {unit}", run))
        elif refresh and self.state != "stopped" and seen.running and restart:
            # A new unit definition takes effect only by a restart.
            run = self._job(bus, "RestartUnit", "restart")
            why = "(refresh: its unit file changed)"
            changes.append(Step(f"restart {unit} {why}", f"restarted {unit} {why}", run))
        elif refresh and self.state != "stopped" and seen.running:
            run = self._job(bus, "ReloadOrRestartUnit", "reload or restart")
            changes.append(
                Step(
                    f"reload or restart {unit} (refresh)",
                    f"reloaded or restarted {unit} (refresh)",
                    run,
                )
            )
        return changes

    def _job(self, bus: Bus, method: str, verb: str) -> Callable[[], Awaitable[None]]:
        """A step's run: the job `method` on the unit, waited for (see `job`)."""
        return functools.partial(job, bus, method, self.unit, verb, session=self.session)

    def _plan_startup(self, bus: Bus, seen: Observed) -> tuple[list[Step], ResourceError | None]:
        """The steps that enable or disable the unit, or why it cannot be enabled (a unit
        file that cannot be: the rest is applied, then this is the failure). A unit systemd
        could not load is refused at once (it cannot be started either)."""
        unit, state = self.unit, seen.file_state
        if self.startup == "enabled" and state != "enabled":
            self._need_unit(seen, "enable")
            if state in FIXED:
                why = f"cannot enable {unit}: {FIXED[state]} (state {state!r})"
                return [], ResourceError(why)

            async def enable() -> None:
                carries, changes = await bus.manager(
                    "EnableUnitFiles", "asbb", [unit], False, False
                )
                if not carries and not changes:
                    raise ResourceError(f"cannot enable {unit}: it has no [Install] section")

            return [Step(f"enable {unit} at boot", f"enabled {unit} at boot", enable)], None
        if self.startup == "disabled" and state in ENABLED:

            async def disable() -> None:
                await bus.manager("DisableUnitFiles", "asb", [unit], state == "enabled-runtime")

            return [Step(f"disable {unit} at boot", f"disabled {unit} at boot", disable)], None
        return [], None

    def _need_unit(self, seen: Observed, verb: str) -> None:
        """Refuse, saying why, to start or enable a unit systemd could not load."""
        if seen.load == "loaded":
            return
        if seen.load == "not-found":
            where = unit_dir(self.session)
            why = f"no such unit (no unit file in {where})"
        elif seen.load == "masked":
            why = "it is masked: unmask it first"
        else:
            why = f"systemd could not load its unit file (LoadState {seen.load!r})"
        raise ResourceError(f"cannot {verb} {self.unit}: {why}")

    def _why(self, seen: Observed, refresh: bool) -> str:
        parts = [f"{self.unit} is {seen.active}" + (f" ({seen.load})" if seen.load else "")]
        if self.startup is not None:
            parts.append(f"its unit file is {seen.file_state or 'missing'}")
        if refresh:
            parts.append("the refresh needs no reload as it is not running")
        return ", ".join(parts)

    # capabilities ------------------------------------------------------------------------

    def uids(self) -> list[UID]:
        return [UID("svc", unit_key(self.unit, self.session))]

    def autoedges(self) -> list[list[UID]]:
        """The unit file, if a file resource manages it (the admin's directory first)."""
        return [[UID("file", path) for path in self._unit_files()]]

    def lazy_autoedges(self, kinds: frozenset[str]) -> list[list[UID]]:
        """Beside a package: the package shipping the unit file (mgmt's edge from a package to
        the svc of its `.service` files)."""
        if "pkgfile" not in kinds:
            return []
        return [[UID("pkgfile", path) for path in self._unit_files()]]

    def _unit_files(self) -> list[str]:
        """Where its unit file may be, in systemd's order (the admin's directory first)."""
        names = unit_file_names(self.unit)
        return [os.path.join(d, name) for d in unit_search_dirs(self.session) for name in names]
