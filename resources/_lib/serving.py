"""What the small built-in servers share (http:server, tftp:server, dhcp:server): their listen
address, safe reads of the files they serve, and how member resources join them.

In mgmt a server's members (http:server:file, tftp:file, dhcp:host...) autogroup into the
server's vertex. Here each member stays a vertex of its own (its own events, send/recv and
`--noop` line) and offers itself to this engine's servers of its family through an `Offers`
kept in the engine's shared objects, until the engine drops it (at the end of the swap that
removes or replaces it: `Offers.offer`): a member whose `server` is None is served by every
server of the family, else only by the server of that name.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Generic, Protocol, TypeVar

from engine.errors import ResourceError, ValidationError
from engine.handle import Handle, ResourceLogger
from engine.resource import UID, Edgeable, Resource
from engine.safefs import UnsafePathError, closing, open_dir, open_read, open_regular, sub_dir

LOOPBACK = "127.0.0.1"  # what an empty host means here (docs/security.md: loopback by default)


class Member(Protocol):
    kind: ClassVar[str]
    name: str

    @property
    def server(self) -> str | None: ...


M = TypeVar("M", bound=Member)


class Offers(Generic[M]):
    """The members of one kind offered to this engine's servers, in the order they joined.

    A member offered by `offer` stays offered until the engine drops it (Handle.on_detach, at
    the end of the swap that removed or replaced it), not only until its cleanup: a swap that
    replaces a member (its params edited) stops it before its successor's init() offers it
    again, and it is served in between (before: a 404, a TFTP "file not found", a DHCP host
    given a range's address or a NAK). A member offered again under its kind and name (its
    successor) hides the one it replaces from then on: the newest of the two answers."""

    def __init__(self) -> None:
        self._members: list[M] = []
        self._replaced: set[int] = set()  # id()s of members whose successor has joined

    def add(self, member: M) -> Callable[[], None]:
        """Offer `member`; returns the callable that withdraws it."""
        key = (member.kind, member.name)
        for other in self._members:
            if (other.kind, other.name) == key and other is not member:
                self._replaced.add(id(other))
        self._members.append(member)

        def withdraw() -> None:
            self._members.remove(member)
            self._replaced.discard(id(member))

        return withdraw

    def offer(self, handle: Handle, member: M) -> None:
        """Offer `member` until the engine drops it (see the class; not at the engine's own
        stop: its servers stop, and this engine's offers go with its shared objects)."""
        handle.on_detach(self.add(member))

    def replacing(self, member: M) -> M | None:
        """The member offered under `member`'s kind and name, not replaced yet: the one
        `member` replaces in a swap (stopped, offered until the swap drops it), if any."""
        key = (member.kind, member.name)
        for other in reversed(self._members):
            if (other.kind, other.name) == key and id(other) not in self._replaced:
                return other if other is not member else None
        return None

    def to(self, server: str) -> list[M]:
        """The members the server named `server` serves (those replaced left out)."""
        replaced = self._replaced
        return [
            m
            for m in self._members
            if m.server in (None, server) and not (replaced and id(m) in replaced)
        ]


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


# Seconds between two warnings about requests refused for one reason (as the servers' others:
# httpd.WARN_EVERY, dhcp's EXHAUSTED_EVERY).
REFUSED_EVERY = 60.0


class Refusals:
    """A serving resource's warnings about requests refused because a served path goes through
    a symlink the safe-path rule does not follow (a 404, not a 500 with a traceback). The first
    for each link is said at once, by the resource's logger (its name starts the line), with
    the path asked for and why; the requests refused for it again are counted and said with
    the next one at least REFUSED_EVERY seconds later (a client can repeat them: a flood of
    requests is not a flood of lines). Called from worker threads. The links are the ones on
    the way to the operator's `root` or `path` (a link below a root is not followed, silently:
    ELOOP, a plain 404), so their number is bounded by the graph."""

    def __init__(self, logger: ResourceLogger) -> None:
        self._logger = logger
        self._lock = threading.Lock()
        self._said: dict[str, tuple[float, int]] = {}  # why -> (when said, refused since)

    def __call__(self, path: str, err: UnsafePathError) -> None:
        why, now = str(err), time.monotonic()
        with self._lock:
            said, since = self._said.get(why, (None, 0))
            if said is not None and now - said < REFUSED_EVERY:
                self._said[why] = (said, since + 1)
                return
            self._said[why] = (now, 0)
        if said is None:
            self._logger.warning("not served: %s: %s (repeats are counted)", path, err)
        else:
            self._logger.warning(
                "not served: %s and %d more request%s in the last %ds: %s",
                path,
                since,
                "" if since == 1 else "s",
                round(now - said),
                err,
            )


def open_under(root: str, rel: str, refused: Refusals) -> int | None:
    """A read descriptor of the regular file root/rel, following no symlink and no `..` below
    root, and on the way to root only links the safe-path rule allows (None: there is none,
    or a link another user controls is on the way, which `refused` tells)."""
    parts = [p for p in rel.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        return None
    try:
        with closing(open_dir(root)) as top, closing(sub_dir(top, tuple(parts[:-1]))) as fd:
            return open_read(fd, parts[-1])
    except UnsafePathError as err:
        refused(root.rstrip("/") + "/" + "/".join(parts), err)
        return None
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EINVAL, errno.EACCES):
            return None
        raise


def open_file(path: str, refused: Refusals) -> int | None:
    """A read descriptor of the regular file `path` (None: missing, not a regular file, or a
    link another user controls on the way, which `refused` tells: safefs.open_trusted)."""
    try:
        return open_regular(path)  # a FIFO: refused, never waited on
    except FileNotFoundError:
        return None
    except UnsafePathError as err:
        refused(path, err)
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


@dataclass(kw_only=True, eq=False)
class RootedServer(Edgeable, Resource):
    """What http:server and tftp:server share: where they listen and the directory they serve
    (its check, and the automatic edge to the file resource that manages it)."""

    # Where to listen, host:port (":8080": 127.0.0.1, port 8080). Default None: the name.
    address: str | None = None
    # A directory (absolute, ending with "/") whose files are served after the offered ones;
    # nothing outside it, nor through a symlink, is served. Default None (none).
    root: str | None = None

    # The server's own word for a file not found, in the warning about a missing root.
    UNSERVED = "its files are not found"

    def validate(self) -> None:
        super().validate()
        split_address(self._address, "address" if self.address is not None else "name")
        if self.root is not None and not (self.root.startswith("/") and self.root.endswith("/")):
            raise ValidationError(
                f"must be an absolute directory ending with '/', got {self.root!r}", "root"
            )

    async def init(self, handle: Handle) -> None:
        await super().init(handle)
        self.refused = Refusals(handle.logger)  # requests refused for a link on the way to root

    def uids(self) -> list[UID]:
        return [UID(self.kind, self.name)]

    def autoedges(self) -> list[list[UID]]:
        """The file resource that manages the root directory, if any."""
        return [[UID("file", self.root)]] if self.root is not None else []

    @property
    def _address(self) -> str:
        return self.address if self.address is not None else self.name

    def _listen_address(self) -> tuple[str, int]:
        """The host and port to bind (a warning when that is every interface)."""
        host, port = split_address(self._address, "address")
        if host in ("0.0.0.0", "::"):
            self.handle.logger.warning("listening on all interfaces at %s", self._address)
        return host, port

    async def _check_root(self) -> None:
        await check_root(self.handle, self.root, self.UNSERVED)
