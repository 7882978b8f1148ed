"""hostname: the host's static, transient and pretty names, via systemd-hostnamed (mgmt's).

`hostname` is the fallback for the three others: alone, it sets all three. Everything goes
through `org.freedesktop.hostname1` on the system bus (Properties.GetAll to observe,
SetStaticHostname/SetHostname/SetPrettyHostname with interactive=false to change). The watch is
hostnamed's PropertiesChanged plus inotify on the files hostnamed keeps the names in (an edit
by hand does not make hostnamed signal): /etc/hostname and /etc/machine-info, overridable with
$MGMT_HOSTNAME_FILE and $MGMT_MACHINE_INFO_FILE (tests, chroots), and POLLPRI on
/proc/sys/kernel/hostname (a `hostname X` by hand, which hostnamed does not signal either).
See docs/resources/hostname.md.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from typing import Any

from engine.errors import ResourceError, ValidationError
from engine.handle import Handle
from engine.resource import Resource, register
from engine.watcher import PathWatcher
from resources._lib.events import pump_events
from resources._lib.plan import Step, apply_steps, nothing_to_do
from resources._lib.pollpri import PriWatch
from resources._lib.systemd import PROPERTIES, Bus, BusUser

HOSTNAME1 = "org.freedesktop.hostname1"
HOSTNAME1_PATH = "/org/freedesktop/hostname1"
# The kernel's (transient) name: POLLPRI on a sethostname(2), which hostnamed does not signal.
KERNEL_HOSTNAME = "/proc/sys/kernel/hostname"
HOSTNAME_MAX = 64  # systemd's limit (HOST_NAME_MAX)
PRETTY_MAX = 255
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")

# (param, hostname1 property, setter, what it is called in logs), in the order they are set:
# setting the static name also sets the transient one, so the transient comes after it.
NAMES = (
    ("static_hostname", "StaticHostname", "SetStaticHostname", "static hostname"),
    ("transient_hostname", "Hostname", "SetHostname", "transient hostname"),
    ("pretty_hostname", "PrettyHostname", "SetPrettyHostname", "pretty hostname"),
)


def hostname_file() -> str:
    return os.environ.get("MGMT_HOSTNAME_FILE") or "/etc/hostname"


def machine_info_file() -> str:
    return os.environ.get("MGMT_MACHINE_INFO_FILE") or "/etc/machine-info"


@register("hostname")
@dataclass(kw_only=True, eq=False)
class HostnameRes(BusUser, Resource):
    # The name for all three below unless they are set. Default None: not managed.
    hostname: str | None = None
    # Free-form name for people ("Alice's laptop"); "" removes it. Default: `hostname`.
    pretty_hostname: str | None = None
    # The name in /etc/hostname, used at boot; "" removes it. Default: `hostname`.
    static_hostname: str | None = None
    # The kernel's current hostname (e.g. from DHCP). Default: `hostname`.
    transient_hostname: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self._bus_init()

    def _wanted(self) -> dict[str, str]:
        """param -> wanted value, for the names that are managed."""
        wanted = {}
        for param, *_ in NAMES:
            value = getattr(self, param)
            value = self.hostname if value is None else value
            if value is not None:
                wanted[param] = value
        return wanted

    def validate(self) -> None:
        super().validate()
        if not self._wanted():
            raise ValidationError(
                "set at least one of hostname, static_hostname, transient_hostname, "
                "pretty_hostname",
                "hostname",
            )
        if self.hostname == "":
            raise ValidationError("must not be empty", "hostname")
        if self.transient_hostname == "":
            raise ValidationError(
                "must not be empty (the kernel always has a name)", "transient_hostname"
            )
        for key in ("hostname", "static_hostname", "transient_hostname"):
            value = getattr(self, key)
            if value and not _valid_hostname(value):
                raise ValidationError(
                    f"expected a hostname (dot-separated labels of letters, digits and '-', "
                    f"at most {HOSTNAME_MAX} characters), got {value!r}",
                    key,
                )
        pretty = self._wanted().get("pretty_hostname", "")
        if len(pretty) > PRETTY_MAX or any(ord(ch) < 32 for ch in pretty):
            raise ValidationError(
                f"expected at most {PRETTY_MAX} characters and no control characters, "
                f"got {pretty!r}",
                "pretty_hostname",
            )

    async def init(self, handle: Handle) -> None:
        await super().init(handle)
        self._bus_init()

    async def cleanup(self) -> None:
        """Nothing of our own: the handle's cleanups release the subscription and the bus."""

    async def watch(self) -> None:
        """hostnamed's PropertiesChanged and inotify on its files, through D-Bus restarts
        (BusUser._watch_bus: reconnected, subscribed again, checked again). hostnamed is
        started by the bus at the first call to it (bus activation) and exits when idle: the
        bus is ready for this watch once hostnamed is on it or can be started."""
        handle = self.handle
        route = (HOSTNAME1_PATH, PROPERTIES, "PropertiesChanged")

        async def watch(bus: Bus) -> None:
            signals = await bus.signals(HOSTNAME1, [route], _hostname_changed)
            try:
                async with (
                    PathWatcher([hostname_file(), machine_info_file()]) as files,
                    PriWatch(KERNEL_HOSTNAME) as kernel,
                ):
                    await handle.event()
                    await pump_events(handle, [signals, files, kernel])
            finally:
                await signals.aclose()

        await self._watch_bus(handle, False, HOSTNAME1, watch, on_demand=True)

    async def check_apply(self, apply: bool) -> bool:
        bus = await self._connect(self.handle, False)
        try:
            have = await bus.get_all(HOSTNAME1, HOSTNAME1_PATH, HOSTNAME1)
        except ResourceError as err:
            raise ResourceError(f"cannot read the hostnames from {HOSTNAME1}: {err}") from err
        changes = self._plan(bus, have)
        if not changes:
            return nothing_to_do(self.handle, self._why)
        await apply_steps(self.handle, changes, apply)
        return False

    def _why(self) -> str:
        return ", ".join(
            f"{what} is {value!r}"
            for (param, _p, _s, what) in NAMES
            if (value := self._wanted().get(param)) is not None
        )

    def _plan(self, bus: Bus, have: dict[str, Any]) -> list[Step]:
        """What must change (no I/O). Setting the static name also resets the transient one
        (hostnamed does that), so a managed transient name is set again after it."""
        wanted = self._wanted()
        changes: list[Step] = []
        static_set = False
        for param, prop, setter, what in NAMES:
            value = wanted.get(param)
            if value is None:
                continue
            current = str(have.get(prop, ""))
            again = param == "transient_hostname" and static_set
            if current == value and not again:
                continue
            static_set = static_set or param == "static_hostname"
            run = functools.partial(
                bus.call,
                HOSTNAME1,
                HOSTNAME1_PATH,
                HOSTNAME1,
                setter,
                signature="sb",
                body=[value, False],
            )
            why = " again (setting the static hostname reset it)" if current == value else ""
            was = "" if why else f" (was {current!r})"
            changes.append(
                Step(
                    f"set the {what} to {value!r}{why}", f"{what} set to {value!r}{why or was}", run
                )
            )
        return changes


def _valid_hostname(name: str) -> bool:
    return len(name) <= HOSTNAME_MAX and all(_LABEL.fullmatch(lab) for lab in name.split("."))


def _hostname_changed(msg: Any) -> bool:
    interface, changed, invalidated = msg.body
    names = {"Hostname", "StaticHostname", "PrettyHostname"}
    return bool(interface == HOSTNAME1 and names & (set(changed) | set(invalidated)))
