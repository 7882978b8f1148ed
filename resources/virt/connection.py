"""One shared libvirt connection and the lifecycle-callback dispatch on it (per domain or
network name)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from resources.virt.auth import VirtAuth
from resources.virt.lib import load_libvirt


class Connection:
    """One shared libvirt connection, its users, and the domain-event subscriptions on it.

    libvirt refuses a second lifecycle callback on one connection ("event callback already
    tracked": it compares the C dispatcher, which libvirt-python shares), so there is one
    libvirt callback per connection, registered while anyone subscribes, dispatching by name.
    """

    def __init__(self, uri: str, auth: VirtAuth | None = None) -> None:
        self.uri = uri
        self.auth = auth  # the credentials it is opened with (never shown)
        self.conn: Any = None
        self.users = 0
        self.lost: str | None = None  # why the connection was closed under us
        self.ready: asyncio.Future[None] | None = None
        self.linger: asyncio.TimerHandle | None = None
        self.closed = False
        self._loop = asyncio.get_running_loop()
        # (family, name) -> subscribers; family is "domain" or "network".
        self._subs: dict[
            tuple[str, str], list[tuple[Callable[[], None], Callable[..., None] | None]]
        ] = {}
        self._cids: dict[str, int] = {}  # family -> the libvirt callback id while registered
        self._lock = asyncio.Lock()

    @property
    def key(self) -> tuple[str, VirtAuth | None]:
        """What the pool shares it by: the URI and the credentials."""
        return self.uri, self.auth

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(connection, *args) in a worker thread (a libvirt call may do a round trip)."""
        return await asyncio.to_thread(fn, self.conn, *args)

    async def subscribe(
        self,
        name: str,
        notify: Callable[[], None],
        log: Callable[..., None] | None = None,
        family: str = "domain",
    ) -> Callable[[], Awaitable[None]]:
        """Call notify() on the loop for each lifecycle event of the domain (or, family
        "network", the network) `name`, and if the connection is lost. Returns the
        (idempotent) unsubscribe coroutine function."""
        sub = (notify, log)
        key = (family, name)
        self._subs.setdefault(key, []).append(sub)
        try:
            await self._register(family)
        except BaseException:
            self._drop(key, sub)
            raise
        done = False

        async def unsubscribe() -> None:
            nonlocal done
            if not done:
                done = True
                self._drop(key, sub)
                await self._deregister(family)

        return unsubscribe

    def subscribers(self) -> int:
        return sum(len(subs) for subs in self._subs.values())

    def callbacks(self) -> int:
        """How many domain-event callbacks libvirt-python tracks on this connection now."""
        return len(getattr(self.conn, "domainEventCallbackID", None) or {})

    def mark_lost(self, reason: int) -> None:
        self.lost = _CLOSE_REASONS.get(reason, f"reason {reason}")
        for subs in list(self._subs.values()):
            for notify, _log in list(subs):
                notify()

    def _drop(
        self,
        key: tuple[str, str],
        sub: tuple[Callable[[], None], Callable[..., None] | None],
    ) -> None:
        subs = self._subs.get(key, [])
        if sub in subs:
            subs.remove(sub)
        if not subs:
            self._subs.pop(key, None)

    async def _register(self, family: str) -> None:
        libvirt = load_libvirt()
        async with self._lock:
            if family in self._cids:
                return
            if family == "network":
                self._cids[family] = await self.call(
                    lambda conn: conn.networkEventRegisterAny(
                        None, libvirt.VIR_NETWORK_EVENT_ID_LIFECYCLE, self._on_network, None
                    )
                )
            else:
                self._cids[family] = await self.call(
                    lambda conn: conn.domainEventRegisterAny(
                        None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_event, None
                    )
                )

    async def _deregister(self, family: str) -> None:
        libvirt = load_libvirt()
        async with self._lock:
            if family not in self._cids or any(f == family for f, _ in self._subs):
                return
            cid = self._cids.pop(family)
            if self.lost is None:
                with contextlib.suppress(libvirt.libvirtError):
                    if family == "network":
                        await self.call(lambda conn: conn.networkEventDeregisterAny(cid))
                    else:
                        await self.call(lambda conn: conn.domainEventDeregisterAny(cid))

    def _on_event(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        """libvirt's domain callback (dispatched from the loop's event timer)."""
        self._dispatch(("domain", dom.name()), _EVENT_NAMES.get(event, str(event)), detail)

    def _on_network(self, _conn: Any, net: Any, event: int, detail: int, _opaque: Any) -> None:
        """libvirt's network callback: name() is a field of the object, no round trip."""
        self._dispatch(("network", net.name()), _NETWORK_EVENTS.get(event, str(event)), detail)

    def _dispatch(self, key: tuple[str, str], what: str, detail: int) -> None:
        for notify, log in list(self._subs.get(key) or ()):
            if log is not None:
                log("libvirt event: %s (detail %d)", what, detail)
            self._loop.call_soon_threadsafe(notify)


_EVENT_NAMES = {
    0: "defined",
    1: "undefined",
    2: "started",
    3: "suspended",
    4: "resumed",
    5: "stopped",
    6: "shutdown",
    7: "pmsuspended",
    8: "crashed",
}
_NETWORK_EVENTS = {0: "defined", 1: "undefined", 2: "started", 3: "stopped"}
_CLOSE_REASONS = {0: "error", 1: "end of file", 2: "keepalive timeout", 3: "closed by the client"}
