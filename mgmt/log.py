"""Log setup: one line per event, `HH:MM:SS engine: file[hello]: content updated`, or JSON.

The lines logged on the event loop's thread during one pass of the loop are handed together at
the end of it to a writer thread, which writes them to stderr with one write
(BatchingStreamHandler: a cold run of 10,000 files logs 10,000 lines, a write each cost ~9% of
it); a loop that logs again within HAND_OVER_EVERY of its last hand-over hands its lines over
once that much time has passed (each hand-over wakes the writer thread, which then takes the
GIL: a cold run of 10,000 files handed over ~7,000 times, ~1,900 so); any other thread's lines
are handed over at once, after the pending ones. Every line is written, in order. The loop never waits for stderr: when it blocks (a pipe nobody reads), the
lines wait, up to BUFFER_LIMIT, then are dropped and counted, and "N log lines dropped" takes
their place once stderr takes lines again. At exit the last lines are waited for as long as
it takes (a slow reader, `mgmt run ... 2>&1 | less`, gets them all, as from any command), but
after a stop signal (stopping()) at most WRITE_WAIT, then given up on: SIGTERM stops an agent
whose stderr is wedged.

Under systemd, when stderr is the journal (JOURNAL_STREAM names it), records go to the journal
through its native protocol instead, with structured fields: PRIORITY, MGMT_LOGGER, and for a
resource's lines MGMT_KIND and MGMT_NAME (`journalctl MGMT_KIND=file`). The same writer
(WriterHandler) sends them, one datagram each: a journald that reads nothing (its queue full)
is a stderr that blocks, with the same buffer, count of dropped lines and exit.

What Python writes to stderr itself (a warning, an exception no thread caught, one ignored in a
__del__, a record logging cannot format) is logged instead, through the same writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy as _copy
import errno
import logging
import math
import os
import re
import select
import socket
import stat
import sys
import threading
import time
import warnings
from _thread import start_new_thread
from types import TracebackType
from typing import Any, Generic, TextIO, TypeVar

from engine.churn import MUTED
from engine.params import knows_secrets, redact_known
from engine.tasks import running_loop_or_none

# Control characters of a message, escaped in a text line (the tab kept): a newline in a name
# (a file a local user made in a purged directory) forged whole log lines, and a terminal
# reads the escape sequences of a name: C0's and C1's (U+009B is a one-character CSI to a
# terminal that takes 8-bit controls; before 2026-12-06 only C0 was escaped, where `mgmt status`
# escaped both).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def _escape(char: re.Match[str]) -> str:
    return repr(char.group())[1:-1]


class TextFormatter(logging.Formatter):
    """`HH:MM:SS logger: message`, one line each (a traceback follows on lines of its own);
    the time is formatted once per second, not once per line. A record with no traceback or
    stack is made into its line by `line()`, as a resource's INFO line without a record is
    (BatchingStreamHandler.emit_line): one text for both."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(name)s: %(message)s", "%H:%M:%S")
        self._stamp: tuple[int, str] = (-1, "")  # (second, its text), replaced as one

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        # as logging.Formatter.format, which leaves both on the record (others' handlers read)
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        return self.line(record.asctime, record.name, record.message)

    def resource_line(self, logger: str, created: float, kind: str, name: str, message: str) -> str:
        """format()'s line of a resource's INFO record (BatchingStreamHandler.emit_line)."""
        return self.line(self.stamp(created), logger, f"{kind}[{name}]: {message}")

    @staticmethod
    def line(stamp: str, logger: str, message: str) -> str:
        """The format's line: "%(asctime)s %(name)s: %(message)s", the message's control
        characters escaped."""
        if not message.isprintable() and _CONTROL.search(message) is not None:
            message = _CONTROL.sub(_escape, message)  # (a printable text has none: quicker)
        return f"{stamp} {logger}: {message}"

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
        if datefmt is not None and datefmt != self.datefmt:
            return super().formatTime(record, datefmt)
        return self.stamp(record.created)

    def stamp(self, created: float) -> str:
        """The time `created` (time.time()) as the format shows it, made once a second."""
        second = int(created)
        stamp = self._stamp
        if stamp[0] != second:
            text = time.strftime(self.datefmt or "%H:%M:%S", self.converter(created))
            stamp = self._stamp = (second, text)
        return stamp[1]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (RFC 3339, local, with milliseconds and the offset:
    `2026-12-04T22:35:57.123+00:00`), level, logger, kind, name, message."""

    def when(self, created: float) -> str:
        """The time `created` (time.time()) in RFC 3339, as the line's `time` says it."""
        tm = self.converter(created)
        offset = tm.tm_gmtoff or 0
        sign = "-" if offset < 0 else "+"
        hours, minutes = divmod(abs(offset) // 60, 60)
        millis = int((created - int(created)) * 1000)  # as logging's msecs
        day = time.strftime("%Y-%m-%dT%H:%M:%S", tm)
        return f"{day}.{millis:03d}{sign}{hours:02d}:{minutes:02d}"

    def format(self, record: logging.LogRecord) -> str:
        kind = getattr(record, "res_kind", None)
        message = record.getMessage()
        name = getattr(record, "res_name", "") if kind is not None else None
        if kind is not None:
            message = message.removeprefix(f"{kind}[{name}]: ")
        error = record.exc_text or None  # redacted() made it
        if record.exc_info:
            error = self.formatException(record.exc_info)
        when = self.when(record.created)
        level = record.levelname.lower()
        line = self._line(when, level, record.name, kind, name, message, error)
        counts = getattr(record, "res_counts", None)
        if counts:  # a line summing up several resources (engine.churn): each, by its fields
            import json

            data = json.loads(line)
            data["resources"] = [
                {"kind": kind, "name": name, "count": count} for kind, name, count in counts
            ]
            more, repairs = getattr(record, "res_more", (0, 0))
            if more:  # past engine.churn.LISTED: how many more, and their repairs
                data["more"] = {"resources": more, "count": repairs}
            return json.dumps(data)
        return line

    def resource_line(self, logger: str, created: float, kind: str, name: str, message: str) -> str:
        """format()'s line of a resource's INFO record (BatchingStreamHandler.emit_line)."""
        when = self.when(created)
        level = logging.getLevelName(logging.INFO).lower()  # a record's levelname
        return self._line(when, level, logger, kind, name, message, None)

    def plain_line(self, level: int, logger: str, message: str) -> str:
        """The line of a record of `logger` at `level` made now, for what is said before
        logging is set up (mgmt.warn_misspelled_env)."""
        return self._line(
            self.when(time.time()),
            logging.getLevelName(level).lower(),
            logger,
            None,
            None,
            message,
            None,
        )

    @staticmethod
    def _line(  # noqa: PLR0917 (the line's fields)
        when: str,
        level: str,
        logger: str,
        kind: object,
        name: object,
        message: str,
        error: str | None,
    ) -> str:
        data: dict[str, Any] = {"time": when, "level": level, "logger": logger}
        if kind is not None:
            data["kind"] = kind
            data["name"] = name
        data["message"] = message
        if error is not None:
            data["error"] = error
        import json  # here: a cron run logs text (json: ~5 M instructions of its start)

        return json.dumps(data)


# logging's levels as syslog's priorities (the journal's PRIORITY field).
PRIORITIES = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6}

# Lines waiting for their sink (stderr: a pipe nobody reads blocks its writes; the journal: a
# journald that reads nothing blocks its sends once its queue is full): at most this many
# characters (bytes of datagrams for the journal; ~80,000 lines) wait, beside the write in
# progress; then lines are dropped and counted.
BUFFER_LIMIT = 8 << 20
WRITE_WAIT = 2.0  # seconds a line logged outside the loop, or the last ones at exit, wait at most
# Seconds between two hand-overs of the loop's lines to the writer thread, at least: a line
# logged after a quiet spell is handed over at the end of its pass, one of a busy stream (a
# first run's "created" lines) waits at most this long for the lines after it.
HAND_OVER_EVERY = 0.005
_ATOMIC = select.PIPE_BUF  # bytes a pipe takes whole or not at all
_stopping = threading.Event()  # set: the last lines' wait at exit is bounded (WRITE_WAIT)

Item = TypeVar("Item", str, bytes)  # a line as its sink takes it: text, or a journal datagram


def stopping() -> None:
    """A stop signal came: the last lines at exit wait at most WRITE_WAIT for their sink."""
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


class _Writer(Generic[Item]):
    """A thread that writes what the handler hands it, in order, and lines the loop never waits
    for. At most `limit` characters wait for it (beside the write in progress): a line that
    does not fit is dropped and counted, and the count is written in its place, as one
    "N log lines dropped" line, once the sink takes lines again."""

    def __init__(self, handler: WriterHandler[Item], limit: int) -> None:
        self.handler: WriterHandler[Item] = handler
        self.limit = limit
        self.dropped = 0  # lines dropped, in all
        self._cond = threading.Condition(threading.Lock())
        self._waiting: list[Item | _Gap] = []
        self._size = 0  # characters of the lines in self._waiting
        self._handed = 0  # hand-overs so far: put() counts them, ...
        self._done = 0  # ... the thread says how many of them it wrote (or failed to write)
        self._stalled = False  # a wait ran out: don't wait again until a write ends
        self._closing = False
        self._running = False  # the thread was started and has not ended

    def put(self, lines: list[Item]) -> None:
        """Hand `lines` over to the thread (in order after those handed before); never waits.
        When the thread has written everything before them, they are first offered to the
        sink itself (`write_nowait`): what it takes at once needs no thread."""
        with self._cond:
            if not self._waiting and self._done == self._handed and not self._closing:
                taken = self.handler.write_nowait(lines)
                if taken == len(lines):
                    return
                lines = lines[taken:]
            size = sum(map(len, lines))
            if self._size + size <= self.limit:
                self._waiting += lines
                self._size += size
            else:
                for line in lines:
                    self._add(line)
            self._handed += 1
            if not self._running:
                # A thread of `_thread`'s: started without waiting for it to run, as
                # threading.Thread.start() does (0.2-3 ms of a cron run, a busy machine's
                # scheduler's); a daemon's, as the interpreter's exit ends it (flush() waits).
                try:
                    start_new_thread(self._run, ())
                except RuntimeError:  # at the interpreter's exit (3.12+): this thread writes
                    items, self._waiting, self._size = self._waiting, [], 0
                    self._write(items)
                    self._done = self._handed
                    return
                self._running = True
            self._cond.notify()

    def _add(self, line: Item) -> None:
        if self._size + len(line) <= self.limit:
            self._waiting.append(line)
            self._size += len(line)
            return
        self.dropped += 1
        last = self._waiting[-1] if self._waiting else None
        if isinstance(last, _Gap):
            last.count += 1
        else:
            self._waiting.append(_Gap())

    def wait(self, timeout: float | None, stalled: bool = True) -> None:
        """Wait until what was handed over is written, at most `timeout` seconds; not at all
        while the sink stalls (a wait ran out and no write ended since), unless `stalled`
        is false."""
        with self._cond:
            target = self._handed
            if self._done >= target or (self._stalled and stalled):
                return
            if not self._cond.wait_for(lambda: self._done >= target, timeout):
                self._stalled = True

    def close(self) -> None:
        """Let the thread end once it wrote what waits (a blocked write is never waited for);
        the handler's sink is released then (at once if no thread runs)."""
        with self._cond:
            self._closing = True
            running = self._running
            self._cond.notify()
        if not running:
            self.handler.release()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closing:
                    self._cond.wait()
                if not self._waiting:  # closing, and everything is written
                    self._running = False
                    break
                items, self._waiting, self._size = self._waiting, [], 0
                handed = self._handed
            self._write(items)
            with self._cond:
                self._done = handed
                self._stalled = False
                self._cond.notify_all()
        self.handler.release()

    def _write(self, items: list[Item | _Gap]) -> None:
        lines: list[Item] = []
        for item in items:
            if isinstance(item, _Gap):
                with contextlib.suppress(Exception):
                    lines.append(self.handler.render(self.handler.gap(item.count)))
            else:
                lines.append(item)
        try:
            self.handler.write(lines)
        except Exception:  # the sink closed, its reader gone...: nowhere to say it, and the
            return  # thread goes on (an exception would end it, and the lines after wait)


def redacted(record: logging.LogRecord) -> logging.LogRecord:
    """A copy of `record` whose message, traceback and stack have every secret the process
    knows as "***" (engine.params.hide_secret): what every handler of ours writes, whichever
    logger logged it (a resource's task failing unexpectedly, a reversal's error: the engine's
    own logger, which knows nothing of the resource's secrets). The traceback is formatted
    into `exc_text` here, as logging caches it; the record others' handlers get is untouched
    (a shallow copy: no LogRecord made through logging's factory)."""
    copy = _copy.copy(record)
    copy.msg, copy.args = redact_known(record.getMessage()), ()
    if record.exc_info:
        copy.exc_text = logging.Formatter().formatException(record.exc_info)
    if copy.exc_text:
        copy.exc_text = redact_known(copy.exc_text)
    copy.exc_info = None
    if copy.stack_info:
        copy.stack_info = redact_known(copy.stack_info)
    return copy


class WriterHandler(logging.Handler, Generic[Item]):
    """A handler whose lines a writer thread writes to its sink, so that a sink that blocks (a
    pipe nobody reads, a full journal) never blocks the event loop. Each record is rendered
    (`render`: formatted, encoded) where it is logged; the writer thread `write`s them. The
    lines logged during one pass of the running loop are handed over together at its end (a
    call_soon): one hand-over, and for stderr one write, for them all; within HAND_OVER_EVERY
    of the last hand-over, once that much time has passed. Outside a loop (another thread,
    before or after the loop runs) a line and any before it are handed over at once, and the
    caller waits until they are written, at most WRITE_WAIT (and not while the sink stalls).
    flush() (logging.shutdown() at exit) hands over what a loop stopped before handing over,
    and waits for it (after stopping(): at most WRITE_WAIT)."""

    blocked = "writes blocked"  # why lines were dropped, as the "N log lines dropped" line says

    def __init__(self, limit: int = BUFFER_LIMIT) -> None:
        super().__init__()
        self._pending: list[Item] = []
        self._scheduled_on: asyncio.AbstractEventLoop | None = None
        self._handed_at = -math.inf  # time.monotonic() of the loop's last hand-over
        self._writer: _Writer[Item] = _Writer(self, limit)

    def render(self, record: logging.LogRecord) -> Item:
        """`record` as the sink takes it (on the thread that logs it)."""
        raise NotImplementedError

    def write(self, lines: list[Item]) -> None:
        """Write `lines` to the sink, in order (in the writer thread; it may block)."""
        raise NotImplementedError

    def write_nowait(self, lines: list[Item]) -> int:
        """Write the first of `lines` that the sink takes at once, each whole, without waiting
        (on the thread that logs: nothing is in the writer thread's hands); how many. A sink
        that cannot be written so takes none."""
        return 0

    def release(self) -> None:
        """The writer thread has ended after close(): let go of the sink."""

    def gap(self, count: int) -> logging.LogRecord:
        """The line that takes the place of `count` lines dropped in a row."""
        message = "%d log lines dropped: %s"
        args = (count, self.blocked)
        return logging.LogRecord("log", logging.WARNING, __file__, 0, message, args, None)

    @property
    def dropped(self) -> int:
        """Lines dropped so far (`limit` characters of lines waited for the sink)."""
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
        if MUTED and record.levelno == logging.INFO and _muted(record):
            return  # a repair of a resource summed up for now (engine.churn.Quieted)
        try:
            if knows_secrets():
                record = redacted(record)
            line = self.render(record)
        except Exception:
            self.handleError(record)
            return
        self._put(line)

    def handleError(self, record: logging.LogRecord) -> None:
        """A record that cannot be rendered (a bad format string): one line says so, through
        the writer. (logging's own writes a traceback to sys.stderr, from the thread that
        logged: the event loop, blocked by a full pipe.)"""
        err = sys.exc_info()[1]
        message = "cannot log a line of %s (%.200r): %s: %s"
        args = (record.name, record.msg, type(err).__name__, err)
        note = logging.LogRecord("log", logging.ERROR, __file__, 0, message, args, None)
        with contextlib.suppress(Exception):
            self._put(self.render(note))

    def _put(self, line: Item) -> None:
        loop = running_loop_or_none()
        with self._locked():
            self._pending.append(line)
            if loop is not None:
                if loop is not self._scheduled_on:
                    self._scheduled_on = loop
                    wait = self._handed_at + HAND_OVER_EVERY - time.monotonic()
                    if wait > 0:  # it handed over just now: these lines join the next ones
                        loop.call_later(wait, self._end_of_pass)
                    else:
                        loop.call_soon(self._end_of_pass)
                return
            self._hand_over()
        self._writer.wait(WRITE_WAIT)

    def _end_of_pass(self) -> None:
        with self._locked():
            self._scheduled_on = None
            self._handed_at = time.monotonic()
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
        flush() waits, logging.shutdown() calls it first), then releases the sink."""
        with self._locked():
            self._hand_over()
        self._writer.close()
        super().close()


def _muted(record: logging.LogRecord) -> bool:
    """Whether `record` is a change line of a resource whose repairs are summed up for now
    (engine.churn.Quieted: its lines reach the status model, not the log); a line about what
    a server was asked (`traffic`) is not a change: said."""
    kind = getattr(record, "res_kind", None)
    if kind is None or getattr(record, "traffic", False):
        return False
    quieted = MUTED.get((str(kind), str(getattr(record, "res_name", ""))))
    return quieted is not None and quieted.hides()


class BatchingStreamHandler(WriterHandler[str]):
    """Lines to a text stream (stderr), formatted by the handler's formatter; the lines of a
    loop pass are written with one write (see WriterHandler)."""

    blocked = "writes to stderr blocked (nothing read it)"
    terminator = "\n"

    def __init__(self, stream: TextIO, limit: int = BUFFER_LIMIT) -> None:
        super().__init__(limit)
        self.stream = stream
        fd: int | None = None
        with contextlib.suppress(AttributeError, OSError, ValueError):
            fd = stream.fileno()  # StringIO: io.UnsupportedOperation (an OSError)
        self._fd = fd
        self._nowait: str | bool | None = None  # what write_nowait may write to: not asked yet

    def render(self, record: logging.LogRecord) -> str:
        return self.format(record) + self.terminator

    def takes_lines(self) -> bool:
        """engine.handle.LineSink: emit_line is handle()'s work with this class and format."""
        return (
            type(self) is BatchingStreamHandler
            and type(self.formatter) in _RESOURCE_LINES
            and not self.filters
        )

    def emit_line(self, logger: str, created: float, kind: str, name: str, message: str) -> None:
        """A resource's INFO line, as render() makes the record of it (engine.handle.LineSink;
        takes_lines() said so: the formatter is ours, one of _RESOURCE_LINES)."""
        # (no cast(): its union, built at each call, and the call cost ~1.5 K instructions a line)
        formatter: TextFormatter | JsonFormatter = self.formatter  # type: ignore[assignment]
        if MUTED and (quieted := MUTED.get((kind, name))) is not None and quieted.hides():
            return  # a repair of a resource summed up for now (engine.churn.Quieted)
        if knows_secrets():
            message = redact_known(message)
        self._put(formatter.resource_line(logger, created, kind, name, message) + self.terminator)

    def write_nowait(self, lines: list[str]) -> int:
        """All of `lines` in one write that cannot wait (RWF_NOWAIT: the file's own flags are
        not changed, another process may share it), to a sink that takes it whole or not at
        all: a pipe (up to PIPE_BUF bytes: atomic) or /dev/null; else none (a terminal, a
        regular file: the thread, as before). Each hand-over to the thread woke it, and it
        took the GIL twice: beside busy loops, the loop then waited for the GIL behind a
        preempted writer, up to tens of ms (issue 16, docs/benchmarks.md, "Drift repair
        beside busy loops")."""
        nowait = self._nowait
        if nowait is None:
            nowait = self._nowait = self._takes_nowait()
        if not nowait or getattr(self.stream, "closed", False):
            return 0
        assert self._fd is not None
        data = "".join(lines).encode(self.stream.encoding or "utf-8", "backslashreplace")
        if len(data) > _ATOMIC and nowait == "pipe":
            return 0
        try:
            os.pwritev(self._fd, [data], -1, os.RWF_NOWAIT)
        except OSError as err:  # full (EAGAIN), or not supported here after all
            if err.errno != errno.EAGAIN:
                self._nowait = False
            return 0
        return len(lines)

    def _takes_nowait(self) -> str | bool:
        """Where write_nowait may write: "pipe", "null" (/dev/null), or nowhere (False)."""
        if self._fd is None or not hasattr(os, "RWF_NOWAIT"):
            return False
        try:
            st = os.fstat(self._fd)
        except OSError:
            return False
        if stat.S_ISFIFO(st.st_mode):
            return "pipe"
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3):
            return "null"
        return False

    def write(self, lines: list[str]) -> None:
        text = "".join(lines)
        stream = self.stream
        if getattr(stream, "closed", False):  # its descriptor may be another file's by now
            return
        if self._fd is None:  # not a file (a test's StringIO)
            stream.write(text)
            stream.flush()
            return
        # To the file itself, not through the stream's buffer: a write that blocks holds the
        # buffer's lock, and the interpreter's exit, flushing stderr, would abort on it.
        write_all(self._fd, text.encode(stream.encoding or "utf-8", "backslashreplace"))


# The formatters whose resource_line() is their format() of a resource's INFO record.
_RESOURCE_LINES = (TextFormatter, JsonFormatter)


class JournalHandler(WriterHandler[bytes]):
    """Each record as one journal entry with structured fields (see the module docstring),
    one datagram each. journald's queue holds few datagrams (net.unix.max_dgram_qlen: 10 on
    some hosts) and a first run logs thousands of lines at once: the writer thread's send
    waits for room, as libsystemd's does; the loop never does (see WriterHandler)."""

    blocked = "sends to the journal blocked (journald read nothing)"

    def __init__(self, path: str, limit: int = BUFFER_LIMIT) -> None:
        from resources._lib import journal  # under systemd only: not a cron run's start

        super().__init__(limit)
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._encode, self._max = journal.encode, journal.MAX_DATAGRAM

    def render(self, record: logging.LogRecord) -> bytes:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        elif record.exc_text:  # redacted() made it
            message += "\n" + record.exc_text
        kind = getattr(record, "res_kind", None)
        if kind is None:
            return self._datagram(message, record.levelno, record.name, None, "")
        name = str(getattr(record, "res_name", ""))
        return self._datagram(message, record.levelno, record.name, str(kind), name)

    def _datagram(
        self, message: str, level: int, logger: str, kind: str | None, name: str
    ) -> bytes:
        fields = {
            "MESSAGE": message,
            "PRIORITY": str(PRIORITIES.get(level, 7)),
            "SYSLOG_IDENTIFIER": "mgmt",
            "MGMT_LOGGER": logger,
        }
        if kind is not None:
            fields["MGMT_KIND"] = kind
            fields["MGMT_NAME"] = name
        return self._encode(fields)[: self._max]

    def takes_lines(self) -> bool:
        """engine.handle.LineSink: emit_line is handle()'s work with this class."""
        return type(self) is JournalHandler and not self.filters

    def emit_line(self, logger: str, created: float, kind: str, name: str, message: str) -> None:
        """A resource's INFO line, as render() makes the record of it (engine.handle.LineSink)."""
        if MUTED and (quieted := MUTED.get((kind, name))) is not None and quieted.hides():
            return  # a repair of a resource summed up for now (engine.churn.Quieted)
        if knows_secrets():
            message = redact_known(message)
        self._put(self._datagram(f"{kind}[{name}]: {message}", logging.INFO, logger, kind, name))

    def write_nowait(self, lines: list[bytes]) -> int:
        """Each datagram sent without waiting (MSG_DONTWAIT), until journald's queue is full."""
        sent = 0
        for data in lines:
            try:
                self.sock.sendto(data, socket.MSG_DONTWAIT, self.path)
            except BlockingIOError:
                return sent
            except OSError:  # journald gone: the line is lost, as write() loses it
                pass
            sent += 1
        return sent

    def write(self, lines: list[bytes]) -> None:
        for data in lines:
            # journald gone (restarting: no socket): the line is lost, and said nowhere (stderr
            # is journald's too), as a write to a closed stderr
            with contextlib.suppress(OSError):
                self.sock.sendto(data, self.path)

    def release(self) -> None:
        self.sock.close()


def _journal_socket() -> str:
    from resources._lib import journal  # stderr is the journal: under systemd

    return journal.socket_path()


def journal_stream() -> bool:
    """Whether stderr is the journal stream systemd gave us (JOURNAL_STREAM=dev:inode)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):  # AttributeError: no stderr (`2>&-`)
        return False
    return value == f"{st.st_dev}:{st.st_ino}"


# What Python itself writes to sys.stderr, from whichever thread it happens in (the event
# loop's: a full pipe blocked it), goes through logging, and so through the writer thread,
# in order after the lines logged before: a warning, an exception no thread caught, one
# ignored in a __del__ or a callback (sys.unraisablehook). asyncio's own reports (an
# exception never retrieved, a task destroyed pending) are logging's already.
_python = logging.getLogger("python")


def _showwarning(  # noqa: PLR0917 (warnings.showwarning's signature)
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    if file is not None:  # asked for somewhere else: as the warnings module does
        with contextlib.suppress(OSError):
            file.write(warnings.formatwarning(message, category, filename, lineno, line))
        return
    _python.warning("%s:%d: %s: %s", filename, lineno, category.__name__, message)


def _excepthook(kind: type[BaseException], err: BaseException, tb: TracebackType | None) -> None:
    _python.critical("unhandled exception: %s", kind.__name__, exc_info=(kind, err, tb))


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:  # as the interpreter's: a thread's sys.exit() is quiet
        return
    name = args.thread.name if args.thread is not None else "?"
    err = args.exc_value
    exc_info = (type(err), err, args.exc_traceback) if err is not None else None
    _python.error("unhandled exception in thread %s", name, exc_info=exc_info)


def _unraisablehook(unraisable: sys.UnraisableHookArgs) -> None:
    what = unraisable.err_msg or "Exception ignored in"
    err = unraisable.exc_value
    exc_info = (type(err), err, unraisable.exc_traceback) if err is not None else None
    _python.error("%s: %.200r", what, unraisable.object, exc_info=exc_info)


def summary(logger: logging.Logger, shown: bool, message: str, *args: object) -> None:
    """An INFO line of the run's summary: logged as `logger.info` would, and also under
    --quiet (the root logger at WARNING) when `shown` (something changed, failed or would
    change): it then bypasses the level, as one record handed to the handlers."""
    if logger.isEnabledFor(logging.INFO):
        logger.info(message, *args)
    elif shown:
        logger.handle(logger.makeRecord(logger.name, logging.INFO, "", 0, message, args, None))


def setup(
    fmt: str = "text", verbose: bool = False, own_process: bool = False, quiet: bool = False
) -> None:
    """Configure the root logger: the journal under systemd, otherwise stderr; INFO and up
    (`verbose`: DEBUG; `quiet`: WARNING, and what summary() says). With
    `own_process` (the `mgmt` command; not a test running agents in its own process, whose
    hooks stay its own), what Python writes to stderr itself is logged (see _excepthook)."""
    logging._srcfile = None  # no caller lookup per record: no format shows it (logging's docs)
    handler: logging.Handler = BatchingStreamHandler(sys.stderr)
    if sys.stderr is None:  # started with fd 2 closed (`2>&-`): nowhere to say anything
        handler = logging.NullHandler()
    elif journal_stream() and os.path.exists(path := _journal_socket()):
        handler = JournalHandler(path)
    elif fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    for old in root.handlers:  # set up again (tests running agents in-process): theirs end
        if isinstance(old, WriterHandler):
            old.close()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    if own_process:
        warnings.showwarning = _showwarning
        sys.excepthook = _excepthook
        threading.excepthook = _thread_excepthook
        sys.unraisablehook = _unraisablehook
