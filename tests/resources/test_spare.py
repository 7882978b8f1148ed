"""A file's spare copy (resources/_lib/spare.py): written and fsynced before the drift it
repairs, on a real file system, through the file resource."""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from engine import libc, uring
from engine.events import CheckApplied
from engine.inotify import Event, Inotify
from mgmt.agent import Agent, load
from mgmt.config import Config, ExitCode
from resources._lib import spare as spare_mod
from resources._lib.spare import Spare
from resources.file import FileRes
from tests.aio import pass_ended
from tests.e2e.helpers import has_content, wait_path
from tests.mgmt.test_agent_swap import graph

IN_MOVED_TO, IN_CREATE = 0x80, 0x100  # inotify(7)
OP_READ = 22  # IORING_OP_READ (io_uring_enter(2))


def unnamed_files() -> set[int]:
    """The inodes of this process's open unnamed (O_TMPFILE) files."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            if "/#" in target and target.endswith(" (deleted)"):
                found.add(os.fstat(int(fd)).st_ino)
        except OSError:
            continue
    return found


async def ready_spare(res: FileRes) -> int:
    """The inode of the spare the resource made after its last repair."""
    spare: Spare = res._spare
    assert spare.held()
    fd = await spare.ready()
    assert fd is not None
    return os.fstat(fd).st_ino


async def _repaired(path: Path, run_resource: Any) -> FileRes:
    """A running file resource (`f`, content "x\\n") at `path`: written, its file deleted, and
    repaired (where spares are made, a repair leaves one for the next)."""
    res = FileRes(name="f", path=str(path), content="x\n")
    await run_resource(res, watch=False)
    assert await res.check_apply(True) is False
    os.unlink(path)
    assert await res.check_apply(True) is False
    return res


async def test_a_repair_links_in_the_spare_made_before_the_drift(
    tmp_path: Path, run_resource: Any
) -> None:
    path = tmp_path / "f"
    res = FileRes(name="f", path=str(path), content="x\n", mode="0640")
    await run_resource(res, watch=False)
    before = unnamed_files()
    assert await res.check_apply(True) is False  # the first write: no spare
    assert getattr(res, "_spare", None) is None
    for drift in (Path.unlink, lambda p: p.write_text("changed")):
        drift(path)
        assert await res.check_apply(True) is False  # a repair: a spare for the next one
        inode = await ready_spare(res)
        assert inode in unnamed_files() - before
        assert inode != path.stat().st_ino
        drift(path)
        assert await res.check_apply(True) is False
        st = path.stat()
        assert (path.read_text(), st.st_mode & 0o777, st.st_ino) == ("x\n", 0o640, inode)
        assert await res.check_apply(True) is True
    assert [n for n in os.listdir(tmp_path) if n != "f"] == []  # no temp file left


async def test_a_spare_for_other_content_is_not_used(tmp_path: Path, run_resource: Any) -> None:
    path = tmp_path / "f"
    res = FileRes(name="f", path=str(path), content="x\n")
    running = await run_resource(res, watch=False)
    before = unnamed_files()
    for _ in range(2):  # the second write is a repair: it leaves a spare of "x\n"
        path.unlink(missing_ok=True)
        assert await res.check_apply(True) is False
    await ready_spare(res)
    res.content = "y\n"
    assert await res.check_apply(True) is False
    assert path.read_text() == "y\n"
    made = await ready_spare(res)  # of "y\n"
    assert unnamed_files() - before == {made}  # the one of "x\n" is closed
    await running.handle.run_cleanups()
    assert unnamed_files() - before == set()  # cleanup closes it
    assert spare_mod.Spare._held == 0


async def test_a_spare_is_not_used_once_its_directory_gives_another_group(
    tmp_path: Path, run_resource: Any
) -> None:
    # A setgid directory gives a new file its group: the spare got the group the directory
    # had when it was made; a repair after the directory's group changed must give the new one,
    # as a write would (the group is not managed here).
    if os.geteuid() != 0:
        pytest.skip("needs root to change a directory's group")
    here = tmp_path / "d"
    here.mkdir()
    os.chown(here, -1, 1)
    os.chmod(here, 0o2755)
    path = here / "f"
    res = FileRes(name="f", path=str(path), content="x\n")
    await run_resource(res, watch=False)
    for _ in range(2):  # the second write is a repair: it leaves a spare
        path.unlink(missing_ok=True)
        assert await res.check_apply(True) is False
    await ready_spare(res)
    assert path.stat().st_gid == 1
    os.chown(here, -1, 2)
    path.unlink()
    assert await res.check_apply(True) is False
    assert path.stat().st_gid == 2


async def test_a_repair_by_the_spare_leaves_no_event_to_check_again(
    tmp_path: Path, run_resource: Any
) -> None:
    """The spare was written through its descriptor: closed after its inode is watched again,
    that close was an event, and each repair was checked twice."""
    path = tmp_path / "f"
    res = FileRes(name="f", path=str(path), content="x\n")
    running = await run_resource(res)
    assert await res.check_apply(True) is False
    for _ in range(3):  # a repair that makes a spare, then two that link one in
        if getattr(res, "_spare", None) is not None:
            await ready_spare(res)
        path.unlink()
        await running.handle.next_event()
        assert await res.check_apply(True) is False
        assert path.read_text() == "x\n"
        assert await running.handle.no_event()


async def test_a_deleted_file_gets_the_spare_linked_at_its_name(
    tmp_path: Path, run_resource: Any
) -> None:
    """A repair of a deleted file links its spare at the name itself: no temp name and no
    rename (one journal operation; one event for whoever watches the directory, not three)."""
    path = tmp_path / "f"
    res = await _repaired(path, run_resource)  # written, deleted, repaired
    inode = await ready_spare(res)
    events: list[Event] = []
    watch = Inotify(events.extend)
    try:
        watch.add_watch(str(tmp_path), IN_CREATE | IN_MOVED_TO)
        path.unlink()
        assert await res.check_apply(True) is False
        watch.drain()
    finally:
        watch.close()
    assert [(e.mask & (IN_CREATE | IN_MOVED_TO), e.name) for e in events] == [(IN_CREATE, b"f")]
    assert (path.read_text(), path.stat().st_ino) == ("x\n", inode)


class HeldExecutor(ThreadPoolExecutor):
    """A real executor whose jobs making spares each wait for a permit (`allow`) before they
    start (the loop's default executor here: where spares are made without io_uring)."""

    def __init__(self) -> None:
        super().__init__(max_workers=4)
        self.permits = threading.Semaphore(0)
        self.started = 0

    def allow(self, count: int) -> None:
        self.permits.release(count)

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        if getattr(fn, "__qualname__", "") != "Spare._start.<locals>.make":
            return super().submit(fn, *args, **kwargs)

        def held() -> Any:
            assert self.permits.acquire(timeout=60)  # an anti-hang bound
            return fn(*args, **kwargs)

        self.started += 1
        return super().submit(held)


async def test_a_file_that_drifts_before_its_spare_is_complete_keeps_two(
    tmp_path: Path, run_resource: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repair that finds no spare complete (a drift before the last one's fsync ended)
    waits for it, and from then on the resource keeps one more (up to DEPTH_MAX), made side
    by side: the next drift finds one complete. (Spares made in threads here, as without
    io_uring, each started by the test.)"""
    monkeypatch.setattr(spare_mod._Fsyncs, "_failed", True)
    executor = HeldExecutor()
    asyncio.get_running_loop().set_default_executor(executor)
    path = tmp_path / "f"
    res = FileRes(name="f", path=str(path), content="x\n")
    running = await run_resource(res, watch=False)
    before = unnamed_files()
    try:
        assert await res.check_apply(True) is False
        path.unlink()
        assert await res.check_apply(True) is False  # a repair: one spare, held back
        spare: Spare = res._spare
        assert (spare.held(), executor.started) == (1, 1)
        path.unlink()
        repair = asyncio.create_task(res.check_apply(True))
        await pass_ended()
        assert not repair.done()  # waiting for the spare being made
        executor.allow(1)
        assert await repair is False
        assert path.read_text() == "x\n"
        assert (spare.held(), executor.started) == (2, 3)  # two more, side by side
        executor.allow(2)
        await spare.ready()
        path.unlink()
        assert await res.check_apply(True) is False  # the oldest complete: no wait
        assert (path.read_text(), spare.held(), executor.started) == ("x\n", 2, 4)
    finally:
        executor.allow(100)
        await running.handle.run_cleanups()
    assert unnamed_files() - before == set()
    assert spare_mod.Spare._held == 0


async def test_a_deleted_file_and_an_overwritten_one_want_the_same_spare(
    tmp_path: Path, run_resource: Any
) -> None:
    """A deleted file's repair leaves its owner to the new file (-1), an overwritten one's
    asks for the file's own (the same): the spare made after one serves the other (before,
    the first overwrite after deletes dropped the spare, wrote and fsynced)."""
    path = tmp_path / "f"
    res = FileRes(name="f", path=str(path), content="x\n")
    await run_resource(res, watch=False)
    assert await res.check_apply(True) is False

    def overwrite(p: Path) -> object:
        return p.write_text("changed")

    for first, then in ((Path.unlink, overwrite), (overwrite, Path.unlink)):
        first(path)
        assert await res.check_apply(True) is False
        inode = await ready_spare(res)
        then(path)
        assert await res.check_apply(True) is False
        assert (path.read_text(), path.stat().st_ino) == ("x\n", inode)


N_AHEAD = 5


def ahead_graph(out: Path, edited: str = "") -> str:
    return graph(out, edited, count=N_AHEAD, at=0)


async def daemon(tmp_path: Path, **config: Any) -> tuple[Agent, asyncio.Task[int], Path]:
    """An agent running a graph file of N_AHEAD files (a daemon, unless `config` says
    otherwise), once converged and done with its work ahead; and the files' directory."""
    path, out = tmp_path / "graph.yaml", tmp_path / "out"
    path.write_text(ahead_graph(out))
    conf = Config(file=path, prefix=tmp_path / "prefix", hostname="t", **config)
    agent = Agent(conf, conf.prefix)
    runner = asyncio.create_task(agent.run(load(conf)))
    async with asyncio.timeout(20):
        await agent.converger.settled.wait()
        if agent.engine.shared.ahead is not None:
            await agent.engine.shared.ahead.drained.wait()
    return agent, runner, out


async def stop(agent: Agent, runner: asyncio.Task[int]) -> None:
    agent.stopping.set()
    async with asyncio.timeout(20):
        assert await runner == ExitCode.OK


async def repair(agent: Agent, name: str, drift: Callable[[], object]) -> None:
    """`drift()`, then wait until the resource `name` has repaired it (its check_apply done)."""
    done = asyncio.Event()

    def on_check(event: CheckApplied) -> None:
        if event.vertex.res.name == name and event.changed:
            done.set()

    unsubscribe = agent.engine.listeners.subscribe(CheckApplied, on_check)
    try:
        drift()
        async with asyncio.timeout(20):
            await done.wait()
    finally:
        unsubscribe()


def resource(agent: Agent, name: str) -> FileRes:
    res = agent.engine.vertices[("file", name)].res
    assert isinstance(res, FileRes)
    return res


async def test_a_daemon_makes_each_file_a_spare_before_its_first_drift(tmp_path: Path) -> None:
    ahead_before, held_before = spare_mod.Spare._ahead, spare_mod.Spare._held
    before = unnamed_files()
    agent, runner, out = await daemon(tmp_path)
    ahead = agent.engine.shared.ahead
    assert ahead is not None
    try:
        inodes = {i: await ready_spare(resource(agent, f"f{i}")) for i in range(N_AHEAD)}
        assert set(inodes.values()) == unnamed_files() - before
        assert spare_mod.Spare._ahead - ahead_before == N_AHEAD
        ran = ahead.ran
        # The first repair of f0 links in the spare made ahead: no write, no fsync of its own.
        await repair(agent, "f0", (out / "f0").unlink)
        assert (out / "f0").read_text() == "number 0\n"
        assert (out / "f0").stat().st_ino == inodes[0]
        # ... and its next spare is one made after a repair (COUNT_MAX's budget).
        await ready_spare(resource(agent, "f0"))
        assert spare_mod.Spare._ahead - ahead_before == N_AHEAD - 1
        assert spare_mod.Spare._held - held_before == 1
        # So is an overwrite's first repair.
        await repair(agent, "f1", lambda: (out / "f1").write_text("changed\n"))
        assert (out / "f1").read_text() == "number 1\n"
        assert (out / "f1").stat().st_ino == inodes[1]
        async with asyncio.timeout(20):
            await agent.converger.converged.wait()
        assert ahead.ran == ran  # repairs queue no work ahead: none ran since
    finally:
        await stop(agent, runner)
    assert unnamed_files() - before == set()
    assert (spare_mod.Spare._ahead, spare_mod.Spare._held) == (ahead_before, held_before)


async def test_a_swap_that_changes_a_files_content_makes_its_spare_again(
    tmp_path: Path,
) -> None:
    before = unnamed_files()
    agent, runner, out = await daemon(tmp_path)
    ahead = agent.engine.shared.ahead
    assert ahead is not None
    try:
        old = await ready_spare(resource(agent, "f0"))
        kept = await ready_spare(resource(agent, "f1"))
        applied = asyncio.Event()

        def on_check(event: CheckApplied) -> None:
            if event.vertex.res.name == "f0" and event.changed:
                applied.set()

        agent.engine.listeners.subscribe(CheckApplied, on_check)
        graph = tmp_path / "graph.yaml"
        (tmp_path / "graph.tmp").write_text(ahead_graph(out, edited="edited"))
        (tmp_path / "graph.tmp").rename(graph)
        async with asyncio.timeout(20):
            await applied.wait()
            await agent.converger.converged.wait()
            await ahead.drained.wait()
        res = resource(agent, "f0")
        spare: Spare = res._spare
        fd = await spare.ready()
        assert fd is not None
        with open(f"/proc/self/fd/{fd}", "rb") as made:  # noqa: ASYNC230  # (fd: write-only)
            assert made.read() == b"edited\n"
        inode = os.fstat(fd).st_ino
        assert old not in unnamed_files()  # the old content's: closed with its resource
        assert await ready_spare(resource(agent, "f1")) == kept  # the others' kept
        (out / "f0").unlink()
        await wait_path(out / "f0", has_content("edited\n"))
        assert (out / "f0").stat().st_ino == inode
    finally:
        await stop(agent, runner)
    assert unnamed_files() - before == set()


@pytest.mark.parametrize("config", [{"converged_timeout": 30}, {"noop": True}])
async def test_a_run_that_exits_at_convergence_makes_no_spare_ahead(
    tmp_path: Path, config: dict[str, Any]
) -> None:
    """Nor does a --noop daemon (it writes nothing)."""
    before = unnamed_files()
    agent, runner, _out = await daemon(tmp_path, **config)
    try:
        assert agent.engine.shared.ahead is None
        for i in range(N_AHEAD):
            assert getattr(resource(agent, f"f{i}"), "_spare", None) is None
        assert unnamed_files() - before == set()
    finally:
        await stop(agent, runner)


@pytest.mark.parametrize("budget", ["AHEAD_MAX", "AHEAD_BYTES"])
async def test_spares_made_ahead_keep_to_their_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: str
) -> None:
    """Two spares' worth of budget, five files: two spares made ahead; a file without one is
    repaired by a write, and then keeps a spare from the repairs' budget."""
    monkeypatch.setattr(spare_mod, "_ahead_most", [])  # asked again, of AHEAD_MAX
    monkeypatch.setattr(spare_mod, budget, 2 * (spare_mod.BLOCK if budget == "AHEAD_BYTES" else 1))
    ahead_before, held_before = spare_mod.Spare._ahead, spare_mod.Spare._held
    before = unnamed_files()
    agent, runner, out = await daemon(tmp_path)
    try:
        spared = [i for i in range(N_AHEAD) if getattr(resource(agent, f"f{i}"), "_spare", None)]
        assert len(spared) == 2
        assert spare_mod.Spare._ahead - ahead_before == 2
        assert len(unnamed_files() - before) == 2
        bare = next(i for i in range(N_AHEAD) if i not in spared)
        await repair(agent, f"f{bare}", (out / f"f{bare}").unlink)
        assert (out / f"f{bare}").read_text() == f"number {bare}\n"
        await ready_spare(resource(agent, f"f{bare}"))
        assert spare_mod.Spare._ahead - ahead_before == 2
        assert spare_mod.Spare._held - held_before == 1
    finally:
        await stop(agent, runner)
    assert unnamed_files() - before == set()


class CountingExecutor(ThreadPoolExecutor):
    """A real executor that counts the jobs given to it (the loop's default: the writes)."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.jobs = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.jobs += 1
        return super().submit(fn, *args, **kwargs)


@pytest.mark.parametrize("ring", [True, False])
async def test_a_repair_without_a_spare_makes_one_through_the_ring_not_a_thread(
    tmp_path: Path, run_resource: Any, monkeypatch: pytest.MonkeyPatch, ring: bool
) -> None:
    """A file's first repair (no spare made ahead: not a daemon, or past its budget) fills a
    new file on the loop, awaits its fsync through the loop's ring and links it in: no job
    for a thread. Without io_uring it writes in a thread, as before."""
    if ring and uring.unavailable() is not None:
        pytest.skip(f"no io_uring here: {uring.unavailable()}")
    if not ring:
        monkeypatch.setattr(spare_mod._Fsyncs, "_failed", True)
    executor = CountingExecutor()
    asyncio.get_running_loop().set_default_executor(executor)
    path = tmp_path / "f"
    res = FileRes(name="f", path=str(path), content="x\n")
    await run_resource(res, watch=False)
    assert await res.check_apply(True) is False  # the first write: in a thread
    jobs = executor.jobs
    for drift in (Path.unlink, lambda p: p.write_text("changed")):
        res._spare = None  # type: ignore[assignment]  # (as a file with no spare yet)
        drift(path)
        assert await res.check_apply(True) is False
        assert path.read_text() == "x\n"
        assert executor.jobs - jobs == (0 if ring else 2)  # (the write, the next spare)
        await ready_spare(res)  # the next one's: one, the resource did not keep more
        assert res._spare.held() == 1
        jobs = executor.jobs


def fds_of(inode: int) -> list[int]:
    """This process's descriptors on `inode` (O_PATH ones too)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.fstat(int(fd)).st_ino == inode:
                found.append(int(fd))
        except OSError:
            continue
    return found


@pytest.mark.parametrize("ring", [True, False])
async def test_a_repair_frees_the_inode_it_replaces_off_the_loop(
    tmp_path: Path, run_resource: Any, monkeypatch: pytest.MonkeyPatch, ring: bool
) -> None:
    """An overwritten file's repair holds the overwritten inode across its rename, so the
    rename does not free it (its blocks' discard and writeback were waited for there), and
    lets it go through the loop's ring: still open when the repair returns, closed by the
    kernel's worker (by the ring's end at the latest). Without io_uring: closed at once."""
    if ring and uring.unavailable() is not None:
        pytest.skip(f"no io_uring here: {uring.unavailable()}")
    if not ring:
        monkeypatch.setattr(spare_mod._Fsyncs, "_failed", True)
    let_go: list[tuple[int, int, bool]] = []  # inode, links, still open once let go
    real = spare_mod.let_go

    def spy(fd: int) -> None:
        st = os.fstat(fd)
        real(fd)
        let_go.append((st.st_ino, st.st_nlink, bool(fds_of(st.st_ino))))

    monkeypatch.setattr(spare_mod, "let_go", spy)
    path = tmp_path / "f"
    res = await _repaired(path, run_resource)  # written, deleted, repaired
    assert let_go == []  # (a deleted file: nothing replaced, its spare's inode still linked)
    await ready_spare(res)
    path.write_text("changed")
    old = path.stat().st_ino
    assert await res.check_apply(True) is False
    assert path.read_text() == "x\n"
    assert let_go == [(old, 0, ring)]  # replaced, held, let go; with a ring not closed yet
    await res._spare.close()  # the ring's end: what it was let go is closed first
    assert fds_of(old) == []


async def test_let_go_leaves_the_close_to_the_kernels_worker(tmp_path: Path) -> None:
    """let_go puts the close in the loop's ring (run by the kernel's worker, IOSQE_ASYNC): the
    descriptor is still open when it returns, and closed by the ring's end at the latest."""
    if uring.unavailable() is not None:
        pytest.skip(f"no io_uring here: {uring.unavailable()}")
    fsyncs = spare_mod._Fsyncs.of(asyncio.get_running_loop())
    assert fsyncs is not None
    fsyncs.users += 1
    try:
        path = tmp_path / "g"
        path.write_text("data")
        fd = os.open(path, os.O_RDONLY)
        inode = os.fstat(fd).st_ino
        path.unlink()  # fd is its last reference
        spare_mod.let_go(fd)
        assert fds_of(inode) == [fd]  # not closed here
    finally:
        fsyncs.users -= 1
        ending = fsyncs.close()  # submits the closes let go; a thread waits for them
        if ending is not None:
            await ending
    assert fds_of(inode) == []


def unlinked_file(path: Path) -> tuple[int, int]:
    """A descriptor of a file deleted at once (its last reference: its close frees the inode),
    and its inode."""
    path.write_text("data")
    fd = os.open(path, os.O_RDONLY)
    path.unlink()
    return fd, os.fstat(fd).st_ino


async def test_the_rings_end_waits_for_the_closes_let_go_off_the_loop(tmp_path: Path) -> None:
    """The last spare's close (the final stop, a swap) ends the ring once the kernel has run
    the closes let go, which may be hard-linked behind fsyncs still waiting for the disk: a
    worker thread waits for them, the loop runs on meanwhile (before: the loop waited in
    io_uring_enter). Here the close is hard-linked behind a read of an empty pipe, an fsync
    that ends when the test says so."""
    if uring.unavailable() is not None:
        pytest.skip(f"no io_uring here: {uring.unavailable()}")
    fsyncs = spare_mod._Fsyncs.of(asyncio.get_running_loop())
    assert fsyncs is not None
    fd, inode = unlinked_file(tmp_path / "g")
    r, w = os.pipe()
    buf = ctypes.create_string_buffer(1)
    fsyncs._ring.put(
        OP_READ, r, 1 << 60, flags=uring.SQE_IO_HARDLINK, addr=ctypes.addressof(buf), length=1
    )  # (the close let go goes in next, in the same submission: linked)
    spare_mod.let_go(fd)
    unblocked = threading.Event()

    def unblock() -> None:  # an anti-hang bound: the loop blocked until the read ended
        unblocked.set()
        os.write(w, b"x")

    timer = threading.Timer(20, unblock)
    timer.start()
    try:
        ending = fsyncs.close()
        assert not unblocked.is_set()
        assert ending is not None
        await pass_ended()  # the loop runs on, the close still to run
        assert (fds_of(inode), ending.done()) == ([fd], False)
        os.write(w, b"x")
        async with asyncio.timeout(60):
            await ending
        assert fds_of(inode) == []  # closed by the kernel's worker, then the ring ended
    finally:
        timer.cancel()
        os.close(r)
        os.close(w)


class ClosesCounted(ThreadPoolExecutor):
    """A real executor that notes the descriptors it is given to close (spare._close)."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.closed: list[int] = []

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        if getattr(fn, "func", None) is spare_mod._close:
            self.closed.append(fn.args[0])
        return super().submit(fn, *args, **kwargs)


def ring_counting_closes(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[ClosesCounted, spare_mod._Fsyncs]:
    """This loop's ring of fsyncs, made afresh (no earlier failure remembered: restored
    after), and a default executor that counts the closes it is given; skips without
    io_uring."""
    if uring.unavailable() is not None:
        pytest.skip(f"no io_uring here: {uring.unavailable()}")
    monkeypatch.setattr(spare_mod._Fsyncs, "_failed", False)
    executor = ClosesCounted()
    asyncio.get_running_loop().set_default_executor(executor)
    fsyncs = spare_mod._Fsyncs.of(asyncio.get_running_loop())
    assert fsyncs is not None
    return executor, fsyncs


async def test_a_failed_ring_closes_what_it_was_let_go_in_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the ring's io_uring_enter fails (here: its descriptor made another file's, a real
    failure of a real ring), nothing more goes in it: the closes let go that the kernel had
    not taken are taken back, and they and the later ones are closed in worker threads (off
    the loop); spares are made in threads from then on. Before, they stayed in the failed
    ring, and some were never closed."""
    executor, fsyncs = ring_counting_closes(monkeypatch)
    first, first_inode = unlinked_file(tmp_path / "a")
    later, later_inode = unlinked_file(tmp_path / "b")
    synced = os.open(tmp_path / "c", os.O_CREAT | os.O_WRONLY, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        spare_mod.let_go(first)  # (goes in with the next fsync)
        os.dup2(null, fsyncs._ring.fd)
        assert fsyncs.start(synced) is None  # its enter failed: EOPNOTSUPP
        assert spare_mod._Fsyncs._failed and not fsyncs.room()
        spare_mod.let_go(later)
        assert executor.closed == [first, later]
    finally:
        ending = fsyncs.close()
        if ending is not None:
            async with asyncio.timeout(60):
                await ending
        os.close(synced)
        os.close(null)
    assert fds_of(first_inode) == fds_of(later_inode) == []


async def test_a_dropped_spare_is_let_go_through_the_ring(tmp_path: Path) -> None:
    """A spare dropped (its resource's cleanup: the stop, a swap) is let go like the inodes a
    repair replaces: its close, which frees its unnamed inode (its blocks' discard), is the
    kernel's worker's, not the loop's; the ring's end waits for it."""
    if uring.unavailable() is not None:
        pytest.skip(f"no io_uring here: {uring.unavailable()}")
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    kept, dropped = Spare(), Spare()
    try:
        kept.prepare(dir_fd, Spare.want(dir_fd, b"kept", 0o644, -1, -1))  # (the ring's user)
        dropped.prepare(dir_fd, Spare.want(dir_fd, b"dropped", 0o644, -1, -1))
        fd = await dropped.ready()
        assert fd is not None
        inode = os.fstat(fd).st_ino
        await dropped.close()
        assert fds_of(inode) == [fd]  # let go, not closed here
    finally:
        await kept.close()  # the ring's end: what was let go is closed first
        os.close(dir_fd)
    assert fds_of(inode) == []


def io_uring_maps() -> set[int]:
    """The start addresses of this process's io_uring mappings (a ring's memory, which holds
    the ring open until unmapped)."""
    with open("/proc/self/maps") as maps:
        return {int(line.split("-", 1)[0], 16) for line in maps if "io_uring" in line}


async def test_a_ring_whose_first_fsync_fails_is_ended_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ring made by a spare whose fsync, its first, fails to go in (a failed io_uring_enter:
    here its descriptor made another file's) serves no spare: it is ended there, its memory
    unmapped (before, it stayed open, unused, until the process ended). The spare is made
    in a thread, and what is let go later is closed in threads, as after any failure."""
    executor, fsyncs = ring_counting_closes(monkeypatch)
    maps = {address for address, _size in fsyncs._ring._maps}
    assert maps <= io_uring_maps()
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    null = os.open(os.devnull, os.O_RDONLY)
    spare = Spare()
    try:
        os.dup2(null, fsyncs._ring.fd)
        spare.prepare(dir_fd, Spare.want(dir_fd, b"data", 0o644, -1, -1))
        assert spare_mod._Fsyncs._failed and not fsyncs.room()
        assert maps & io_uring_maps() == set()  # ended: nothing of it mapped
        fd = await spare.ready()  # made in a thread
        assert fd is not None and os.fstat(fd).st_size == 4
        later, later_inode = unlinked_file(tmp_path / "b")
        spare_mod.let_go(later)
        assert executor.closed[-1] == later
    finally:
        await spare.close()
        os.close(dir_fd)
        os.close(null)
    ending = fsyncs.close()  # (nothing left: a ring closed once)
    if ending is not None:
        async with asyncio.timeout(60):
            await ending
    assert fds_of(later_inode) == []


def _mount(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *argv], capture_output=True, text=True, timeout=30, check=False)


def _umount(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["umount", *argv], capture_output=True, text=True, timeout=30, check=False
    )


def _mounted(argv: list[str]) -> None:
    """Mount as `mount ARGV` says, or skip (not root, a container refusing mounts)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting needs root and mount(8)")
    done = _mount(*argv)
    if done.returncode != 0:
        pytest.skip(f"the kernel or the container refuses the mount: {done.stderr.strip()}")


def _open_in(mount_id: int) -> list[str]:
    """This process's open files reached through the mount `mount_id` (/proc/self/fdinfo)."""
    found = []
    for fd in os.listdir("/proc/self/fdinfo"):
        try:
            with open(f"/proc/self/fdinfo/{fd}") as info:
                if f"mnt_id:\t{mount_id}\n" in info.read():
                    found.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return found


async def test_no_spare_on_a_tmpfs_so_a_plain_umount_is_not_refused(
    tmp_path: Path, run_resource: Any
) -> None:
    """ops lead 1: a repaired file's spare (an unnamed file kept open in its directory) held
    its mount busy: `umount` of a tmpfs holding a managed file failed "target is busy" while
    the agent ran. On a tmpfs an fsync waits for no disk, so a spare saves a repair nothing:
    none is made there, and the mount is held by nothing of ours (inotify pins no mount)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    _mounted(["-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)])
    try:
        path = mnt / "f"
        res = await _repaired(path, run_resource)  # written, deleted, repaired
        assert await res.check_apply(True) is True
        spare = getattr(res, "_spare", None)
        assert spare is None or not spare.held()
        await pass_ended()  # (the step's shared directory closed: resources/file/where.py)
        fd = os.open(mnt, os.O_PATH)
        try:
            mount_id = libc.mount_id(fd)
        finally:
            os.close(fd)
        assert mount_id and _open_in(mount_id) == []
        done = _umount(str(mnt))
        assert done.returncode == 0, done.stderr
    finally:
        _umount("-l", str(mnt))  # (unmounted already: refused, nothing done)


async def test_a_lazily_unmounted_mount_is_let_go_by_its_spares(
    tmp_path: Path, run_resource: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ops lead 1: a spare made through a mount kept it alive after `umount -l` (the mount
    gone from the table, its file system not freed while a file of it is open). The mount
    table's change lets go of the spares made through it; the watch ends with the last spare.
    A plain `umount` of a disk's mount still finds the spare (docs/resources/file.md)."""
    src, mnt = tmp_path / "src", tmp_path / "mnt"
    src.mkdir()
    mnt.mkdir()
    _mounted(["--bind", str(src), str(mnt)])
    closed = asyncio.Event()
    close = Spare.close

    async def closing(spare: Spare) -> None:
        await close(spare)
        closed.set()

    monkeypatch.setattr(Spare, "close", closing)
    try:
        path = mnt / "f"
        res = await _repaired(path, run_resource)  # written, deleted, repaired
        inode = await ready_spare(res)
        fd = os.open(mnt, os.O_PATH)
        try:
            mount_id = libc.mount_id(fd)
        finally:
            os.close(fd)
        assert mount_id and any("/#" in name for name in _open_in(mount_id))
        assert inode in unnamed_files()
        assert _umount(str(mnt)).returncode != 0  # busy: the spare (documented)
        assert _umount("-l", str(mnt)).returncode == 0
        await asyncio.wait_for(closed.wait(), 30)
        assert _open_in(mount_id) == [] and inode not in unnamed_files()
        await res._drop_spare()  # (its spare object was kept: the next repair's)
        assert asyncio.get_running_loop() not in spare_mod._Mounts._loops  # the watch ended
    finally:
        _umount("-l", str(mnt))  # (unmounted already: refused, nothing done)
