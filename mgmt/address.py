"""The one check of a host and a URL given on the command line (cluster URLs, metrics address).

Every flag that names a host (`--seeds`, `--client-urls`, `--server-urls`, `--advertise-*`,
`--prometheus-listen`) is checked here before anything starts, so that a bad one is a one-line
error naming the flag (exit 2), never a traceback from deep inside `urllib`, the `idna` codec or
`getaddrinfo`, and never a child (etcd) that exits on it later.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from typing import TYPE_CHECKING

from engine.errors import ValidationError
from engine.params import show

if TYPE_CHECKING:
    from urllib.parse import SplitResult

_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")  # one DNS label (underscore: tolerated)
MAX_NAME = 253  # longest DNS name, without the trailing dot


def check_host(host: str, flag: str, given: str) -> None:
    """`host` is an IP address or a DNS name (labels of 1-63 letters, digits, '-'; at most
    253 characters; non-ASCII names in their IDNA form); else ValidationError naming `flag`
    and the whole value `given`."""
    try:
        ipaddress.ip_address(host)  # an IPv6 zone (fe80::1%eth0) included
        return
    except ValueError:
        pass
    try:
        ascii_name = host.encode("idna").decode("ascii")
    except UnicodeError:
        ascii_name = ""
    name = ascii_name.removesuffix(".")
    if not (name and len(name) <= MAX_NAME and all(map(_LABEL.fullmatch, name.split(".")))):
        raise ValidationError(
            f"{show(given)}: {show(host)} is neither an IP address nor a host name (labels of "
            "1-63 letters, digits or '-', separated by single dots)",
            flag,
        )


def split_url(url: str, flag: str) -> SplitResult:
    """`url` split, its host checked (check_host); ValidationError naming `flag`."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError as err:  # "Invalid IPv6 URL", a bad character in the network location
        raise ValidationError(f"{show(url)} is not a URL: {err}", flag) from None
    if host:
        check_host(host, flag, url)
    return parts


_SIOCGIFADDR = 0x8915  # an interface's IPv4 address (netdevice(7))


def host_addresses() -> list[str]:
    """This host's unicast addresses now (IPv4 by each interface's SIOCGIFADDR, IPv6 from
    /proc/net/if_inet6), link-local ones left out (a client names them with a zone): what a
    listener on 0.0.0.0 or :: is reached at. Loopback included; [] where neither is readable."""
    import fcntl
    import socket
    import struct

    found: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _index, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                packed = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)
            except OSError:  # no IPv4 address on it
                continue
            found.append(socket.inet_ntoa(packed[20:24]))
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as lines:
            for line in lines:
                hexed = line.split()[0]
                found.append(str(ipaddress.IPv6Address(bytes.fromhex(hexed))))
    except (OSError, ValueError, IndexError):
        pass
    usable = [a for a in found if not ipaddress.ip_address(a).is_link_local]
    return list(dict.fromkeys(usable))


def wildcard_addresses(url: str) -> list[str]:
    """For a listener on every address (`https://0.0.0.0:P`, `https://[::]:P`), this host's
    addresses (host_addresses; IPv4 only for 0.0.0.0); [] for one on a given address."""
    host = urllib.parse.urlsplit(url).hostname
    if host == "0.0.0.0":
        return [a for a in host_addresses() if ":" not in a]
    if host == "::":
        return host_addresses()
    return []
