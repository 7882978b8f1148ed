"""virt: the kind itself: its parameters, validation, and check_apply's plan of steps.

The plan is computed from the parameters and the observed domain without I/O (`_plan`); each
step then runs its libvirt calls (resources/virt/calls.py) in a worker thread on the shared
connection (resources/virt/pool.py). See resources/virt/__init__.py and docs/resources/virt.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from engine.errors import ResourceError, ValidationError
from engine.handle import Handle
from engine.params import EMPTY_IS_UNSET
from engine.resource import Refreshable, Resource, register
from resources._lib.plan import Step, apply_steps, nothing_to_do
from resources.virt import calls
from resources.virt.auth import VirtAuth
from resources.virt.calls import Attrs, Observed
from resources.virt.domain_xml import (
    CDRomDevice,
    DiskDevice,
    FilesystemDevice,
    NetworkDevice,
    build_domain_xml,
)
from resources.virt.lib import NeedsLibvirt, load_libvirt
from resources.virt.pool import Lease

STATES = ("running", "paused", "shutoff")
POLICIES = ("ignore", "ifneeded", "error")
BOOT_DEVICES = ("fd", "hd", "cdrom", "network")
FS_ACCESS = ("passthrough", "mapped", "squash")
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")


@register("virt")
@dataclass(kw_only=True, eq=False)
class VirtRes(NeedsLibvirt, Refreshable, Resource):
    # libvirt connection URI, e.g. "qemu:///session" or "test:///default". Default
    # "qemu:///system".
    uri: str = "qemu:///system"
    # Credentials libvirt asks for when the URI's transport needs them (username, password;
    # the password is never shown). Default None: none given.
    auth: VirtAuth | None = None
    # "running", "paused" or "shutoff". Default None: the run state is not managed.
    state: str | None = None
    # The domain is transient (exists only while it runs; transient + shutoff = absent) instead
    # of defined. Default false.
    transient: bool = False
    # vCPUs the domain should have (hot-plugged when running). Default None: not managed (a new
    # domain gets 1).
    cpus: int | None = None
    # vCPU slots (the maximum cpus can reach without a restart). Default None: not managed (a
    # new domain gets 32 with hotcpus, else cpus).
    maxcpus: int | None = None
    # Change the vCPU count of a running domain live (hot-plug/unplug). Default true.
    hotcpus: bool = True
    # Memory in KiB (current and maximum). Default None: not managed (a new domain gets
    # 524288).
    memory: int | None = None
    # The init program of an lxc:// container. Default None ("" too, as in mgmt).
    osinit: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # Boot order of a new domain: any of "fd", "hd", "cdrom", "network". Default none.
    boot: list[str] = field(default_factory=list)
    # Disk images of a new domain (vda, vdb...). Default none.
    disk: list[DiskDevice] = field(default_factory=list)
    # CD-ROM images of a new domain (hda, hdb...). Default none.
    cdrom: list[CDRomDevice] = field(default_factory=list)
    # Network interfaces of a new domain. Default none.
    network: list[NetworkDevice] = field(default_factory=list)
    # Shared host directories of a new domain. Default none.
    filesystem: list[FilesystemDevice] = field(default_factory=list)
    # What to do when a change needs a restart of the running domain: "ignore" (change the
    # persistent config only), "ifneeded" (restart it) or "error" (fail). Default "error" ("" too,
    # as in mgmt).
    restartondiverge: str = field(default="error", metadata=EMPTY_IS_UNSET)
    # Restart the running domain (graceful shutdown, start) when a refresh arrives. Default
    # false.
    restartonrefresh: bool = False
    # Seconds a graceful shutdown may take before the domain is destroyed; 0 = destroy at once.
    # Default 60.
    shutdowntimeout: float = 60.0

    def validate(self) -> None:
        super().validate()
        if "/" in self.name or any(c in self.name for c in "\n\t\0"):
            raise ValidationError(
                f"a domain name has no '/' or control characters, got {self.name!r}", "name"
            )
        parts = urlsplit(self.uri)
        if not parts.scheme:
            raise ValidationError(
                f"expected a libvirt URI like 'qemu:///system', got {self.uri!r}", "uri"
            )
        if self.state is not None and self.state not in STATES:
            raise ValidationError(
                f"expected one of {', '.join(STATES)}, got {self.state!r}", "state"
            )
        if self.restartondiverge not in POLICIES:
            raise ValidationError(
                f"expected one of {', '.join(POLICIES)}, got {self.restartondiverge!r}",
                "restartondiverge",
            )
        self._validate_sizes()
        for i, dev in enumerate(self.boot):
            if dev not in BOOT_DEVICES:
                raise ValidationError(
                    f"expected one of {', '.join(BOOT_DEVICES)}, got {dev!r}", f"boot[{i}]"
                )
        self._validate_devices()
        if self.osinit is not None and self._driver != "lxc":
            raise ValidationError(
                f"only an lxc:// URI uses an init program, got uri {self.uri!r}", "osinit"
            )
        if self.shutdowntimeout < 0:
            raise ValidationError(
                f"must be >= 0 seconds (0 = destroy at once), got {self.shutdowntimeout}",
                "shutdowntimeout",
            )

    def _validate_sizes(self) -> None:
        for key in ("cpus", "maxcpus", "memory"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValidationError(f"must be >= 1, got {value}", key)
        if self.cpus is not None and self.maxcpus is not None and self.cpus > self.maxcpus:
            raise ValidationError(
                f"{self.cpus} is more than maxcpus ({self.maxcpus}): raise maxcpus or lower cpus",
                "cpus",
            )

    def _validate_devices(self) -> None:
        lists: list[tuple[str, list[Any], tuple[str, ...]]] = [
            ("disk", self.disk, ("source", "type")),
            ("cdrom", self.cdrom, ("source", "type")),
            ("network", self.network, ("name",)),
            ("filesystem", self.filesystem, ("source", "target")),
        ]
        for key, devices, required in lists:
            for i, dev in enumerate(devices):
                for name in required:
                    if not getattr(dev, name):
                        raise ValidationError("must not be empty", f"{key}[{i}].{name}")
        for i, net in enumerate(self.network):
            if net.mac is not None and not _MAC.fullmatch(net.mac):
                raise ValidationError(
                    f"expected a MAC like 52:54:00:12:34:56, got {net.mac!r}", f"network[{i}].mac"
                )
        for i, fs in enumerate(self.filesystem):
            if fs.access is not None and fs.access not in FS_ACCESS:
                raise ValidationError(
                    f"expected one of {', '.join(FS_ACCESS)}, got {fs.access!r}",
                    f"filesystem[{i}].access",
                )

    async def init(self, handle: Handle) -> None:
        await super().init(handle)
        self._lease = Lease(handle.shared, self.uri, self.auth)
        await self._lease.get()
        handle.on_cleanup(self._lease.release)

    async def watch(self) -> None:
        await self._lease.watch(self.handle, self.name)

    async def check_apply(self, apply: bool) -> bool:
        log = self.handle.logger
        conn = await self._lease.get()
        libvirt = load_libvirt()
        try:
            obs = await conn.call(calls.observe, self.name)
        except libvirt.libvirtError as err:
            raise ResourceError(f"cannot inspect the domain: {err}") from err
        restart = self.handle.refresh() and self.restartonrefresh
        if self.handle.refresh() and not self.restartonrefresh:
            log.debug("refresh ignored: restartonrefresh is false")
        steps = self._plan(obs, restart)
        if not steps:
            return nothing_to_do(self.handle, functools.partial(self._why, obs))
        await apply_steps(self.handle, steps, apply, errors=(libvirt.libvirtError,))
        return False

    # the plan: what must change, from the params and the observed domain (no I/O) --------------

    def _plan(self, obs: Observed | None, restart: bool) -> list[Step]:
        if obs is None:
            return self._plan_missing(self.state)
        steps: list[Step] = []
        if obs.persistent and self.transient:
            steps.append(
                self._step(
                    "undefine",
                    "undefined" + (" (now transient)" if obs.active else ""),
                    calls.undefine,
                )
            )
            if not obs.active:
                return steps + self._plan_missing(self.state)
            obs = replace(obs, persistent=False, config=None)
        elif not obs.persistent and not self.transient:
            steps.append(
                self._step(
                    "define the running domain (make it persistent)",
                    "defined (now persistent)",
                    calls.persist,
                )
            )
            obs = replace(obs, persistent=True, config=obs.live)
        if not obs.active:
            return steps + self._config_steps(obs.config) + self._state_steps("shutoff", self.state)
        if self.state == "shutoff":
            return [*steps, self._stop_step("shut down"), *self._config_steps(obs.config)]
        return steps + self._plan_active(obs, restart)

    def _plan_active(self, obs: Observed, restart: bool) -> list[Step]:
        """A running (or paused) domain that is to stay up."""
        assert obs.live is not None
        needs = self._restart_reasons(obs.live)
        if restart or (needs and self.restartondiverge == "ifneeded"):
            why = "a refresh (restartonrefresh)" if restart else "; ".join(needs)
            stop = self._stop_step(f"shut down to restart it ({why})")
            target = self.state or obs.state
            if not obs.persistent:  # a stopped transient domain is gone: create it anew
                return [stop, *self._plan_missing(target)]
            return [stop, *self._config_steps(obs.config), *self._state_steps("shutoff", target)]
        if needs and self.restartondiverge == "error":
            raise ResourceError(
                f"{'; '.join(needs)}: that needs a restart and restartondiverge is 'error' "
                "(set it to 'ifneeded' to allow the restart, or 'ignore')"
            )
        if needs:
            self.handle.logger.debug(
                "restart needed but ignored (restartondiverge): %s", "; ".join(needs)
            )
        return (
            self._live_steps(obs.live)
            + self._config_steps(obs.config)
            + self._state_steps(obs.state, self.state)
        )

    def _plan_missing(self, state: str | None) -> list[Step]:
        """The domain does not exist: create or define it (transient + shutoff: leave it so)."""
        xml = self.domain_xml()
        if self.transient:
            if state == "shutoff":
                return []
            paused = state == "paused"
            what = "create the transient domain" + (" paused" if paused else "")
            return [
                self._conn_step(
                    what,
                    "created (transient, " + ("paused)" if paused else "running)"),
                    calls.create,
                    xml,
                    paused,
                )
            ]
        define = self._conn_step("define the domain", "defined", calls.define, xml)
        return [define, *self._state_steps("shutoff", state)]

    def _restart_reasons(self, live: Attrs) -> list[str]:
        """The changes a running domain cannot take live."""
        reasons = []
        if self.maxcpus is not None and live.maxcpus != self.maxcpus:
            reasons.append(
                f"maxcpus: the running domain has {live.maxcpus} vCPU slots, {self.maxcpus} wanted"
            )
        if self.cpus is not None and live.cpus != self.cpus:
            if not self.hotcpus:
                reasons.append(f"cpus: {live.cpus} -> {self.cpus} with hotcpus false")
            elif self.cpus > live.maxcpus:
                reasons.append(
                    f"cpus: {self.cpus} is more than the running domain's {live.maxcpus} vCPU slots"
                )
        if self.memory is not None and self.memory > live.maxmemory:
            reasons.append(
                f"memory: {self.memory} KiB is more than the running domain's maximum of {live.maxmemory} KiB"
            )
        return reasons

    def _live_steps(self, live: Attrs) -> list[Step]:
        steps = []
        if (
            self.cpus is not None
            and live.cpus != self.cpus
            and self.hotcpus
            and self.cpus <= live.maxcpus
        ):
            verb = "hot-plug" if self.cpus > live.cpus else "hot-unplug"
            steps.append(
                self._step(
                    f"{verb} cpus: {live.cpus} -> {self.cpus}",
                    f"cpus {verb}ged: {live.cpus} -> {self.cpus}",
                    calls.set_live_cpus,
                    self.cpus,
                )
            )
        if self.memory is not None and live.memory != self.memory and self.memory <= live.maxmemory:
            steps.append(
                self._step(
                    f"balloon memory: {live.memory} -> {self.memory} KiB",
                    f"memory ballooned: {live.memory} -> {self.memory} KiB",
                    calls.set_live_memory,
                    self.memory,
                )
            )
        return steps

    def _config_steps(self, config: Attrs | None) -> list[Step]:
        """Changes of the persistent definition (the next boot); none for a transient domain."""
        if config is None:
            return []
        steps = []
        maxcpus = self.maxcpus if self.maxcpus is not None else max(config.maxcpus, self.cpus or 0)
        cpus = self.cpus if self.cpus is not None else min(config.cpus, maxcpus)
        if (cpus, maxcpus) != (config.cpus, config.maxcpus):
            change = _changes(("cpus", config.cpus, cpus), ("maxcpus", config.maxcpus, maxcpus))
            steps.append(
                self._step(
                    f"set {change} in the persistent config",
                    f"persistent config: {change}",
                    calls.set_config_cpus,
                    config,
                    cpus,
                    maxcpus,
                    self._hotpluggable,
                )
            )
        memory = self.memory
        if memory is not None and (config.memory, config.maxmemory) != (memory, memory):
            change = _changes(
                ("memory", config.memory, memory), ("maxmemory", config.maxmemory, memory)
            )
            steps.append(
                self._step(
                    f"set {change} KiB in the persistent config",
                    f"persistent config: {change} KiB",
                    calls.set_config_memory,
                    config,
                    memory,
                )
            )
        return steps

    def _state_steps(self, current: str, target: str | None) -> list[Step]:
        if target is None or target == current:
            return []
        if current == "pmsuspended":
            raise ResourceError("the guest suspended itself (pmsuspended): wake it up first")
        steps = []
        if current == "crashed":
            steps.append(
                self._step(
                    "destroy the crashed domain", "destroyed (it had crashed)", calls.destroy
                )
            )
            current = "shutoff"
            if target == "shutoff":
                return steps
        if target == "shutoff":
            return [self._stop_step("shut down")]
        if current == "shutoff":
            paused = target == "paused"
            steps.append(
                self._step(
                    "start the domain" + (" paused" if paused else ""),
                    "started" + (" paused" if paused else ""),
                    calls.start,
                    paused,
                )
            )
        elif target == "running":
            steps.append(self._step("resume the domain", "resumed", calls.resume))
        else:
            steps.append(self._step("pause the domain", "paused", calls.suspend))
        return steps

    def _stop_step(self, what: str) -> Step:
        return Step(would=what, done="shut down", run=functools.partial(self._stop, what))

    def _step(self, would: str, done: str, fn: Callable[..., Any], *args: Any) -> Step:
        """A step that runs fn(domain, *args) in a worker thread."""

        async def run() -> None:
            conn = await self._lease.get()
            await conn.call(calls.on_domain, self.name, fn, *args)

        return Step(would=would, done=done, run=run)

    def _conn_step(self, would: str, done: str, fn: Callable[..., Any], *args: Any) -> Step:
        """A step that runs fn(connection, *args) in a worker thread."""

        async def run() -> None:
            conn = await self._lease.get()
            await conn.call(fn, *args)

        return Step(would=would, done=done, run=run)

    def _why(self, obs: Observed | None) -> str:
        if obs is None:
            return "domain absent (transient and shutoff)"
        kind = "persistent" if obs.persistent else "transient"
        attrs = obs.live or obs.config
        size = f", {attrs.cpus}/{attrs.maxcpus} cpus, {attrs.memory} KiB" if attrs else ""
        return f"domain {obs.state}, {kind}{size}, as wanted"

    # actions that are more than one libvirt call ------------------------------------------------

    async def _stop(self, what: str) -> str:
        """Shut the domain down; destroy it if it is still up after shutdowntimeout seconds.

        The wait is on the domain's lifecycle events (with the timeout), never a blocking call.
        """
        conn = await self._lease.get()
        changed = asyncio.Event()
        unsubscribe = await conn.subscribe(self.name, changed.set)
        try:
            if self.shutdowntimeout > 0:
                if not await conn.call(calls.on_domain, self.name, calls.request_shutdown):
                    return f"{what}: it was already off"
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.shutdowntimeout):
                        while await conn.call(calls.is_active, self.name):
                            await changed.wait()
                            changed.clear()
                        return f"{what}: done"
            if await conn.call(calls.is_active, self.name):
                await conn.call(calls.on_domain, self.name, calls.destroy)
            if self.shutdowntimeout > 0:
                return f"{what}: destroyed, it did not shut down within {self.shutdowntimeout:g}s"
            return f"{what}: destroyed (shutdowntimeout is 0)"
        finally:
            await unsubscribe()

    # helpers -------------------------------------------------------------------------------------

    @property
    def _driver(self) -> str:
        """The hypervisor driver of the URI: "qemu+ssh://h/system" -> "qemu"."""
        return urlsplit(self.uri).scheme.split("+")[0]

    @property
    def _hotpluggable(self) -> bool:
        """Mark vCPUs added to the config hot-pluggable (qemu only: others refuse the flag)."""
        return self.hotcpus and self._driver == "qemu"

    def domain_xml(self) -> str:
        """The libvirt XML of a new domain built from the parameters."""
        return build_domain_xml(self, self._driver)


def _changes(*changes: tuple[str, int, int]) -> str:
    """'cpus 2 -> 4, maxcpus 8 -> 16' for the values that differ."""
    return ", ".join(f"{name} {old} -> {new}" for name, old, new in changes if old != new)
