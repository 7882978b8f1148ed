"""A Unix socket's address for a path of any length.

A Unix socket's address holds 107 bytes of path (sun_path, less its NUL): an agent whose prefix
is deep (a long --prefix, a deep $TMPDIR) could not bind `<prefix>/status.sock`, and `mgmt
status` could not reach it ("AF_UNIX path too long"). A longer path is reached through a
descriptor of its directory instead: `/proc/self/fd/N/NAME` names the same file, in a few bytes,
while the descriptor is open (for the bind or the connect; the socket file stays where it is).

Such a socket's own name (getsockname) is then `/proc/self/fd/N/NAME`, which names something
else, or nothing, once the block has closed N: nothing may go by it. asyncio from Python 3.13
does, unless told not to (SERVER): a server's socket file is unlinked at its close by that name,
and a server made on a bound socket stats it (`start_unix_server(sock=...)`), which raised
NotADirectoryError when N was a file's by then: the status socket's server, made at its first
client, failed so. Our servers remove their socket files by their own paths.

Imports nothing but `errno`, `os` and `sys`: `mgmt deploy`'s client (mgmt.deploy.client) counts its imports.
"""

from __future__ import annotations

import errno
import os
import sys

TYPE_CHECKING = False  # not `typing`'s: the deploy client's imports
if TYPE_CHECKING:
    from typing import Any

MAX_PATH = 107  # bytes of a path in a Unix socket's address

# asyncio.start_unix_server's keywords for a socket of ours: no removal by its own name (above)
SERVER: dict[str, Any] = {"cleanup_socket": False} if sys.version_info >= (3, 13) else {}


class Address:
    """`with Address(path) as where: sock.bind(where)` (or connect): `where` is `path` itself
    when it fits, else the same file through a descriptor of its directory, open in the block."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._fd = -1

    def __enter__(self) -> str:
        if len(os.fsencode(self.path)) <= MAX_PATH:
            return self.path
        if not os.path.isdir("/proc/self/fd"):  # (a chroot's): not "No such file or directory"
            why = "longer than a Unix socket's address (107 bytes), and /proc is not mounted"
            raise OSError(errno.ENAMETOOLONG, why, self.path)
        parent, name = os.path.split(self.path)
        self._fd = os.open(parent or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        return f"/proc/self/fd/{self._fd}/{name}"

    def __exit__(self, *_exc: object) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
