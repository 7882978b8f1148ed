"""libvirt's event loop on asyncio: libvirtaio's implementation, made safe for worker threads.

One implementation per process (libvirt takes no second one), bound to the running loop and
moved to a new loop once the old one has stopped (tests run one loop each). The lifecycle
callbacks it dispatches are fanned out per domain by resources/virt/connection.py.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from engine.errors import ResourceError
from resources.virt.lib import load_libvirt

log = logging.getLogger("engine")


@functools.cache
def _impl_class() -> Any:
    import libvirtaio

    class ThreadSafeImpl(libvirtaio.virEventAsyncIOImpl):  # type: ignore[misc]
        """libvirtaio's implementation, safe for libvirt calls made in worker threads.

        libvirt calls these six functions from whichever thread runs an API call (the remote
        driver updates its socket watch, every driver arms its event-dispatch timer), while
        libvirtaio touches the asyncio loop directly, which only its own thread may do. From
        another thread each call is queued and handed to the loop (call_soon_threadsafe); ids of
        new handles and timers are given out at once. A call on the loop's thread first runs
        what is queued, so libvirt's order is kept. Free callbacks run as loop callbacks (not
        tasks) so that a closing loop still runs them.
        """

        def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
            super().__init__(loop=loop)
            self.thread = threading.get_ident()
            self._queue: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
            self._lock = threading.Lock()

        def rebind(self, loop: asyncio.AbstractEventLoop) -> None:
            """Move to another loop once the old one has stopped (tests run one loop each):
            timers and watched descriptors are armed again on the new loop."""
            self.loop = loop
            self.thread = threading.get_ident()
            self._queue.clear()
            self._pending = len(self.callbacks)
            for callback in self.callbacks.values():
                if isinstance(callback, libvirtaio.TimeoutCallback):
                    callback._task = None
                    callback.update(timeout=callback.timeout)
            for descriptor in self.descriptors.values():
                descriptor.update()

        def _later(self, fn: Callable[..., Any], *args: Any) -> None:
            with self._lock:
                self._queue.append((fn, args))
            self.loop.call_soon_threadsafe(self._flush)

        def _flush(self) -> None:
            while True:
                with self._lock:
                    if not self._queue:
                        return
                    fn, args = self._queue.popleft()
                try:
                    fn(*args)
                except Exception:  # one bad call must not hold up the rest
                    log.exception("libvirt event loop: %s failed", getattr(fn, "__name__", fn))

        def _here(self) -> bool:
            if threading.get_ident() != self.thread:
                return False
            self._flush()
            return True

        def _add_handle(self, fd: int, event: int, cb: Any, opaque: Any) -> int:
            if self._here():
                return super()._add_handle(fd, event, cb, opaque)  # type: ignore[no-any-return]
            callback = libvirtaio.FDCallback(self, cb, opaque, descriptor=None, event=event)
            self._later(self._attach_handle, callback, fd)
            return callback.iden  # type: ignore[no-any-return]

        def _attach_handle(self, callback: Any, fd: int) -> None:
            callback.descriptor = self.descriptors[fd]
            self.callbacks[callback.iden] = callback
            callback.descriptor.add_handle(callback)
            self._pending_inc()

        def _add_timeout(self, timeout: int, cb: Any, opaque: Any) -> int:
            if self._here():
                return super()._add_timeout(timeout, cb, opaque)  # type: ignore[no-any-return]
            callback = libvirtaio.TimeoutCallback(self, cb, opaque)
            self._later(self._attach_timeout, callback, timeout)
            return callback.iden  # type: ignore[no-any-return]

        def _attach_timeout(self, callback: Any, timeout: int) -> None:
            self.callbacks[callback.iden] = callback
            callback.update(timeout=timeout)
            self._pending_inc()

        def _update_handle(self, watch: int, event: int) -> None:
            if self._here():
                super()._update_handle(watch, event)
            else:
                self._later(self._if_known, super()._update_handle, watch, event)

        def _update_timeout(self, timer: int, timeout: int) -> None:
            if self._here():
                super()._update_timeout(timer, timeout)
            else:
                self._later(self._if_known, super()._update_timeout, timer, timeout)

        def _remove_handle(self, watch: int) -> int:
            if self._here():
                return super()._remove_handle(watch)  # type: ignore[no-any-return]
            self._later(self._if_known, super()._remove_handle, watch)
            return 0

        def _remove_timeout(self, timer: int) -> int:
            if self._here():
                return super()._remove_timeout(timer)  # type: ignore[no-any-return]
            self._later(self._if_known, super()._remove_timeout, timer)
            return 0

        def _if_known(self, fn: Callable[..., Any], iden: int, *args: Any) -> None:
            if iden in self.callbacks:
                fn(iden, *args)

        def schedule_ff_callback(self, iden: int, opaque: Any) -> None:
            self.loop.call_soon(self._free, opaque)

        def _free(self, opaque: Any) -> None:
            load_libvirt().virEventInvokeFreeCallback(opaque)
            self._pending_dec()

    return ThreadSafeImpl


class _Events:
    """libvirt's event loop: one implementation per process, on the running asyncio loop."""

    def __init__(self) -> None:
        self.impl: Any = None

    def bind(self) -> bool:
        """Register (or move) the implementation on the running loop; True if it moved."""
        loop = asyncio.get_running_loop()
        if self.impl is None:
            load_libvirt()
            try:
                self.impl = _impl_class()(loop).register()
            except RuntimeError as err:  # libvirt takes one implementation per process
                raise ResourceError(
                    f"another libvirt event loop is registered in this process: {err}"
                ) from err
            return False
        if self.impl.loop is loop:
            return False
        if self.impl.loop.is_running():
            raise ResourceError("libvirt's events are already bound to another running event loop")
        self.impl.rebind(loop)
        return True


EVENTS = _Events()
