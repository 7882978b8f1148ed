"""The shared inotify watcher, on the real filesystem."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import stat
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine import safefs
from engine import watcher as watcher_module
from engine.inotify import Event
from engine.watcher import Hub, PathWatcher
from tests.aio import pass_ended


class Counter:
    """Consumes a PathWatcher in a task; `await changed()` waits for the next event."""

    def __init__(self, watcher: PathWatcher) -> None:
        self.watcher = watcher
        self.count = 0
        self._event = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for _ in self.watcher:
            self.count += 1
            self._event.set()

    async def changed(self, timeout: float = 5) -> None:
        async with asyncio.timeout(timeout):
            await self._event.wait()
        self._event.clear()

    async def quiet(self, within: float = 0.2) -> bool:
        self._event.clear()
        done, _ = await asyncio.wait({asyncio.ensure_future(self._event.wait())}, timeout=within)
        for fut in done:
            fut.cancel()
        return not done


@pytest.fixture
async def watch(tmp_path: Path) -> AsyncIterator[object]:
    counters: list[Counter] = []

    async def start(*paths: Path, recurse: bool = False, checked: bool = False) -> Counter:
        watcher = PathWatcher(paths, recurse=recurse, checked=checked)
        await watcher.__aenter__()
        counter = Counter(watcher)
        counters.append(counter)
        return counter

    yield start
    for counter in counters:
        counter.task.cancel()
        await asyncio.gather(counter.task, return_exceptions=True)
        await counter.watcher.aclose()


async def test_every_kind_of_change_is_an_event(tmp_path: Path, watch: object) -> None:
    path = tmp_path / "f"
    counter = await watch(path)  # type: ignore[operator]
    path.write_text("a")
    await counter.changed()
    os.chmod(path, 0o600)
    await counter.changed()
    with path.open("a") as handle:
        handle.write("b")
    await counter.changed()
    tmp = tmp_path / ".tmp"
    tmp.write_text("c")
    os.replace(tmp, path)  # an atomic replace
    await counter.changed()
    os.chmod(path, 0o644)  # the new inode is watched too
    await counter.changed()
    path.unlink()
    await counter.changed()


async def test_missing_parents_are_followed_down(tmp_path: Path, watch: object) -> None:
    path = tmp_path / "a" / "b" / "f"
    counter = await watch(path)  # type: ignore[operator]
    (tmp_path / "a").mkdir()
    await counter.changed()
    (tmp_path / "a" / "b").mkdir()
    await counter.changed()
    path.write_text("x")
    await counter.changed()


async def test_unrelated_entries_are_not_events(tmp_path: Path, watch: object) -> None:
    counter = await watch(tmp_path / "mine")  # type: ignore[operator]
    (tmp_path / "other").write_text("x")
    assert await counter.quiet()


@pytest.mark.parametrize("entries", [True, False])
async def test_a_directory_without_its_entries_reports_itself_only(
    tmp_path: Path, entries: bool
) -> None:
    """`entries=False` (a directory resource): a change to what the directory holds is no
    event, a change to the directory itself is; by default both are."""
    top = tmp_path / "d"
    top.mkdir()
    (top / "old").write_text("x")
    async with PathWatcher([top], entries=entries) as watcher:
        (top / "new").write_text("x")
        (top / "new").rename(top / "renamed")
        os.chmod(top / "renamed", 0o600)
        (top / "old").unlink()
        (top / "sub").mkdir()
        assert watcher.settle() is entries  # settle() reads what the kernel queued
        os.chmod(top, 0o700)
        assert watcher.settle()
        top.rename(tmp_path / "moved")
        assert watcher.settle()


async def test_recurse_sees_deep_changes(tmp_path: Path, watch: object) -> None:
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    counter = await watch(root, recurse=True)  # type: ignore[operator]
    (root / "sub" / "deep").mkdir()
    await counter.changed()
    (root / "sub" / "deep" / "file").write_text("x")
    await counter.changed()


async def test_symlink_is_not_followed(tmp_path: Path, watch: object) -> None:
    target = tmp_path / "target"
    target.write_text("x")
    link = tmp_path / "link"
    link.symlink_to(target)
    counter = await watch(link)  # type: ignore[operator]
    target.write_text("changed")
    assert await counter.quiet()


async def test_a_parent_reached_through_a_symlink_is_watched(tmp_path: Path, watch: object) -> None:
    # /var/run -> /run: the file resource follows a safe symlink among the parents, so the
    # directory it points to is where the path is; a watch refusing to follow it left nothing
    # watching that directory, and a file appearing at the path went unseen.
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "run").symlink_to(real)
    absent = await watch(tmp_path / "run" / "x")  # type: ignore[operator]
    deeper = await watch(tmp_path / "run" / "a" / "x")  # type: ignore[operator]
    (real / "x").write_text("appeared")
    await absent.changed()
    (real / "x").unlink()
    await absent.changed()
    (real / "a").mkdir()
    await deeper.changed()
    (real / "a" / "x").write_text("appeared")
    await deeper.changed()


async def test_one_inotify_instance_for_many_watchers(tmp_path: Path, watch: object) -> None:
    # More watchers than the kernel's default of 128 inotify instances per user.
    counters = [await watch(tmp_path / f"f{i}") for i in range(300)]  # type: ignore[operator]
    hub = Hub.running()
    assert hub is not None and hub.subscribers == {c.watcher for c in counters}
    (tmp_path / "f123").write_text("x")
    await counters[123].changed()
    assert counters[124].count == 0


def _is_inotify(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:inotify"
    except FileNotFoundError:
        return False


async def test_hub_closes_its_fd_with_its_last_watcher(tmp_path: Path) -> None:
    """The hub's lifetime is its watchers': the last one to close closes the inotify fd."""
    assert Hub.running() is None
    async with PathWatcher([tmp_path / "x"]) as first:
        hub = Hub.running()
        assert hub is not None and hub.inotify.fd is not None
        fd = hub.inotify.fd
        assert _is_inotify(fd)
        async with PathWatcher([tmp_path / "y"]):
            assert Hub.running() is hub  # one fd for every watcher of the loop
        assert _is_inotify(fd)  # `first` still holds it
        assert hub.subscribers == {first}
    assert Hub.running() is None
    assert hub.inotify.fd is None and not _is_inotify(fd)
    async with PathWatcher([tmp_path / "x"]):  # the next watcher opens a fresh hub
        assert Hub.running() not in (None, hub)
    assert Hub.running() is None


async def test_a_whole_path_created_at_once_is_seen(tmp_path: Path, watch: object) -> None:
    """mkdir -p + write before the loop sees the first event: the later parts had no watch."""
    path = tmp_path / "a" / "b" / "c" / "f"
    counter = await watch(path)  # type: ignore[operator]
    path.parent.mkdir(parents=True)
    path.write_text("x")
    await counter.changed()
    assert path.exists()
    os.chmod(path, 0o600)  # and the file itself is watched now
    await counter.changed()


async def test_a_check_own_changes_are_set_aside_and_others_reported_after_it(
    tmp_path: Path, watch: object
) -> None:
    """changing(): a check's own chmod is set aside by settle() (True: it looks again); what
    its look finds not as wanted is reported once it leaves (changed()), and so is an event
    after settle(); reports wait meanwhile, also across awaits (its write in a thread)."""
    path = tmp_path / "f"
    path.write_text("a")
    counter = await watch(path)  # type: ignore[operator]
    watcher = counter.watcher
    os.chmod(path, 0o600)
    await counter.changed()  # the file's own watch is in place
    with watcher.changing():
        os.chmod(path, 0o640)  # its own
        assert await counter.quiet()  # the loop reads the event meanwhile: held, not reported
        assert watcher.settle() is True
    assert await counter.quiet()
    assert watcher.settle() is False
    with watcher.changing():
        os.chmod(path, 0o600)
        assert watcher.settle() is True
        watcher.changed()  # its look found something else
        assert await counter.quiet()
    await counter.changed()
    with watcher.changing():
        assert watcher.settle() is False
        os.chmod(path, 0o644)  # after its settle(): not its own
        assert await counter.quiet()
    await counter.changed()


async def test_settle_subsumes_what_is_queued_before_a_check(tmp_path: Path, watch: object) -> None:
    """An event queued before settle() (a check about to observe) is not reported; one after
    it is, and the watches moved down meanwhile (a parent that appeared) are in place."""
    path = tmp_path / "d" / "f"
    counter = await watch(path)  # type: ignore[operator]
    (tmp_path / "d").mkdir()  # queued in the kernel, not read yet: no await since
    path.write_text("a")  # not seen by the kernel watches (d/ is not watched yet)
    counter.watcher.settle()
    assert await counter.quiet()
    assert counter.count == 0
    path.write_text("b")  # the watch moved down to d/ during settle()
    await counter.changed()


async def test_an_expected_rename_is_consumed_once(tmp_path: Path, watch: object) -> None:
    """expecting(path) swallows exactly one MOVED_TO onto path: a second rename (someone
    else's) is reported, and so is any other event, and nothing is expected afterwards."""
    path = tmp_path / "f"
    counter = await watch(path)  # type: ignore[operator]
    one, two = tmp_path / ".one", tmp_path / ".two"
    one.write_text("1")
    two.write_text("2")
    with counter.watcher.expecting(str(path)) as rename:
        rename.run(lambda: os.replace(one, path))  # ours
    assert await counter.quiet()
    os.chmod(path, 0o600)  # the new inode was watched when the rename was consumed
    await counter.changed()
    with counter.watcher.expecting(str(path)) as rename:
        rename.run(lambda: os.replace(two, path))  # ours
        three = tmp_path / ".three"
        three.write_text("3")
        os.replace(three, path)  # someone else's, right after
    await counter.changed()
    four = tmp_path / ".four"
    four.write_text("4")
    with counter.watcher.expecting(str(path)):
        pass  # the write failed before its rename: the expectation does not outlive it
    os.replace(four, path)
    await counter.changed()


async def test_an_expected_rename_onto_the_path_spelled_otherwise_is_consumed(
    tmp_path: Path, watch: object
) -> None:
    """expecting() takes the path as the watcher does (absolute, normalized): the same path
    spelled with a "./" is the watched one."""
    path = tmp_path / "f"
    counter = await watch(path)  # type: ignore[operator]
    new = tmp_path / ".new"
    new.write_text("1")
    with counter.watcher.expecting(f"{tmp_path}/./f") as rename:
        rename.run(lambda: os.replace(new, path))  # ours
    assert await counter.quiet()
    os.chmod(path, 0o600)  # the new inode was watched when the rename was consumed
    await counter.changed()


async def test_an_expected_rename_read_by_another_drain_is_consumed_then(
    tmp_path: Path, watch: object
) -> None:
    """The own rename's event read before leaving expecting() (another check's settle() drained
    the queue meanwhile) is consumed then: leaving reads nothing more, the new inode is
    watched, and someone else's rename right after is reported (read by the loop)."""
    path = tmp_path / "f"
    counter = await watch(path)  # type: ignore[operator]
    hub = Hub.running()
    assert hub is not None
    one, two, three = tmp_path / ".one", tmp_path / ".two", tmp_path / ".three"
    for tmp in (one, two, three):
        tmp.write_text(tmp.name)
    reads: list[int] = []
    real = hub.inotify.drain

    def counted() -> None:
        reads.append(1)
        real()

    hub.inotify.drain = counted  # type: ignore[method-assign]
    with counter.watcher.expecting(str(path)) as rename:
        rename.run(lambda: os.replace(one, path))  # ours
        hub.inotify.drain()  # another check's settle(): ours is read and consumed
    assert len(reads) == 1  # leaving did not read again
    assert await counter.quiet()
    os.chmod(path, 0o600)  # the new inode was watched when leaving
    await counter.changed()
    with counter.watcher.expecting(str(path)) as rename:
        rename.run(lambda: os.replace(two, path))  # ours
        hub.inotify.drain()
        os.replace(three, path)  # someone else's, right after: queued, not read on leaving
    assert len(reads) == 2  # nor here
    await counter.changed()


async def test_an_expected_link_of_a_new_file_is_consumed_once(
    tmp_path: Path, watch: object
) -> None:
    """A new file linked at the path (safefs.write_at's new=True: a CREATE, not a MOVED_TO)
    is an expected own write as a rename is; the next change is reported."""
    path = tmp_path / "f"
    counter = await watch(path)  # type: ignore[operator]
    with safefs.closing(safefs.open_dir(str(tmp_path))) as fd:
        with counter.watcher.expecting(str(path)) as rename:
            rename.run(lambda: safefs.write_at(fd, "f", b"x", mode=0o644, new=True), True)
        assert await counter.quiet()
        os.chmod(path, 0o600)  # the new inode was watched when the link was consumed
        await counter.changed()


async def test_own_writes_beside_others_hold_the_loops_reads(
    tmp_path: Path, watch: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While own writes beside others are in flight (expecting(beside=True): a first run's
    creations), the loop does not read the queue when it becomes readable: each write's end
    reads it (its own event consumed, anyone else's reported), and the last one's end gives
    the loop its reader back."""
    monkeypatch.setattr(watcher_module, "READ_EVERY", 3600.0)  # no read but the writes' ends
    one, two, other = tmp_path / "f1", tmp_path / "f2", tmp_path / "g"
    ones = await watch(one)  # type: ignore[operator]
    twos = await watch(two)  # type: ignore[operator]
    others = await watch(other)  # type: ignore[operator]
    hub = Hub.running()
    assert hub is not None and hub.inotify.fd is not None
    loop = asyncio.get_running_loop()
    new_one, new_two = tmp_path / ".one", tmp_path / ".two"
    new_one.write_text("1")
    new_two.write_text("2")
    with twos.watcher.expecting(str(two), beside=True) as second:
        with ones.watcher.expecting(str(one), beside=True) as first:
            assert hub.holding == 2
            assert not loop.remove_reader(hub.inotify.fd)  # no reader while held
            other.write_text("x")  # someone else's change, queued
            first.run(lambda: os.replace(new_one, one))  # ours
        assert hub.holding == 1  # the first write's end read the queue:
        assert not loop.remove_reader(hub.inotify.fd)
        await others.changed()  # the other change reported
        second.run(lambda: os.replace(new_two, two))  # ours
    assert hub.holding == 0
    assert await ones.quiet()  # both own renames consumed
    assert twos.count == 0
    os.chmod(other, 0o600)  # read by the loop's reader, back
    await others.changed()
    os.chmod(two, 0o600)  # the new inode was watched when its rename was consumed
    await twos.changed()


async def test_held_reads_wait_read_every_at_most(tmp_path: Path, watch: object) -> None:
    """While reads are held, a change is read and reported within READ_EVERY all the same (a
    write that takes long holds no event back)."""
    path, other = tmp_path / "f", tmp_path / "g"
    counter = await watch(path)  # type: ignore[operator]
    others = await watch(other)  # type: ignore[operator]
    hub = Hub.running()
    assert hub is not None
    with counter.watcher.expecting(str(path), beside=True):
        other.write_text("x")
        await others.changed()
        assert hub.holding == 1
        os.chmod(other, 0o600)
        await others.changed()
    assert hub.holding == 0
    os.chmod(other, 0o644)
    await others.changed()


async def test_an_own_write_costs_no_stat_on_the_loop(
    tmp_path: Path, watch: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first run's write of a file (its rename onto a path of a watched directory) re-syncs
    the watches without a stat, in the writing thread or on the event loop: the path holds the
    regular file just put there, an existing path's parent needs none, and a new watch on a
    file needs no second look (its directory's watch was in place). The file is watched after,
    and its directory still reports it."""
    path = tmp_path / "f"
    counter = await watch(path)  # type: ignore[operator]
    stats: list[tuple[str, bool]] = []
    real = watcher_module._kind

    def counted(target: Path, follow: bool) -> int | None:
        stats.append((str(target), threading.current_thread() is threading.main_thread()))
        return real(target, follow)

    new = tmp_path / ".new"
    new.write_text("1")
    monkeypatch.setattr(watcher_module, "_kind", counted)
    with counter.watcher.expecting(str(path)) as rename:
        await asyncio.to_thread(rename.run, lambda: os.replace(new, path))
    assert await counter.quiet()  # the rename was read and consumed meanwhile
    monkeypatch.undo()
    assert stats == []
    os.chmod(path, 0o600)  # the new inode is watched
    await counter.changed()
    path.unlink()  # and its directory still reports its entry
    await counter.changed()


async def test_an_own_write_beside_another_watched_path_keeps_both_watched(
    tmp_path: Path, watch: object
) -> None:
    """A watcher of two paths (a file's and a fragment's): after an own write onto the first,
    taken as the regular file written without a look, the other path is looked at as before;
    both inodes are watched after the re-sync."""
    path, other = tmp_path / "f", tmp_path / "sub" / "g"
    other.parent.mkdir()
    other.write_text("g")
    counter = await watch(path, other)  # type: ignore[operator]
    new = tmp_path / ".new"
    new.write_text("1")
    with counter.watcher.expecting(str(path)) as rename:
        rename.run(lambda: os.replace(new, path))  # ours
    assert await counter.quiet()
    os.chmod(path, 0o600)  # the new inode is watched
    await counter.changed()
    os.chmod(other, 0o600)  # and so is the other path's
    await counter.changed()


@pytest.mark.parametrize("checked", [False, True])
async def test_an_own_write_replaced_right_after_is_reported_and_watched_anew(
    tmp_path: Path, watch: object, checked: bool
) -> None:
    """The writing thread takes its path as the regular file it just put there, without a
    look: a directory put there right after, before the loop re-syncs (with the file's
    watch on the directory's inode), is reported, as the second event of the path, and is
    then watched as what it is: an entry made in it is reported too."""
    path = tmp_path / "f"
    counter = await watch(path, checked=checked)  # type: ignore[operator]
    new = tmp_path / ".new"
    new.write_text("1")
    with counter.watcher.expecting(str(path)) as rename:
        rename.run(lambda: os.replace(new, path))  # ours
        path.unlink()  # someone else's, right after
        path.mkdir()
    await counter.changed()
    if checked:  # the check that follows the report looks, and says what it found
        counter.watcher.settle()
        counter.watcher.observed(stat.S_IFDIR)
    (path / "x").write_text("x")
    await counter.changed()


async def test_a_directory_moved_away_and_made_again_is_watched_anew(
    tmp_path: Path, watch: object
) -> None:
    """The watch on a directory follows its inode: when it is renamed away and a new one made
    at its path, the path's watch moves to the new one, and a later watcher of the same
    directory (which takes the hub's watch as its existence) sees its entries too."""
    path = tmp_path / "d" / "f"
    path.parent.mkdir()
    counter = await watch(path)  # type: ignore[operator]
    (tmp_path / "d").rename(tmp_path / "old")
    (tmp_path / "d").mkdir()  # before the move's event is read: the re-sync finds a directory
    await counter.changed()
    path.write_text("x")
    await counter.changed()
    other = await watch(tmp_path / "d" / "g")  # type: ignore[operator]
    (tmp_path / "d" / "g").write_text("y")
    await other.changed()


def counted_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path the watcher looks up itself (watcher._kind) from now on, in order, until
    `monkeypatch.undo()`."""
    looked: list[str] = []
    real = watcher_module._kind

    def counted(target: Path, follow: bool) -> int | None:
        looked.append(str(target))
        return real(target, follow)

    monkeypatch.setattr(watcher_module, "_kind", counted)
    return looked


async def test_a_new_watcher_in_a_watched_directory_stats_its_path_alone(
    tmp_path: Path, watch: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second file of a watched directory starts with one stat (of itself): the hub's
    watch says its directory exists. Its creation is then seen."""
    await watch(tmp_path / "f")  # type: ignore[operator]
    stats = counted_lookups(monkeypatch)
    counter = await watch(tmp_path / "g")  # type: ignore[operator]
    monkeypatch.undo()
    assert stats == [str(tmp_path / "g")]
    (tmp_path / "g").write_text("x")
    await counter.changed()


async def test_a_checked_watcher_leaves_its_paths_lookup_to_the_check(
    tmp_path: Path, watch: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `checked` watcher (file's: a check follows every report) does not look its path up
    where the hub watches the directory already, neither when it starts nor when that
    directory appears (10,000 files: one lookup of each new name on the event loop, the
    check's, not three). The check tells what it found: a file's own inode is watched from
    then on (a write through another hard link is reported)."""
    d = tmp_path / "d"
    one, two, three = d / "one", d / "two", d / "three"
    looked = counted_lookups(monkeypatch)
    first = await watch(one, checked=True)  # type: ignore[operator]
    second = await watch(two, checked=True)  # type: ignore[operator]
    # When they started, d/ absent: the first looked, and again once its new watch on
    # tmp_path was in place (what it saw may have changed before); the second took d/ as
    # missing from that look (Hub.absent), no event having been read since.
    assert looked.count(str(one)) == 2
    assert str(two) not in looked and looked.count(str(d)) == 2
    d.mkdir()  # both are told; the first to re-sync looks, and then watches d/
    await first.changed()
    await second.changed()
    assert looked.count(str(one)) + looked.count(str(two)) == 3
    (d / "three").write_text("3")
    third = await watch(three, checked=True)  # type: ignore[operator]
    for counter in (first, second):
        counter.watcher.settle()
        counter.watcher.observed(None)
    monkeypatch.undo()
    assert str(three) not in looked
    assert looked.count(str(one)) + looked.count(str(two)) == 3
    third.watcher.settle()
    third.watcher.observed(stat.S_IFREG)  # the check found a file: its inode is watched
    os.link(three, tmp_path / "link")
    (tmp_path / "link").write_text("more")  # not through d/: its inode's watch tells
    await third.changed()
    two.write_text("2")  # d/ is watched for the other two
    await second.changed()


@pytest.mark.parametrize("checked", [False, True])
async def test_a_directory_made_after_a_watcher_saw_it_missing_is_seen_by_the_next(
    tmp_path: Path, watch: object, monkeypatch: pytest.MonkeyPatch, checked: bool
) -> None:
    """A watcher that starts below a directory another one found missing takes it as missing
    without a look (Hub.absent: a first run's thousand files of a new directory). Made in
    between, its event still unread, the directory is reported to the new watcher too, which
    then watches its path in it; once an event was read, a new watcher looks again."""
    d = tmp_path / "d"
    looked = counted_lookups(monkeypatch)
    await watch(tmp_path / "other")  # type: ignore[operator]
    await watch(d / "one", checked=checked)  # type: ignore[operator]
    d.mkdir()  # its event is queued, not read before the next watcher starts
    looked.clear()
    second = await watch(d / "two", checked=checked)  # type: ignore[operator]
    assert looked == []  # d/ taken as missing: the first's look
    await second.changed()  # the directory's creation reaches it
    (d / "two").write_text("2")
    await second.changed()  # and its path in d/ is watched
    looked.clear()
    third = await watch(d / "sub" / "three", checked=checked)  # type: ignore[operator]
    assert str(d / "sub") in looked  # events were read since: it looks for itself
    (d / "sub").mkdir()
    await third.changed()


async def test_watchers_without_a_task_are_reported_after_the_event(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A directory appearing below many watchers without a task (a first run's files): each
    one's `on_change` is called once, in a later step than the event (Hub.report_later: one
    callback for all); one that settled meanwhile was subsumed by its check, and
    one whose `on_change` fails does not keep the others from theirs."""
    d = tmp_path / "d"
    reports: list[int] = []
    last = asyncio.Event()

    def on_change(i: int) -> None:
        reports.append(i)
        if i == 1:
            raise RuntimeError("a failing report")
        if i == 4:
            last.set()

    watchers = [
        PathWatcher(
            [d / f"f{i}"],
            checked=True,
            on_change=functools.partial(on_change, i),
            on_error=lambda err: None,
        )
        for i in range(5)
    ]
    for watcher in watchers:
        watcher.open()
    try:
        d.mkdir()
        assert watchers[2].settle()  # reads the event: the others are due, 2's check runs
        watchers[2].observed(None)
        assert reports == []  # not from within the read
        async with asyncio.timeout(5):
            await last.wait()
        assert sorted(reports) == [0, 1, 3, 4]
        assert "a failing report" in caplog.text
        last.clear()
        (d / "f4").write_text("4")  # each watches its path in d/ now
        async with asyncio.timeout(5):
            await last.wait()
        assert sorted(reports) == [0, 1, 3, 4, 4]
    finally:
        for watcher in watchers:
            watcher.close()


async def test_a_check_that_did_not_look_leaves_the_lookup_to_the_watcher(
    tmp_path: Path, watch: object
) -> None:
    """observed() without a finding (the check failed before its lookup): the watcher looks,
    and a file found is watched."""
    await watch(tmp_path / "other")  # type: ignore[operator]
    path = tmp_path / "f"
    path.write_text("1")
    counter = await watch(path, checked=True)  # type: ignore[operator]
    counter.watcher.settle()
    counter.watcher.observed()
    os.link(path, tmp_path / "link")
    (tmp_path / "link").write_text("more")
    await counter.changed()


@pytest.mark.parametrize("swapped_in", ["file", "symlink"])
async def test_a_file_replaced_between_the_checks_look_and_its_watch_is_reported(
    tmp_path: Path, watch: object, swapped_in: str
) -> None:
    """The check found a regular file (its lstat), and before it told observed(), which
    watches the inode by name, another inode or a symlink was renamed over it: the
    directory's watch, in place before the check looked, reports the rename (the check
    follows); what observed() watched by name is what is there now, and after the next
    check, a write through another hard link of the new inode is reported too."""
    await watch(tmp_path / "other")  # type: ignore[operator]  # the hub watches tmp_path
    path = tmp_path / "f"
    path.write_text("1")
    counter = await watch(path, checked=True)  # type: ignore[operator]
    counter.watcher.settle(before=True)  # the check begins
    found = stat.S_IFMT(os.lstat(path).st_mode)  # the check's look: a regular file
    new = tmp_path / "new"
    if swapped_in == "file":
        new.write_text("2")
        os.link(new, tmp_path / "link")
    else:
        new.symlink_to(tmp_path / "other")
    os.rename(new, path)
    counter.watcher.observed(found)
    await counter.changed()  # the rename, reported
    counter.watcher.settle(before=True)
    counter.watcher.observed(stat.S_IFMT(os.lstat(path).st_mode))  # the next check's look
    if swapped_in == "file":
        (tmp_path / "link").write_text("more")  # not through tmp_path/f: its inode's watch
        await counter.changed()
    else:
        (tmp_path / "other").write_text("x")  # the link is not followed
        assert await counter.quiet()


async def test_private_names_reach_only_their_readers(
    tmp_path: Path, watch: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A durable write (an O_TMPFILE inode, "#<inode>" in its events, linked in as a temp
    ".mgmt.<hex>" name, renamed) in a directory watched for file paths alone: none of the
    temp names' events is dispatched, only the rename onto the path. A directory's watcher
    and a watcher of a path named like that still get theirs."""
    names: list[bytes | None] = []
    real = Hub._dispatch

    def dispatched(hub: Hub, event: Event) -> None:
        names.append(event.name)
        real(hub, event)

    monkeypatch.setattr(Hub, "_dispatch", dispatched)
    path = tmp_path / "f"
    counter = await watch(path)  # type: ignore[operator]
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        await asyncio.to_thread(safefs.write_at, fd, "f", b"x", mode=0o644)
        await counter.changed()
        assert [n for n in names if n and n.startswith((b"#", b".mgmt."))] == []
        assert b"f" in names
        whole = await watch(tmp_path)  # type: ignore[operator]
        named = await watch(tmp_path / "#1")  # type: ignore[operator]
        (tmp_path / "#1").write_text("1")
        await whole.changed()
        await named.changed()
        names.clear()
        await asyncio.to_thread(safefs.write_at, fd, "g", b"y", mode=0o644)
        await whole.changed()
        assert any(n and n.startswith(b"#") and n != b"#1" for n in names)
    finally:
        os.close(fd)


async def test_a_path_with_two_leading_slashes_is_watched(tmp_path: Path, watch: object) -> None:
    """POSIX keeps a leading "//" (os.path.dirname("//") is "//"): the walk up to the deepest
    existing directory ends there as at "/"."""
    path = Path("/" + str(tmp_path / "missing" / "f"))
    async with asyncio.timeout(5):
        counter = await watch(path)  # type: ignore[operator]
    (tmp_path / "missing").mkdir()
    await counter.changed()
    (tmp_path / "missing" / "f").write_text("x")
    await counter.changed()


async def test_a_directory_made_before_its_watch_is_in_place_is_watched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watcher looks the path up, then puts its watches in place: a directory made in
    between (by another process: here, right after the lookup) is watched too, so a file
    renamed into it later is seen. (Only the directory above was watched: the file's arrival
    went unseen, 83 times in 2,000 races of a thread against the watcher's start.)"""
    path = tmp_path / "shared" / "h1"
    real = PathWatcher._desired

    def racing(self: PathWatcher, *args: object, **kwargs: object) -> object:
        desired = real(self, *args, **kwargs)  # type: ignore[arg-type]
        path.parent.mkdir(exist_ok=True)  # after the lookup, before the watch
        return desired

    monkeypatch.setattr(PathWatcher, "_desired", racing)
    async with PathWatcher([path]) as watcher:
        monkeypatch.undo()
        counter = Counter(watcher)
        try:
            (tmp_path / "tmp").write_text("x")
            os.rename(tmp_path / "tmp", path)
            await counter.changed()
        finally:
            counter.task.cancel()


async def test_a_watcher_that_outlives_a_stop_still_sees_its_paths(
    tmp_path: Path, watch: object
) -> None:
    """While everything stops (`shutting_down`), a closed watcher's paths are not forgotten one
    by one; after it, they are, if the hub is still open. One watcher left open, one closed and
    opened again during the stop: both see their changes, and nothing is left of the others."""
    kept = await watch(tmp_path / "kept")  # type: ignore[operator]
    hub = Hub.running()
    assert hub is not None
    with watcher_module.shutting_down():
        closed = [PathWatcher([tmp_path / f"gone{i}"]) for i in range(3)]
        for watcher in closed:
            await watcher.__aenter__()
        for watcher in closed:
            await watcher.aclose()
        assert set(hub.released) == set(closed)
        again = closed[0]
        await again.__aenter__()  # its last paths forgotten, its new ones watched
        assert again not in hub.released
    assert hub.released == {}
    assert not any(path.endswith(("gone1", "gone2")) for path in hub.masks)
    counter = Counter(again)
    try:
        (tmp_path / "gone0").write_text("x")
        await counter.changed()
        (tmp_path / "kept").write_text("x")
        await kept.changed()
    finally:
        counter.task.cancel()
        await asyncio.gather(counter.task, return_exceptions=True)
        await again.aclose()


async def test_an_ancestor_moved_away_is_seen_by_the_watchers_below(
    tmp_path: Path, watch: object
) -> None:
    """`mv top old` moves the watched directory top/a along (a watch follows its inode), and
    no watch below says so: the watch of top's own move (Hub.guarded) tells every watcher
    below, which re-syncs to where its path is now. The moved copy is not its path any more;
    the path made again is seen."""
    top = tmp_path / "top"
    path = top / "a" / "f"
    path.parent.mkdir(parents=True)
    path.write_text("x")
    counter = await watch(path)  # type: ignore[operator]
    top.rename(tmp_path / "old")
    await counter.changed()
    (tmp_path / "old" / "a" / "f").write_text("y")
    assert await counter.quiet()
    path.parent.mkdir(parents=True)
    await counter.changed()
    path.write_text("z")
    await counter.changed()
    (tmp_path / "top").rename(tmp_path / "old2")  # its guard is back in place
    await counter.changed()


async def test_the_guards_above_a_closed_watcher_go_with_it(tmp_path: Path, watch: object) -> None:
    """The directories above a watched one are watched for their own moves only while a
    watched directory below needs it: closing its watcher drops them (not those another
    watcher still needs)."""
    one, two = tmp_path / "x" / "a" / "f", tmp_path / "y" / "g"
    one.parent.mkdir(parents=True)
    two.parent.mkdir()
    first = await watch(one)  # type: ignore[operator]
    await watch(two)  # type: ignore[operator]
    hub = Hub.running()
    assert hub is not None
    assert {str(tmp_path / "x"), str(tmp_path)} <= set(hub.guarded)
    await first.watcher.aclose()
    assert str(tmp_path / "x") not in hub.guarded and str(tmp_path / "x") not in hub.path_wd
    assert str(tmp_path) in hub.guarded  # above y/: still guarded
    assert not any(p.startswith(str(tmp_path / "x")) for p in hub.path_wd)


@pytest.mark.parametrize("hold", ["fd", "cwd", "tmpfile"])
async def test_a_directory_removed_while_something_holds_it_is_seen(
    tmp_path: Path, watch: object, hold: str
) -> None:
    """A directory's DELETE_SELF comes only once nothing holds it: an open descriptor, a
    process whose cwd it is (a shell `cd`ed there), a file made in it with O_TMPFILE (the file
    resource's spare). `rm -rf top` then said nothing to the watchers below: the parent's
    deletion of its name does (PARENT_MASK), and each level made again is seen."""
    top = tmp_path / "top"
    path = top / "a" / "f"
    path.parent.mkdir(parents=True)
    path.write_text("x")
    counter = await watch(path)  # type: ignore[operator]
    holder: asyncio.subprocess.Process | None = None
    fd = -1
    if hold == "cwd":  # a real process sitting in the directory, as a shell would
        holder = await asyncio.create_subprocess_exec("sleep", "60", cwd=path.parent)
    else:
        flags = os.O_RDONLY if hold == "fd" else os.O_WRONLY | os.O_TMPFILE
        fd = os.open(path.parent, flags, 0o600)
    try:
        path.unlink()
        await counter.changed()
        path.parent.rmdir()
        top.rmdir()
        await counter.changed()  # before: never (the watch of top/a held, unseen gone)
        path.parent.mkdir(parents=True)
        await counter.changed()
        path.write_text("y")
        await counter.changed()
    finally:
        if holder is not None:
            holder.kill()
            await holder.wait()
        if fd >= 0:
            os.close(fd)


async def test_a_tree_removed_and_made_again_while_held_is_seen_removed_again(
    tmp_path: Path, watch: object
) -> None:
    """`rm -rf top` while something holds top/a (a shell in it, the file resource's spare),
    and the tree made again before the loop reads the removal: the watch of top, above the
    watched top/a, stayed on the removed top (held through top/a, its DELETE_SELF never
    came), and the next removal of the new tree went unseen (found 2026-12-06: a repair of
    tests/e2e/test_cli.py's file waited ~10 s, until the test let its shell go)."""
    top = tmp_path / "top"
    path = top / "a" / "f"
    path.parent.mkdir(parents=True)
    path.write_text("x")
    counter = await watch(path)  # type: ignore[operator]
    held = [os.open(path.parent, os.O_RDONLY)]
    try:
        shutil.rmtree(top)  # removed and made again in one step of the loop: read after
        path.parent.mkdir(parents=True)
        path.write_text("y")
        await counter.changed()
        held.append(os.open(path.parent, os.O_RDONLY))  # the new top/a is held too
        path.unlink()
        await counter.changed()
        path.parent.rmdir()
        top.rmdir()
        await counter.changed()  # before: never (top/a's deletion, told by top's watch)
        path.parent.mkdir(parents=True)
        path.write_text("z")
        await counter.changed()
    finally:
        for fd in held:
            os.close(fd)


def test_a_watched_path_is_made_absolute_and_split_as_os_path_does() -> None:
    """_absolute() skips normpath for a path it would not change, and _split() splits without
    posixpath's calls: both give what os.path.abspath() and os.path.split() give."""
    from engine.watcher import _absolute, _split

    cases = ["/", "//", "///", "/a", "/a/", "/a/b", "//a", "//a/b", "///a", "/a//b", "/a/./b"]
    cases += ["/a/../b", "/.hidden", "/a/.b", "/a/b/.", "/a/b/..", "/a/b/", "/a..b", "/..", "rel"]
    for path in cases:
        absolute = _absolute(path)
        assert absolute == os.path.abspath(path), path
        assert _split(absolute) == os.path.split(absolute), path
    assert _absolute(Path("/a/./b")) == "/a/b"


async def test_a_checks_first_settle_reads_the_queue_once_a_step(tmp_path: Path) -> None:
    """settle(before=True), a check's first: the first of a step of the loop reads the queue;
    the next of the same step take what it read (their own changes dispatched, pending); an
    event queued after that read is read by the next step's (or reported as any other); a
    settle() after a check's own changes reads the queue itself, and so does each first one
    while an own write is in flight (its events, a directory it made, are others' too)."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.write_text("1")
    two.write_text("2")
    async with PathWatcher([one]) as first, PathWatcher([two]) as second:
        await pass_ended()  # a step of the loop begun after the watches' own
        first.settle(), second.settle()  # nothing pending
        two.write_text("changed")  # queued before the step's first read
        assert first.settle(before=True) is False  # reads the queue: two's event dispatched
        assert second.settle(before=True) is True  # what that read found, no read of its own
        one.write_text("changed")  # queued after the step's read
        assert first.settle(before=True) is False  # not read in this step
        assert first.settle() is True  # (a settle after own changes reads the queue)
        two.write_text("again")
        await pass_ended()  # the next step (its _next_step ran): its first settle reads again
        assert second.settle(before=True) is True
        with first.expecting(str(one)):  # an own write in flight: each first settle reads
            two.write_text("once more")
            assert second.settle(before=True) is True


def test_a_parent_link_to_another_users_link_is_not_watched_through(tmp_path: Path) -> None:
    """A link of root's among a path's parents (`top/d`, in a directory only root writes)
    pointing at a link another user controls (`pub/m`, theirs, in a directory anyone writes):
    the writes refuse the second link (safefs.walk follows each link on the way under the
    rule), so the watch does not go through the chain into their directory either; `d` is
    watched by its name in `top`. Before (review, 2026-12-06), only the first link was judged
    and the watch followed the whole chain, as `_kind(d, True)` does. A chain of safe links
    is still followed."""
    top, pub, them = tmp_path / "top", tmp_path / "pub", tmp_path / "them"
    for made in (top, pub, them):
        made.mkdir()
    pub.chmod(0o1777)
    os.chown(them, 65534, 65534)
    (pub / "m").symlink_to(them)
    os.lchown(pub / "m", 65534, 65534)
    (top / "d").symlink_to(pub / "m")
    refused = PathWatcher([top / "d" / "f"])._desired()
    assert str(top / "d") not in refused
    assert refused[str(top)][1] == frozenset({"d"})
    real = tmp_path / "real"
    real.mkdir()
    (top / "e").symlink_to(real)
    (top / "g").symlink_to(top / "e")
    followed = PathWatcher([top / "g" / "f"])._desired()
    assert followed[str(top / "g")][1] == frozenset({"f"})


def test_a_parent_link_in_a_loop_is_watched_by_its_name(tmp_path: Path) -> None:
    """A link among a path's parents that loops (`d -> d`: ELOOP for every path below it) is
    a name in the way, watched in its directory as a missing one would be: the watch used to
    fail (`watch failed: [Errno 40] Too many levels of symbolic links`), and the file below
    stayed failed after the link went, until a reload (review, 2026-12-06)."""
    top = tmp_path / "top"
    top.mkdir()
    (top / "d").symlink_to(top / "d")
    for path in (top / "d" / "f", top / "d" / "a" / "f"):
        assert PathWatcher([path])._desired() == {
            str(top): (watcher_module.DIR_MASK, frozenset({"d"}))
        }
