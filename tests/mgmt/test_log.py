"""mgmt.log: the lines of one pass of the event loop are written together, all and in order."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from subprocess import PIPE

import pytest

from mgmt.log import BatchingStreamHandler, TextFormatter


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
    await asyncio.sleep(0)
    assert stream.writes == 1
    assert stream.getvalue() == "".join(f"line {i}\n" for i in range(100))


async def test_a_line_of_another_thread_comes_after_the_pending_ones_at_once(
    logged: tuple[logging.Logger, CountingStream],
) -> None:
    logger, stream = logged
    logger.info("on the loop")
    thread = threading.Thread(target=logger.info, args=("in a thread",))
    thread.start()
    thread.join()
    assert stream.getvalue() == "on the loop\nin a thread\n"  # before the loop's pass ended
    await asyncio.sleep(0)
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
import asyncio, logging, signal, sys
from mgmt.log import setup
signal.signal(signal.SIGUSR1, lambda *args: None)
setup()
log = logging.getLogger("t")
async def main() -> None:
    for i in range(5000):
        log.info("line %d %s", i, "x" * 60)
    print("writing", flush=True)
    await asyncio.sleep(0)  # the pass ends: its lines in one write, larger than the pipe
asyncio.run(main())
"""


def test_a_write_cut_by_a_signal_loses_no_line() -> None:
    """With PYTHONUNBUFFERED=1 (set here, and in many service units) stderr is a text stream
    over an unbuffered file: a pass's lines went to one write(2), which a signal cut short
    when the pipe was full (the reader slow), and the rest was dropped: SIGTERM during a first
    run of 4,000 files lost ~1,700 "created" lines. The child blocks in that write, gets a
    signal, and every line must still arrive."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    root = Path(__file__).resolve().parents[2]
    with subprocess.Popen(
        [sys.executable, "-c", CHILD], stdout=PIPE, stderr=PIPE, env=env, cwd=root
    ) as child:
        assert child.stdout is not None and child.stderr is not None
        try:
            assert child.stdout.readline() == b"writing\n"
            syscall = Path(f"/proc/{child.pid}/syscall")
            deadline = time.monotonic() + 60  # a bound against a hang, not a timing
            while not syscall.read_text().startswith("1 "):  # blocked in write(2): pipe full
                assert time.monotonic() < deadline, "the child never blocked in its write"
                time.sleep(0.01)
            child.send_signal(signal.SIGUSR1)
            err = child.stderr.read()
        finally:
            child.kill()
    lines = err.decode().splitlines()
    assert len(lines) == 5000 and lines[-1].endswith(f"line 4999 {'x' * 60}"), len(lines)
