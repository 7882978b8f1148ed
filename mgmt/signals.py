"""Signal handlers on the event loop that never lose a signal.

asyncio's `loop.add_signal_handler` learns of a signal from the byte the C handler writes to
the loop's self-pipe, the pipe `call_soon_threadsafe` also writes one byte to per call. While
the loop is busy (a first run of 10,000 resources, each finishing its I/O in a thread), those
bytes fill the pipe, the signal's byte is dropped ("Exception ignored when trying to write to
the signal wakeup fd: BlockingIOError") and the handler never runs: a daemon ignored two
SIGTERMs. `Signals` gives signals a pipe of their own, which only signals write to.

A handler is set with `_signal.signal`, which returns the previous one as it is: `signal.signal`
tries to make it a `signal.Handlers` member, and asyncio.run's SIGINT handler, a `partial` over
its main task, is none: the `ValueError` it builds holds the partial's repr, which formats the
task and its callbacks (~2 ms of a cron run: `inspect` and `ast` imported for that alone).

    with Signals(loop, {signal.SIGTERM: on_term}):
        ...  # on_term(signal.SIGTERM) runs on the loop for every SIGTERM

`mgmt run` holds its signals in such a pipe from its first instruction (`mgmt.hold_signals`):
`Signals` reads that pipe, and handles the signals received before it was entered at its entry
(a SIGTERM in the first ~0.1 s of a run killed it, exit 143, with nothing logged).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from _signal import signal as set_handler  # type: ignore[import-not-found]  # see the doc
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from mgmt import held_signals


def _ignore(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler: the work is done on the loop, from the pipe."""


class Signals:
    """See the module doc. Handlers run as loop callbacks, one per signal received."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        handlers: dict[signal.Signals, Callable[[signal.Signals], None]],
    ) -> None:
        self.loop = loop
        self.handlers = handlers
        self._previous: dict[signal.Signals, Any] = {}
        self._wakeup = -1
        self._sockets: tuple[socket.socket, ...] = ()
        # `mgmt run` holds its signals from its start in a pipe (`mgmt.hold_signals`): those
        # received before are read from it, in order, with the later ones.
        held = held_signals()
        self._own = held is None
        if held is None:
            pair = socket.socketpair()
            self._sockets = pair
            held = (pair[0].fileno(), pair[1].fileno())
        self._read, self._write = held

    def __enter__(self) -> Signals:
        if self._own:
            for sock in self._sockets:
                sock.setblocking(False)
        self._wakeup = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        for sig in self.handlers:
            self._previous[sig] = set_handler(sig, _ignore)
        self.loop.add_reader(self._read, self._on_readable)
        self._on_readable()  # those held: handled now, before the caller goes on
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for sig, previous in self._previous.items():
            set_handler(sig, previous)  # as they were before
        signal.set_wakeup_fd(self._wakeup)
        self.loop.remove_reader(self._read)
        if self._own:
            for sock in self._sockets:
                sock.close()

    def _on_readable(self) -> None:
        try:
            data = os.read(self._read, 4096)
        except (BlockingIOError, InterruptedError):
            return
        for signum in data:
            sig = next((s for s in self.handlers if s == signum), None)
            if sig is not None:
                self.handlers[sig](sig)
