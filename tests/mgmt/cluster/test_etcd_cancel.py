"""An etcd start cancelled at each of its awaits (an agent stopped while its etcd starts)
leaves nothing behind: no descriptor of etcd.log, no etcd child.

The start is real (a real etcd on 127.0.0.1, its real log file); the test only holds it at
one await until the cancel is delivered: a blocking step (run in a thread) is held in its
thread until then, so that the thread finishes after the cancel (the worst case: what it
opened arrives when no one awaits it any more).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from engine import inotify
from mgmt.cluster.etcdproc import EtcdProcess, EtcdSpec
from tests.mgmt.cluster.helpers import options

T = TypeVar("T")
BOUND = 30.0  # seconds: a generous bound against a hang, never a timing

# The awaits of EtcdProcess.start, in order: three blocking steps run in threads (the data
# dir made private, its lock's holder asked, the log file made), the spawn, the readiness.
THREADED = {"data dir": 0, "lock": 1, "log file": 2}
POINTS = [*THREADED, "spawn", "readiness"]
INOTIFY = "anon_inode:inotify"


def _fds() -> dict[int, str]:
    """This process's open descriptors and what they are."""
    found = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # (listdir's own descriptor, closed)
            found[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return found


def _children() -> set[int]:
    """The pids whose parent is this process (zombies too: an unreaped child is left behind)."""
    me, found = os.getpid(), set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{name}/stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                found.add(int(name))
    return found


class Held:
    """Holds the start at one of its awaits until the test has cancelled it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, point: str) -> None:
        self.reached = asyncio.Event()  # the start is at `point`
        self.gate = threading.Event()  # set once the cancel is delivered
        self.done = threading.Event()  # the held thread has finished its step
        self._calls = 0
        self.landed = False  # the cancel landed in the await held
        loop = asyncio.get_running_loop()
        to_thread, create_exec = asyncio.to_thread, asyncio.create_subprocess_exec

        async def held_to_thread(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
            if self._calls != THREADED.get(point):
                self._calls += 1
                return await to_thread(func, *args, **kwargs)
            self._calls += 1

            def step() -> T:
                try:
                    loop.call_soon_threadsafe(self.reached.set)
                    self.gate.wait(BOUND)
                    return func(*args, **kwargs)
                finally:
                    self.done.set()

            return await to_thread(step)

        async def held_exec(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
            self.reached.set()  # (the cancel lands in the spawn's own await, once forked)
            with self.landing():
                return await create_exec(*args, **kwargs)

        wait_ready = EtcdProcess.wait_ready

        async def held_ready(proc: EtcdProcess) -> bool:
            self.reached.set()
            with self.landing():
                return await wait_ready(proc)

        monkeypatch.setattr(asyncio, "to_thread", held_to_thread)
        if point == "spawn":
            monkeypatch.setattr(asyncio, "create_subprocess_exec", held_exec)
        if point == "readiness":
            monkeypatch.setattr(EtcdProcess, "wait_ready", held_ready)
        if point not in THREADED:
            self.done.set()
        self._closed_last = threading.Event()
        close_last = inotify._close_last

        def closed_last(fd: int, then: Callable[[], None] | None) -> None:
            close_last(fd, then)
            self._closed_last.set()

        monkeypatch.setattr(inotify, "_close_last", closed_last)

    async def inotify_closed(self) -> None:
        """Wait until an inotify instance's last descriptor is closed (Inotify.close leaves
        it to a thread of its own: the kernel's teardown of an instance takes milliseconds)."""
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, self._closed_last.wait, BOUND)

    @contextlib.contextmanager
    def landing(self) -> Iterator[None]:
        try:
            yield
        except asyncio.CancelledError:
            self.landed = True
            raise

    async def thread_done(self) -> None:
        """Wait until the held thread (if any) has finished what it was doing."""
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, self.done.wait, BOUND)


async def _bounded(aw: Awaitable[T]) -> T:
    async with asyncio.timeout(BOUND):
        return await aw


@pytest.mark.parametrize("point", POINTS)
async def test_a_start_cancelled_at_each_await_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    opts = options("cancelled")
    spec = EtcdSpec("cancelled", tmp_path / "d", opts, "cancelled=" + opts.server_urls[0])
    proc = EtcdProcess(spec)
    held = Held(monkeypatch, point)
    fds, children = _fds(), _children()

    start = asyncio.create_task(proc.start(timeout=BOUND))
    await _bounded(held.reached.wait())
    start.cancel()
    held.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await _bounded(start)
    # At `point`, not later: a threaded step is held in its thread until after the cancel.
    assert held.landed or point in THREADED
    await _bounded(held.thread_done())

    if INOTIFY in _fds().values():  # the log's reader ran: its watcher closed by a thread
        await _bounded(held.inotify_closed())
    assert {fd: what for fd, what in _fds().items() if fd not in fds} == {}  # (etcd.log's)
    assert _children() - children == set()  # (etcd, running on)
    assert not proc.running

    await _bounded(proc.stop())  # what the cluster does then: nothing left to do, no error
    assert _fds() == fds and _children() == children
