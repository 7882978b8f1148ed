"""Failures that pass by themselves (engine.heal): a resource failed with such an error is
checked again on its own, on a backoff, and recovers once its cause has passed, with no event.

The file-system causes are real: a small tmpfs mounted for the test, filled (ENOSPC) and
freed, remounted read-only and read-write, a directory made immutable (`chattr +i`) and not.
Each mount is taken off again, whatever the test's end.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine import heal
from engine.engine import Engine, Status, Vertex
from engine.errors import Interfered, ResourceError
from engine.graph import Graph
from engine.mountwatch import changed_points, unescape
from engine.resource import Resource, register
from engine.watcher import Hub
from resources.file import FileRes
from tests.aio import pass_ended
from tests.e2e.helpers import fill
from tests.engine.conftest import settle

FAILING: dict[str, list[int]] = {}  # a failing probe's name -> the errnos its next checks raise


@register("healprobe")
@dataclass(kw_only=True, eq=False)
class HealProbe(Resource):
    """Fails with the errnos FAILING lists for it (one per check), then succeeds."""

    async def check_apply(self, apply: bool) -> bool:
        left = FAILING.get(self.name)
        if left:
            code = left.pop(0)
            cause = OSError(code, os.strerror(code))
            raise ResourceError(f"could not write /x: {os.strerror(code)}") from cause
        return True


@pytest.fixture(autouse=True)
def _quick(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A backoff in hundredths of seconds (the doubling and the cap as they are)."""
    monkeypatch.setattr(heal, "HEAL_MIN", 0.01)
    monkeypatch.setattr(heal, "HEAL_MAX", 0.08)
    FAILING.clear()
    yield
    FAILING.clear()


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)


@contextlib.contextmanager
def tmpfs(where: Path, size: str = "256k") -> Iterator[Path]:
    """A tmpfs of `size` mounted on `where` for the block; skipped where the kernel or the
    container refuses a mount (not root, no CAP_SYS_ADMIN); always taken off again."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where))
    if done.returncode != 0:
        pytest.skip(f"the kernel or the container refuses a tmpfs mount: {done.stderr.strip()}")
    try:
        yield where
    finally:
        _run("chattr", "-R", "-i", str(where))
        if _run("umount", str(where)).returncode != 0:
            _run("umount", "-l", str(where))  # busy (a file's spare still open): detached


async def _one_file(tmp_path: Path, path: str, content: str = "hello\n") -> tuple[Engine, Vertex]:
    """An engine running one file resource `f` at `path`, applied and settled (its vertex)."""
    graph = Graph("g")
    graph.add(FileRes(name="f", path=path, content=content))
    engine = Engine(hostname="test", prefix=tmp_path / "prefix")
    try:
        await engine.apply(graph)
        await settle(engine)
    except BaseException:
        await engine.stop(graceful=False)
        raise
    return engine, engine.vertices[("file", "f")]


async def _failed_then_healed(
    engine: Engine, key: tuple[str, str], free: object, told: bool = False
) -> None:
    """`key` fails (out of retries) with an error that may pass; `free()` ends its cause; it
    recovers: without an event (its watch saw nothing), or `told` by one (the mount table's)."""
    await settle(engine)
    vertex = engine.vertices[key]
    assert vertex.status is Status.FAILED, vertex.error
    assert vertex.healing is not None, vertex.error
    events = vertex.stats.events
    free()  # type: ignore[operator]
    await settle(engine, lambda: vertex.status is Status.OK)
    assert vertex.healing is None
    if told:
        assert vertex.stats.events > events  # the mount table's change was reported
    else:
        assert vertex.stats.events == events  # no event told of it: the heal's own check did


async def test_a_full_disk_freed_heals(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "m", size="64k") as mnt:
        (mnt / "data").mkdir()
        (mnt / "fill").mkdir()
        filler = mnt / "fill" / "big"
        fill(filler)
        engine, vertex = await _one_file(tmp_path, str(mnt / "data" / "f"), "hello\n" * 2000)
        try:
            assert "No space left" in str(vertex.error)
            await _failed_then_healed(engine, ("file", "f"), filler.unlink)
            assert (mnt / "data" / "f").read_text() == "hello\n" * 2000
        finally:
            await engine.stop(graceful=False)


async def test_a_read_only_remount_made_rw_heals(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "m") as mnt:
        (mnt / "data").mkdir()
        if _run("mount", "-o", "remount,ro", str(mnt)).returncode != 0:
            pytest.skip("the kernel or the container refuses mount -o remount,ro")
        engine, vertex = await _one_file(tmp_path, str(mnt / "data" / "f"))
        try:
            assert "Read-only file system" in str(vertex.error)

            def rw() -> None:
                assert _run("mount", "-o", "remount,rw", str(mnt)).returncode == 0

            await _failed_then_healed(engine, ("file", "f"), rw, told=True)
            assert (mnt / "data" / "f").read_text() == "hello\n"
        finally:
            await engine.stop(graceful=False)


async def test_an_immutable_directory_made_mutable_heals(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "m") as mnt:
        data = mnt / "data"
        data.mkdir()
        if _run("chattr", "+i", str(data)).returncode != 0:
            pytest.skip("chattr +i is refused here (no chattr, or the fs has no such flag)")
        engine, vertex = await _one_file(tmp_path, str(data / "f"))
        try:
            assert vertex.status is Status.FAILED
            assert vertex.healing is not None and vertex.healing.why == heal.IMMUTABLE

            def mutable() -> None:
                assert _run("chattr", "-i", str(data)).returncode == 0

            await _failed_then_healed(engine, ("file", "f"), mutable)
            assert (data / "f").read_text() == "hello\n"
        finally:
            await engine.stop(graceful=False)


async def test_backoff_doubles_to_its_cap_and_is_said_once(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """One line as it starts failing, one as it recovers; the checks between at DEBUG only;
    their waits double up to HEAL_MAX."""
    FAILING["a"] = [errno.ENOSPC] * 6
    graph = Graph("g")
    graph.add(HealProbe(name="a"))
    with caplog.at_level(logging.DEBUG):
        await engine.apply(graph)
        vertex = engine.vertices[("healprobe", "a")]
        await settle(engine, lambda: vertex.status is Status.OK)
    lines = [r.getMessage() for r in caplog.records]
    waits = [float(m.group(1)) for line in lines if (m := re.search(r"again in ([0-9.]+)s", line))]
    assert waits == [0.01, 0.02, 0.04, 0.08, 0.08, 0.08]
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    failed = [line for line in said if "failed" in line]
    assert len(failed) == 1, said
    assert failed[0].endswith(
        "(checking again in 0.01s, then less often, at most every 0.08s: it may pass)"
    )
    assert [line for line in said if line.endswith("recovered")] == ["healprobe[a]: recovered"]


async def test_an_error_that_does_not_pass_is_not_checked_on_its_own(engine: Engine) -> None:
    FAILING["a"] = [errno.EINVAL]
    FAILING["b"] = [errno.EACCES]
    graph = Graph("g")
    graph.add(HealProbe(name="a"))
    graph.add(HealProbe(name="b"))
    await engine.apply(graph)
    await settle(engine)
    for name in "ab":
        vertex = engine.vertices[("healprobe", name)]
        assert vertex.status is Status.FAILED and vertex.healing is None


async def test_an_error_that_stops_passing_ends_the_heal(engine: Engine) -> None:
    """ENOSPC, then EINVAL at the heal's check: failed until an event, no timer left."""
    FAILING["a"] = [errno.ENOSPC, errno.EINVAL]
    graph = Graph("g")
    graph.add(HealProbe(name="a"))
    await engine.apply(graph)
    vertex = engine.vertices[("healprobe", "a")]
    await settle(engine, lambda: not FAILING["a"] and vertex.status is Status.FAILED)
    assert vertex.healing is None
    assert isinstance(vertex.error, ResourceError) and "Invalid argument" in str(vertex.error)


async def test_a_stop_cancels_the_heal(engine: Engine) -> None:
    FAILING["a"] = [errno.EROFS] * 1000
    graph = Graph("g")
    graph.add(HealProbe(name="a"))
    await engine.apply(graph)
    await settle(engine)
    vertex = engine.vertices[("healprobe", "a")]
    healing = vertex.healing
    assert healing is not None and healing.timer is not None
    await engine.stop()
    assert vertex.healing is None and healing.timer is None


def test_which_errors_pass() -> None:
    def chained(code: int) -> ResourceError:
        try:
            raise ResourceError("could not write") from OSError(code, os.strerror(code))
        except ResourceError as err:
            return err

    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ETXTBSY, errno.EBUSY):
        assert heal.passes(chained(code)) == heal.PASSING[code]
    for code in (errno.EACCES, errno.EINVAL, errno.ENOENT, errno.EIO):
        assert heal.passes(chained(code)) is None
    assert heal.passes(RuntimeError("no errno")) is None
    assert heal.passes(OSError("no errno either")) is None
    try:  # another's rm -rf cut a write short: EPERM for its O_TMPFILE, checked again at once
        raise ResourceError("vanished") from Interfered(errno.EPERM, "Operation not permitted")
    except ResourceError as err:
        assert heal.passes(err) is None
    eperm = heal.passes(chained(errno.EPERM))
    assert eperm == (heal.IMMUTABLE if os.geteuid() == 0 else None)


async def test_a_mount_over_a_managed_directory_is_seen(tmp_path: Path) -> None:
    """A tmpfs mounted over the file's directory hides the file and the watches: the mount
    table's change makes the file anew in the mount, watched there (a drift in it is
    repaired); taken off, the file below is checked again."""
    data = tmp_path / "data"
    data.mkdir()
    engine, vertex = await _one_file(tmp_path, str(data / "f"))
    try:
        assert (data / "f").read_text() == "hello\n"
        with tmpfs(data):
            assert not (data / "f").exists()
            await settle(engine, lambda: (data / "f").exists() and vertex.status is Status.OK)
            assert (data / "f").read_text() == "hello\n"
            checks = vertex.stats.events
            (data / "f").write_text("drift\n")  # in the mount: its watch is there now
            await settle(engine, lambda: vertex.stats.events > checks)
            await settle(engine, lambda: (data / "f").read_text() == "hello\n")
            events = vertex.stats.events
            # Off the step of the last check, as an operator's `umount` is: with no spare on
            # the tmpfs (resources/_lib/spare.py, NO_GAIN), a lazy unmount in that very step
            # frees the file system a moment later, and that went untold (ops, ninth session).
            await pass_ended()
        await settle(engine, lambda: vertex.stats.events > events)  # taken off: told too
        await settle(engine)
        assert (data / "f").read_text() == "hello\n"
    finally:
        await engine.stop(graceful=False)


def test_changed_points() -> None:
    line = "36 35 98:0 / {point} rw,noatime master:1 - ext3 /dev/root {opts}"
    old = {b"36": line.format(point="/mnt/a", opts="rw"), b"37": line.format(point="/b", opts="rw")}
    new = {
        b"36": line.format(point="/mnt/a", opts="ro"),
        b"38": line.format(point="/c\\040d\\134e\\", opts="rw"),
    }
    as_bytes = [{k: v.encode() for k, v in table.items()} for table in (old, new)]
    assert changed_points(*as_bytes) == {"/mnt/a", "/b", "/c d\\e\\"}
    assert changed_points(as_bytes[0], as_bytes[0]) == set()
    assert unescape(b"/x\\011y\\012") == "/x\ty\n"


async def test_a_mount_over_an_ancestor_is_seen_and_one_elsewhere_is_not(tmp_path: Path) -> None:
    """A tmpfs over a directory above the file's (guarded, not watched itself): the file is
    made in it, parents and all. One mounted beside the watched tree is read (the hub's
    table changes) and reports nothing to the resource."""
    top = tmp_path / "top"
    (top / "a").mkdir(parents=True)
    engine, vertex = await _one_file(tmp_path, str(top / "a" / "f"))
    try:
        hub = Hub.running()
        assert hub is not None and hub.mounts is not None
        told: set[str] = set()  # the mount points the hub was told of (others' mounts too)
        news = asyncio.Event()
        tell = hub.mounts.on_change

        def on_change(points: set[str]) -> None:
            tell(points)
            told.update(points)
            news.set()

        async def seen(point: Path) -> None:
            async with asyncio.timeout(10):
                while str(point) not in told:
                    news.clear()
                    await news.wait()
            told.discard(str(point))

        hub.mounts.on_change = on_change
        with tmpfs(tmp_path / "beside"):
            await seen(tmp_path / "beside")
            events = vertex.stats.events
            with tmpfs(top):
                await settle(engine, (top / "a" / "f").is_file)
                assert vertex.stats.events > events
                await settle(engine)
                assert (top / "a" / "f").read_text() == "hello\n"
                events = vertex.stats.events
            await seen(top)  # taken off: reported too
            await settle(engine, lambda: vertex.stats.events > events)
            await settle(engine)
            events = vertex.stats.events
            with tmpfs(tmp_path / "beside" / "inner"):
                await seen(tmp_path / "beside" / "inner")
            assert vertex.stats.events == events  # mounts elsewhere: nothing reported
    finally:
        await engine.stop(graceful=False)


FULL: list[int] = []  # the checks of SharedProbe, while its file system is "full"; [] ends


@register("sharedprobe")
@dataclass(kw_only=True, eq=False)
class SharedProbe(Resource):
    """ENOSPC (on its name, a path) while FULL is not empty; each check counted in CHECKS."""

    async def check_apply(self, apply: bool) -> bool:
        CHECKS.append(self.name)
        if FULL or self.name in STUCK:
            cause = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.name)
            raise ResourceError(f"could not write {self.name}: disk full") from cause
        return True


CHECKS: list[str] = []
STUCK: set[str] = set()  # names that fail with ENOSPC even once FULL is empty (too big)


def _probes(tmp_path: Path, count: int) -> list[str]:
    """The names of `count` SharedProbes on the full file system (FULL set, CHECKS cleared)."""
    FULL[:] = [1]
    CHECKS.clear()
    return [str(tmp_path / f"f{i}") for i in range(count)]


def _graph_of(names: list[str]) -> Graph:
    graph = Graph("g")
    for name in names:
        graph.add(SharedProbe(name=name))
    return graph


async def _all_failed(engine: Engine, names: list[str]) -> list[Vertex]:
    """`names`' graph applied, each of its vertices failed (out of retries)."""
    await engine.apply(_graph_of(names))
    vertices = list(engine.vertices.values())
    await settle(engine, lambda: all(v.status is Status.FAILED for v in vertices))
    return vertices


async def test_one_full_file_system_is_checked_once_a_step(engine: Engine, tmp_path: Path) -> None:
    """50 files failed on the same full file system: one check for them all per step (not 50),
    and once one passes the others are checked at once and recover, with no event."""
    names = _probes(tmp_path, 50)
    try:
        vertices = await _all_failed(engine, names)
        assert len(engine.heal_groups) == 1
        first = len(CHECKS)
        await settle(engine, lambda: len(CHECKS) - first >= 6)
        assert len(CHECKS) - first < 25, len(CHECKS) - first  # each at each step: 50 at once
        events = [v.stats.events for v in vertices]
        FULL.clear()
        await settle(engine, lambda: all(v.status is Status.OK for v in vertices))
        assert all(v.healing is None for v in vertices)
        assert [v.stats.events for v in vertices] == events  # no event told of it
        assert not engine.heal_groups
    finally:
        FULL.clear()


async def test_a_swap_leaves_no_heal_behind(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While their checks wait: the same graph again keeps them waiting (no check at once, no
    second timer); a swap that removes some cancels theirs and takes them out of their group;
    the agent's stop leaves no group, no timer."""
    monkeypatch.setattr(heal, "HEAL_MIN", 100.0)  # none falls due during the test
    names = _probes(tmp_path, 4)
    try:
        vertices = await _all_failed(engine, names)
        timers = [v.healing.timer for v in vertices if v.healing is not None]
        assert len(timers) == 4 and all(timer is not None for timer in timers)
        await engine.apply(_graph_of(names))
        assert list(engine.vertices.values()) == vertices
        assert [v.healing.timer for v in vertices if v.healing is not None] == timers
        await engine.apply(_graph_of(names[:1]))
        await settle(engine)
        assert all(v.healing is None for v in vertices[1:])
        assert all(t.cancelled() for t in timers[1:])  # type: ignore[union-attr]
        (group,) = engine.heal_groups.values()
        assert group.members == {engine.vertices[("sharedprobe", names[0])]}
        await engine.stop()
        assert not engine.heal_groups and vertices[0].healing is None
        assert timers[0] is not None and timers[0].cancelled()
    finally:
        FULL.clear()


async def test_a_member_that_cannot_pass_does_not_hold_its_group(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The member that checks for the group stays full (a file too big for the space freed):
    the others take their turn, and recover once the space is freed (heal.Group.last: its
    timer, set from its check, may fall due first at each step while the others' are spread)."""
    monkeypatch.setattr(heal, "HEAL_MAX", 1000.0)  # the waits double all through the test
    names = _probes(tmp_path, 4)
    try:
        vertices = await _all_failed(engine, names)
        first = len(CHECKS)
        await settle(engine, lambda: len(CHECKS) > first)
        STUCK.add(CHECKS[-1])  # the member that checked for the group
        FULL.clear()
        await settle(engine, lambda: sum(v.status is Status.OK for v in vertices) == 3)
        (stuck,) = [v for v in vertices if v.status is Status.FAILED]
        assert stuck.res.name in STUCK and stuck.healing is not None
    finally:
        FULL.clear()
        STUCK.clear()


def test_a_failures_file_system_is_found_in_the_mount_table_not_by_a_stat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ops lead 3: heal.group_of stat'ed the failing path's nearest existing directory on the
    event loop, where a hung NFS server (a hard mount) would stall the whole agent. It reads
    the mount table (a kernel file: no file system is touched), again only once it changed:
    a tmpfs mounted over a directory groups what fails below it by the tmpfs' device, and
    once taken off, by the device below."""
    full = heal.PASSING[errno.ENOSPC]
    below = tmp_path / "below"
    below.mkdir()
    outside = os.stat(tmp_path).st_dev
    stats: list[object] = []
    real_stat, real_lstat = os.stat, os.lstat

    def spy(real: Callable[..., os.stat_result]) -> Callable[..., os.stat_result]:
        def call(*args: Any, **kwargs: Any) -> os.stat_result:
            stats.append(args[0])
            return real(*args, **kwargs)

        return call

    def group(err: OSError | None, path: str | None, why: str = full) -> object:
        """group_of, with every stat it makes recorded."""
        monkeypatch.setattr(os, "stat", spy(real_stat))
        monkeypatch.setattr(os, "lstat", spy(real_lstat))
        try:
            return heal.group_of(why, err, path)
        finally:
            monkeypatch.setattr(os, "stat", real_stat)
            monkeypatch.setattr(os, "lstat", real_lstat)

    err = OSError(errno.ENOSPC, "No space left on device", str(below / "a" / "missing"))
    assert group(err, "/elsewhere") == (full, outside)
    assert group(None, str(below / "f")) == (full, outside)
    with tmpfs(below):
        inside = real_stat(below).st_dev
        assert inside != outside
        assert group(None, str(below / "x" / "f")) == (full, inside)
        assert group(None, str(tmp_path / "belowx")) == (full, outside)
    assert group(None, str(below / "f")) == (full, outside)
    assert group(None, "relative/f") is None
    memory = heal.PASSING[errno.ENOMEM]
    assert group(None, None, memory) == (memory, -1)
    assert group(None, str(below), heal.PASSING[errno.ETXTBSY]) is None
    assert stats == []


def test_a_path_spelled_with_two_leading_slashes_is_grouped_by_its_mount(tmp_path: Path) -> None:
    """review_ops: a file resource's path `//srv/f` is kept so (normpath keeps exactly two
    leading slashes, as POSIX lets it), and group_of matched no mount point but `/` with it:
    its failures were grouped with the root file system's, not their own mount's."""
    full = heal.PASSING[errno.ENOSPC]
    with tmpfs(tmp_path / "m") as point:
        inside = os.stat(point).st_dev
        assert inside != os.stat(tmp_path).st_dev
        assert heal.group_of(full, None, "/" + str(point / "f")) == (full, inside)
        assert heal.group_of(full, None, f"/{point}/../m/x/f") == (full, inside)
