"""The kernel's netlink notifications as wake-ups, for what follows this host's network and
kernel modules (the net and dhcp:server kinds, the language's net.* and os.modinfo_loaded):
/proc and /sys send no inotify events.

    async with Netlink(NETLINK_ROUTE, RTMGRP_LINK | RTMGRP_IPV4_IFADDR) as events:
        async for _ in events:     # a batch of messages arrived: re-read what they are about
            ...

The socket is read by the event loop (add_reader, no thread); the messages themselves are
not decoded: the reader re-reads the state it follows, so a lost or merged message (the
socket's buffer overflowing, ENOBUFS) is one more re-read, never a wrong value.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import AsyncIterator, Callable
from types import TracebackType

NETLINK_ROUTE = 0
NETLINK_KOBJECT_UEVENT = 15
# NETLINK_ROUTE multicast groups (linux/rtnetlink.h).
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
# The kernel's own uevents (not udev's re-broadcast).
UEVENT_KERNEL = 0x1


class Netlink:
    """A netlink socket bound to multicast groups; iterating waits for the next batch."""

    def __init__(
        self, protocol: int, groups: int, wanted: Callable[[bytes], bool] | None = None
    ) -> None:
        """`wanted`: whether a datagram (its messages) is news to the reader; a batch of
        none it wants is no wake-up (None: every one is)."""
        self.protocol = protocol
        self.groups = groups
        self.wanted = wanted
        self._ready = asyncio.Event()
        self._sock: socket.socket | None = None

    async def __aenter__(self) -> Netlink:
        flags = socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        sock = socket.socket(socket.AF_NETLINK, flags, self.protocol)
        try:
            sock.bind((0, self.groups))
        except OSError:
            sock.close()
            raise
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _readable(self) -> None:
        assert self._sock is not None
        wanted, news = self.wanted, self.wanted is None
        while True:  # drain: one wake-up per batch
            try:
                data = self._sock.recv(65536)
                if not data:
                    break
                news = news or wanted is None or wanted(data)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as err:
                if err.errno == errno.ENOBUFS:  # messages were lost: the re-read covers them
                    news = True
                    continue
                news = True
                break
        if news:
            self._ready.set()

    async def __aiter__(self) -> AsyncIterator[None]:
        while True:
            await self._ready.wait()
            self._ready.clear()
            yield
