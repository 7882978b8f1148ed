"""engine/holder.py with real processes: what a holder holds (and nothing else), its end with
its input, a program that cannot start, a process whose standard descriptors are closed."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from engine import holder, inotify
from engine.holder import Holder

CAT = next(path for path in inotify.HOLDER if os.access(path, os.X_OK))
ROOT = Path(__file__).resolve().parents[2]


def _fds(pid: int) -> dict[int, str]:
    """A process's descriptors and what they name (one that closes meanwhile is left out)."""
    found = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            found[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
    return found


def _children() -> set[int]:
    """This process's children (of every thread), zombies included."""
    found: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        # A thread that ended since the listing (an I/O thread): its children, if any, went
        # to another thread of the process, which is listed too (CI of 2026-12-06).
        with contextlib.suppress(FileNotFoundError), open(f"/proc/self/task/{task}/children") as f:
            found.update(int(pid) for pid in f.read().split())
    return found


def test_a_holder_holds_the_descriptor_its_input_and_nothing_else(tmp_path: Path) -> None:
    """The holder has its input (a pipe) at 0, /dev/null at 1 and 2, the descriptor it holds
    at 3; no other descriptor of this process, even an inheritable one; it exits 0 once its
    input is closed here (`release`, what this process's exit does), and is gone once
    waited for (no zombie)."""
    held = os.open(tmp_path / "held", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    other = os.open(tmp_path / "other", os.O_RDWR | os.O_CREAT, 0o600)
    os.set_inheritable(other, True)  # passed to every child that keeps descriptors
    try:
        started = holder.start(CAT, [held])
    finally:
        os.close(other)
    os.close(held)
    try:
        fds = _fds(started.pid)
        assert fds[0].startswith("pipe:"), fds
        assert fds[1] == fds[2] == os.devnull, fds
        assert fds[3] == str(tmp_path / "held"), fds
        assert str(tmp_path / "other") not in fds.values(), fds
    finally:
        started.release()
        assert started.wait(30) == 0
    assert started.pid not in _children()


@pytest.mark.parametrize("start", [holder.start, holder._popen], ids=["posix_spawn", "popen"])
def test_a_holder_keeps_the_files_open_until_its_input_closes(
    tmp_path: Path, start: Callable[[str, list[int]], Holder]
) -> None:
    """Both ways (posix_spawn, and Popen where the libc lacks its functions): the files stay
    open in the holder after this process closed its own descriptors, until `release`."""
    held = [
        os.open(tmp_path / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        for name in ("one", "two")
    ]
    try:
        started = start(CAT, held)
    finally:
        for fd in held:
            os.close(fd)
    try:
        targets = set(_fds(started.pid).values())
        assert {str(tmp_path / "one"), str(tmp_path / "two")} <= targets
    finally:
        started.release()
        assert started.wait(30) == 0
    assert started.pid not in _children()


def test_a_program_that_cannot_start_is_an_oserror_leaving_no_child_nor_descriptor(
    tmp_path: Path,
) -> None:
    """A program the kernel refuses to run (no `#!`, not an executable format): OSError with
    its reason; the failed child is reaped, the pipe's ends closed."""
    program = tmp_path / "not-a-program"
    program.write_bytes(b"\x00\x01 not an executable format\n")
    program.chmod(0o755)
    held = os.open(tmp_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fds, children = set(_fds(os.getpid())), _children()
        with pytest.raises(OSError) as raised:
            holder.start(str(program), [held])
        assert raised.value.errno == errno.ENOEXEC
        assert set(_fds(os.getpid())) == fds
        assert _children() <= children
    finally:
        os.close(held)


def test_hold_until_exit_says_no_holder_when_none_can_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without `cat` (HOLDER names nothing there) or when it cannot start, hold_until_exit
    says False (the caller's close is then the last, waiting) and holds nothing."""
    held = os.open(tmp_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        monkeypatch.setattr(inotify, "HOLDER", (str(tmp_path / "missing"),))
        assert not inotify.hold_until_exit(held, "a test's directory")
        program = tmp_path / "not-a-program"
        program.write_bytes(b"\x00\x01\n")
        program.chmod(0o755)
        monkeypatch.setattr(inotify, "HOLDER", (str(program),))
        with caplog.at_level(logging.DEBUG, logger="engine"):
            assert not inotify.hold_until_exit(held, "a test's directory")
        assert "no process to hand a test's directory over to" in caplog.text
        assert inotify._EXIT.holders == []
    finally:
        os.close(held)


HOLDING_WITH_CLOSED_STANDARD_DESCRIPTORS = """
import os, sys
from engine import holder
os.close(0)
os.close(3) if os.path.exists("/proc/self/fd/3") else None
held = os.open(sys.argv[1], os.O_RDONLY | os.O_CLOEXEC)  # the lowest free: 0
assert held == 0, held
other = os.open(sys.argv[1], os.O_RDONLY | os.O_CLOEXEC)  # 3 (or 4): a target's number too
started = holder.start(sys.argv[2], [held, other])
fds = {n: os.readlink(f"/proc/{started.pid}/fd/{n}") for n in (0, 3, 4)}
print(fds[0].split(":")[0], fds[3], fds[4])
started.release()
sys.exit(started.wait(30))
"""


def test_a_descriptor_among_the_standard_ones_is_held_all_the_same(tmp_path: Path) -> None:
    """In a process started with its standard input closed, a descriptor to hold is 0, another
    is a target's number (and the pipe may be another low one): each is copied above the
    targets before the child's dup2s, so the holder still has its input at 0 and the files
    at 3 and 4."""
    (tmp_path / "held").write_text("")
    done = subprocess.run(
        [sys.executable, "-c", HOLDING_WITH_CLOSED_STANDARD_DESCRIPTORS, tmp_path / "held", CAT],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["pipe", str(tmp_path / "held"), str(tmp_path / "held")]


REAPING_A_CRON_RUN = """
import ctypes, os, subprocess, sys
ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: the run's orphans come here
argv = [sys.executable, "-m", "mgmt", "run", "--tmp-prefix", "--converged-timeout=0"]
run = subprocess.run([*argv, "--no-watch", "yaml", sys.argv[1]], capture_output=True, text=True)
if run.returncode:
    sys.exit(run.stderr)
while True:  # each orphan once it has ended: its name read before it is reaped
    try:
        info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:
        break
    with open(f"/proc/{info.si_pid}/comm") as f:
        name = f.read().strip()
    os.waitpid(info.si_pid, 0)
    print(name, info.si_status)
"""


def test_a_cron_runs_holder_ends_when_it_has_and_none_is_left(tmp_path: Path) -> None:
    """A cron run of the command (`--converged-timeout=0 --tmp-prefix`) hands two descriptors
    to one holder (its inotify instance at the final stop, its prefix's lock riding with it):
    once the run has exited, that holder ends (exit 0), an orphan of a subreaper that
    collects it; nothing else was left behind by the run."""
    (tmp_path / "g.yaml").write_text(
        f'graph: g\nresources:\n  file:\n    - name: f\n      path: {tmp_path}/f\n      content: "f\\n"\n'
    )
    done = subprocess.run(
        [sys.executable, "-c", REAPING_A_CRON_RUN, tmp_path / "g.yaml"],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n") == ["cat 0", ""]
    assert (tmp_path / "f").read_text() == "f\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "g.yaml"]
