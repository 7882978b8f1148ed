"""import "net": this host's network interfaces, read from /sys/class/net and the kernel's
interface ioctls, and re-read on every netlink notification about links and addresses (as
mgmt's): net.wired_interface() and net.interface_cidr(name) are streams."""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import string
import struct
import urllib.parse
from pathlib import Path
from typing import ClassVar

from mgmt.lang.errors import FuncError
from mgmt.lang.funcs.netlink import (
    NETLINK_ROUTE,
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV6_IFADDR,
    RTMGRP_LINK,
    NetlinkStream,
)
from mgmt.lang.funcs.registry import define, fail
from mgmt.lang.values import Struct

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


# The pure helpers of mgmt's lang/core/net (macfmt.go, ip_in_cidr.go, split_hostport.go,
# url_parser.go) and macs.go, as Go's net and net/url behave for them. Their errors are
# run-time errors, which `<|>` catches (mgmt's are catchable sentinels).

_MAC_LENGTH = len("00:00:00:00:00:00")


def _mac(text: str) -> str:
    """A 6-octet MAC address with ':' or '-' between its octets, as Go's net.ParseMAC reads
    it after mgmt's length check, printed as Go's HardwareAddr.String() (lower case, ':')."""
    if len(text) != _MAC_LENGTH:
        raise fail(f"invalid MAC address length: {text}")
    sep = text[2]
    octets = text.split(sep) if sep in ":-" else []
    if len(octets) != 6 or not all(
        len(o) == 2 and all(c in string.hexdigits for c in o) for o in octets
    ):
        raise fail(f"address {text}: invalid MAC address")
    return ":".join(octets).lower()


def _is_mac(text: str) -> bool:
    try:
        return _mac(text) == text
    except FuncError:
        return False


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise fail(f"invalid IP: {text}") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # Go's To4(): an IPv4 address in IPv6 form is an IPv4 one
    return ip


def ip_in_cidr(ip: str, cidr: str) -> bool:
    address = _ip(ip)
    try:
        if "/" not in cidr:  # Go's ParseCIDR wants the prefix length; Python's does not
            raise ValueError(cidr)
        network = ipaddress.ip_network(cidr, strict=False)  # Go's ParseCIDR: host bits allowed
    except ValueError:
        raise fail(f"invalid CIDR address: {cidr}") from None
    return address.version == network.version and address in network


def macs() -> tuple[str, ...]:
    """The MAC addresses of this host's interfaces but the loopback ones, in the kernel's
    order (Go's net.Interfaces()), skipping those without a 6-octet one."""
    found = []
    for name, flags, mac in interfaces():
        if flags & _IFF_LOOPBACK or len(mac) != _MAC_LENGTH:
            continue
        index = _read(Path(Sys.NET) / name / "ifindex")
        found.append((int(index) if index.isdigit() else 0, mac))
    return tuple(mac for _, mac in sorted(found))


def split_hostport(text: str) -> Struct:
    """Go's net.SplitHostPort: "host:port", "[v6]:port"; an error names what is wrong."""

    def bad(why: str) -> Exception:
        return fail(f"error parsing the input: address {text}: {why}")

    colon = text.rfind(":")
    if colon < 0:
        raise bad("missing port in address")
    start, end = 0, 0
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise bad("missing ']' in address")
        if close + 1 != colon:
            at_end = close + 1 == len(text)
            raise bad(
                "too many colons in address"
                if not at_end and text[close + 1] == ":"
                else "missing port in address"
            )
        host, start, end = text[1:close], 1, close + 1
    else:
        host = text[:colon]
        if ":" in host:
            raise bad("too many colons in address")
    if "[" in text[start:]:
        raise bad("unexpected '[' in address")
    if "]" in text[end:]:
        raise bad("unexpected ']' in address")
    return Struct({"host": host, "port": text[colon + 1 :]})


def url_parser(text: str) -> Struct:
    """A URL's scheme (lower case), host (with its port, without user info), path (decoded)
    and raw query, as Go's net/url reads them; a URL without a scheme is an error."""
    try:
        parts = urllib.parse.urlsplit(text)
        host = parts.netloc.rpartition("@")[2]
    except ValueError as err:
        raise fail(f"error parsing the URL: {err}") from None
    if any(c < " " or c == "\x7f" for c in text):
        raise fail(
            f'error parsing the URL: parse "{text}": net/url: invalid control character in URL'
        )
    if not parts.scheme:
        raise fail(f"empty schemes are invalid: {text}")
    return Struct(
        {
            "scheme": parts.scheme.lower(),
            "host": host,
            "path": urllib.parse.unquote(parts.path),
            "raw_query": parts.query,
        }
    )


define(
    "net.is_mac", "func(str) bool", impl=_is_mac, doc="a MAC in the standard form (lower case, ':')"
)
define("net.macfmt", "func(str) str", impl=_mac, doc='"AA-BB-..." -> "aa:bb:..."')
define(
    "net.oldmacfmt",
    "func(str) str",
    impl=lambda m: _mac(m).replace(":", "-"),
    doc='"aa:bb:..." -> "aa-bb-..."',
)
define("net.ip_in_cidr", "func(str, str) bool", impl=ip_in_cidr)
define("net.macs", "func() []str", impl=macs, doc="this host's MACs, but the loopback's", host=True)
define(
    "net.split_hostport",
    "func(str) struct{host str; port str}",
    impl=split_hostport,
)
define(
    "net.url_parser",
    "func(str) struct{scheme str; host str; path str; raw_query str}",
    impl=url_parser,
)
