"""The status socket (`<prefix>/status.sock`, what `mgmt status` reads) without its server's code
until a client comes: a cron run that nobody asks never imports mgmt.status.server (its HTTP,
the page, TLS: ~1 M instructions of a run's start).

`FirstClient` binds and listens as the server would (the socket is there from the same moment,
0600 from its creation); at the first connection, which waits in the kernel's backlog, it
hands the listening socket to its `serve` (the agent: mgmt.status.server imported, then its
server adopts the socket and accepts that client first)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from pathlib import Path

from mgmt.sockaddr import Address

SOCKET = "status.sock"
BACKLOG = 100  # asyncio.start_unix_server's, which the server then listens with


def bound(path: Path) -> socket.socket:
    """A Unix stream socket bound at `path`, its file made 0600 by the bind: Linux gives the
    file the mode of the socket's own inode, less the umask, and fchmod sets that mode before.
    No instant at another mode, and no chmod after it (a hop to a thread, before the apply)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.fchmod(sock.fileno(), 0o600)
        with Address(path) as where:  # (a deep prefix: through its directory's descriptor)
            sock.bind(where)
    except BaseException:
        sock.close()
        raise
    return sock


def remove_stale(path: Path) -> None:
    """The socket a killed agent left at `path`, if any, removed (bind would fail on it)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class FirstClient:
    """A Unix socket bound at `path` and listening; at its first client (on the running loop)
    `serve(sock)` is called once with it, which then owns it. `close()` before that closes it
    (a client waiting in the backlog then sees its connection reset)."""

    def __init__(self, path: Path, serve: Callable[[socket.socket], None]) -> None:
        sock = bound(path)
        try:
            sock.listen(BACKLOG)
            sock.setblocking(False)
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(sock.fileno(), self._ready)
        except BaseException:
            sock.close()
            raise
        self._sock: socket.socket | None = sock
        self._serve = serve

    def _ready(self) -> None:
        sock = self._sock
        if sock is None:
            return
        self._loop.remove_reader(sock.fileno())
        self._sock = None
        self._serve(sock)

    @property
    def waiting(self) -> bool:
        """No client has come yet (the socket is still this object's)."""
        return self._sock is not None

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            self._loop.remove_reader(sock.fileno())
            sock.close()
