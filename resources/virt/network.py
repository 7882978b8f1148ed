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

check_apply runs as one blocking job in a worker thread on the shared connection
(resources/virt/pool.py): each step reads what it needs, as libvirt's state changes under it.
Watch: libvirt's network lifecycle events (defined, undefined, started, stopped); libvirt
gives none for a DHCP entry edited by someone else: that drift is repaired at the next event,
refresh or poll (`meta: {poll: N}`), as in mgmt.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import uuid as uuidlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from engine.errors import ResourceError, ValidationError
from engine.handle import Handle
from engine.params import EMPTY_IS_UNSET
from engine.resource import Groupable, Resource, register
from resources._lib.plan import nothing_to_do
from resources.virt import network_xml as nx
from resources.virt.auth import VirtAuth
from resources.virt.connection import Connection
from resources.virt.lib import load_libvirt
from resources.virt.pool import pool_of

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
class VirtNetworkRes(Groupable, Resource):
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
        self._conn: Connection | None = await pool_of(handle.shared).acquire(self.uri, self.auth)
        self._unwatch: Callable[[], Awaitable[None]] | None = None
        handle.on_cleanup(self._release)

    async def watch(self) -> None:
        if self._unwatch is not None:  # a restarted watch (meta rewatch)
            await self._unwatch()
        conn = await self._connection()
        changed = asyncio.Event()
        self._unwatch = await conn.subscribe(
            self.name, changed.set, self.handle.logger.debug, family="network"
        )
        self.handle.on_cleanup(self._unwatch)
        await self.handle.event()
        while True:
            await changed.wait()
            changed.clear()
            if conn.lost is not None:
                raise ResourceError(f"libvirt connection to {self.uri} lost: {conn.lost}")
            await self.handle.event()

    async def check_apply(self, apply: bool) -> bool:
        conn = await self._connection()
        libvirt = load_libvirt()
        job = _Converge(self, self._wanted, apply)
        try:
            changes = await conn.call(job.run)
        except (libvirt.libvirtError, ValueError) as err:
            raise ResourceError(str(err)) from err
        if not changes:
            return nothing_to_do(self.handle, job.why)
        for change in changes:
            self.handle.logger.info("%s", _done(change) if apply else f"would {change}")
        return False

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

    # helpers --------------------------------------------------------------------------------

    async def _connection(self) -> Connection:
        """The shared connection; a new one if the old one was lost."""
        if self._conn is None or self._conn.lost is not None:
            self._release()
            self._conn = await pool_of(self.handle.shared).acquire(self.uri, self.auth)
        return self._conn

    def _release(self) -> None:
        if self._conn is not None:
            pool_of(self.handle.shared).release(self._conn)
            self._conn = None


_PAST = {
    "add": "added",
    "create": "created",
    "define": "defined",
    "delete": "deleted",
    "disable": "disabled",
    "enable": "enabled",
    "modify": "modified",
    "redefine": "redefined",
    "start": "started",
    "stop": "stopped",
    "undefine": "undefined",
}


def _done(change: str) -> str:
    """'define the network' -> 'defined the network' (the log line of a change made)."""
    verb, _, rest = change.partition(" ")
    return f"{_PAST.get(verb, verb)} {rest}".replace("; restart it", "; restarted it")


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


class _Converge:
    """check_apply's blocking job (a worker thread): mgmt's sub-checks in its order, each
    reading the state it acts on. `run` returns the changes made (or, without apply, the
    first ones that would be: a missing network stops the list there)."""

    def __init__(self, res: VirtNetworkRes, want: nx.Wanted | None, apply: bool) -> None:
        self.res, self.want, self.apply = res, want, apply
        self.changes: list[str] = []
        self.why = ""

    def change(self, what: str, act: Callable[[], Any]) -> None:
        self.changes.append(what)
        if self.apply:
            act()

    def run(self, conn: Any) -> list[str]:
        libvirt = load_libvirt()
        res = self.res
        try:
            net = conn.networkLookupByName(res.name)
        except libvirt.libvirtError as err:
            if err.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
                raise
            net = None
        if net is None:
            if res.transient and res.state != "up":
                self.why = "network absent, as wanted" if res._removes else "no network to manage"
                return []
            net = self._add(conn)
            if net is None:  # noop: what follows depends on it
                return self.changes
        elif self._remove(net):
            return self.changes
        assert self.want is not None
        net = self._base(conn, net, self.want)
        if net is not None:
            self._entries(net, self.want)
            self._active(net)
            self._startup(net)
        self.why = f"network {res.name} {'up' if net and net.isActive() else 'down'}, as wanted"
        return self.changes

    def _add(self, conn: Any) -> Any:
        assert self.want is not None
        xml = nx.build(self.want)
        if self.res.transient:
            self.change("create the transient network (started)", lambda: None)
            return conn.networkCreateXML(xml) if self.apply else None
        self.change("define the network", lambda: None)
        if not self.apply:
            return None
        net = conn.networkDefineXML(xml)
        if self.res.state == "up":
            self.change("start the network", net.create)
        return net

    def _remove(self, net: Any) -> bool:
        """Stop and undefine as wanted; True if nothing is left to manage."""
        res = self.res
        active, persistent = bool(net.isActive()), bool(net.isPersistent())
        if active and res.state == "down":
            self.change("stop the network", net.destroy)
            active = False
        if persistent and res.transient:
            self.change("undefine the network", net.undefine)
            persistent = False
        if not active and not persistent:
            self.why = "network absent, as wanted"
            return True
        return res._removes

    def _views(self, net: Any) -> list[tuple[str, int]]:
        """The definitions to manage: (xml, update flags): the persistent one and the live
        one; a driver that cannot give the persistent one apart (the test driver) has one."""
        libvirt = load_libvirt()
        views = []
        active = bool(net.isActive())
        if net.isPersistent():
            try:
                inactive = net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)
            except libvirt.libvirtError as err:
                if err.get_error_code() not in (
                    libvirt.VIR_ERR_NO_SUPPORT,
                    libvirt.VIR_ERR_INVALID_ARG,
                ):
                    raise
                return [(net.XMLDesc(0), libvirt.VIR_NETWORK_UPDATE_AFFECT_CURRENT)]
            views.append((inactive, libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG))
        if active:
            views.append((net.XMLDesc(0), libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE))
        return views

    def _base(self, conn: Any, net: Any, want: nx.Wanted) -> Any:
        """Rewrite differing base fields (the persistent definition, restarting a running
        network; a transient one is created again). Returns the network to go on with."""
        res = self.res
        xml = net.XMLDesc(0) if res.transient or not net.isPersistent() else self._views(net)[0][0]
        diffs = nx.base_diff(nx.read(xml, want.ip), want)
        if not diffs:
            return net
        new = nx.rebase(xml, want)
        what = ", ".join(diffs)
        if res.transient or not net.isPersistent():
            self.change(f"create the network again ({what})", lambda: None)
            if not self.apply:
                return net
            net.destroy()
            return conn.networkCreateXML(new)
        active = bool(net.isActive())
        restart = active and res.state != "down"
        self.change(
            f"redefine the network ({what})" + ("; restart it" if restart else ""), lambda: None
        )
        if not self.apply:
            return net
        if active:  # stopped first: a driver may keep a running network's old definition
            net.destroy()
        net = conn.networkDefineXML(new)
        if restart:
            net.create()
        return net

    def _entries(self, net: Any, want: nx.Wanted) -> None:
        """DHCP hosts and ranges of every definition, by libvirt's incremental update."""
        libvirt = load_libvirt()
        section_host = libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST
        section_range = libvirt.VIR_NETWORK_SECTION_IP_DHCP_RANGE
        for xml, flags in self._views(net):
            found = nx.read(xml, want.ip)
            index = nx.owned_ip(found.ips, want.ip)
            parent = -1 if index is None else index
            where = {
                libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG: " (persistent)",
                libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE: " (live)",
            }.get(flags, "")

            def update(
                cmd: int, section: int, entry: str, flags: int = flags, parent: int = parent
            ) -> Callable[[], Any]:
                return lambda: net.update(cmd, section, parent, entry, flags)

            have = {h.mac: h for h in found.hosts}
            for host in want.hosts:
                old = have.get(host.mac)
                if old == host:
                    continue
                if old is None:
                    cmd, verb = libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, "add"
                else:
                    cmd, verb = libvirt.VIR_NETWORK_UPDATE_COMMAND_MODIFY, "modify"
                self.change(
                    f"{verb} dhcp host {host.mac} ({host.name}, {host.ip}){where}",
                    update(cmd, section_host, host.xml()),
                )
            if self.res.purge_hosts:
                wanted = {h.mac for h in want.hosts}
                for old in found.hosts:
                    if old.mac not in wanted:
                        self.change(
                            f"delete dhcp host {old.mac} ({old.name}, {old.ip}){where}",
                            update(
                                libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, section_host, old.xml()
                            ),
                        )
            for pool in want.ranges:
                if pool not in found.ranges:
                    self.change(
                        f"add dhcp range {pool}{where}",
                        update(
                            libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, section_range, pool.xml()
                        ),
                    )
            if self.res.purge_ranges:
                for old_range in found.ranges:
                    if old_range not in want.ranges:
                        self.change(
                            f"delete dhcp range {old_range}{where}",
                            update(
                                libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE,
                                section_range,
                                old_range.xml(),
                            ),
                        )

    def _active(self, net: Any) -> None:
        state, active = self.res.state, bool(net.isActive())
        if state == "up" and not active:
            self.change("start the network", net.create)
        elif state == "down" and active:
            self.change("stop the network", net.destroy)

    def _startup(self, net: Any) -> None:
        startup = self.res.startup
        if startup is None or not net.isPersistent():
            return
        want = startup == "enabled"
        if bool(net.autostart()) != want:
            self.change(
                f"{'enable' if want else 'disable'} startup on boot",
                lambda: net.setAutostart(int(want)),
            )
