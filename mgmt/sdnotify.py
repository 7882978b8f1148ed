"""systemd's service notification protocol (sd_notify), for `Type=notify` units.

Under systemd, $NOTIFY_SOCKET names a datagram socket: the agent sends READY=1 once its first
graph has settled (at most `agent.READY_WAIT` s after it began), STATUS=<one line> as the state
changes (while converging, as resources settle
or fail: a few lines a second at most), STOPPING=1 when it stops, and, when the unit
sets WatchdogSec=, WATCHDOG=1 at half the interval from a task on the event loop: a loop that is
wedged stops the pings, and systemd restarts the agent. The variables are removed from our
environment once read, so that no command we run can speak for us.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import os
import select
import socket
from collections.abc import Callable

log = logging.getLogger("main")

VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
BARRIER_WAIT = 5.0  # seconds `last_words` waits for systemd to have read them
STATUS_EVERY = 0.25  # seconds: at most 4 progress lines a second (`status_soon`)


class Notifier:
    """One connection to systemd's notify socket (see the module docstring)."""

    def __init__(self, address: str, watchdog_usec: int = 0) -> None:
        # "@name" is in the abstract namespace.
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog = watchdog_usec / 1e6 if watchdog_usec > 0 else 0.0  # seconds
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)
        self._status = ""
        self._soon: asyncio.TimerHandle | None = None  # a progress line to send
        self._soon_sent = 0.0  # when the last was (the loop's clock)
        self._stopping = False  # STATUS=stopping said: no progress line after it

    @classmethod
    def from_environment(cls, keep: bool = False) -> Notifier | None:
        """The notifier systemd asked for, or None (not under systemd, or not Type=notify).
        `keep`: leave the variables for the agent's own (`last_words`' notifier)."""
        take = os.environ.get if keep else os.environ.pop
        values = {name: take(name, "") for name in VARIABLES}
        address = values["NOTIFY_SOCKET"]
        if not address or not (address.startswith(("/", "@"))):
            return None
        usec = 0
        pid = values["WATCHDOG_PID"]
        if values["WATCHDOG_USEC"].isdigit() and (not pid or pid == str(os.getpid())):
            usec = int(values["WATCHDOG_USEC"])
        return cls(address, usec)

    def send(self, *assignments: str) -> None:
        """Send `NAME=value` lines; never blocks (a full socket drops the message, logged)."""
        data = "\n".join(assignments).encode()
        try:
            self._sock.sendto(data, self.address)
        except OSError as err:
            log.debug("sd_notify %s: %s", assignments[0].split("=")[0], err)

    def ready(self, status: str) -> None:
        self._status = status
        self.send("READY=1", f"STATUS={_one_line(status)}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        """STATUS=, sent only when it changed."""
        if status != self._status:
            self._status = status
            self.send(f"STATUS={_one_line(status)}")

    def status_soon(self, make: Callable[[], str]) -> None:
        """STATUS=make(), soon: a progress line (a resource settled or failed while the graph
        converges). At most one every STATUS_EVERY s, the last change always sent: a burst of
        a thousand changes costs one timer and one line."""
        if self._soon is not None or self._stopping:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._soon_sent + STATUS_EVERY - loop.time())
        self._soon = loop.call_later(delay, self._send_soon, make)

    def _send_soon(self, make: Callable[[], str]) -> None:
        self._soon = None
        self._soon_sent = asyncio.get_running_loop().time()
        self.status(make())

    def stopping(self) -> None:
        self._stopping = True
        self._cancel_soon()
        self.send("STOPPING=1", "STATUS=stopping")

    def _cancel_soon(self) -> None:
        if self._soon is not None:
            self._soon.cancel()
            self._soon = None

    async def keep_alive(self) -> None:
        """WATCHDOG=1 at half the watchdog interval, from the loop, until cancelled."""
        if not self.watchdog:
            return
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(self.watchdog / 2)

    def say_last(self, status: str, wait: float = BARRIER_WAIT) -> None:
        """STATUS=`status` before the agent exits (why it refused to start: `systemctl
        status` shows it), then a barrier (BARRIER=1, systemd >= 246): systemd has read the
        message before we exit (one from a process that has ended may be dropped, its sender
        no longer the unit's main process). Blocks up to `wait` s: call it from a thread."""
        self.send(f"STATUS={_one_line(status)}")
        read, write = os.pipe2(os.O_CLOEXEC)
        try:
            try:
                self._sock.sendmsg(
                    [b"BARRIER=1"],
                    [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [write]))],
                    0,
                    self.address,
                )
            except OSError as err:
                log.debug("sd_notify BARRIER: %s", err)
                return
            os.close(write)
            write = -1
            poller = select.poll()
            poller.register(read, select.POLLIN)  # POLLHUP once systemd closed its copy
            poller.poll(wait * 1000)
        finally:
            os.close(read)
            if write >= 0:
                os.close(write)

    def close(self) -> None:
        self._cancel_soon()
        with contextlib.suppress(OSError):
            self._sock.close()


def last_words(status: str) -> None:
    """Under systemd (Type=notify), STATUS=`status` as the process exits: why it refused to
    start (bad input, exit 2), for `systemctl status`; nothing otherwise. Blocks until systemd
    has read it (at most BARRIER_WAIT s): from a thread on an event loop."""
    notifier = Notifier.from_environment(keep=True)
    if notifier is None:
        return
    try:
        notifier.say_last(status)
    finally:
        notifier.close()


def _one_line(text: str) -> str:
    return " ".join(text.split())[:400]
