"""Kernel files that signal a change with POLLPRI: /proc/self/mountinfo (a mount or unmount in
this mount namespace), and the few sysctls with poll support (kernel.hostname,
kernel.domainname).

The file's descriptor goes into an epoll set of its own, registered for EPOLLPRI only (such
files are always readable, so a plain reader would spin); the event loop watches the epoll
descriptor, which turns readable once per change.
"""

from __future__ import annotations

import asyncio
import os
import select
from collections.abc import AsyncIterator
from types import TracebackType

from engine.errors import ResourceError


class PriWatch:
    """`async with PriWatch(path) as changes: async for _ in changes: ...` (one wake-up per
    burst of changes, until cancelled)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1
        self._epoll: select.epoll | None = None
        self._wake = asyncio.Event()

    async def __aenter__(self) -> PriWatch:
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            self._epoll = select.epoll()
            self._epoll.register(self._fd, select.EPOLLPRI)
        except OSError as err:
            self._close()
            raise ResourceError(f"cannot watch {self.path}: {err.strerror}") from err
        asyncio.get_running_loop().add_reader(self._epoll.fileno(), self._ready)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._epoll is not None:
            asyncio.get_running_loop().remove_reader(self._epoll.fileno())
        self._close()

    def _close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _ready(self) -> None:
        # The loop's own epoll, checking ours, has already consumed the kernel's edge (such
        # files report a change once per poll): ours being readable is the change. Drain it.
        if self._epoll is not None:
            self._epoll.poll(0)
            self._wake.set()

    async def __aiter__(self) -> AsyncIterator[None]:
        while True:
            await self._wake.wait()
            self._wake.clear()
            yield None
