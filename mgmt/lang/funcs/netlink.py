"""The kernel's netlink notifications, for the streams that follow this host's network and
kernel modules (net.*, os.modinfo_loaded): /proc and /sys send no inotify events.

    async with Netlink(NETLINK_ROUTE, RTMGRP_LINK | RTMGRP_IPV4_IFADDR) as events:
        async for _ in events:     # a batch of messages arrived: re-read what they are about
            ...

The socket (resources._lib.netlink) is read by the event loop; a stream re-reads the state it
reports at each batch of messages.
"""

from __future__ import annotations

from typing import ClassVar

from mgmt.lang import streams
from mgmt.lang.errors import FuncError
from resources._lib.netlink import (
    NETLINK_KOBJECT_UEVENT,
    NETLINK_ROUTE,
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV6_IFADDR,
    RTMGRP_LINK,
    UEVENT_KERNEL,
    Netlink,
)

__all__ = [
    "NETLINK_KOBJECT_UEVENT",
    "NETLINK_ROUTE",
    "RTMGRP_IPV4_IFADDR",
    "RTMGRP_IPV6_IFADDR",
    "RTMGRP_LINK",
    "UEVENT_KERNEL",
    "Netlink",
    "NetlinkStream",
]


class NetlinkStream(streams.Stream):
    """A value read from the kernel's state (`read`), re-read on every notification of a
    netlink protocol's groups; emitted when it changed (a run-time error is a value too)."""

    PROTOCOL: ClassVar[int] = NETLINK_ROUTE
    GROUPS: ClassVar[int] = 0

    def start(self) -> None:
        self._last: tuple[bool, object] | None = None
        self._read()
        self._tasks.append(self.host.spawn(self._watch(), self.name))

    def read(self) -> object:
        raise NotImplementedError

    def _read(self) -> None:
        try:
            now: tuple[bool, object] = (True, self.read())
        except FuncError as err:
            now = (False, str(err))
        if now == self._last:
            return  # a notification about something else
        self._last = now
        if now[0]:
            self.emit(now[1])
        else:
            self.fail(str(now[1]))

    async def _watch(self) -> None:
        try:
            async with Netlink(self.PROTOCOL, self.GROUPS) as events:
                self._read()  # a change between the first read and the subscription
                async for _ in events:
                    self._read()
        except OSError as err:
            self.fail(f"cannot follow the kernel's notifications: {err.strerror or err}")
