"""virt: a libvirt domain (virtual machine): existence, persistence, run state, vCPUs, memory.

mgmt's virt. The domain is named after the resource. It is defined (or, `transient`, created)
from the parameters when missing; then its state is driven to `state`, its vCPU count to `cpus`
(hot-plugged into a running domain when `hotcpus` allows it) and its memory to `memory`.
Changes a running domain cannot take live are handled as `restartondiverge` says: `error`
(default: fail and say so), `ifneeded` (graceful shutdown, change, start again) or `ignore`
(change the persistent config for the next boot). A refresh restarts it with `restartonrefresh`.

Events: libvirt's lifecycle events (started, stopped, paused, defined...) arrive in the asyncio
loop through `libvirtaio`, never by polling. Every libvirt call runs in a worker thread
(`asyncio.to_thread`): the test driver answers in microseconds but a remote driver does a round
trip, and a graceful shutdown is awaited on events with a timeout, never by blocking the loop.
Connections are shared per URI and outlive their last user by LINGER seconds, so a graph swap
that replaces the resource keeps the connection (and the test driver's in-memory state).
See docs/resources/virt.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from engine.errors import ResourceError, ValidationError
from engine.handle import Handle
from engine.resource import RefreshableMixin, Resource, register

log = logging.getLogger("engine")

DEFAULT_MAXCPUS = 32  # vCPU slots of a new domain with hotcpus when maxcpus is not set (mgmt's)
DEFAULT_MEMORY = 524288  # KiB of a new domain when memory is not set (512 MiB)
LINGER = 10.0  # seconds an unused connection stays open: a graph swap keeps it
STATES = ("running", "paused", "shutoff")
POLICIES = ("ignore", "ifneeded", "error")
BOOT_DEVICES = ("fd", "hd", "cdrom", "network")
FS_ACCESS = ("passthrough", "mapped", "squash")
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
# libvirt's domain type per URI driver; any other driver's type is its name (test, lxc, xen...).
_DOMAIN_TYPES = {"qemu": "kvm", "libxl": "xen"}


# parameters of the device lists --------------------------------------------------------------


@dataclass(kw_only=True)
class DiskDevice:
    # Path of the disk image ("~" is expanded). Required.
    source: str
    # Image format given to the qemu driver, e.g. "qcow2". Default "raw".
    type: str = "raw"


@dataclass(kw_only=True)
class CDRomDevice:
    # Path of the ISO image ("~" is expanded). Required.
    source: str
    # Image format given to the qemu driver. Default "raw".
    type: str = "raw"


@dataclass(kw_only=True)
class NetworkDevice:
    # Name of the libvirt network the interface is attached to. Required.
    name: str
    # MAC address "52:54:00:xx:xx:xx". Default None: libvirt picks one when defining.
    mac: str | None = None


@dataclass(kw_only=True)
class FilesystemDevice:
    # Host directory shared with the guest ("~" is expanded). Required.
    source: str
    # Mount tag (qemu) or path (lxc) in the guest. Required.
    target: str
    # Access mode: passthrough, mapped or squash. Default None: libvirt's default.
    access: str | None = None
    # Share it read-only. Default false.
    read_only: bool = False


# what is observed and what is done -----------------------------------------------------------


@dataclass(frozen=True)
class Attrs:
    """vCPUs and memory of one definition (live or persistent config)."""

    cpus: int
    maxcpus: int
    memory: int  # KiB
    maxmemory: int  # KiB


@dataclass(frozen=True)
class Observed:
    """The domain as found: None instead of this means it does not exist."""

    persistent: bool
    state: str  # running, paused, shutoff, crashed or pmsuspended
    live: Attrs | None  # when active
    config: Attrs | None  # when persistent

    @property
    def active(self) -> bool:
        return self.state != "shutoff"


@dataclass(frozen=True)
class Step:
    """One change: how --noop describes it, the line logged once done, and how to do it."""

    would: str
    done: str
    run: Callable[[], Awaitable[str | None]]  # may return a more precise `done` line


@register("virt")
@dataclass(kw_only=True, eq=False)
class VirtRes(RefreshableMixin, Resource):
    # libvirt connection URI, e.g. "qemu:///session" or "test:///default". Default
    # "qemu:///system".
    uri: str = "qemu:///system"
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
    # The init program of an lxc:// container. Default None.
    osinit: str | None = None
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
    # persistent config only), "ifneeded" (restart it) or "error" (fail). Default "error".
    restartondiverge: str = "error"
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
        self._conn: Connection | None = None
        self._unwatch: Callable[[], Awaitable[None]] | None = None
        self._conn = await POOL.acquire(self.uri)
        handle.on_cleanup(self._release)

    async def watch(self) -> None:
        if self._unwatch is not None:  # a restarted watch (meta rewatch): drop the old one
            await self._unwatch()
        conn = await self._connection()
        changed = asyncio.Event()
        self._unwatch = await conn.subscribe(self.name, changed.set, self.handle.logger.debug)
        self.handle.on_cleanup(self._unwatch)
        await self.handle.event()
        while True:
            await changed.wait()
            changed.clear()
            if conn.lost is not None:
                raise ResourceError(f"libvirt connection to {self.uri} lost: {conn.lost}")
            await self.handle.event()

    async def check_apply(self, apply: bool) -> bool:
        log = self.handle.logger
        conn = await self._connection()
        libvirt = _libvirt()
        try:
            obs = await conn.call(_observe, self.name)
        except libvirt.libvirtError as err:
            raise ResourceError(f"cannot inspect the domain: {err}") from err
        restart = self.handle.refresh() and self.restartonrefresh
        if self.handle.refresh() and not self.restartonrefresh:
            log.debug("refresh ignored: restartonrefresh is false")
        steps = self._plan(obs, restart)
        if not steps:
            log.debug("nothing to do: %s", self._why(obs))
            return True
        for step in steps:
            if not apply:
                log.info("would %s", step.would)
                continue
            try:
                done = await step.run()
            except libvirt.libvirtError as err:
                raise ResourceError(f"could not {step.would}: {err}") from err
            log.info("%s", done or step.done)
        return False

    # the plan: what must change, from the params and the observed domain (no I/O) --------------

    def _plan(self, obs: Observed | None, restart: bool) -> list[Step]:
        if obs is None:
            return self._plan_missing(self.state)
        steps: list[Step] = []
        if obs.persistent and self.transient:
            steps.append(
                self._step(
                    "undefine", "undefined" + (" (now transient)" if obs.active else ""), _undefine
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
                    _persist,
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
                    _create,
                    xml,
                    paused,
                )
            ]
        define = self._conn_step("define the domain", "defined", _define, xml)
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
                    _set_live_cpus,
                    self.cpus,
                )
            )
        if self.memory is not None and live.memory != self.memory and self.memory <= live.maxmemory:
            steps.append(
                self._step(
                    f"balloon memory: {live.memory} -> {self.memory} KiB",
                    f"memory ballooned: {live.memory} -> {self.memory} KiB",
                    _set_live_memory,
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
                    _set_config_cpus,
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
                    _set_config_memory,
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
                self._step("destroy the crashed domain", "destroyed (it had crashed)", _destroy)
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
                    _start,
                    paused,
                )
            )
        elif target == "running":
            steps.append(self._step("resume the domain", "resumed", _resume))
        else:
            steps.append(self._step("pause the domain", "paused", _suspend))
        return steps

    def _stop_step(self, what: str) -> Step:
        return Step(would=what, done="shut down", run=functools.partial(self._stop, what))

    def _step(self, would: str, done: str, fn: Callable[..., Any], *args: Any) -> Step:
        """A step that runs fn(domain, *args) in a worker thread."""

        async def run() -> None:
            conn = await self._connection()
            await conn.call(_on_domain, self.name, fn, *args)

        return Step(would=would, done=done, run=run)

    def _conn_step(self, would: str, done: str, fn: Callable[..., Any], *args: Any) -> Step:
        """A step that runs fn(connection, *args) in a worker thread."""

        async def run() -> None:
            conn = await self._connection()
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
        conn = await self._connection()
        changed = asyncio.Event()
        unsubscribe = await conn.subscribe(self.name, changed.set)
        try:
            if self.shutdowntimeout > 0:
                if not await conn.call(_on_domain, self.name, _request_shutdown):
                    return f"{what}: it was already off"
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.shutdowntimeout):
                        while await conn.call(_is_active, self.name):
                            await changed.wait()
                            changed.clear()
                        return f"{what}: done"
            if await conn.call(_is_active, self.name):
                await conn.call(_on_domain, self.name, _destroy)
            if self.shutdowntimeout > 0:
                return f"{what}: destroyed, it did not shut down within {self.shutdowntimeout:g}s"
            return f"{what}: destroyed (shutdowntimeout is 0)"
        finally:
            await unsubscribe()

    # helpers -------------------------------------------------------------------------------------

    async def _connection(self) -> Connection:
        """The shared connection; a new one if the old one was lost (libvirtd restarted)."""
        if self._conn is None or self._conn.lost is not None:
            self._release()
            self._conn = await POOL.acquire(self.uri)
        return self._conn

    def _release(self) -> None:
        if self._conn is not None:
            POOL.release(self._conn)
            self._conn = None

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
        from xml.etree import ElementTree as ET

        driver = self._driver
        lxc = driver == "lxc"
        root = ET.Element("domain", type=_DOMAIN_TYPES.get(driver, driver))
        ET.SubElement(root, "name").text = self.name
        memory = str(self.memory or DEFAULT_MEMORY)
        ET.SubElement(root, "memory", unit="KiB").text = memory
        ET.SubElement(root, "currentMemory", unit="KiB").text = memory
        cpus = self.cpus or 1
        maxcpus = self.maxcpus or (max(DEFAULT_MAXCPUS, cpus) if self.hotcpus else cpus)
        ET.SubElement(root, "vcpu", placement="static", current=str(cpus)).text = str(maxcpus)
        hot = self.hotcpus and not lxc
        if hot:  # vCPU 0 stays; the others can come and go
            vcpus = ET.SubElement(root, "vcpus")
            for i in range(maxcpus):
                enabled = "yes" if i < cpus else "no"
                ET.SubElement(
                    vcpus, "vcpu", id=str(i), enabled=enabled, hotpluggable="yes" if i else "no"
                )
        os_ = ET.SubElement(root, "os")
        ET.SubElement(os_, "type").text = "exe" if lxc else "hvm"
        if lxc and self.osinit is not None:
            ET.SubElement(os_, "init").text = self.osinit
        for dev in self.boot:
            ET.SubElement(os_, "boot", dev=dev)
        if hot:
            ET.SubElement(ET.SubElement(root, "features"), "acpi")  # needed for CPU hot-plug
        self._devices_xml(ET.SubElement(root, "devices"), hot)
        return ET.tostring(root, encoding="unicode")

    def _devices_xml(self, devices: Any, hot: bool) -> None:
        from xml.etree import ElementTree as ET

        for i, disk in enumerate(self.disk):
            elem = ET.SubElement(devices, "disk", type="file", device="disk")
            ET.SubElement(elem, "driver", name="qemu", type=disk.type)
            ET.SubElement(elem, "source", file=os.path.expanduser(disk.source))
            ET.SubElement(elem, "target", dev="vd" + _letters(i), bus="virtio")
        for i, cdrom in enumerate(self.cdrom):
            elem = ET.SubElement(devices, "disk", type="file", device="cdrom")
            ET.SubElement(elem, "driver", name="qemu", type=cdrom.type)
            ET.SubElement(elem, "source", file=os.path.expanduser(cdrom.source))
            ET.SubElement(elem, "target", dev="hd" + _letters(i), bus="ide")
            ET.SubElement(elem, "readonly")
        for net in self.network:
            elem = ET.SubElement(devices, "interface", type="network")
            if net.mac is not None:
                ET.SubElement(elem, "mac", address=net.mac)
            ET.SubElement(elem, "source", network=net.name)
        for fs in self.filesystem:
            elem = ET.SubElement(devices, "filesystem")
            if fs.access is not None:
                elem.set("accessmode", fs.access)
            ET.SubElement(elem, "source", dir=os.path.expanduser(fs.source))
            ET.SubElement(elem, "target", dir=fs.target)
            if fs.read_only:
                ET.SubElement(elem, "readonly")
        if hot:  # the guest agent can bring hot-plugged vCPUs online
            channel = ET.SubElement(devices, "channel", type="unix")
            ET.SubElement(channel, "source", mode="bind")
            ET.SubElement(channel, "target", type="virtio", name="org.qemu.guest_agent.0")
        ET.SubElement(ET.SubElement(devices, "serial", type="pty"), "target", port="0")
        ET.SubElement(
            ET.SubElement(devices, "console", type="pty"), "target", type="serial", port="0"
        )


def _changes(*changes: tuple[str, int, int]) -> str:
    """'cpus 2 -> 4, maxcpus 8 -> 16' for the values that differ."""
    return ", ".join(f"{name} {old} -> {new}" for name, old, new in changes if old != new)


def _letters(index: int) -> str:
    """0 -> "a", 25 -> "z", 26 -> "aa" (disk target names)."""
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(ord("a") + rest) + name
    return name


# libvirt calls: plain blocking functions, run in a worker thread by Connection.call ------------


def _observe(conn: Any, name: str) -> Observed | None:
    """The domain as it is now; None if it does not exist (or vanished while being read)."""
    libvirt = _libvirt()
    try:
        return _read(conn.lookupByName(name))
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def _read(dom: Any) -> Observed:
    libvirt = _libvirt()
    code, _reason = dom.state()
    active = bool(dom.isActive())
    state = "shutoff"
    if active:
        state = {
            libvirt.VIR_DOMAIN_PAUSED: "paused",
            libvirt.VIR_DOMAIN_CRASHED: "crashed",
            libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
        }.get(code, "running")
    persistent = bool(dom.isPersistent())
    live = config = None
    if active:
        _state, maxmemory, memory, _cpus, _time = dom.info()
        live_flag = libvirt.VIR_DOMAIN_AFFECT_LIVE
        cpus = dom.vcpusFlags(live_flag)
        maxcpus = dom.vcpusFlags(live_flag | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
        live = Attrs(cpus=cpus, maxcpus=maxcpus, memory=memory, maxmemory=maxmemory)
    if persistent:
        config_flag = libvirt.VIR_DOMAIN_AFFECT_CONFIG
        memory, maxmemory = _config_memory(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        config = Attrs(
            cpus=dom.vcpusFlags(config_flag),
            maxcpus=dom.vcpusFlags(config_flag | libvirt.VIR_DOMAIN_VCPU_MAXIMUM),
            memory=memory,
            maxmemory=maxmemory,
        )
    return Observed(persistent=persistent, state=state, live=live, config=config)


def _config_memory(xml: str) -> tuple[int, int]:
    """(currentMemory, memory) in KiB from a domain's XML (libvirt writes them in KiB)."""
    from xml.etree import ElementTree as ET

    root = ET.fromstring(xml)
    maxmemory = int(root.findtext("memory") or 0)
    return int(root.findtext("currentMemory") or maxmemory), maxmemory


def _on_domain(conn: Any, name: str, fn: Callable[..., Any], *args: Any) -> Any:
    return fn(conn.lookupByName(name), *args)


def _define(conn: Any, xml: str) -> None:
    conn.defineXML(xml)


def _create(conn: Any, xml: str, paused: bool) -> None:
    libvirt = _libvirt()
    if not paused:
        conn.createXML(xml, 0)
        return
    try:
        conn.createXML(xml, libvirt.VIR_DOMAIN_START_PAUSED)
    except libvirt.libvirtError as err:
        if err.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
            raise
        conn.createXML(xml, 0).suspend()  # a driver without START_PAUSED (the test driver)


def _start(dom: Any, paused: bool) -> None:
    libvirt = _libvirt()
    if not paused:
        dom.create()
        return
    try:
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
    except libvirt.libvirtError as err:
        if err.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
            raise
        dom.create()  # a driver without START_PAUSED (the test driver)
        dom.suspend()


def _persist(dom: Any) -> None:
    dom.connect().defineXML(dom.XMLDesc(_libvirt().VIR_DOMAIN_XML_INACTIVE))


def _undefine(dom: Any) -> None:
    dom.undefine()


def _resume(dom: Any) -> None:
    dom.resume()


def _suspend(dom: Any) -> None:
    dom.suspend()


def _destroy(dom: Any) -> None:
    if dom.isActive():
        dom.destroy()


def _is_active(conn: Any, name: str) -> bool:
    """Whether the domain runs; False if it is gone (a stopped transient domain)."""
    libvirt = _libvirt()
    try:
        return bool(conn.lookupByName(name).isActive())
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        raise


def _request_shutdown(dom: Any) -> bool:
    """Ask the guest to shut down (resuming a paused one first); False if it was already off."""
    if not dom.isActive():
        return False
    if dom.state()[0] == _libvirt().VIR_DOMAIN_PAUSED:
        dom.resume()  # a paused guest cannot act on the request
    dom.shutdown()
    return True


def _set_live_cpus(dom: Any, cpus: int) -> None:
    dom.setVcpusFlags(cpus, _libvirt().VIR_DOMAIN_AFFECT_LIVE)


def _set_live_memory(dom: Any, memory: int) -> None:
    dom.setMemoryFlags(memory, _libvirt().VIR_DOMAIN_AFFECT_LIVE)


def _set_config_cpus(dom: Any, old: Attrs, cpus: int, maxcpus: int, hotpluggable: bool) -> None:
    libvirt = _libvirt()
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    count = flags | (libvirt.VIR_DOMAIN_VCPU_HOTPLUGGABLE if hotpluggable else 0)
    if maxcpus >= old.cpus:  # raise the maximum first, or lower the count first
        if maxcpus != old.maxcpus:
            dom.setVcpusFlags(maxcpus, flags | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
        dom.setVcpusFlags(cpus, count)
    else:
        dom.setVcpusFlags(cpus, count)
        dom.setVcpusFlags(maxcpus, flags | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)


def _set_config_memory(dom: Any, old: Attrs, memory: int) -> None:
    libvirt = _libvirt()
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    if memory >= old.memory:  # raise the maximum first, or lower the current size first
        dom.setMemoryFlags(memory, flags | libvirt.VIR_DOMAIN_MEM_MAXIMUM)
        dom.setMemoryFlags(memory, flags)
    else:
        dom.setMemoryFlags(memory, flags)
        dom.setMemoryFlags(memory, flags | libvirt.VIR_DOMAIN_MEM_MAXIMUM)


# the process-wide part: libvirt's event loop on asyncio, and the shared connections ----------


@functools.cache
def _libvirt() -> Any:
    """The libvirt module, imported on first use, with its stderr error printing turned off."""
    try:
        import libvirt
    except ImportError as err:
        raise ResourceError(
            f"the virt resource needs libvirt-python (pip install 'mgmt[virt]', "
            f"which builds against libvirt's headers: apt-get install libvirt-dev pkg-config): {err}"
        ) from err

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors are raised, not printed
    return libvirt


@functools.cache
def _impl_class() -> Any:
    import libvirtaio

    class ThreadSafeImpl(libvirtaio.virEventAsyncIOImpl):  # type: ignore[misc]
        """libvirtaio's implementation, safe for libvirt calls made in worker threads.

        libvirt calls these six functions from whichever thread runs an API call (the remote
        driver updates its socket watch, every driver arms its event-dispatch timer), while
        libvirtaio touches the asyncio loop directly, which only its own thread may do. From
        another thread each call is queued and handed to the loop (call_soon_threadsafe); ids of
        new handles and timers are given out at once. A call on the loop's thread first runs
        what is queued, so libvirt's order is kept. Free callbacks run as loop callbacks (not
        tasks) so that a closing loop still runs them.
        """

        def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
            super().__init__(loop=loop)
            self.thread = threading.get_ident()
            self._queue: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
            self._lock = threading.Lock()

        def rebind(self, loop: asyncio.AbstractEventLoop) -> None:
            """Move to another loop once the old one has stopped (tests run one loop each):
            timers and watched descriptors are armed again on the new loop."""
            self.loop = loop
            self.thread = threading.get_ident()
            self._queue.clear()
            self._pending = len(self.callbacks)
            for callback in self.callbacks.values():
                if isinstance(callback, libvirtaio.TimeoutCallback):
                    callback._task = None
                    callback.update(timeout=callback.timeout)
            for descriptor in self.descriptors.values():
                descriptor.update()

        def _later(self, fn: Callable[..., Any], *args: Any) -> None:
            with self._lock:
                self._queue.append((fn, args))
            self.loop.call_soon_threadsafe(self._flush)

        def _flush(self) -> None:
            while True:
                with self._lock:
                    if not self._queue:
                        return
                    fn, args = self._queue.popleft()
                try:
                    fn(*args)
                except Exception:  # one bad call must not hold up the rest
                    log.exception("libvirt event loop: %s failed", getattr(fn, "__name__", fn))

        def _here(self) -> bool:
            if threading.get_ident() != self.thread:
                return False
            self._flush()
            return True

        def _add_handle(self, fd: int, event: int, cb: Any, opaque: Any) -> int:
            if self._here():
                return super()._add_handle(fd, event, cb, opaque)  # type: ignore[no-any-return]
            callback = libvirtaio.FDCallback(self, cb, opaque, descriptor=None, event=event)
            self._later(self._attach_handle, callback, fd)
            return callback.iden  # type: ignore[no-any-return]

        def _attach_handle(self, callback: Any, fd: int) -> None:
            callback.descriptor = self.descriptors[fd]
            self.callbacks[callback.iden] = callback
            callback.descriptor.add_handle(callback)
            self._pending_inc()

        def _add_timeout(self, timeout: int, cb: Any, opaque: Any) -> int:
            if self._here():
                return super()._add_timeout(timeout, cb, opaque)  # type: ignore[no-any-return]
            callback = libvirtaio.TimeoutCallback(self, cb, opaque)
            self._later(self._attach_timeout, callback, timeout)
            return callback.iden  # type: ignore[no-any-return]

        def _attach_timeout(self, callback: Any, timeout: int) -> None:
            self.callbacks[callback.iden] = callback
            callback.update(timeout=timeout)
            self._pending_inc()

        def _update_handle(self, watch: int, event: int) -> None:
            if self._here():
                super()._update_handle(watch, event)
            else:
                self._later(self._if_known, super()._update_handle, watch, event)

        def _update_timeout(self, timer: int, timeout: int) -> None:
            if self._here():
                super()._update_timeout(timer, timeout)
            else:
                self._later(self._if_known, super()._update_timeout, timer, timeout)

        def _remove_handle(self, watch: int) -> int:
            if self._here():
                return super()._remove_handle(watch)  # type: ignore[no-any-return]
            self._later(self._if_known, super()._remove_handle, watch)
            return 0

        def _remove_timeout(self, timer: int) -> int:
            if self._here():
                return super()._remove_timeout(timer)  # type: ignore[no-any-return]
            self._later(self._if_known, super()._remove_timeout, timer)
            return 0

        def _if_known(self, fn: Callable[..., Any], iden: int, *args: Any) -> None:
            if iden in self.callbacks:
                fn(iden, *args)

        def schedule_ff_callback(self, iden: int, opaque: Any) -> None:
            self.loop.call_soon(self._free, opaque)

        def _free(self, opaque: Any) -> None:
            _libvirt().virEventInvokeFreeCallback(opaque)
            self._pending_dec()

    return ThreadSafeImpl


class _Events:
    """libvirt's event loop: one implementation per process, on the running asyncio loop."""

    def __init__(self) -> None:
        self.impl: Any = None

    def bind(self) -> bool:
        """Register (or move) the implementation on the running loop; True if it moved."""
        loop = asyncio.get_running_loop()
        if self.impl is None:
            _libvirt()
            try:
                self.impl = _impl_class()(loop).register()
            except RuntimeError as err:  # libvirt takes one implementation per process
                raise ResourceError(
                    f"another libvirt event loop is registered in this process: {err}"
                ) from err
            return False
        if self.impl.loop is loop:
            return False
        if self.impl.loop.is_running():
            raise ResourceError("libvirt's events are already bound to another running event loop")
        self.impl.rebind(loop)
        return True


EVENTS = _Events()


class Connection:
    """One shared libvirt connection, its users, and the domain-event subscriptions on it.

    libvirt refuses a second lifecycle callback on one connection ("event callback already
    tracked": it compares the C dispatcher, which libvirt-python shares), so there is one
    libvirt callback per connection, registered while anyone subscribes, dispatching by name.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.conn: Any = None
        self.users = 0
        self.lost: str | None = None  # why the connection was closed under us
        self.ready: asyncio.Future[None] | None = None
        self.linger: asyncio.TimerHandle | None = None
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._subs: dict[str, list[tuple[Callable[[], None], Callable[..., None] | None]]] = {}
        self._cid: int | None = None  # the libvirt callback id while registered
        self._lock = asyncio.Lock()

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(connection, *args) in a worker thread (a libvirt call may do a round trip)."""
        return await asyncio.to_thread(fn, self.conn, *args)

    async def subscribe(
        self, name: str, notify: Callable[[], None], log: Callable[..., None] | None = None
    ) -> Callable[[], Awaitable[None]]:
        """Call notify() on the loop for each lifecycle event of domain `name` (and if the
        connection is lost). Returns the (idempotent) unsubscribe coroutine function."""
        sub = (notify, log)
        self._subs.setdefault(name, []).append(sub)
        try:
            await self._register()
        except BaseException:
            self._drop(name, sub)
            raise
        done = False

        async def unsubscribe() -> None:
            nonlocal done
            if not done:
                done = True
                self._drop(name, sub)
                await self._deregister()

        return unsubscribe

    def subscribers(self) -> int:
        return sum(len(subs) for subs in self._subs.values())

    def callbacks(self) -> int:
        """How many domain-event callbacks libvirt-python tracks on this connection now."""
        return len(getattr(self.conn, "domainEventCallbackID", None) or {})

    def mark_lost(self, reason: int) -> None:
        self.lost = _CLOSE_REASONS.get(reason, f"reason {reason}")
        for subs in list(self._subs.values()):
            for notify, _log in list(subs):
                notify()

    def _drop(self, name: str, sub: tuple[Callable[[], None], Callable[..., None] | None]) -> None:
        subs = self._subs.get(name, [])
        if sub in subs:
            subs.remove(sub)
        if not subs:
            self._subs.pop(name, None)

    async def _register(self) -> None:
        libvirt = _libvirt()
        async with self._lock:
            if self._cid is None:
                self._cid = await self.call(
                    lambda conn: conn.domainEventRegisterAny(
                        None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_event, None
                    )
                )

    async def _deregister(self) -> None:
        libvirt = _libvirt()
        async with self._lock:
            if self._cid is None or self._subs:
                return
            cid, self._cid = self._cid, None
            if self.lost is None:
                with contextlib.suppress(libvirt.libvirtError):
                    await self.call(lambda conn: conn.domainEventDeregisterAny(cid))

    def _on_event(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        """libvirt's callback (dispatched from the loop's event timer)."""
        subs = self._subs.get(dom.name())  # name(): local, no round trip
        for notify, log in list(subs or ()):
            if log is not None:
                log("libvirt event: %s (detail %d)", _EVENT_NAMES.get(event, str(event)), detail)
            self._loop.call_soon_threadsafe(notify)


_EVENT_NAMES = {
    0: "defined",
    1: "undefined",
    2: "started",
    3: "suspended",
    4: "resumed",
    5: "stopped",
    6: "shutdown",
    7: "pmsuspended",
    8: "crashed",
}
_CLOSE_REASONS = {0: "error", 1: "end of file", 2: "keepalive timeout", 3: "closed by the client"}


class Pool:
    """The shared connections, one per URI; an unused one is closed after LINGER seconds."""

    def __init__(self) -> None:
        self._conns: dict[str, Connection] = {}
        self._closing: set[asyncio.Task[None]] = set()

    async def acquire(self, uri: str) -> Connection:
        if EVENTS.bind():
            self._forget_all()  # the previous loop is gone: start afresh
        entry = self._conns.get(uri)
        if entry is None:
            entry = Connection(uri)
            self._conns[uri] = entry
            entry.ready = asyncio.ensure_future(self._open(entry))
        entry.users += 1
        if entry.linger is not None:
            entry.linger.cancel()
            entry.linger = None
        assert entry.ready is not None
        try:
            await asyncio.shield(entry.ready)
        except BaseException:
            self.release(entry)
            raise
        return entry

    def release(self, entry: Connection) -> None:
        entry.users -= 1
        if entry.users or entry.ready is None or not entry.ready.done():
            return
        if entry.lost is not None:
            self._expire(entry)
        else:
            entry.linger = asyncio.get_running_loop().call_later(LINGER, self._expire, entry)

    @contextlib.asynccontextmanager
    async def connection(self, uri: str) -> AsyncIterator[Connection]:
        """`async with POOL.connection(uri) as conn:` the shared connection, released after."""
        entry = await self.acquire(uri)
        try:
            yield entry
        finally:
            self.release(entry)

    async def close_idle(self) -> None:
        """Close every unused connection now (tests; a clean shutdown)."""
        for entry in [e for e in self._conns.values() if e.users == 0]:
            self._expire(entry)
        if self._closing:
            await asyncio.gather(*self._closing)

    async def _open(self, entry: Connection) -> None:
        libvirt = _libvirt()
        loop = asyncio.get_running_loop()

        def on_close(_conn: Any, reason: int, _opaque: Any) -> None:
            loop.call_soon_threadsafe(self._lost, entry, reason)

        def connect() -> Any:
            conn = libvirt.open(entry.uri)
            with contextlib.suppress(libvirt.libvirtError):  # not every driver has one
                conn.registerCloseCallback(on_close, None)
            return conn

        try:
            entry.conn = await asyncio.to_thread(connect)
        except libvirt.libvirtError as err:
            if self._conns.get(entry.uri) is entry:
                del self._conns[entry.uri]
            raise ResourceError(f"cannot connect to {entry.uri}: {err}") from err
        if entry.users == 0:  # every acquirer gave up while it opened
            entry.linger = loop.call_later(LINGER, self._expire, entry)

    def _lost(self, entry: Connection, reason: int) -> None:
        if self._conns.get(entry.uri) is entry:
            del self._conns[entry.uri]
        entry.mark_lost(reason)

    def _expire(self, entry: Connection) -> None:
        """Close an unused connection (also one that was lost, or dropped by a failed open)."""
        if entry.users or entry.closed:
            return
        entry.closed = True
        if self._conns.get(entry.uri) is entry:
            del self._conns[entry.uri]
        if entry.linger is not None:
            entry.linger.cancel()
        if entry.conn is None:
            return
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(_close, entry.conn))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _forget_all(self) -> None:
        """Close the connections a previous event loop left (blocking: they are idle)."""
        entries, self._conns = list(self._conns.values()), {}
        for entry in entries:
            if entry.users:
                raise ResourceError(
                    f"libvirt connection to {entry.uri} still in use by another event loop"
                )
            entry.closed = True
            if entry.conn is not None:
                _close(entry.conn)


def _close(conn: Any) -> None:
    libvirt = _libvirt()
    with contextlib.suppress(libvirt.libvirtError):
        conn.unregisterCloseCallback()
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()


POOL = Pool()
