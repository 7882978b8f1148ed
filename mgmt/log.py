"""Log setup: one line per event, `HH:MM:SS engine: file[hello]: content updated`, or JSON.

The lines logged on the event loop's thread during one pass of the loop are handed together at
the end of it to a writer thread, which writes them to stderr with one write
(BatchingStreamHandler: a cold run of 10,000 files logs 10,000 lines, a write each cost ~9% of
it); any other thread's lines are handed over at once, after the pending ones. Every line is
written, in order. The loop never waits for stderr: when it blocks (a pipe nobody reads), the
lines wait, up to BUFFER_LIMIT, then are dropped and counted, and "N log lines dropped" takes
their place once stderr takes lines again. At exit the last lines are waited for as long as
it takes (a slow reader, `mgmt run ... 2>&1 | less`, gets them all, as from any command), but
after a stop signal (stopping()) at most WRITE_WAIT, then given up on: SIGTERM stops an agent
whose stderr is wedged.

Under systemd, when stderr is the journal (JOURNAL_STREAM names it), records go to the journal
through its native protocol instead, with structured fields: PRIORITY, MGMT_LOGGER, and for a
resource's lines MGMT_KIND and MGMT_NAME (`journalctl MGMT_KIND=file`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import select
import socket
import struct
import sys
import threading
from typing import Any, TextIO

from resources._lib import journal

# Control characters of a message, escaped in a text line (the tab kept): a newline in a name
# (a file a local user made in a purged directory) forged whole log lines, and a terminal
# reads the escape sequences of a name.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _escape(char: re.Match[str]) -> str:
    return repr(char.group())[1:-1]


class TextFormatter(logging.Formatter):
    """`HH:MM:SS logger: message`, one line each (a traceback follows on lines of its own);
    the time is formatted once per second, not once per line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(name)s: %(message)s", "%H:%M:%S")
        self._stamp: tuple[int, str] = (-1, "")  # (second, its text), replaced as one

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        if _CONTROL.search(message) is None:
            return super().formatMessage(record)
        record.message = _CONTROL.sub(_escape, message)
        try:
            return super().formatMessage(record)
        finally:
            record.message = message

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


# Lines waiting for stderr (a pipe nobody reads blocks its writes): at most this many characters
# (~80,000 lines) wait, beside the write in progress; then lines are dropped and counted.
BUFFER_LIMIT = 8 << 20
WRITE_WAIT = 2.0  # seconds a line logged outside the loop, or the last ones at exit, wait at most
_stopping = threading.Event()  # set: the last lines' wait at exit is bounded (WRITE_WAIT)


def stopping() -> None:
    """A stop signal came: the last lines at exit wait at most WRITE_WAIT for stderr."""
    _stopping.set()


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to the file descriptor `fd`. write(2) may take part of it: a pipe
    with less room than the data, a signal arriving mid-write (SIGTERM during a first run
    cut a loop pass's lines short, with PYTHONUNBUFFERED=1), a non-blocking descriptor that
    is full (then wait for room). The rest is written until all is out."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[written:]


class _Gap:
    """Lines dropped, in a row, at their place among the lines waiting to be written."""

    def __init__(self) -> None:
        self.count = 1

    def record(self) -> logging.LogRecord:
        message = "%d log lines dropped: writes to stderr blocked (nothing read it)"
        return logging.LogRecord("log", logging.WARNING, __file__, 0, message, (self.count,), None)


class _Writer:
    """A thread that writes what the handler hands it, in order, and lines the loop never waits
    for. At most `limit` characters wait for it (beside the write in progress): a line that
    does not fit is dropped and counted, and the count is written in its place, as one
    "N log lines dropped" line, once the stream takes lines again."""

    def __init__(self, handler: BatchingStreamHandler, limit: int) -> None:
        self.handler = handler
        self.limit = limit
        self.dropped = 0  # lines dropped, in all
        self._cond = threading.Condition(threading.Lock())
        self._waiting: list[str | _Gap] = []
        self._size = 0  # characters of the lines in self._waiting
        self._handed = 0  # hand-overs so far: put() counts them, ...
        self._done = 0  # ... the thread says how many of them it wrote (or failed to write)
        self._stalled = False  # a wait ran out: don't wait again until a write ends
        self._closing = False
        self._thread: threading.Thread | None = None
        fd: int | None = None
        with contextlib.suppress(AttributeError, OSError, ValueError):
            fd = handler.stream.fileno()  # StringIO: io.UnsupportedOperation (an OSError)
        self._fd = fd

    def put(self, lines: list[str]) -> None:
        """Hand `lines` over to the thread (in order after those handed before); never waits."""
        with self._cond:
            text = "".join(lines)
            if self._size + len(text) <= self.limit:
                self._waiting.append(text)
                self._size += len(text)
            else:
                for line in lines:
                    self._add(line)
            self._handed += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="log writer", daemon=True)
                try:
                    self._thread.start()
                except RuntimeError:  # at the interpreter's exit (3.12+): this thread writes
                    self._thread = None
                    items, self._waiting, self._size = self._waiting, [], 0
                    self._write(items)
                    self._done = self._handed
                    return
            self._cond.notify()

    def _gap(self) -> _Gap | None:
        last = self._waiting[-1] if self._waiting else None
        return last if isinstance(last, _Gap) else None

    def _add(self, line: str) -> None:
        if self._size + len(line) <= self.limit:
            self._waiting.append(line)
            self._size += len(line)
            return
        self.dropped += 1
        gap = self._gap()
        if gap is None:
            self._waiting.append(_Gap())
        else:
            gap.count += 1

    def wait(self, timeout: float | None, stalled: bool = True) -> None:
        """Wait until what was handed over is written, at most `timeout` seconds; not at all
        while the stream stalls (a wait ran out and no write ended since), unless `stalled`
        is false."""
        with self._cond:
            target = self._handed
            if self._done >= target or (self._stalled and stalled):
                return
            if not self._cond.wait_for(lambda: self._done >= target, timeout):
                self._stalled = True

    def close(self) -> None:
        """Let the thread end once it wrote what waits (a blocked write is never waited for)."""
        with self._cond:
            self._closing = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting:
                    if self._closing:
                        self._thread = None
                        return
                    self._cond.wait()
                items, self._waiting, self._size = self._waiting, [], 0
                handed = self._handed
            self._write(items)
            with self._cond:
                self._done = handed
                self._stalled = False
                self._cond.notify_all()

    def _write(self, items: list[str | _Gap]) -> None:
        parts = []
        for item in items:
            if isinstance(item, _Gap):
                with contextlib.suppress(Exception):
                    parts.append(self.handler.format(item.record()) + self.handler.terminator)
            else:
                parts.append(item)
        text = "".join(parts)
        stream = self.handler.stream
        if getattr(stream, "closed", False):  # its descriptor may be another file's by now
            return
        try:
            if self._fd is None:  # not a file (a test's StringIO)
                stream.write(text)
                stream.flush()
                return
            # To the file itself, not through the stream's buffer: a write that blocks holds
            # the buffer's lock, and the interpreter's exit, flushing stderr, would abort on it.
            write_all(self._fd, text.encode(stream.encoding or "utf-8", "backslashreplace"))
        except Exception:  # stderr closed, its reader gone...: nowhere to say it, and the
            return  # thread goes on (an exception would end it, and the lines after wait)


class BatchingStreamHandler(logging.StreamHandler[TextIO]):
    """A StreamHandler whose lines a writer thread writes, so that a stream that blocks (a
    pipe nobody reads) never blocks the event loop. The lines logged during one pass of the
    running loop are handed over together at its end (a call_soon): one write for them all.
    Outside a loop (another thread, before or after the loop runs) a line and any before it
    are handed over at once, and the caller waits until they are written, at most WRITE_WAIT
    (and not while the stream stalls). flush() (logging.shutdown() at exit) hands over what a
    loop stopped before handing over, and waits for it (after stopping(): at most WRITE_WAIT)."""

    def __init__(self, stream: TextIO, limit: int = BUFFER_LIMIT) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._scheduled_on: asyncio.AbstractEventLoop | None = None
        self._writer = _Writer(self, limit)

    @property
    def dropped(self) -> int:
        """Lines dropped so far (`limit` characters of lines waited for the stream)."""
        return self._writer.dropped

    def _locked(self) -> contextlib.AbstractContextManager[object]:
        return self.lock if self.lock is not None else contextlib.nullcontext()

    def handle(self, record: logging.LogRecord) -> bool:
        """As logging's, without holding the handler's lock while a line waits for its write
        (the loop's thread takes that lock to log)."""
        kept = self.filter(record)
        if isinstance(kept, logging.LogRecord):  # Python 3.12+: a filter may replace it
            record = kept
        if kept:
            self.emit(record)
        return bool(kept)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._locked():
            self._pending.append(line)
            if loop is not None:
                if loop is not self._scheduled_on:
                    self._scheduled_on = loop
                    loop.call_soon(self._end_of_pass)
                return
            self._hand_over()
        self._writer.wait(WRITE_WAIT)

    def _end_of_pass(self) -> None:
        with self._locked():
            self._scheduled_on = None
            self._hand_over()

    def _hand_over(self) -> None:
        if self._pending:
            self._writer.put(self._pending)
            self._pending = []

    def flush(self) -> None:
        with self._locked():
            self._hand_over()
        self._writer.wait(WRITE_WAIT if _stopping.is_set() else None, stalled=False)

    def close(self) -> None:
        """Hand over the lines left; the writer ends once they are written (never waited for:
        flush() waits, logging.shutdown() calls it first)."""
        with self._locked():
            self._hand_over()
        self._writer.close()
        super().close()


def journal_stream() -> bool:
    """Whether stderr is the journal stream systemd gave us (JOURNAL_STREAM=dev:inode)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):  # AttributeError: no stderr (`2>&-`)
        return False
    return value == f"{st.st_dev}:{st.st_ino}"


def _flush_first(hook: Any) -> Any:
    """`hook` (sys.excepthook), once the lines logged before are written: the interpreter
    writes a traceback to stderr itself, and it came before the crash's last lines, or amid
    them (they wait for the writer thread)."""

    def excepthook(*args: Any) -> None:
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        hook(*args)

    excepthook.flushes_first = True  # type: ignore[attr-defined]
    return excepthook


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
    for old in root.handlers:  # set up again (tests running agents in-process): theirs end
        if isinstance(old, BatchingStreamHandler | JournalHandler):
            old.close()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not getattr(sys.excepthook, "flushes_first", False):
        sys.excepthook = _flush_first(sys.excepthook)
