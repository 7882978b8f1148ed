"""net: a network interface's state, addresses and default gateway (mgmt's net).

As in mgmt, sub-checks ANDed: the systemd-networkd file `mgmt-<name>.network` (written for
`up`, removed for `down`, so the setting survives a reboot), the link state, the addresses
(extra ones removed; link-local ones are the kernel's and left alone) and the default
gateway. The running state is read and changed with iproute2 (`ip -j ...`, argv lists with a
timeout). The watch is a netlink socket subscribed to link, address and route changes (the
kernel's own events, on the event loop, no thread) and inotify on the networkd file.
$MGMT_NETWORKD_DIR overrides /etc/systemd/network (tests, chroots). See docs/resources/net.md.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import shutil
import socket
import struct
import sys
from dataclasses import dataclass, field
from typing import Any, Literal

from engine import safefs
from engine.errors import ResourceError, ValidationError
from engine.params import EMPTY_IS_UNSET
from engine.resource import Resource, register
from engine.watcher import PathWatcher
from resources._lib.events import pump_events
from resources._lib.ifname import check_interface_name
from resources._lib.missing import Missing, would_wait
from resources._lib.netlink import (
    NETLINK_ROUTE,
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV4_ROUTE,
    RTMGRP_IPV6_IFADDR,
    RTMGRP_IPV6_ROUTE,
    RTMGRP_LINK,
    Netlink,
)
from resources._lib.plan import Step, apply_steps, nothing_to_do
from resources._lib.proc import run_command

IP_TIMEOUT = 30
PREFIX = "mgmt-"
# rtnetlink multicast groups: links, addresses and routes of both families (the IPv6 routes
# since 2026-12-06: an IPv6 default gateway deleted by hand was no event).
GROUPS = (
    RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE
)


def networkd_dir() -> str:
    return os.environ.get("MGMT_NETWORKD_DIR") or "/etc/systemd/network"


@register("net")
@dataclass(kw_only=True, eq=False)
class NetRes(Resource):
    # "up" or "down". Default None: the link state is not managed (nor the networkd file).
    state: Literal["up", "down"] | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # Addresses in CIDR form ("192.0.2.42/24"); others are removed. Default None: not managed.
    addrs: list[str] | None = None
    # The default gateway through this interface. Default None: not managed.
    gateway: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # IPForward= in the networkd file. Default None: not written.
    ip_forward: bool | None = None

    _seen = -1  # the index of its interface when last looked up (`_concerns`)

    @property
    def _file(self) -> str:
        return os.path.join(networkd_dir(), f"{PREFIX}{self.name}.network")

    def validate(self) -> None:
        super().validate()
        check_interface_name(self.name, "name")
        for index, addr in enumerate(self.addrs or []):
            try:
                ipaddress.ip_interface(addr)
            except ValueError:
                raise ValidationError(
                    f"expected an address in CIDR form (192.0.2.42/24), got {addr!r}",
                    f"addrs[{index}]",
                ) from None
            if "/" not in addr:
                raise ValidationError(
                    f"expected a prefix length (/24), got {addr!r}", f"addrs[{index}]"
                )
        interfaces = [ipaddress.ip_interface(addr) for addr in self.addrs or []]
        for index, interface in enumerate(interfaces):
            if interface.ip in [other.ip for other in interfaces[:index]]:
                raise ValidationError(f"{interface.ip} is given twice", f"addrs[{index}]")
        if self.gateway is not None:
            try:
                gateway = ipaddress.ip_address(self.gateway)
            except ValueError:
                raise ValidationError(
                    f"expected an IP address, got {self.gateway!r}", "gateway"
                ) from None
            # Off every subnet of its family, the route is refused by the kernel ("Nexthop has
            # invalid gateway"), and the networkd file written for boot holds it too. An IPv6
            # link-local gateway is on every link.
            same = [i.network for i in interfaces if i.version == gateway.version]
            if same and not gateway.is_link_local and not any(gateway in n for n in same):
                raise ValidationError(
                    f"{self.gateway} is in none of the subnets of addrs "
                    f"({', '.join(map(str, same))}): the kernel would refuse the route",
                    "gateway",
                )

    async def watch(self) -> None:
        kernel_events = Netlink(NETLINK_ROUTE, GROUPS, self._concerns)
        async with kernel_events as kernel, PathWatcher([self._file]) as unit:
            await self.handle.event()
            await pump_events(self.handle, [kernel, unit])

    def _concerns(self, data: bytes) -> bool:
        """Whether a datagram of rtnetlink messages may change what this resource checks:
        a link message of its interface (by index, or by name: made, renamed), an address
        message of its interface not of link scope (those are the kernel's, left alone: an
        IPv6 link-local address's DAD ends ~1 s after a link comes up), a default route
        message of its interface; any message it cannot read. Before 2026-12-06 every
        message woke it, of every interface: a --noop run said its `would ...` lines again
        at each (dhcp1: three times, a veth's and its peer's link-local addresses). mgmt's
        net watch notes the same open problem in a comment ("gets events from ALL interfaces")."""
        try:
            index = self._seen = socket.if_nametoindex(self.name)
        except OSError:
            index = -1  # not there (now): only a link message naming it, or the interface
            # it named last (renamed, deleted), is news
        seen = self._seen
        offset, end = 0, len(data)
        while offset + _NLMSG.size <= end:
            length, kind = _NLMSG.unpack_from(data, offset)
            if length < _NLMSG.size or offset + length > end:
                return True  # not readable: re-read
            body = offset + _NLMSG.size
            if kind in _LINK_MESSAGES:
                if length < _NLMSG.size + _IFINFO.size:
                    return True
                if _IFINFO.unpack_from(data, body)[0] in (index, seen):
                    return True
                name = _attribute(data, body + _IFINFO.size, offset + length, _IFLA_IFNAME)
                if name is None or name.rstrip(b"\0") == self.name.encode():
                    return True
            elif kind in _ADDR_MESSAGES:
                if length < _NLMSG.size + _IFADDR.size:
                    return True
                scope, owner = _IFADDR.unpack_from(data, body)
                # The gateway's too: an IPv4 default route goes with the address that made
                # its gateway reachable, and no route message says so.
                managed = self.addrs is not None or self.gateway is not None
                if owner == index and scope != _RT_SCOPE_LINK and managed:
                    return True
            elif kind in _ROUTE_MESSAGES:
                if length < _NLMSG.size + _RTMSG.size:
                    return True
                dst_len = data[body + 1]
                oif = _attribute(data, body + _RTMSG.size, offset + length, _RTA_OIF)
                ours = oif is None or int.from_bytes(oif[:4], sys.byteorder) == index
                if self.gateway is not None and dst_len == 0 and ours:
                    return True
            elif kind not in _QUIET_MESSAGES:
                return True
            offset += (length + 3) & ~3
        return False

    async def check_apply(self, apply: bool) -> bool:
        try:
            link = await self._ip("-j", "link", "show", "dev", self.name, missing_ok=True)
            if not link:
                raise Missing(f"there is no interface {self.name}")
        except Missing as err:
            return await would_wait(self.handle, err, apply, f"configure {self.name}")
        steps = self._unit_steps()
        up = "UP" in link[0].get("flags", [])
        if self.state is not None and up != (self.state == "up"):
            steps.append(
                self._ip_step(
                    f"bring {self.name} {self.state}",
                    f"brought {self.name} {self.state}",
                    ["link", "set", "dev", self.name, self.state],
                )
            )
        if self.state != "down":
            steps += await self._addr_steps()
            steps += await self._gateway_steps()
        if not steps:
            return nothing_to_do(self.handle, f"{self.name} is as wanted")
        await apply_steps(self.handle, steps, apply)
        return False

    def _unit(self) -> str:
        lines = ["[Match]", f"Name={self.name}", "[Network]"]
        lines += [f"Address={addr}" for addr in self.addrs or []]
        if self.gateway is not None:
            lines.append(f"Gateway={self.gateway}")
        if self.ip_forward is not None:
            lines.append(f"IPForward={'true' if self.ip_forward else 'false'}")
        return "\n".join(lines)  # mgmt's content, byte for byte (no final newline)

    def _unit_steps(self) -> list[Step]:
        if self.state is None:
            return []
        parent, name = os.path.split(self._file)
        try:
            with safefs.closing(safefs.open_dir(parent)) as dir_fd:
                have = safefs.read_at(dir_fd, name, 1 << 20)
        except FileNotFoundError:
            have = None
        if self.state == "down":
            if have is None:
                return []
            remove = functools.partial(_remove, self._file)
            return [Step(f"remove {self._file}", f"removed {self._file}", remove, slow=True)]
        wanted = self._unit().encode()
        if have == wanted:
            return []
        write = functools.partial(safefs.write_file, self._file, wanted, 0o644)
        return [Step(f"write {self._file}", f"wrote {self._file}", write, slow=True)]

    async def _addr_steps(self) -> list[Step]:
        if self.addrs is None:
            return []
        shown = await self._ip("-j", "addr", "show", "dev", self.name)
        have = {
            f"{info['local']}/{info['prefixlen']}"
            for entry in shown
            for info in entry.get("addr_info", [])
            if info.get("scope") != "link"
        }
        wanted = {str(ipaddress.ip_interface(a)) for a in self.addrs}
        steps = [
            self._ip_step(
                f"remove {addr} from {self.name}",
                f"removed {addr} from {self.name}",
                ["addr", "del", addr, "dev", self.name],
            )
            for addr in sorted(have - wanted)
        ]
        steps += [
            self._ip_step(
                f"add {addr} to {self.name}",
                f"added {addr} to {self.name}",
                ["addr", "add", addr, "dev", self.name],
            )
            for addr in sorted(wanted - have)
        ]
        return steps

    async def _gateway_steps(self) -> list[Step]:
        if self.gateway is None:
            return []
        family = "-6" if ipaddress.ip_address(self.gateway).version == 6 else "-4"
        routes = await self._ip("-j", family, "route", "show", "default", "dev", self.name)
        gateways = [r.get("gateway") for r in routes]
        if gateways == [self.gateway]:
            return []
        steps = [
            self._ip_step(
                f"remove the default route via {gw} from {self.name}",
                f"removed the default route via {gw} from {self.name}",
                [family, "route", "del", "default", "via", gw, "dev", self.name],
            )
            for gw in gateways[1:]
            if gw
        ]
        steps.append(
            self._ip_step(
                f"route by default via {self.gateway} on {self.name} (now {gateways or 'none'})",
                f"default route via {self.gateway} on {self.name} (was {gateways or 'none'})",
                [
                    family,
                    "route",
                    "replace",
                    "default",
                    "via",
                    self.gateway,
                    "dev",
                    self.name,
                    "proto",
                    "static",
                ],
            )
        )
        return steps

    def _ip_step(self, would: str, done: str, args: list[str]) -> Step:
        return Step(would, done, functools.partial(self._ip, *args, json_out=False))

    async def _ip(self, *args: str, missing_ok: bool = False, json_out: bool = True) -> Any:
        tool = shutil.which("ip")
        if tool is None:
            raise ResourceError("the ip tool (iproute2) is not installed")
        code, out, err = await run_command(
            [tool, *args], timeout=IP_TIMEOUT, ok=None, label=f"ip {' '.join(args)}"
        )
        if code != 0:
            if missing_ok and "does not exist" in err:
                return []
            raise ResourceError(f"ip {' '.join(args)}: {err.strip() or f'exit code {code}'}")
        return json.loads(out or "[]") if json_out else None


# rtnetlink (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h): a message's header, the
# fixed part of a link, address and route message (what `_concerns` reads of each), and the
# attributes it looks for.
_NLMSG = struct.Struct("=IH10x")  # length, type (flags, seq, pid skipped)
_IFINFO = struct.Struct("=4xi8x")  # ifi_index
_IFADDR = struct.Struct("=3xBI")  # ifa_scope, ifa_index
_RTMSG = struct.Struct("=12x")
_LINK_MESSAGES = frozenset({16, 17})  # RTM_NEWLINK, RTM_DELLINK
_ADDR_MESSAGES = frozenset({20, 21})  # RTM_NEWADDR, RTM_DELADDR
_ROUTE_MESSAGES = frozenset({24, 25})  # RTM_NEWROUTE, RTM_DELROUTE
_QUIET_MESSAGES = frozenset({1, 3})  # NLMSG_NOOP, NLMSG_DONE
_IFLA_IFNAME = 3
_RTA_OIF = 4
_RT_SCOPE_LINK = 253


def _attribute(data: bytes, offset: int, end: int, wanted: int) -> bytes | None:
    """The payload of the first route attribute of type `wanted` in data[offset:end]."""
    while offset + 4 <= end:
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            return None
        if kind & 0x3FFF == wanted:
            return data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return None


def _remove(path: str) -> None:
    parent, name = os.path.split(path)
    with safefs.closing(safefs.open_dir(parent)) as dir_fd:
        safefs.remove_at(dir_fd, name, recursive=False)
