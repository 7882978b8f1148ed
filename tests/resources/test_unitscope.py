"""resources._lib.unitscope: a transaction's own scope under a real systemd manager
(tests/systemd_fixture.py), the fallback when there is none, and dpkg's lock holder said and
waited for (real fcntl locks held by real processes). Nothing is signalled."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.tasks import first_done
from resources._lib import unitscope
from resources._lib.proc import lock_holder, run_command, run_to_end
from resources.pkg import apt
from tests.aio import OnLog, pass_ended
from tests.resources.test_pkg import let_go, release
from tests.systemd_fixture import Client, RealSystemd

CGROUP_AND_ERR = "cat /proc/self/cgroup; echo err >&2; exit 3"


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test asks systemd again, from outside any unit unless it says otherwise."""
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    monkeypatch.delenv("MANAGERPID", raising=False)
    unitscope._VERDICTS.clear()
    yield
    unitscope._VERDICTS.clear()


def in_unit(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], managerpid: int | None) -> None:
    """The environment a manager gives a unit's processes: a user manager's (`managerpid`, its
    bus in `env`), or the system manager's (None)."""
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef0123456789abcdef")
    if managerpid is not None:
        monkeypatch.setenv("MANAGERPID", str(managerpid))
    for key, value in env.items():
        monkeypatch.setenv(key, value)


async def cgroup_run(caplog: pytest.LogCaptureFixture) -> tuple[str, str]:
    """(the unit the command ran in, its stderr): run_to_end with scope "pkg"."""
    code, out, err = await run_to_end(
        ["sh", "-c", CGROUP_AND_ERR], timeout=30, env={}, label="sh", ok=None, scope="pkg"
    )
    assert code == 3, (out, err, caplog.text)
    return unit_in(out), err


def unit_in(cgroup: str) -> str:
    """The unit a process is in, from its /proc/PID/cgroup text ("" if none is found)."""
    found = re.search(r"^(?:0::|\d+:name=systemd:)\S*/([^/\n]*)$", cgroup, re.MULTILINE)
    return found[1] if found else ""


async def test_under_a_unit_a_transaction_runs_in_a_scope_of_its_own(
    manager: RealSystemd, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "engine")
    in_unit(monkeypatch, manager.env(session=True), manager.pid)
    unit, err = await cgroup_run(caplog)
    assert unitscope.is_scope(unit, "pkg"), unit
    assert err == "err\n"  # its own output only: systemd-run says nothing (--quiet)
    assert "sh: started (pid " in caplog.text and f", {unit}): a stop of the agent's" in caplog.text
    assert "WARNING" not in caplog.text, caplog.text
    again, _err = await cgroup_run(caplog)
    assert unitscope.is_scope(again, "pkg") and again != unit  # a new name each time


# Says which cgroup it is in through `ready`, then ends when a line comes through `go`; a
# SIGTERM ends it at once, exit 9.
WAITS = 'trap \'exit 9\' TERM; cat /proc/self/cgroup > "$1"; read -r line < "$2"; exit 0'


async def test_a_stop_of_the_scope_lets_the_transaction_end(
    manager: RealSystemd,
    sd: Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The host's shutdown stops every unit, the transaction's scope too: the stop waits for it
    (up to the manager's DefaultTimeoutStopSec, then SIGKILL), as the agent's unit did with
    KillMode=mixed. Until 2026-12-07 a scope's stop SIGTERMed apt-get and dpkg at once
    (KillMode=control-group): dpkg interrupted at every reboot during a transaction."""
    in_unit(monkeypatch, manager.env(session=True), manager.pid)
    ready, go = tmp_path / "ready", tmp_path / "go"
    os.mkfifo(ready)
    os.mkfifo(go)
    argv = ["sh", "-c", WAITS, "sh", str(ready), str(go)]
    run = asyncio.create_task(
        run_to_end(argv, timeout=60, env={}, label="sh", ok=None, scope="pkg")
    )
    try:
        async with asyncio.timeout(30):
            cgroup = await asyncio.to_thread(ready.read_text)
        scope = unit_in(cgroup)
        assert unitscope.is_scope(scope, "pkg"), cgroup

        async def stopping() -> bool:
            return await sd.active(scope) == "deactivating"

        await manager.systemctl("stop", "--no-block", scope)
        async with asyncio.timeout(30):
            await first_done(asyncio.shield(run), sd.wait_until(stopping))
        assert not run.done(), (run.result(), caplog.text)
        let_go(go)
        async with asyncio.timeout(30):
            assert await run == (0, "", ""), caplog.text
    finally:
        release(ready, go)
        async with asyncio.timeout(30):
            await asyncio.gather(run, return_exceptions=True)


async def test_outside_a_unit_it_runs_as_before_and_nothing_is_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "engine")
    assert await unitscope.scope_argv("pkg", "sh", run_command) == ([], "")
    unit, _err = await cgroup_run(caplog)
    assert not unit.startswith("mgmt-"), unit
    assert "systemd-run" not in caplog.text


async def test_a_refused_scope_falls_back_and_is_said_once(
    manager: RealSystemd,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A user manager runs, but not at the addresses given (no bus): systemd-run refuses; the
    commands run in the agent's own cgroup, said once."""
    caplog.set_level(logging.WARNING, "engine")
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    in_unit(
        monkeypatch,
        {"XDG_RUNTIME_DIR": str(runtime), "DBUS_SESSION_BUS_ADDRESS": f"unix:path={runtime}/bus"},
        manager.pid,
    )
    for _ in range(2):
        unit, _err = await cgroup_run(caplog)
        assert not unit.startswith("mgmt-"), unit
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert re.match(r"sh: systemd-run --scope exited with code 1: .*bus", warnings[0]), warnings
    assert "a stop of the unit can kill it half-way" in warnings[0]


async def test_without_systemd_run_it_is_said_once(
    manager: RealSystemd,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "engine")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "cat"):
        (bin_dir / tool).symlink_to(f"/bin/{tool}")
    monkeypatch.setenv("PATH", str(bin_dir))
    in_unit(monkeypatch, {}, manager.pid)
    for _ in range(2):
        await cgroup_run(caplog)
    assert caplog.text.count("sh: systemd-run is missing: sh runs in ") == 1, caplog.text


async def test_an_inherited_unit_environment_without_its_manager_is_outside_a_unit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """$INVOCATION_ID and $MANAGERPID reach whatever a unit's process starts (a shell, `su`,
    `sudo -E`, a container's command): without the manager they name (PID 1 not systemd; the
    process $MANAGERPID not a systemd), the agent is outside a unit: systemd-run is not run,
    nothing is said. Until 2026-12-07 systemd-run was asked, and its refusal said that a stop
    of "the agent's unit" could kill the transaction."""
    caplog.set_level(logging.DEBUG, "engine")
    monkeypatch.setattr(unitscope, "BOOTED", str(tmp_path / "no-systemd"), raising=False)
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    bus = {"XDG_RUNTIME_DIR": str(runtime), "DBUS_SESSION_BUS_ADDRESS": f"unix:path={runtime}/bus"}
    in_unit(monkeypatch, bus, None)  # the system manager's, PID 1 not systemd
    assert await unitscope.scope_argv("pkg", "sh", run_command) == ([], "")
    in_unit(monkeypatch, bus, os.getpid())  # a user manager's, $MANAGERPID not a systemd
    assert await unitscope.scope_argv("pkg", "sh", run_command) == ([], "")
    in_unit(monkeypatch, bus, 2**22 + 1)  # a user manager's that is gone
    assert await unitscope.scope_argv("pkg", "sh", run_command) == ([], "")
    assert "systemd-run" not in caplog.text, caplog.text


async def test_a_scope_s_stem_is_a_word() -> None:
    """The scope's name is ours alone: no input from a graph can reach systemd-run's argv."""
    for stem in ("", "Pkg", "pkg;x", "pkg --user", "../x"):
        with pytest.raises(ValueError, match="a lowercase word"):
            await unitscope.scope_argv(stem, "x", run_command)
    assert unitscope.is_scope("mgmt-pkg-0123456789ab.scope", "pkg")
    assert not unitscope.is_scope("mgmt-pkg-0123456789ab.service", "pkg")
    assert not unitscope.is_scope("x-mgmt-pkg-0123456789ab.scope", "pkg")


def test_the_agent_s_own_unit_is_read_from_its_cgroup() -> None:
    assert unitscope.unit_of() == unitscope.unit_of(os.getpid())
    assert unitscope.unit_of(2**22 + 1) == ""  # no such process (above pid_max's default)


# dpkg's lock: who holds it, and the wait for it ----------------------------------------------

# Holds a POSIX lock on argv[1], says so by opening the FIFO argv[2], ends when its stdin does.
HOLDER = """
import fcntl, sys
lock = open(sys.argv[1], "a")
fcntl.lockf(lock, fcntl.LOCK_EX)
open(sys.argv[2], "w").close()
sys.stdin.read()
"""


@contextlib.contextmanager
def held(lock: Path, ready: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process holding `lock` (started, not yet known to hold it: open `ready` to wait),
    ended by closing its input."""
    os.mkfifo(ready)
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock), str(ready)], stdin=subprocess.PIPE
    )
    try:
        yield child
    finally:
        assert child.stdin is not None
        child.stdin.close()
        with contextlib.suppress(OSError):  # it never reached `ready`: let its open through
            os.close(os.open(ready, os.O_RDONLY | os.O_NONBLOCK))
        child.wait(timeout=30)


async def test_the_holder_of_a_lock_is_named(tmp_path: Path) -> None:
    lock = tmp_path / "lock-frontend"
    lock.touch()
    assert lock_holder(str(lock)) is None
    with held(lock, tmp_path / "ready") as child:
        async with asyncio.timeout(30):
            await asyncio.to_thread(lambda: (tmp_path / "ready").open().close())
        assert lock_holder(str(lock)) == (child.pid, Path(sys.executable).name[:15])
    assert lock_holder(str(lock)) is None
    assert lock_holder(str(tmp_path / "missing")) is None


# Run in a mount namespace of its own, a btrfs image mounted at argv[1]: a child holds a lock
# on a file there; prints [the child's pid, the pid lock_holder names].
ON_BTRFS = """
import json, subprocess, sys
from resources._lib.proc import lock_holder
path = sys.argv[1] + "/lock-frontend"
open(path, "a").close()
hold = "import fcntl, sys; f = open(sys.argv[1], 'a'); fcntl.lockf(f, fcntl.LOCK_EX); print(); sys.stdin.read()"
child = subprocess.Popen([sys.executable, "-c", hold, path], stdin=-1, stdout=-1, text=True)
child.stdout.readline()
found = lock_holder(path)
child.stdin.close()
child.wait(timeout=30)
print(json.dumps([child.pid, found and found[0]]))
"""
BTRFS = (
    os.geteuid() == 0
    and shutil.which("mkfs.btrfs") is not None
    and shutil.which("unshare") is not None
    and "btrfs" in Path("/proc/filesystems").read_text()
)


@pytest.mark.skipif(not BTRFS, reason="needs root, mkfs.btrfs, unshare and btrfs")
async def test_the_holder_of_a_lock_on_btrfs_is_named(tmp_path: Path) -> None:
    """On btrfs, stat's st_dev (the subvolume's) is not the device /proc/locks names (the
    filesystem's): until 2026-12-07 lock_holder matched /proc/locks by device and inode and
    found no holder there (dpkg's lock never waited for on a btrfs root). The mount lives in
    a mount namespace of its own: gone with it, whatever happens."""
    image, point = tmp_path / "btrfs.img", tmp_path / "mnt"
    point.mkdir()
    with image.open("wb") as sparse:
        sparse.truncate(128 << 20)
    await run_command(["mkfs.btrfs", "-q", str(image)], timeout=60)
    mounted = 'mount -o loop "$1" "$2" && exec "$3" -c "$4" "$2"'
    argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", mounted]
    argv += ["sh", str(image), str(point), sys.executable, ON_BTRFS]
    code, out, err = await run_command(
        argv, timeout=60, env={"PYTHONPATH": str(Path(__file__).parents[2])}, ok=None
    )
    assert code == 0, (out, err)
    child, named = json.loads(out)
    assert named == child, (out, err)


async def test_a_held_dpkg_lock_is_waited_for_then_the_check_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The apt backend's wait_idle: said with the holder, over when it ends (its pidfd), no
    polling; False at once when nobody holds the lock."""
    caplog.set_level(logging.WARNING, "engine")
    lock, status = tmp_path / "lock-frontend", tmp_path / "status"
    lock.touch()
    status.touch()
    monkeypatch.setattr(apt, "FRONTEND_LOCK", str(lock))
    monkeypatch.setattr(apt, "STATUS", str(status))
    logger = logging.LoggerAdapter(logging.getLogger("engine"))
    backend = apt.AptBackend()
    assert await backend.wait_idle(logger) is False
    ready = tmp_path / "ready"
    with held(lock, ready) as child:
        async with asyncio.timeout(30):
            await asyncio.to_thread(lambda: ready.open().close())
        said = OnLog(f"dpkg's lock is held by pid {child.pid} (")
        logging.getLogger("engine").addHandler(said)
        try:
            waiting = asyncio.create_task(backend.wait_idle(logger))
            async with asyncio.timeout(30):
                await said.seen.wait()
        finally:
            logging.getLogger("engine").removeHandler(said)
        await pass_ended()
        assert not waiting.done()
    async with asyncio.timeout(30):
        assert await waiting is True
    assert "waiting for it to end (up to 300 s), then checking again" in caplog.text
