"""mgmt.log: the lines of one pass of the event loop are written together, all and in order;
a busy loop's lines are handed over at most every HAND_OVER_EVERY."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mgmt import log
from mgmt.log import BatchingStreamHandler, TextFormatter
from tests.aio import pass_ended
from tests.child import python


class CountingStream(io.StringIO):
    """A text stream that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, CountingStream]]:
    stream = CountingStream()
    handler = BatchingStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("test.mgmt.log")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield logger, stream
    logger.removeHandler(handler)
    handler.close()


async def test_the_lines_of_one_loop_pass_are_one_write(
    logged: tuple[logging.Logger, CountingStream],
) -> None:
    logger, stream = logged
    for i in range(100):
        logger.info("line %d", i)
    assert stream.writes == 0  # not yet: at the end of this pass
    await pass_ended()  # handed over to the writer thread,
    logging.getLogger("test.mgmt.log").handlers[0].flush()  # which wrote them
    assert stream.writes == 1
    assert stream.getvalue() == "".join(f"line {i}\n" for i in range(100))


def _counting_hand_overs(
    logger: logging.Logger,
) -> tuple[BatchingStreamHandler, asyncio.Event]:
    """The logger's batching handler, and an event set at each of its hand-overs from the
    loop."""
    handler = logger.handlers[0]
    assert isinstance(handler, BatchingStreamHandler)
    handed = asyncio.Event()
    end_of_pass = handler._end_of_pass

    def counted() -> None:
        end_of_pass()
        handed.set()

    handler._end_of_pass = counted  # type: ignore[method-assign]
    return handler, handed


async def test_lines_logged_right_after_a_hand_over_join_the_next_ones(
    logged: tuple[logging.Logger, CountingStream], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loop that logs at every pass (a first run's "created" lines) wakes the writer thread
    at most every HAND_OVER_EVERY, not at every pass; a line after a quiet spell still goes at
    the end of its pass."""
    monkeypatch.setattr(log, "HAND_OVER_EVERY", 3600.0)  # longer than any test
    logger, stream = logged
    handler, handed = _counting_hand_overs(logger)
    logger.info("first")
    await pass_ended()
    assert handed.is_set()  # after a quiet spell: at the end of its pass
    handler.flush()  # written
    handed.clear()
    for i in range(3):  # three more passes, each logging a line
        logger.info("line %d", i)
        await pass_ended()
    assert not handed.is_set()  # they wait for the next hand-over
    handler.flush()  # at exit: handed over and written
    assert stream.writes == 2
    assert stream.getvalue() == "first\n" + "".join(f"line {i}\n" for i in range(3))


async def test_lines_that_wait_for_the_next_hand_over_get_it_without_another_line(
    logged: tuple[logging.Logger, CountingStream], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines held back after a hand-over are handed over HAND_OVER_EVERY after it, whether
    or not the loop logs again."""
    monkeypatch.setattr(log, "HAND_OVER_EVERY", 0.01)
    logger, stream = logged
    handler, handed = _counting_hand_overs(logger)
    logger.info("first")
    await pass_ended()
    handed.clear()
    logger.info("second")
    async with asyncio.timeout(10):  # an anti-hang bound
        await handed.wait()
        while stream.getvalue() != "first\nsecond\n":
            await asyncio.to_thread(handler._writer.wait, 10.0)


async def test_a_line_of_another_thread_comes_after_the_pending_ones_at_once(
    logged: tuple[logging.Logger, CountingStream],
) -> None:
    logger, stream = logged
    logger.info("on the loop")
    thread = threading.Thread(target=logger.info, args=("in a thread",))
    thread.start()
    thread.join()
    assert stream.getvalue() == "on the loop\nin a thread\n"  # before the loop's pass ended
    await pass_ended()
    assert stream.getvalue() == "on the loop\nin a thread\n"


def test_outside_a_loop_each_line_is_written_at_once(
    logged: tuple[logging.Logger, CountingStream],
) -> None:
    logger, stream = logged
    logger.info("before")
    assert stream.getvalue() == "before\n"


def test_lines_a_stopped_loop_never_wrote_come_before_the_next_ones(
    logged: tuple[logging.Logger, CountingStream],
) -> None:
    logger, stream = logged
    loop = asyncio.new_event_loop()

    def log_and_stop() -> None:
        logger.info("last line of the loop")  # its flush would run in the next pass: none
        loop.stop()

    try:
        loop.call_soon(log_and_stop)
        loop.run_forever()
    finally:
        loop.close()
    assert stream.getvalue() == ""
    logger.info("after the loop")
    assert stream.getvalue() == "last line of the loop\nafter the loop\n"


def test_the_text_format_gives_each_line_its_own_second() -> None:
    formatter = TextFormatter()
    record = logging.LogRecord("engine", logging.INFO, __file__, 1, "hello", None, None)
    record.created = 3600.2
    first = formatter.format(record)
    record.created = 3601.9
    second = formatter.format(record)
    assert first.endswith(" engine: hello") and second.endswith(" engine: hello")
    assert first[:8] != second[:8] and first[6:8] != second[6:8]  # HH:MM:SS, one second on


CHILD = """
import asyncio, logging, os
from mgmt.log import setup
os.set_blocking(2, False)  # a pipe's 64 KiB take part of a larger write(2), as a signal does
setup()
log = logging.getLogger("t")
async def main() -> None:  # one loop pass: its 400 KB of lines in one write when it ends
    for i in range(5000):
        log.info("line %d %s", i, "x" * 60)
asyncio.run(main())
"""


def test_a_partial_write_loses_no_line() -> None:
    """With PYTHONUNBUFFERED=1 (set here, and in many service units) stderr is a text stream
    over an unbuffered file, which passes a write to write(2) once and drops what a partial
    write leaves: SIGTERM cutting a loop pass's write to a pipe lost ~1,700 "created" lines of
    a 4,000-file first run. The child makes its stderr non-blocking, so that a pipe the reader
    has not emptied takes part of each write (no signal to time), and every line must arrive."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = python(CHILD, env=env, timeout=60)
    lines = child.stderr.splitlines()
    assert child.returncode == 0, lines[-5:]
    assert len(lines) == 5000 and lines[-1].endswith(f"line 4999 {'x' * 60}"), len(lines)


CRASH = """
import asyncio, logging
from mgmt import log as logsetup
logsetup.setup(own_process=True)
log = logging.getLogger("t")
async def main() -> None:
    for i in range(2000):
        log.info("line %d %s", i, "x" * 60)
    raise RuntimeError("boom")
asyncio.run(main())
"""


def test_a_crash_traceback_comes_after_the_lines_logged_before_it() -> None:
    """An exception nobody catches: the interpreter wrote its traceback to stderr itself,
    while the last loop pass's lines still waited for the writer thread; it came first, or
    amid them. It is logged now (sys.excepthook), after them."""
    child = python(CRASH, timeout=60)
    lines = child.stderr.splitlines()
    assert child.returncode == 1
    assert len(lines) > 2000 and lines[-1] == "RuntimeError: boom", lines[-3:]
    assert lines[1999].endswith(f" t: line 1999 {'x' * 60}"), lines[1995:2005]
    assert lines[2000].endswith(" python: unhandled exception: RuntimeError"), lines[2000]
    assert lines[2001] == "Traceback (most recent call last):"


def _pipe_handler() -> tuple[logging.Logger, BatchingStreamHandler, int, io.TextIOWrapper]:
    """A logger whose handler writes to a real pipe's write end; the read end's descriptor."""
    read, write = os.pipe()
    stream = open(write, "w", encoding="utf-8")  # noqa: SIM115 (closed by the test)
    handler = BatchingStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("test.mgmt.log.pipe")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, handler, read, stream


def _read_all(fd: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        assert chunk, data[-200:]
        data += chunk
    return data


async def test_a_pipe_that_takes_the_lines_at_once_needs_no_writer_thread() -> None:
    """A loop pass's lines go to a pipe with room by one write that cannot wait (RWF_NOWAIT),
    on the loop's thread: the writer thread is never started (its wake-up, and its takes of
    the GIL, cost a repair beside busy loops up to tens of ms). Once the pipe is full, the
    lines go to the thread, and every line arrives, in order, once it is read."""
    logger, handler, read, stream = _pipe_handler()
    try:
        logger.info("first")
        await pass_ended()
        assert _read_all(read, 6) == b"first\n"
        assert not handler._writer._running  # no thread was needed
        line = "x" * 99
        count = 4 * 65536 // 100  # more than the pipe holds: the rest waits for the thread
        for i in range(count):
            logger.info("%05d %s", i, line[6:])
            await pass_ended()
        assert handler._writer._running  # the full pipe's lines went to the thread
        expected = "".join(f"{i:05d} {line[6:]}\n" for i in range(count)).encode()
        got = await asyncio.to_thread(_read_all, read, len(expected))
        assert got == expected
        handler.flush()
        logger.info("last")  # the thread wrote all it had: a pipe with room again
        assert await asyncio.to_thread(_read_all, read, 5) == b"last\n"
    finally:
        logger.handlers[:] = []
        handler.close()
        stream.close()
        os.close(read)


async def test_journal_datagrams_are_sent_at_once_while_journald_takes_them(
    tmp_path: Path,
) -> None:
    """Lines to the journal's socket are sent without waiting (MSG_DONTWAIT) on the loop's
    thread while journald's queue has room: no writer thread."""
    import socket

    path = tmp_path / "journal"
    journald = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journald.bind(str(path))
    journald.settimeout(60)  # an anti-hang bound
    handler = log.JournalHandler(str(path))
    logger = logging.getLogger("test.mgmt.log.journal")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        logger.info("one")
        logger.info("two")
        await pass_ended()
        messages = [journald.recv(65536) for _ in range(2)]
        assert b"MESSAGE=one" in messages[0] and b"MESSAGE=two" in messages[1]
        assert not handler._writer._running
    finally:
        logger.handlers[:] = []
        handler.close()
        journald.close()
