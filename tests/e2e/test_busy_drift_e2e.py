"""A drift during a daemon's first run of thousands of files is repaired before the run ends
(issue 16: the check slots' urgent lane and window of first checks, engine/slots.py). The run
is held open by an exec reading a FIFO that the test writes last, so "before" is an order, not
a time."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import pytest

from tests.e2e.helpers import Daemon, has_content, wait_path

N = 3000


def graph(tmp_path: Path) -> str:
    """The exec that holds the run open, then the N files."""
    hold = f"""graph: busy
resources:
  exec:
    - name: hold
      cmd: "trap '' TERM; read x < {tmp_path}/hold"
      shell: /bin/sh
  file:
"""
    entry = '    - name: f{0}\n      path: {1}/out/f{0}\n      content: "number {0}\\n"\n'
    return hold + "".join(entry.format(i, tmp_path) for i in range(N))


def release(fifo: Path) -> None:
    """Let the exec's command end (ENXIO, an OSError, if none reads the FIFO)."""
    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, b"go\n")
    finally:
        os.close(fd)


@pytest.mark.slow
async def test_a_drift_during_a_first_run_is_repaired_before_it_ends(tmp_path: Path) -> None:
    prefix, file, fifo = tmp_path / "prefix", tmp_path / "g.yaml", tmp_path / "hold"
    os.mkfifo(fifo)
    file.write_text(graph(tmp_path))
    (tmp_path / "out").mkdir()  # watched by wait_path from the start
    first = tmp_path / "out" / "f0"
    try:
        async with Daemon(["run", "--prefix", str(prefix), "yaml", str(file)]) as daemon:
            await wait_path(first, has_content("number 0\n"), timeout=120)
            first.unlink()  # drift of a file the run has made
            await wait_path(first, has_content("number 0\n"), timeout=120)
            assert not any("converged:" in line for line in daemon.lines)  # held by the exec
            # once the command has the FIFO open (a blocking open waits for its reader)
            writer = await asyncio.wait_for(asyncio.to_thread(os.open, fifo, os.O_WRONLY), 120)
            os.write(writer, b"go\n")
            os.close(writer)
            await daemon.wait_log("converged:", timeout=240)
            for i in range(N):
                assert (tmp_path / "out" / f"f{i}").read_text() == f"number {i}\n"
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait(60) == 0
    finally:  # a failure midway leaves no command reading the FIFO (it ignores SIGTERM)...
        with contextlib.suppress(OSError):
            release(fifo)
        with contextlib.suppress(OSError):  # ...nor the test's open waiting for a reader
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
