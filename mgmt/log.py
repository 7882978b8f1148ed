"""Log setup: one line per event, `HH:MM:SS engine: file[hello]: content updated`, or JSON.

The lines logged on the event loop's thread during one pass of the loop are written to stderr
together at the end of it (BatchingStreamHandler: a cold run of 10,000 files logs 10,000
lines, a write each cost ~9% of it); every line is written, in order, before the loop waits
for anything, and any other thread's lines are written at once.

Under systemd, when stderr is the journal (JOURNAL_STREAM names it), records go to the journal
through its native protocol instead, with structured fields: PRIORITY, MGMT_LOGGER, and for a
resource's lines MGMT_KIND and MGMT_NAME (`journalctl MGMT_KIND=file`).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import select
import socket
import struct
import sys
from typing import Any, TextIO

from resources._lib import journal


class TextFormatter(logging.Formatter):
    """`HH:MM:SS logger: message`; the time is formatted once per second, not once per line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(name)s: %(message)s", "%H:%M:%S")
        self._stamp: tuple[int, str] = (-1, "")  # (second, its text), replaced as one

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        stamp = self._stamp
        if stamp[0] != second:
            stamp = self._stamp = (second, super().formatTime(record, datefmt))
        return stamp[1]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, kind, name, message."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        kind = getattr(record, "res_kind", None)
        message = record.getMessage()
        if kind is not None:
            data["kind"] = kind
            data["name"] = getattr(record, "res_name", "")
            message = message.removeprefix(f"{kind}[{data['name']}]: ")
        data["message"] = message
        if record.exc_info:
            data["error"] = self.formatException(record.exc_info)
        return json.dumps(data)


SEND_WAIT = 2.0  # seconds a journal record waits for room in journald's queue, at most

# logging's levels as syslog's priorities (the journal's PRIORITY field).
PRIORITIES = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6}


class JournalHandler(logging.Handler):
    """Each record as one journal entry with structured fields (see the module docstring)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        # journald's queue holds few datagrams (net.unix.max_dgram_qlen: 10 on some hosts) and
        # a first run logs thousands of lines at once: a send waits for room, as libsystemd's
        # does, but at most SEND_WAIT, so that a wedged journald cannot wedge the agent.
        timeout = struct.pack("ll", int(SEND_WAIT), int(SEND_WAIT % 1 * 1_000_000))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeout)
        self._stalled = False  # a send timed out: don't wait again until one goes through
        self._dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            fields = {
                "MESSAGE": message,
                "PRIORITY": str(PRIORITIES.get(record.levelno, 7)),
                "SYSLOG_IDENTIFIER": "mgmt",
                "MGMT_LOGGER": record.name,
            }
            kind = getattr(record, "res_kind", None)
            if kind is not None:
                fields["MGMT_KIND"] = str(kind)
                fields["MGMT_NAME"] = str(getattr(record, "res_name", ""))
            data = journal.encode(fields)[: journal.MAX_DATAGRAM]
            self._send(data)
        except OSError:
            self.handleError(record)

    def _send(self, data: bytes) -> None:
        flags = socket.MSG_DONTWAIT if self._stalled else 0
        try:
            self.sock.sendto(data, flags, self.path)
        except BlockingIOError:  # still full after SEND_WAIT (stderr is journald's too: no word)
            self._stalled = True
            self._dropped += 1
            return
        self._stalled = False
        if self._dropped:
            lost = {"MESSAGE": f"{self._dropped} log lines dropped: the journal was full"}
            self._dropped = 0
            fields = {**lost, "PRIORITY": "4", "SYSLOG_IDENTIFIER": "mgmt", "MGMT_LOGGER": "log"}
            with contextlib.suppress(OSError):
                self.sock.sendto(journal.encode(fields), socket.MSG_DONTWAIT, self.path)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        super().close()


def write_all(stream: TextIO, text: str) -> None:
    """Write all of `text` to `stream`. A text stream over an unbuffered file (`python -u`,
    PYTHONUNBUFFERED=1, common in service units) passes each write to the system call once and
    drops what a partial write leaves: a write to a pipe interrupted by a signal (SIGTERM
    during a first run) lost the end of a loop pass's lines. Such a stream gets its bytes
    written here, until they are all out."""
    raw = getattr(stream, "buffer", None)
    if not isinstance(raw, io.RawIOBase):
        stream.write(text)  # buffered: its writer finishes partial writes itself
        return
    data = memoryview(text.encode(stream.encoding or "utf-8", stream.errors or "strict"))
    while data:
        written = raw.write(data)
        if written is None:  # a non-blocking descriptor that is full: wait for room
            select.select([], [raw], [])
            continue
        data = data[written:]


class BatchingStreamHandler(logging.StreamHandler[TextIO]):
    """A StreamHandler that writes the lines logged during one pass of the running event loop
    with one write at its end (a call_soon); outside a loop (another thread, before or after
    the loop runs) a line and any before it are written at once. logging.shutdown() (at exit)
    flushes what a loop stopped before writing."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._scheduled_on: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._pending.append(self.format(record) + self.terminator)  # under self.lock
        except Exception:
            self.handleError(record)
            return
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None and loop is self._scheduled_on:
            return
        if loop is None:
            self.flush()
            return
        self._scheduled_on = loop
        loop.call_soon(self.flush)

    def flush(self) -> None:
        with self.lock if self.lock is not None else contextlib.nullcontext():
            self._scheduled_on = None
            if self._pending:
                data = "".join(self._pending)
                self._pending.clear()
                try:
                    write_all(self.stream, data)
                except (OSError, ValueError):  # stderr closed: nothing more can be said
                    return
            with contextlib.suppress(OSError, ValueError):
                self.stream.flush()


def journal_stream() -> bool:
    """Whether stderr is the journal stream systemd gave us (JOURNAL_STREAM=dev:inode)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):  # AttributeError: no stderr (`2>&-`)
        return False
    return value == f"{st.st_dev}:{st.st_ino}"


def setup(fmt: str = "text", verbose: bool = False) -> None:
    """Configure the root logger: the journal under systemd, otherwise stderr."""
    logging._srcfile = None  # no caller lookup per record: no format shows it (logging's docs)
    handler: logging.Handler = BatchingStreamHandler(sys.stderr)
    if sys.stderr is None:  # started with fd 2 closed (`2>&-`): nowhere to say anything
        handler = logging.NullHandler()
    elif journal_stream() and os.path.exists(journal.socket_path()):
        handler = JournalHandler(journal.socket_path())
    elif fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
