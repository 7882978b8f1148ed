"""resources._lib.proc: a transaction left to its end (run_to_end), with real processes.

The child blocks on a FIFO until the test lets it go: it is known to run (it opened the other
FIFO) before the wait for it is cancelled or times out, and it ends only when let go. No signal
is sent to anything by these tests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import ResourceError
from mgmt import stuck
from resources._lib import proc
from resources._lib.proc import dies_with_agent, pid_exited, run_to_end
from tests.aio import OnLog, pass_ended

# Once let go, 2 MiB to stdout (more than a pipe holds: a closed pipe's reader would have
# ended it by SIGPIPE), then "ok" in `done`.
CHILD = r"""
import sys
ready, go, done = sys.argv[1:]
open(ready, "w").close()
open(go).read()
sys.stdout.write("x" * (2 << 20))
sys.stdout.flush()
open(done, "w").write("ok")
"""


@pytest.fixture(autouse=True)
def _let_go(tmp_path: Path) -> Iterator[None]:
    """At a test's end, a child still waiting on its `go` FIFO (the test failed before it let
    it go) is let go: else it waited for good, orphaned, ended only by a signal. Opened
    without blocking: ENXIO when no child reads it (none is left)."""
    yield
    with contextlib.suppress(OSError):
        fd = os.open(tmp_path / "go", os.O_WRONLY | os.O_NONBLOCK)
        with contextlib.closing(os.fdopen(fd, "w")) as go:
            go.write("now\n")


def _fifos(tmp_path: Path) -> tuple[Path, Path, Path]:
    ready, go = tmp_path / "ready", tmp_path / "go"
    os.mkfifo(ready)
    os.mkfifo(go)
    return ready, go, tmp_path / "done"


async def _start(tmp_path: Path, timeout: float) -> tuple[asyncio.Task[object], Path, Path]:
    """run_to_end of CHILD, once the child runs (it opened `ready` for writing): its task,
    the FIFO that lets it go and the file it writes at its end."""
    ready, go, done = _fifos(tmp_path)
    argv = [sys.executable, "-c", CHILD, str(ready), str(go), str(done)]
    task = asyncio.create_task(run_to_end(argv, timeout=timeout, env={}, label="child"))
    async with asyncio.timeout(30):
        await asyncio.to_thread(lambda: open(ready).close())
    return task, go, done


def _pid(caplog: pytest.LogCaptureFixture, said: str) -> int:
    found = re.search(rf"child: {said} \(pid (\d+)\)", caplog.text)
    assert found is not None, caplog.text
    return int(found[1])


async def _ended_well(pid: int, done: Path) -> None:
    """The child wrote all its output and `done` (it was never signalled), and was reaped."""
    async with asyncio.timeout(30):
        await pid_exited(pid)
    assert await asyncio.to_thread(done.read_text) == "ok"
    await pass_ended()
    assert not proc._LEFT
    with pytest.raises(FileNotFoundError):  # no zombie
        os.stat(f"/proc/{pid}")


async def test_a_cancelled_transaction_is_waited_for_to_its_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "engine")
    waiting = OnLog("child: stopping: waiting for it to end first (pid ")
    logging.getLogger("engine").addHandler(waiting)
    try:
        task, go, done = await _start(tmp_path, timeout=60)
        task.cancel()
        async with asyncio.timeout(30):
            await waiting.seen.wait()
        task.cancel()  # a second cancellation changes nothing
        await pass_ended()
        assert not task.done() and not done.exists()
        pid = _pid(caplog, "stopping: waiting for it to end first")
        # A forced stop's report of what still runs names it.
        assert f"child (pid {pid}) @ proc.py:" in stuck.still_running()
    finally:
        logging.getLogger("engine").removeHandler(waiting)
    go.write_text("now")  # let it go: it runs on, writes its output, ends well
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(30):
            await task
    await _ended_well(_pid(caplog, "stopping: waiting for it to end first"), done)


async def test_a_timed_out_transaction_runs_on_to_its_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "engine")
    task, go, done = await _start(tmp_path, timeout=0.2)
    with pytest.raises(ResourceError, match=r"^child timed out after 0.2s; left running to its"):
        await task
    pid = _pid(caplog, "left running to its end")
    assert proc._LEFT and not done.exists()
    go.write_text("now")
    await _ended_well(pid, done)


async def test_a_transaction_s_output_and_code() -> None:
    script = "echo out; echo err >&2; exit 3"
    assert await run_to_end(["sh", "-c", script], timeout=30, env={}, label="sh", ok=None) == (
        3,
        "out\n",
        "err\n",
    )
    with pytest.raises(ResourceError, match=r"^sh exited with code 3: err$"):
        await run_to_end(["sh", "-c", script], timeout=30, env={}, label="sh")
    with pytest.raises(ResourceError, match=r"^/nonexistent/tool: cannot start: "):
        await run_to_end(["/nonexistent/tool"], timeout=30, env={}, label="tool")
    env = await run_to_end(
        ["sh", "-c", "echo $MGMT_T"], timeout=30, env={"MGMT_T": "v"}, label="sh"
    )
    assert env[1] == "v\n"


# Once let go, it fails (exit 3), saying why on stderr.
FAILING = ': > "$1"; read -r line < "$2"; echo "E: it broke" >&2; exit 3'


@pytest.mark.parametrize("stopped", ["cancelled", "timed out"])
async def test_how_a_transaction_no_longer_waited_for_ended_is_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, stopped: str
) -> None:
    """Nobody else can say whether a transaction whose wait was cancelled or timed out did its
    work: until 2026-12-07 its code and output were dropped (an apt-get that failed after a
    forced stop, or after its timeout, left no trace of it)."""
    caplog.set_level(logging.WARNING, "engine")
    ready, go, _done = _fifos(tmp_path)
    argv = ["sh", "-c", FAILING, "sh", str(ready), str(go)]
    timeout = 60 if stopped == "cancelled" else 0.2
    task = asyncio.create_task(run_to_end(argv, timeout=timeout, env={}, label="child"))
    async with asyncio.timeout(30):
        await asyncio.to_thread(lambda: open(ready).close())
    ended = OnLog("child exited with code 3: E: it broke (pid ")
    logging.getLogger("engine").addHandler(ended)
    try:
        if stopped == "cancelled":
            task.cancel()
        else:
            with pytest.raises(ResourceError, match=r"^child timed out after 0.2s; left running"):
                await task
        assert not ended.seen.is_set()
        go.write_text("now\n")
        async with asyncio.timeout(30):
            await ended.seen.wait()
    finally:
        logging.getLogger("engine").removeHandler(ended)
    if stopped == "cancelled":
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not proc._LEFT
    assert "ended after the wait for it was stopped" in caplog.text


async def test_a_transaction_that_ended_well_after_its_wait_was_cancelled_is_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "engine")
    task, go, _done = await _start(tmp_path, timeout=60)
    task.cancel()
    go.write_text("now")
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(30):
            await task
    pid = _pid(caplog, "stopping: waiting for it to end first")
    assert f"child: ended well (pid {pid}), after the wait for it was stopped" in caplog.text


def echoes(child: subprocess.Popen[bytes], line: bytes) -> bool:
    """Whether `cat` child echoes `line` back (False: its pipe is closed, it is gone)."""
    assert child.stdin is not None and child.stdout is not None
    try:
        child.stdin.write(line)
        child.stdin.flush()
    except BrokenPipeError:
        return False
    return child.stdout.readline() == line


def test_a_death_signal_is_asked_for_only_by_the_main_thread() -> None:
    """The kernel's death signal fires when the *thread* that forked the child ends, not the
    process: a child started with dies_with_agent() from a thread (an executor's worker, a
    thread's own loop) was killed as soon as that thread ended, mid-compile for Puppet (leaks
    review, 2026-12-07). Off the main thread it asks for none: the child outlives the thread
    (a real `cat`, ended here by closing its input: nothing is signalled)."""
    assert shutil.which("setpriv"), "setpriv (util-linux) is installed here"
    assert dies_with_agent(), "the main thread asks for it"
    started: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        argv = [*dies_with_agent(), "cat"]
        child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        started.append(child)
        assert echoes(child, b"running\n")  # past setpriv: its death signal (if any) is set

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    (child,) = started
    assert child.stdin is not None and child.stdout is not None
    try:
        alive = echoes(child, b"alive\n")
    finally:
        with contextlib.suppress(BrokenPipeError):
            child.stdin.close()
        child.stdout.close()
        code = child.wait(timeout=30)
    assert alive and code == 0, f"cat ended with {code} (-9: the thread's end killed it)"
