"""virt:network, virt:network:host, virt:network:range: a libvirt network and its DHCP entries
(mgmt's). See docs/resources/virt_network.md.

`virt:network` is a libvirt network (named after the resource): defined or transient, up or
down, started on boot or not, its bridge, MAC, NAT mode and router address. `virt:network:host`
(a static DHCP reservation) and `virt:network:range` (a dynamic pool) group into the network
they name (`network`, or the only one) as in mgmt: the network's vertex manages them as DHCP
entries of its definition through libvirt's incremental update (no restart), in the live
network and in the persistent definition; `purge_hosts`/`purge_ranges` delete the entries no
resource declares. Base fields that differ are rewritten in the definition and a running
network is restarted to take them.

check_apply reads the network once (resources/virt/network_calls.py, in a worker thread on
the shared connection, resources/virt/pool.py), works out its steps without I/O (`_plan`), then
applies them, each a blocking libvirt call in a worker thread.
Watch: libvirt's network lifecycle events (defined, undefined, started, stopped); libvirt
gives none for a DHCP entry edited by someone else: that drift is repaired at the next event,
refresh or poll (`meta: {poll: N}`), as in mgmt.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.errors import ResourceError, ValidationError
from engine.handle import Handle
from engine.params import EMPTY_IS_UNSET
from engine.resource import Groupable, Resource, register
from resources._lib.plan import Step, apply_steps, nothing_to_do
from resources.virt import network_calls as netcalls
from resources.virt import network_xml as nx
from resources.virt.auth import VirtAuth
from resources.virt.connection import Connection
from resources.virt.lib import NeedsLibvirt, load_libvirt
from resources.virt.pool import Lease

STATES = ("up", "down")
STARTUPS = ("enabled", "disabled")
MODES = ("nat",)  # mgmt supports only nat so far
DEFAULT_DEVICE = "virbr0"
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def _mac(value: str, key: str) -> None:
    if not _MAC.fullmatch(value):
        raise ValidationError(
            f"expected a lower-case MAC like 52:54:00:12:34:56, got {value!r}", key
        )


def _interface(value: str, key: str) -> ipaddress.IPv4Interface:
    try:
        if "/" not in value:
            raise ValueError(value)
        return ipaddress.IPv4Interface(value)
    except ValueError:
        raise ValidationError(
            f"expected an IPv4 address with its prefix like 192.168.42.1/24, got {value!r}", key
        ) from None


def _address(value: str, key: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise ValidationError(f"expected an IPv4 address, got {value!r}", key) from None


@register("virt:network:host")
@dataclass(kw_only=True, eq=False)
class VirtNetworkHostRes(Groupable, Resource):
    """A static DHCP reservation, grouped into its virt:network (which does the work)."""

    # The virt:network (its name) to group into. Default None: the only one of the graph.
    network: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # The DHCP host name (`name=`). Default None: the resource name.
    hostname: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # The host's MAC, lower case with colons. Required.
    mac: str
    # Its IPv4 address with the network's prefix, e.g. 192.168.42.7/24. Required.
    ip: str

    def validate(self) -> None:
        super().validate()
        _mac(self.mac, "mac")
        _interface(self.ip, "ip")

    async def check_apply(self, apply: bool) -> bool:
        return nothing_to_do(self.handle, "not grouped into a virt:network: nothing manages it")

    def group_cmp(self, other: Resource) -> bool:
        return False  # it groups into a network, never the other way round

    def entry(self) -> nx.Host:
        return nx.Host(self.mac, self.hostname or self.name, str(_interface(self.ip, "ip").ip))


@register("virt:network:range")
@dataclass(kw_only=True, eq=False)
class VirtNetworkRangeRes(Groupable, Resource):
    """A dynamic DHCP pool, grouped into its virt:network (which does the work)."""

    # The virt:network (its name) to group into. Default None: the only one of the graph.
    network: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # The first IPv4 address of the pool. Required.
    start: str
    # The last one (inclusive, not below start). Required.
    end: str

    def validate(self) -> None:
        super().validate()
        if _address(self.start, "start") > _address(self.end, "end"):
            raise ValidationError(f"{self.start} is above end {self.end}", "start")

    async def check_apply(self, apply: bool) -> bool:
        return nothing_to_do(self.handle, "not grouped into a virt:network: nothing manages it")

    def group_cmp(self, other: Resource) -> bool:
        return False

    def entry(self) -> nx.Range:
        return nx.Range(self.start, self.end)


@register("virt:network")
@dataclass(kw_only=True, eq=False)
class VirtNetworkRes(NeedsLibvirt, Groupable, Resource):
    # libvirt connection URI. Default "qemu:///system".
    uri: str = "qemu:///system"
    # Credentials for the connection (as virt's). Default None.
    auth: VirtAuth | None = None
    # "up" or "down". Default None: not managed.
    state: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # Transient (never defined; with state down: absent) instead of defined. Default false.
    transient: bool = False
    # Started when libvirt starts: "enabled" or "disabled". Default None: not managed.
    startup: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # The network's UUID. Default None: libvirt picks one when defining.
    uuid: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # The bridge device. Default None: virbr0 (mgmt's).
    device: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # The forward mode: only "nat" (mgmt's). Default None: nat.
    mode: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # The bridge's MAC, lower case with colons. Required unless transient and down.
    mac: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # The router's IPv4 address with the prefix, e.g. 192.168.42.1/24. Required as mac.
    ip: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # Delete DHCP host entries no grouped virt:network:host declares. Default false.
    purge_hosts: bool = False
    # Delete DHCP ranges no grouped virt:network:range declares. Default false.
    purge_ranges: bool = False

    def validate(self) -> None:
        super().validate()
        if "/" in self.name:
            raise ValidationError(f"a network name has no '/', got {self.name!r}", "name")
        for key, value, allowed in (
            ("state", self.state, STATES),
            ("startup", self.startup, STARTUPS),
            ("mode", self.mode, MODES),
        ):
            if value is not None and value not in allowed:
                raise ValidationError(f"expected one of {', '.join(allowed)}, got {value!r}", key)
        if self.transient and self.startup is not None:
            raise ValidationError("a transient network is not started on boot", "startup")
        if self.uuid is not None:
            try:
                uuidlib.UUID(self.uuid)
            except ValueError:
                raise ValidationError(f"expected a UUID, got {self.uuid!r}", "uuid") from None
        if self._removes:
            return
        for key in ("mac", "ip"):
            if getattr(self, key) is None:
                raise ValidationError("is required (unless transient with state down)", key)
        assert self.mac is not None and self.ip is not None
        _mac(self.mac, "mac")
        iface = _interface(self.ip, "ip")
        _usable(iface.ip, iface.network, "ip")

    async def init(self, handle: Handle) -> None:
        await super().init(handle)
        self._wanted = None if self._removes else self.wanted()  # checks the grouped ones
        self._lease = Lease(handle.shared, self.uri, self.auth)
        await self._lease.get()
        handle.on_cleanup(self._lease.release)

    async def watch(self) -> None:
        await self._lease.watch(self.handle, self.name, family="network")

    async def check_apply(self, apply: bool) -> bool:
        conn = await self._lease.get()
        libvirt = load_libvirt()
        try:
            obs = await conn.call(netcalls.observe, self.name)
            steps = self._plan(conn, obs)
        except (libvirt.libvirtError, ValueError) as err:
            raise ResourceError(f"cannot inspect the network: {err}") from err
        if not steps:
            return nothing_to_do(self.handle, lambda: _why(self.name, obs))
        await apply_steps(self.handle, steps, apply, errors=(libvirt.libvirtError,))
        return False

    # the plan: what must change, from the params and the observed network (no I/O) -------

    def _plan(self, conn: Connection, obs: netcalls.Observed | None) -> list[Step]:
        """mgmt's sub-checks in its order: removal, creation, base fields, DHCP entries, run
        state, startup."""
        if obs is None:
            return [] if self.transient and self.state != "up" else self._plan_missing(conn)
        steps: list[Step] = []
        active, persistent = obs.active, obs.persistent
        if active and self.state == "down":
            steps.append(self._step(conn, "stop the network", "stopped the network", "destroy"))
            active = False
        if persistent and self.transient:
            steps.append(
                self._step(conn, "undefine the network", "undefined the network", "undefine")
            )
            persistent = False
        if (not active and not persistent) or self._removes:
            return steps
        want = self._wanted
        assert want is not None
        diffs = nx.base_diff(nx.read(obs.base_xml, want.ip), want)
        if diffs:
            steps.append(self._rebase_step(conn, obs, diffs, active=active, persistent=persistent))
            active = active or self.state == "up"
        else:
            views = [v for v in obs.views if active or v.flags != netcalls.LIVE]
            steps += self._entry_steps(conn, views, want)
            if self.state == "up" and not active:
                steps.append(self._step(conn, "start the network", "started the network", "create"))
        return steps + self._startup_steps(conn, obs.autostart if persistent else None)

    def _plan_missing(self, conn: Connection) -> list[Step]:
        want = self._wanted
        assert want is not None
        xml = nx.build(want)
        if self.transient:
            run = _call(conn, netcalls.create, xml)
            return [Step("create the transient network", "created the network", run, True)]
        steps = [
            Step(
                "define the network", "defined the network", _call(conn, netcalls.define, xml), True
            )
        ]
        if self.state == "up":
            steps.append(self._step(conn, "start the network", "started the network", "create"))
        return steps + self._startup_steps(conn, False)

    def _rebase_step(
        self,
        conn: Connection,
        obs: netcalls.Observed,
        diffs: list[str],
        *,
        active: bool,
        persistent: bool,
    ) -> Step:
        """The base fields (and the DHCP entries with them) rewritten in the definition: a
        persistent network is stopped, redefined and started again (a running one cannot take
        them live); a transient one is created again."""
        want = self._wanted
        assert want is not None
        xml, entries = nx.rebase(obs.base_xml, want, self.purge_hosts, self.purge_ranges)
        what = ", ".join(diffs + entries)
        if not persistent:
            run = _call(conn, netcalls.recreate, self.name, xml)
            return Step(
                f"create the network again ({what})",
                f"created the network again ({what})",
                run,
                True,
            )
        start = active or self.state == "up"
        run = _call(conn, netcalls.redefine, self.name, xml, start)
        would = f"redefine the network ({what})" + ("; restart it" if active else "")
        done = f"redefined the network ({what})" + ("; restarted it" if active else "")
        return Step(would, done, run, True)

    def _entry_steps(
        self, conn: Connection, views: list[netcalls.View], want: nx.Wanted
    ) -> list[Step]:
        """DHCP hosts and ranges of each definition, by libvirt's incremental update."""
        steps = []
        for view in views:
            found = nx.read(view.xml, want.ip)
            index = nx.owned_ip(found.ips, want.ip)
            parent = -1 if index is None else index
            for verb, section, entry in nx.entry_changes(
                found, want, self.purge_hosts, self.purge_ranges
            ):
                text = f"{entry.describe()}{view.where}"
                update = functools.partial(
                    netcalls.update,
                    verb=verb,
                    section=section,
                    parent=parent,
                    xml=entry.xml(),
                    flags=view.flags,
                )
                run = _call(conn, update, self.name)
                steps.append(Step(f"{verb} {text}", f"{_PAST[verb]} {text}", run, True))
        return steps

    def _startup_steps(self, conn: Connection, autostart: bool | None) -> list[Step]:
        """Autostart of a persistent network (`autostart` None: it is transient)."""
        if self.startup is None or autostart is None or autostart == (self.startup == "enabled"):
            return []
        on = self.startup == "enabled"
        verb = "enable" if on else "disable"
        run = _call(conn, netcalls.set_autostart, self.name, on)
        return [Step(f"{verb} startup on boot", f"{verb}d startup on boot", run, True)]

    def _step(self, conn: Connection, would: str, done: str, method: str) -> Step:
        return Step(would, done, _call(conn, netcalls.on_network, self.name, method), True)

    def group_cmp(self, other: Resource) -> bool:
        """A host or range that names this network, or names none."""
        return isinstance(other, VirtNetworkHostRes | VirtNetworkRangeRes) and other.network in (
            None,
            self.name,
        )

    # what is wanted -----------------------------------------------------------------------

    @property
    def _removes(self) -> bool:
        """Transient and down: the network must not exist; nothing else is managed."""
        return self.transient and self.state == "down"

    def wanted(self) -> nx.Wanted:
        """The network with its grouped hosts and ranges; ResourceError if they do not fit it
        (mgmt's Init checks: duplicates, the subnet, overlaps)."""
        assert self.mac is not None and self.ip is not None
        iface = _interface(self.ip, "ip")
        hosts = [g for g in self.grouped if isinstance(g, VirtNetworkHostRes)]
        ranges = [g for g in self.grouped if isinstance(g, VirtNetworkRangeRes)]
        taken: dict[str, str] = {str(iface.ip): str(self)}
        macs: dict[str, str] = {}
        for host in hosts:
            entry = host.entry()
            if host.mac in macs:
                raise ResourceError(f"{host}: mac {host.mac} is already {macs[host.mac]}'s")
            if entry.ip in taken:
                raise ResourceError(f"{host}: ip {entry.ip} is already {taken[entry.ip]}'s")
            if _interface(host.ip, "ip").network.prefixlen != iface.network.prefixlen:
                raise ResourceError(f"{host}: ip {host.ip} has another prefix than {self.ip}")
            _usable(ipaddress.IPv4Address(entry.ip), iface.network, f"{host}: ip", ResourceError)
            macs[host.mac], taken[entry.ip] = str(host), str(host)
        spans: list[tuple[ipaddress.IPv4Address, ipaddress.IPv4Address, str]] = []
        for pool in ranges:
            start, end = ipaddress.IPv4Address(pool.start), ipaddress.IPv4Address(pool.end)
            _usable(start, iface.network, f"{pool}: start", ResourceError)
            _usable(end, iface.network, f"{pool}: end", ResourceError)
            for ip, owner in taken.items():
                if start <= ipaddress.IPv4Address(ip) <= end:
                    raise ResourceError(f"{pool}: the range holds {ip}, {owner}'s")
            for other_start, other_end, other in spans:
                if start <= other_end and other_start <= end:
                    raise ResourceError(f"{pool}: the range overlaps {other}'s")
            spans.append((start, end, str(pool)))
        return nx.Wanted(
            name=self.name,
            uuid=self.uuid,
            mode=self.mode or "nat",
            device=self.device or DEFAULT_DEVICE,
            mac=self.mac,
            ip=iface,
            hosts=tuple(h.entry() for h in hosts),
            ranges=tuple(r.entry() for r in ranges),
        )


def _usable(
    ip: ipaddress.IPv4Address,
    net: ipaddress.IPv4Network,
    key: str,
    error: type[Exception] = ValidationError,
) -> None:
    """`ip` is a host address of `net` (not its network or broadcast address)."""
    if ip not in net or (net.prefixlen < 31 and ip in (net.network_address, net.broadcast_address)):
        message = f"{ip} is not a usable address of {net}"
        if error is ValidationError:
            raise ValidationError(message, key)
        raise error(f"{key} {message}")


_PAST = {"add": "added", "modify": "modified", "delete": "deleted"}


def _call(conn: Connection, fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    """A step's run: fn(libvirt connection, *args), blocking (Step.slow: a worker thread)."""
    return lambda: fn(conn.conn, *args)


def _why(name: str, obs: netcalls.Observed | None) -> str:
    if obs is None:
        return f"network {name} absent, as wanted"
    how = "defined" if obs.persistent else "transient"
    return f"network {name} {'up' if obs.active else 'down'}, {how}, as wanted"
