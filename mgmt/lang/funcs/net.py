"""import "net": this host's network interfaces, read from /sys/class/net and the kernel's
interface ioctls, and re-read on every netlink notification about links and addresses (as
mgmt's): net.wired_interface() and net.interface_cidr(name) are streams."""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from pathlib import Path
from typing import ClassVar

from mgmt.lang.funcs.netlink import (
    NETLINK_ROUTE,
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV6_IFADDR,
    RTMGRP_LINK,
    NetlinkStream,
)
from mgmt.lang.funcs.registry import define, fail

_SIOCGIFADDR = 0x8915
_SIOCGIFNETMASK = 0x891B
_IFF_UP = 0x1
_IFF_LOOPBACK = 0x8


class Sys:
    """Where interfaces are listed (tests point it elsewhere)."""

    NET: ClassVar[str] = "/sys/class/net"


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def interfaces() -> list[tuple[str, int, str]]:
    """(name, flags, MAC address) of each interface, by name."""
    root = Path(Sys.NET)
    found = []
    for entry in sorted(root.iterdir()) if root.is_dir() else []:
        flags = int(_read(entry / "flags") or "0", 16)
        found.append((entry.name, flags, _read(entry / "address")))
    return found


def wired_interface() -> str:
    """The first non-loopback interface with a MAC address that is not wireless, preferring
    one that is up (as mgmt's)."""
    fallback = ""
    for name, flags, mac in interfaces():
        if flags & _IFF_LOOPBACK or not mac or mac == "00:00:00:00:00:00":
            continue
        if (Path(Sys.NET) / name / "wireless").exists():
            continue
        if flags & _IFF_UP:
            return name
        fallback = fallback or name
    if not fallback:
        raise fail("no wired network interface found")
    return fallback


def _ioctl(name: str, request: int) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        packed = fcntl.ioctl(sock.fileno(), request, struct.pack("256s", name.encode()[:15]))
    return socket.inet_ntoa(packed[20:24])


def interface_cidr(name: str) -> str:
    """The interface's IPv4 address and prefix length ("192.168.1.5/24"), if global unicast."""
    try:
        address = _ioctl(name, _SIOCGIFADDR)
        netmask = _ioctl(name, _SIOCGIFNETMASK)
    except OSError as err:
        raise fail(f"interface `{name}` has no IPv4 address: {err.strerror or err}") from None
    ip = ipaddress.IPv4Address(address)
    if ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified:
        raise fail(f"interface `{name}` has no global-unicast IPv4 address")
    prefix = bin(int(ipaddress.IPv4Address(netmask))).count("1")
    return f"{address}/{prefix}"


def cidr_to_ip(cidr: str) -> str:
    try:
        return str(ipaddress.ip_interface(cidr).ip)
    except ValueError as err:
        raise fail(str(err)) from None


class _Interfaces(NetlinkStream):
    """A value read from the interfaces, re-read on every netlink link or address event."""

    PROTOCOL: ClassVar[int] = NETLINK_ROUTE
    GROUPS: ClassVar[int] = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR


class WiredInterface(_Interfaces):
    def read(self) -> str:
        return wired_interface()


class InterfaceCidr(_Interfaces):
    def read(self) -> str:
        return interface_cidr(self.args[0])


define("net.wired_interface", "func() str", stream=WiredInterface, doc="the first wired one")
define("net.interface_cidr", "func(str) str", stream=InterfaceCidr, doc='"192.168.1.5/24"')
define("net.cidr_to_ip", "func(str) str", impl=cidr_to_ip, doc='"192.168.1.5/24" -> "192.168.1.5"')
