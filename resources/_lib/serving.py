"""What the small built-in servers share (http:server, tftp:server, dhcp:server): their listen
address, safe reads of the files they serve, and how member resources join them.

In mgmt a server's members (http:server:file, tftp:file, dhcp:host...) autogroup into the
server's vertex. Here each member stays a vertex of its own (its own events, send/recv and
`--noop` line) and offers itself, for its lifetime, to this engine's servers of its family
through an `Offers` kept in the engine's shared objects: a member whose `server` is None is
served by every server of the family, else only by the server of that name.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import stat
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from engine.errors import ResourceError, ValidationError
from engine.handle import Handle
from engine.safefs import closing, open_dir, open_read, open_regular, sub_dir

LOOPBACK = "127.0.0.1"  # what an empty host means here (docs/security.md: loopback by default)


class Member(Protocol):
    @property
    def server(self) -> str | None: ...


M = TypeVar("M", bound=Member)


class Offers(Generic[M]):
    """The members of one kind offered to this engine's servers, in the order they joined."""

    def __init__(self) -> None:
        self._members: list[M] = []

    def add(self, member: M) -> Callable[[], None]:
        """Offer `member`; returns the callable that withdraws it."""
        self._members.append(member)
        return lambda: self._members.remove(member)

    def to(self, server: str) -> list[M]:
        """The members the server named `server` serves."""
        return [m for m in self._members if m.server in (None, server)]


def offers(handle: Handle, key: str, make: Callable[[], Offers[M]]) -> Offers[M]:
    """The engine's `Offers` under `key` (e.g. "tftp:file"), made by `make` on first use."""
    return handle.shared.get(f"{__name__}:{key}", make)


def split_address(address: str, key: str, default_host: str = LOOPBACK) -> tuple[str, int]:
    """`host:port` (host may be empty: `default_host`, an IPv4 address or a bracketed IPv6 one)."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
        raise ValidationError(f"expected host:port (e.g. ':8080'), got {address!r}", key)
    host = host.removeprefix("[").removesuffix("]")
    if host:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValidationError(f"the host of {address!r} is not an IP address", key) from None
    return host or default_host, int(port_text)


def shown(text: str) -> str:
    """What a client sent (a file name, a path, a method) for a log line: control characters
    escaped, so that a newline in it cannot forge the lines that follow."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def open_under(root: str, rel: str) -> int | None:
    """A read descriptor of the regular file root/rel, following no symlink and no `..` below
    root (None: there is none)."""
    parts = [p for p in rel.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        return None
    try:
        with closing(open_dir(root)) as top, closing(sub_dir(top, tuple(parts[:-1]))) as fd:
            return open_read(fd, parts[-1])
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EINVAL, errno.EACCES):
            return None
        raise


def open_file(path: str) -> int | None:
    """A read descriptor of the regular file `path` (None: missing or not a regular file)."""
    try:
        return open_regular(path)  # a FIFO: refused, never waited on
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.EINVAL:  # not a regular file
            return None
        raise


async def check_root(handle: Handle, root: str | None, unserved: str) -> None:
    """A server's `root` (None: it has none): a warning while it is missing (e.g. under --noop,
    before the file resource that makes it), saying what that means (`unserved`: "its files
    are 404"); ResourceError when it is not a directory."""
    if root is None:
        return
    try:
        st = await asyncio.to_thread(os.stat, root)
    except OSError:
        handle.logger.warning("root %s is missing: %s", root, unserved)
        return
    if not stat.S_ISDIR(st.st_mode):
        raise ResourceError(f"root {root} is not a directory")
