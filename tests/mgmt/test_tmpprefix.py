"""--tmp-prefix: the prefix of a run that was killed is removed by the next run, nothing else is."""

from __future__ import annotations

import asyncio
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine import inotify
from engine.safefs import private_dir
from mgmt import agent
from mgmt.config import Config
from mgmt.tmpprefix import LOCK, PrefixBusy, TmpPrefix, hold_prefix, make_private, sweep
from tests.e2e.helpers import fill, free_port, short_tmpdir, small_fs

HOLD = "import sys; from mgmt.tmpprefix import TmpPrefix; t = TmpPrefix(); print(t.path, flush=True); sys.stdin.read()"


def _holder(parent: Path) -> tuple[subprocess.Popen[str], Path]:
    """A real process holding a temporary prefix under parent, and that prefix."""
    env = {**os.environ, "TMPDIR": str(parent)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    return proc, Path(proc.stdout.readline().strip())


def _kill(proc: subprocess.Popen[str]) -> None:
    """SIGKILL: the holder cannot clean up (communicate() reaps it and closes its pipes)."""
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)


def test_a_killed_runs_prefix_is_removed_a_live_ones_is_kept(tmp_path: Path) -> None:
    killed, dead_prefix = _holder(tmp_path)
    live, live_prefix = _holder(tmp_path)
    try:
        (dead_prefix / "etcd").mkdir()
        _kill(killed)
        assert dead_prefix.is_dir()
        with TmpPrefix(tmp_path) as mine:
            assert mine.removed == [dead_prefix.name]
            assert not dead_prefix.exists()
            assert live_prefix.is_dir() and (live_prefix / LOCK).is_file()
            assert mine.path.is_dir()
        assert not mine.path.exists()
    finally:
        _kill(live)


def test_only_our_private_prefixes_with_a_free_lock_are_removed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (elsewhere / LOCK).touch()
    (tmp_path / "mgmt-link").symlink_to(elsewhere)  # planted by someone else: never followed
    no_lock = tmp_path / "mgmt-nolock"  # an older run's, or one being made: not ours to judge
    no_lock.mkdir(mode=0o700)
    shared = tmp_path / "mgmt-shared"  # not private: not made by mkdtemp
    shared.mkdir()
    shared.chmod(0o755)
    (shared / LOCK).touch()
    lock_dir = tmp_path / "mgmt-lockdir"  # the lock is a directory: not ours
    lock_dir.mkdir(mode=0o700)
    (lock_dir / LOCK).mkdir()
    (tmp_path / "mgmt-file").write_text("x")

    assert sweep(tmp_path) == []
    assert (elsewhere / LOCK).exists()
    assert {p.name for p in tmp_path.iterdir()} == {
        "elsewhere",
        "mgmt-link",
        "mgmt-nolock",
        "mgmt-shared",
        "mgmt-lockdir",
        "mgmt-file",
    }


def _cron_run(parent: Path) -> None:
    """A cron run of the command with its temporary prefix under `parent`: it succeeds, and
    no prefix is left there (its own, and a killed run's, removed)."""
    env = {**os.environ, "TMPDIR": str(parent)}
    done = subprocess.run(
        [sys.executable, "-m", "mgmt", "run", "--tmp-prefix", "--converged-timeout=0", "empty"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert [p for p in parent.iterdir() if p.name.startswith("mgmt-")] == []


def test_the_cli_cleans_up_its_own_and_a_killed_runs_prefix(tmp_path: Path) -> None:
    killed, dead_prefix = _holder(tmp_path)
    _kill(killed)
    _cron_run(tmp_path)
    assert not dead_prefix.exists()


def _holding(parent: Path) -> list[str]:
    """The processes with a descriptor open on something under `parent` (deleted or not)."""
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:  # gone, or not ours to read
            continue
        if any(link.startswith(f"{parent}/") for link in links):
            found.append(pid)
    return found


def test_a_cron_runs_prefix_is_gone_at_its_exit_and_its_locks_holder_after(
    tmp_path: Path,
) -> None:
    """A cron run of the command gives its prefix lock's last close to a process that ends
    with it (TmpPrefix.leave_to_exit): the prefix is removed before the run exits, and that
    process ends after it (it sees the run's end through a pipe: its exit is waited for)."""
    _cron_run(tmp_path)
    for pid in _holding(tmp_path):
        _wait_for_exit(int(pid), timeout=30)
    assert _holding(tmp_path) == []


def _seen(pid: int) -> str:
    """What /proc says of process `pid`: its state and what its descriptors are."""
    try:
        state = next(
            line
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("State:")
        )
        fds = {fd: os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    except OSError as err:
        return f"process {pid}: {err}"
    return f"process {pid}: {state}, descriptors {fds}"


def _wait_for_exit(pid: int, timeout: float) -> None:
    """Wait for another process's exit (not our child): its pidfd becomes readable."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:  # already gone
        return
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        assert poller.poll(timeout * 1000), f"process {pid} still runs after {timeout} s"
    finally:
        os.close(pidfd)


def test_a_prefix_is_removed_whole_and_no_symlink_in_it_is_followed() -> None:
    """Whatever a run left in its prefix goes at close: files, a socket, a tree of
    directories (shutil's rmtree), and symlinks, never what they point to. (In a short
    directory: the socket's path is at most 107 bytes, tests.e2e.helpers.short_tmpdir.)"""
    with short_tmpdir() as tmp_path:
        outside = tmp_path / "outside"
        (outside / "d").mkdir(parents=True)
        (outside / "d" / "kept").write_text("kept\n")
        tmp = TmpPrefix(tmp_path)
        (tmp.path / "file").write_text("x\n")
        (tmp.path / "state" / "deeper").mkdir(parents=True)
        (tmp.path / "state" / "deeper" / "f").write_text("y\n")
        (tmp.path / "state" / "link").symlink_to(outside / "d")
        (tmp.path / "to-a-dir").symlink_to(outside / "d")
        (tmp.path / "to-a-file").symlink_to(outside / "d" / "kept")
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(tmp.path / "sock"))
        tmp.close()
        assert not tmp.path.exists()
        assert (outside / "d" / "kept").read_text() == "kept\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["outside"]


def test_a_prefix_left_to_exit_rides_with_a_holder_and_is_removed(tmp_path: Path) -> None:
    """In a process that goes on (here, the test's): the lock rides with the next holder
    started (an inotify instance's, at a run's final stop); after close the prefix is gone,
    this process holds nothing of it, and the holder that has the lock's copy is another
    process."""
    tmp = TmpPrefix(tmp_path)
    tmp.leave_to_exit()
    instance = os.open(os.devnull, os.O_RDONLY)  # (what an inotify instance's holder takes)
    try:
        assert inotify.hold_until_exit(instance, "a test's descriptor")
    finally:
        os.close(instance)
    holder = inotify._EXIT.holders[-1]
    try:
        tmp.close()
        assert not tmp.path.exists()
        holders = _holding(tmp_path)
        seen = _seen(holder.pid)  # (before the release: what the holder holds, if it runs)
    finally:
        # Ended here, as this process's exit would, and taken out of the list even when an
        # assertion fails (a holder left there failed test_holder's next check in this worker,
        # ci5 2026-12-07): else it ran to the end of the session, and its Popen, collected
        # then, said "subprocess N is still running" after pytest's summary.
        inotify._EXIT.holders.remove(holder)
        holder.release()
        try:
            code: int | str = holder.wait(30)
        except (ChildProcessError, ProcessLookupError) as err:  # reaped by someone else
            code = f"not waitable: {err!r}"
    assert str(os.getpid()) not in holders
    # (ci5, 2026-12-07, once, not reproduced since: no process held the lock; said with the
    # holder's state and exit status, for the next one to see why.)
    assert len(holders) == 1, (holders, seen, f"holder {holder.pid} exit status {code}")
    assert holder.pid == int(holders[0])
    assert code == 0


def test_a_prefix_left_to_exit_without_a_holder_closes_its_lock_itself(tmp_path: Path) -> None:
    """A run that closed no inotify instance (a one-shot run that changed nothing watches
    nothing): no holder took the lock, and none is started for it alone (it would cost more
    than the close: docs/benchmarks.md, busyshare); after close nothing holds it."""
    tmp = TmpPrefix(tmp_path)
    tmp.leave_to_exit()
    started = len(inotify._EXIT.holders)
    tmp.close()
    assert not tmp.path.exists()
    assert _holding(tmp_path) == []
    assert len(inotify._EXIT.holders) == started


async def test_a_run_cancelled_while_it_sweeps_leaves_no_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C before the agent's own handlers cancels the run (asyncio.run's handler) while
    a killed run's prefix is removed, in a thread beside the run: the run ends once that
    thread has, its own prefix removed and the killed run's too, none left that no later run
    sweeps. (The status socket's private_dir() of the prefix, in a thread of its own, made a
    removed prefix again; a prefix the run made itself is no longer checked so: the next
    test.)"""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    killed, _ = await asyncio.to_thread(_holder, tmp_path)
    await asyncio.to_thread(_kill, killed)
    entered, release, ended = threading.Event(), threading.Event(), threading.Event()
    real_remove = TmpPrefix.remove

    def held(tmp: TmpPrefix, names: list[str]) -> list[str]:
        entered.set()
        release.wait(30)
        try:
            return real_remove(tmp, names)
        finally:
            ended.set()

    monkeypatch.setattr(TmpPrefix, "remove", held)
    config = Config(frontend="empty", tmp_prefix=True, hostname="t", converged_timeout=-1)
    run = asyncio.ensure_future(agent.run(config))
    await asyncio.to_thread(entered.wait, 30)
    run.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert ended.is_set()
    assert [n for n in await asyncio.to_thread(os.listdir, tmp_path) if n.startswith("mgmt-")] == []


async def test_a_sweep_that_fails_is_said_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The killed runs' prefixes cannot be listed ($TMPDIR unreadable): the run goes on with
    its own prefix, the sweep's failure said at debug level; its prefix removed at its end."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))

    def refused(tmp: TmpPrefix) -> list[str]:
        raise PermissionError(13, "Permission denied", str(tmp.parent))

    monkeypatch.setattr(TmpPrefix, "stale", refused)
    said: list[str] = []
    heard = logging.Handler(logging.DEBUG)
    heard.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    main = logging.getLogger("main")  # (the agent sets the root's handlers up its own way)
    main.addHandler(heard)
    try:
        config = Config(
            frontend="empty", tmp_prefix=True, hostname="t", converged_timeout=0, verbose=True
        )
        assert await agent.run(config) == 0
    finally:
        main.removeHandler(heard)
    assert any(f"no sweep of {tmp_path} for the prefixes of killed runs" in m for m in said)
    assert [n for n in await asyncio.to_thread(os.listdir, tmp_path) if n.startswith("mgmt-")] == []


@pytest.mark.parametrize("tmp_prefix", [True, False])
async def test_only_a_prefix_the_run_did_not_make_is_made_private_for_the_status_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_prefix: bool
) -> None:
    """The status socket's directory: a prefix given (--prefix) is made private, and a socket
    a killed agent left there removed, in a hop to a thread before the apply; the temporary
    prefix the run has just made (private, new, empty) is not checked again: no hop (the loop
    waited ~1.5 ms for it at a cron run's start)."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    checked: list[Path] = []

    def recorded(path: Path) -> Path:
        checked.append(path)
        return private_dir(path)

    monkeypatch.setattr(agent, "private_dir", recorded)
    prefix = tmp_path / "prefix"
    config = Config(
        frontend="empty", tmp_prefix=tmp_prefix, prefix=prefix, hostname="t", converged_timeout=0
    )
    if not tmp_prefix:  # not 2379/2380, where another agent may serve (--tmp-prefix: free ones)
        config.client_urls = f"https://127.0.0.1:{free_port()}"
        config.server_urls = f"https://127.0.0.1:{free_port()}"
    assert await agent.run(config) == 0
    assert checked == ([] if tmp_prefix else [prefix, prefix])  # (its lock's, the socket's)


def test_a_prefix_is_made_where_tempfile_would_make_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a parent: in the first of $TMPDIR, $TEMP, $TMP, /tmp... where a directory can be
    made (a missing one, or a file, is passed over), private; with a parent, there or an error."""
    monkeypatch.setenv("TMPDIR", str(tmp_path / "missing"))
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("TEMP", str(tmp_path / "file"))
    monkeypatch.setenv("TMP", str(tmp_path))
    made = make_private()
    assert made.parent == tmp_path and made.name.startswith("mgmt-") and len(made.name) == 17
    assert made.stat().st_mode & 0o777 == 0o700
    with TmpPrefix() as tmp:
        assert tmp.parent == tmp_path and tmp.path != made
    with pytest.raises(FileNotFoundError):
        make_private(tmp_path / "missing")


def test_an_agents_prefix_lock_is_exclusive_and_never_taken_for_a_killed_run(
    tmp_path: Path,
) -> None:
    """`hold_prefix`: a second holder is refused naming the first's pid; once released, a
    prefix named like a temporary one (`--prefix /tmp/mgmt-...`) is not swept: its lock file
    is not a temporary prefix's."""
    prefix = private_dir(tmp_path / "mgmt-0123456789ab")
    fd = hold_prefix(prefix)
    try:
        with pytest.raises(PrefixBusy, match=f"another agent \\(pid {os.getpid()}\\) runs with"):
            hold_prefix(prefix)
    finally:
        os.close(fd)
    assert sweep(tmp_path) == [] and prefix.is_dir()
    os.close(hold_prefix(prefix))  # free again


def test_a_runs_temporary_prefix_is_refused_as_an_agents_prefix(tmp_path: Path) -> None:
    """`mgmt status` names a --tmp-prefix run's prefix; `mgmt run --prefix` given it is refused,
    naming that run's pid, and given a killed run's, refused too (the next sweep removes it):
    nothing is made there. Until 2026-12-07 both ran: the second agent took the first's
    status socket and removed it at its exit, and the first's exit removed the second's
    prefix under it."""
    proc, prefix = _holder(tmp_path)
    try:
        with pytest.raises(PrefixBusy, match=f"run with --tmp-prefix \\(pid {proc.pid}\\)"):
            hold_prefix(prefix)
        assert sorted(os.listdir(prefix)) == [LOCK]
    finally:
        _kill(proc)
    with pytest.raises(PrefixBusy, match="--tmp-prefix that was killed"):
        hold_prefix(prefix)
    assert sorted(os.listdir(prefix)) == [LOCK]
    assert sweep(tmp_path) == [prefix.name]


def test_a_killed_runs_prefix_renamed_is_an_agents_prefix(tmp_path: Path) -> None:
    """A killed --tmp-prefix run's prefix moved elsewhere to keep its state (`mv /tmp/mgmt-...
    /var/lib/mgmt`) is no sweep's (not named as one): taken as --prefix. Until 2026-12-07 it
    was refused, saying falsely that the next such run removes it."""
    proc, prefix = _holder(tmp_path)
    _kill(proc)
    kept = tmp_path / "kept"
    prefix.rename(kept)
    os.close(hold_prefix(kept))
    assert sweep(tmp_path) == [] and (kept / LOCK).exists()


@pytest.mark.parametrize("control", ["writable", "owner"])
def test_a_tmpdir_another_user_controls_is_refused_before_anything(
    tmp_path: Path, control: str
) -> None:
    """$TMPDIR naming a directory others can write (or another user's) is refused, exit 2, one
    line naming it; nothing is made there (another user could swap the prefix below us)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    if control == "writable":
        shared.chmod(0o777)
    else:
        if os.geteuid() != 0:
            pytest.skip("needs root (chown)")
        os.chown(shared, 65534, 65534)
    done = subprocess.run(
        [sys.executable, "-m", "mgmt", "run", "--tmp-prefix", "--converged-timeout=0", "empty"],
        env={**os.environ, "TMPDIR": str(shared)},
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    why = "mode 0777" if control == "writable" else "owned by uid 65534"
    assert done.stderr.count("\n") == 1 and f"$TMPDIR: {shared} " in done.stderr, done.stderr
    assert why in done.stderr and "--tmp-prefix" in done.stderr, done.stderr
    assert list(shared.iterdir()) == []


def test_a_full_tmpdir_is_said_with_the_prefix_and_leaves_nothing(tmp_path: Path) -> None:
    """$TMPDIR on a full file system (another user can fill /tmp): the prefix's directory and
    its lock file can be made, the lock's pid not written. Before 2026-12-06 the run said
    `--tmp-prefix: [Errno 28] No space left on device`, naming no path, and left the directory
    with `.mgmt-run.lock.new` for good (a sweep takes only a prefix with its lock): one more per
    cron run. Now: one line naming the prefix, exit 75 (it may pass), nothing left."""
    full = tmp_path / "full"
    with small_fs(full, "64k"):
        fill(full / "filler")
        done = subprocess.run(
            [sys.executable, "-m", "mgmt", "run", "--tmp-prefix", "--converged-timeout=0", "empty"],
            env={**os.environ, "TMPDIR": str(full)},
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        left = sorted(p.name for p in full.iterdir())
    assert done.returncode == 75, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"{full}/mgmt-" in done.stderr and "No space left on device" in done.stderr, done.stderr
    assert left == ["filler"], left


def test_an_empty_prefix_left_by_a_run_is_swept_after_a_minute(tmp_path: Path) -> None:
    """A run killed between removing its lock and its directory (or whose rmdir failed as
    something wrote in it) left an empty private `mgmt-<12 hex>` that no sweep took, for good
    (three in /tmp after a day of test runs, 2026-12-06, ninth session): an empty one of ours
    unchanged for EMPTY_AFTER seconds is swept; a younger one (a run making its lock), one
    named otherwise, one not private, one with anything in it are left."""
    from mgmt import tmpprefix

    old = time.time() - tmpprefix.EMPTY_AFTER - 5

    def made(name: str, mode: int = 0o700, aged: bool = True) -> Path:
        path = tmp_path / name
        path.mkdir(mode=mode)
        path.chmod(mode)
        if aged:
            os.utime(path, (old, old))
        return path

    left = made("mgmt-0123456789ab")
    young = made("mgmt-00000000000a", aged=False)
    named = made("mgmt-test")  # an agent's --prefix, or the operator's own: not ours to judge
    shared = made("mgmt-00000000000b", mode=0o755)
    full = made("mgmt-00000000000c")
    (full / "state").mkdir()
    os.utime(full, (old, old))
    assert sweep(tmp_path) == ["mgmt-0123456789ab"]
    assert not left.exists()
    assert young.exists() and named.exists() and shared.exists() and full.exists()
