"""The shared connections, one per URI, kept LINGER seconds after their last user.

A graph swap that replaces a virt resource thus keeps the connection (and the test driver's
in-memory state). Acquiring binds libvirt's event loop to the running asyncio loop first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from engine.errors import ResourceError
from engine.handle import Handle, Shared
from resources.virt.auth import VirtAuth, open_connection
from resources.virt.connection import Connection
from resources.virt.events import EVENTS
from resources.virt.lib import load_libvirt

LINGER = 10.0  # seconds an unused connection stays open: a graph swap keeps it


def pool_of(shared: Shared) -> Pool:
    """The engine's pool (in its `Shared`, closed when the engine stops)."""
    return shared.get(__name__, Pool)


class Lease:
    """One resource's use of the pool: its connection (acquired at once, again if it was lost:
    libvirtd restarted), released once when the resource is done (`release`)."""

    def __init__(self, shared: Shared, uri: str, auth: VirtAuth | None) -> None:
        self._pool = pool_of(shared)
        self._uri, self._auth = uri, auth
        self._conn: Connection | None = None
        self._unwatch: Callable[[], Awaitable[None]] | None = None

    async def get(self) -> Connection:
        """The connection; a new one if there is none or it was lost."""
        if self._conn is None or self._conn.lost is not None:
            self.release()
            self._conn = await self._pool.acquire(self._uri, self._auth)
        return self._conn

    async def watch(self, handle: Handle, name: str, family: str = "domain") -> None:
        """A resource's watch: an event once subscribed, then one per libvirt event about
        `name` (a domain, or a network); ResourceError when the connection is lost. A restarted
        watch (meta retry) drops the old subscription first."""
        if self._unwatch is not None:
            await self._unwatch()
        conn = await self.get()
        changed = asyncio.Event()
        self._unwatch = await conn.subscribe(name, changed.set, handle.logger.debug, family=family)
        handle.on_cleanup(self._unwatch)
        await handle.event()
        while True:
            await changed.wait()
            changed.clear()
            if conn.lost is not None:
                raise ResourceError(f"libvirt connection to {self._uri} lost: {conn.lost}")
            await handle.event()

    @property
    def conn(self) -> Connection | None:
        """The connection held now (None: released, or not acquired yet)."""
        return self._conn

    def release(self) -> None:
        if self._conn is not None:
            self._pool.release(self._conn)
            self._conn = None


# A connection is shared by the resources with the same URI and the same credentials.
_Key = tuple[str, VirtAuth | None]


class Pool:
    """The shared connections of one engine, one per URI and credentials; an unused one is
    closed after LINGER seconds, every one when the engine stops (`aclose`)."""

    def __init__(self) -> None:
        self._conns: dict[_Key, Connection] = {}
        self._closing: set[asyncio.Task[None]] = set()

    async def acquire(self, uri: str, auth: VirtAuth | None = None) -> Connection:
        if EVENTS.bind():
            self._forget_all()  # the previous loop is gone: start afresh
        entry = self._conns.get((uri, auth))
        if entry is None:
            entry = Connection(uri, auth)
            self._conns[entry.key] = entry
            entry.ready = asyncio.ensure_future(self._open(entry))
        entry.users += 1
        if entry.linger is not None:
            entry.linger.cancel()
            entry.linger = None
        assert entry.ready is not None
        try:
            await asyncio.shield(entry.ready)
        except BaseException:
            self.release(entry)
            raise
        return entry

    def release(self, entry: Connection) -> None:
        entry.users -= 1
        if entry.users or entry.ready is None or not entry.ready.done():
            return
        if entry.lost is not None:
            self._expire(entry)
        else:
            entry.linger = asyncio.get_running_loop().call_later(LINGER, self._expire, entry)

    @contextlib.asynccontextmanager
    async def connection(self, uri: str, auth: VirtAuth | None = None) -> AsyncIterator[Connection]:
        """`async with pool.connection(uri) as conn:` the shared connection, released after."""
        entry = await self.acquire(uri, auth)
        try:
            yield entry
        finally:
            self.release(entry)

    async def close_idle(self) -> None:
        """Close every unused connection now (tests; a clean shutdown)."""
        for entry in [e for e in self._conns.values() if e.users == 0]:
            self._expire(entry)
        if self._closing:
            await asyncio.gather(*self._closing)

    async def aclose(self) -> None:
        """Close every connection now (the engine stops: its resources have released them)."""
        for entry in list(self._conns.values()):
            entry.users = 0
        await self.close_idle()

    async def _open(self, entry: Connection) -> None:
        libvirt = load_libvirt()
        loop = asyncio.get_running_loop()

        def on_close(_conn: Any, reason: int, _opaque: Any) -> None:
            loop.call_soon_threadsafe(self._lost, entry, reason)

        def connect() -> Any:
            conn = open_connection(entry.uri, entry.auth)
            with contextlib.suppress(libvirt.libvirtError):  # not every driver has one
                conn.registerCloseCallback(on_close, None)
            return conn

        try:
            entry.conn = await asyncio.to_thread(connect)
        except libvirt.libvirtError as err:
            if self._conns.get(entry.key) is entry:
                del self._conns[entry.key]
            raise ResourceError(f"cannot connect to {entry.uri}: {err}") from err
        if entry.users == 0:  # every acquirer gave up while it opened
            entry.linger = loop.call_later(LINGER, self._expire, entry)

    def _lost(self, entry: Connection, reason: int) -> None:
        if self._conns.get(entry.key) is entry:
            del self._conns[entry.key]
        entry.mark_lost(reason)

    def _expire(self, entry: Connection) -> None:
        """Close an unused connection (also one that was lost, or dropped by a failed open)."""
        if entry.users or entry.closed:
            return
        entry.closed = True
        if self._conns.get(entry.key) is entry:
            del self._conns[entry.key]
        if entry.linger is not None:
            entry.linger.cancel()
        if entry.conn is None:
            return
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(_close, entry.conn))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _forget_all(self) -> None:
        """Close the connections a previous event loop left (blocking: they are idle)."""
        entries, self._conns = list(self._conns.values()), {}
        for entry in entries:
            if entry.users:
                raise ResourceError(
                    f"libvirt connection to {entry.uri} still in use by another event loop"
                )
            entry.closed = True
            if entry.conn is not None:
                _close(entry.conn)


def _close(conn: Any) -> None:
    libvirt = load_libvirt()
    with contextlib.suppress(libvirt.libvirtError):
        conn.unregisterCloseCallback()
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()
