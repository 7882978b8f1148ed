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
