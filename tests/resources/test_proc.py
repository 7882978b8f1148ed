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
from pathlib import Path

import pytest

from engine.errors import ResourceError
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
