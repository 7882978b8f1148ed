"""Fault suite, files: the real daemon killed with -9 in the middle of its writes, again and again.

Whatever the moment of the kill, a managed path holds a whole old or a whole new version (never
a partial file), and the next clean run leaves no temp file behind (also none that an older
version's crash left).
"""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
from pathlib import Path

import pytest

from engine.inotify import ACCESS, Inotify
from engine.safefs import STARTED_NS, TEMP_PREFIX
from engine.tasks import first_done
from tests.e2e.helpers import Daemon, run_mgmt, small_fs

KILLS = 20
FILES = 4
SIZE = 8 << 20  # per file: a write takes long enough to be caught in the middle


def version(index: int, number: int) -> bytes:
    block = f"file {index}, version {number}\n".encode()
    return (block * (SIZE // len(block) + 1))[:SIZE]


def publish(path: Path, data: bytes) -> None:
    """Replace a source file atomically (the daemon must never read a half-written source)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def writing(pid: int, out: Path) -> bool:
    """True while the process holds a temp file of a write into out/ open."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return False
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        name = target.removeprefix(f"{out}/")
        if name != target and (name.startswith("#") or name.startswith(TEMP_PREFIX)):
            return True  # "#<inode> (deleted)" is an O_TMPFILE inode
    return False


async def kill_while_writing(daemon: Daemon, src: Path, out: Path) -> bool:
    """kill -9 the daemon as soon as it is seen writing (or once it gave up on it); True: mid-write.

    Looked at whenever the daemon reads a source (an inotify ACCESS event: it copies sources
    chunk by chunk into its temp inodes), logs a line, or exits.
    """
    assert daemon.proc is not None
    pid, caught = daemon.proc.pid, False
    reading = asyncio.Event()
    watch = Inotify(lambda _events: reading.set())
    try:
        watch.add_watch(src, ACCESS)
        async with asyncio.timeout(60):
            while daemon.proc.returncode is None and not (caught := writing(pid, out)):
                if any("converged" in line for line in daemon.lines):
                    break  # every write done before we looked: kill it anyway
                reading.clear()
                await first_done(reading.wait(), daemon.wait_log("converged"), daemon.proc.wait())
    finally:
        watch.close()
    daemon.proc.kill()
    await daemon.proc.wait()
    return caught


@pytest.mark.slow
async def test_kill_9_during_writes_never_leaves_a_partial_file_or_a_temp(tmp_path: Path) -> None:
    src, out, prefix = tmp_path / "src", tmp_path / "out", tmp_path / "prefix"
    src.mkdir()
    graph = tmp_path / "graph.yaml"
    resources = "".join(
        f"  - name: f{i}\n    path: {out}/f{i}\n    source: {src}/f{i}\n" for i in range(FILES)
    )
    graph.write_text(f"graph: big\nresources:\n  file:\n{textwrap.indent(resources, '  ')}")
    versions = [[version(i, n) for n in (0, 1)] for i in range(FILES)]
    caught = 0
    for kill in range(KILLS):
        for i in range(FILES):
            publish(src / f"f{i}", versions[i][kill % 2])
        async with Daemon(["run", "--prefix", str(prefix), "yaml", str(graph)]) as daemon:
            caught += await kill_while_writing(daemon, src, out)
        for i in range(FILES):
            if (out / f"f{i}").exists():
                assert (out / f"f{i}").read_bytes() in versions[i], f"partial f{i}, kill {kill}"
    assert caught >= KILLS // 2, f"only {caught} of {KILLS} kills hit a write"

    # What an older version's crash left (a named temp file, older than the next run).
    old = out / ".mgmt.k2_x9abc"
    old.write_bytes(versions[0][0])
    os.utime(old, ns=(STARTED_NS, STARTED_NS))
    code, log = run_mgmt(
        ["run", "--converged-timeout=0", "--prefix", str(prefix), "yaml", str(graph)], timeout=120
    )
    assert code == 0, log
    assert sorted(os.listdir(out)) == [f"f{i}" for i in range(FILES)], log
    for i in range(FILES):
        assert (out / f"f{i}").read_bytes() == versions[i][(KILLS - 1) % 2]


UPDATES = 400  # files a first run replaces: many groups in flight when it is stopped


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])
async def test_a_first_run_of_updates_stopped_midway_leaves_each_file_old_or_new(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """A first run replacing the content of many files (a template edit: their new inodes
    written a group at a time, each renamed over its old file once fsynced, the old inodes
    held until the writes end) stopped once some are done: each file holds its whole old or
    new content; after SIGTERM no temp file is left; after kill -9 the next run removes any
    (a kill between a link and its rename) and converges."""
    out, prefix = tmp_path / "out", tmp_path / "prefix"
    out.mkdir()
    names = [f"f{i}" for i in range(UPDATES)]
    for i, name in enumerate(names):
        (out / name).write_text(f"old {i}\n")
    graph = tmp_path / "graph.yaml"
    files = [
        f'    - {{name: f{i}, path: {out}/f{i}, content: "new {i}\\n"}}' for i in range(UPDATES)
    ]
    graph.write_text("graph: updates\nresources:\n  file:\n" + "\n".join(files) + "\n")
    run = ["run", "--prefix", str(prefix), "--converged-timeout=0", "yaml", str(graph)]
    async with Daemon(run) as daemon:
        await daemon.wait_log("content updated", timeout=60, count=10)
        daemon.signal(sig)
        await daemon.wait()
    for i, name in enumerate(names):
        assert (out / name).read_text() in (f"old {i}\n", f"new {i}\n"), name
    if sig == signal.SIGTERM:
        assert sorted(os.listdir(out)) == sorted(names), daemon.log
    code, log = run_mgmt(run, timeout=120)
    assert code == 0, log
    assert sorted(os.listdir(out)) == sorted(names), log
    assert all((out / name).read_text() == f"new {i}\n" for i, name in enumerate(names))


def test_a_read_only_file_system_is_named_without_a_raw_errno(tmp_path: Path) -> None:
    """tester6's finding 9: the first EROFS failures read `[Errno 30] Read-only file
    system: '.'` (a name relative to an open directory); `--prefix` on a read-only or full
    file system `[Errno 30] ...: 'prefix'` / `[Errno 28] ...` without the path. Each error
    now names the real path and the reason; for the prefix exit 75, a host problem that may
    pass (tester11's finding 5: exit 2, bad input, which the unit never restarts on)."""
    ro, full = tmp_path / "ro", tmp_path / "full"
    with small_fs(ro, "64k") as remount_ro, small_fs(full, "4k"):
        remount_ro("ro")
        with pytest.raises(OSError):  # the full one: filled to the last block
            (full / "fill").write_bytes(b"\0" * 65536)
        graph = tmp_path / "ro.yaml"
        files = [f'    - {{name: x{i}, path: {ro}/x{i}, content: "x\\n"}}' for i in range(6)]
        graph.write_text("graph: r\nresources:\n  file:\n" + "\n".join(files) + "\n")
        # a converged timeout of 1 s: the watches run, as the first failures' writes expect
        code, out = run_mgmt(["run", "--tmp-prefix", "--converged-timeout=1", str(graph)])
        assert code == 1, out
        for i in range(6):
            said = f"file[x{i}]: failed: could not create {ro}/x{i}: Read-only file system"
            assert f"{said} (checking again in 1s, then less often" in out  # engine.heal
        assert "Errno" not in out and "'.'" not in out, out
        for where, why in ((ro, "Read-only file system"), (full, "No space left on device")):
            prefix = where / "prefix"
            code, out = run_mgmt(
                ["run", "--prefix", str(prefix), "--converged-timeout=0", str(graph)]
            )
            assert code == 75, out
            assert out.endswith(f"main: --prefix: {prefix}: {why}\n"), out
