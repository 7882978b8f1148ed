"""resources._lib.reaper: a record naming pid 0 or 1, a negative or a huge one (written by
no agent: a corrupt or planted file) is never signalled. The guard's shell said `kill -- -$pid`:
"-1" (or "-01", which /proc does not resolve) is every process of the host, "-0" the guard's
own group; Python's killpg(1) is kill(-1), killpg(0) the agent's own group, and a huge pid
raised OverflowError out of exec's init. Every kill here is stubbed (nothing is signalled)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest

from resources._lib import reaper
from tests.child import python

INIT_START = reaper.start_time(1)


def _records(tmp_path: Path, *lines: str) -> Path:
    kind_dir = tmp_path / "exec"
    for index, line in enumerate(lines):
        res_dir = kind_dir / f"r{index}"
        res_dir.mkdir(parents=True)
        (res_dir / "running.cmd").write_text(line + "\n")
    return kind_dir


# kill and sleep stubbed (regular built-ins: a function takes their place): what the guard
# would signal is written down in the file $LOG, nothing is signalled. PROBE_KILL: the probe
# (`kill -s 0`, which signals nothing) runs for real.
STUB_KILL = 'kill() { printf "%s\\n" "$*" >> "$LOG"; return 0; }\nsleep() { :; }\n'
PROBE_KILL = (
    'kill() { [ "$2" = 0 ] && command kill "$@" && return 0; '
    'printf "%s\\n" "$*" >> "$LOG"; return 0; }\nsleep() { :; }\n'
)


def _run_guard(kind_dir: Path, log: Path, stubs: str = STUB_KILL) -> None:
    """The guard (sh) over `kind_dir`'s records, its kills stubbed into `log`."""
    done = subprocess.run(
        ["/bin/sh", "-c", stubs + reaper.GUARD, "mgmt-exec-guard", str(kind_dir)],
        stdin=subprocess.DEVNULL,
        env={**os.environ, "LOG": str(log)},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def _run_python(program: str, *args: str) -> str:
    """A reaper's run in a child (its os.killpg stubbed by `program`): what it printed."""
    done = python(program, *args, timeout=60, new_session=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _leaderless_group(run_as: list[str] | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """A real process group of a daemon's shape, started through `run_as` (setpriv's argv):
    its leader (a shell) exited, its child sleeps. The leader's Popen (its pid: the group's
    id) and the child's pid; the caller kills the group."""
    sh = subprocess.Popen(
        [*(run_as or []), "/bin/sh", "-c", "sleep 300 & echo $!"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert sh.stdout is not None
        child = int(sh.stdout.readline())
        sh.stdout.close()
        sh.wait(timeout=60)  # the leader is gone, its group remains
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sh.pid, 9)  # the group this helper started
        raise
    return sh, child


@pytest.mark.parametrize("line", ["1 {init}", "01 99", "0001 99", "0 99", "00 99"])
def test_guard_signals_no_pid_0_or_1(tmp_path: Path, line: str) -> None:
    kind_dir = _records(tmp_path, line.format(init=INIT_START))
    log = tmp_path / "kills"
    _run_guard(kind_dir, log)
    assert not log.exists(), log.read_text()
    assert not list(kind_dir.glob("*/running.*"))  # removed all the same


# Run in a child whose os.killpg only writes down its calls: killpg(1, sig) is kill(-1, sig),
# every process of the host (before the fix, this test run unstubbed did just that).
PYTHON = """
import os, sys
from pathlib import Path
calls = []
os.killpg = lambda pgid, sig: calls.append(pgid)
from resources._lib import reaper
stopped = reaper.stop_recorded_groups(reaper.recorded(Path(sys.argv[1])), grace=0.0)
print(stopped, sorted(set(calls)))
"""


def test_python_signals_no_pid_0_or_1(tmp_path: Path) -> None:
    kind_dir = _records(tmp_path, "0 99", f"1 {INIT_START}", "01 99", "-1 99", f"{10**30} 99")
    assert _run_python(PYTHON, str(kind_dir)) == "[] []"
    assert not list(kind_dir.glob("*/running.*"))  # removed all the same


def test_record_from_before_boot_is_not_signalled(tmp_path: Path) -> None:
    """A record left by a crash of the host: after the boot its pid may be the id of a
    daemon's group whose leader left (fork, setsid, fork); that group is not ours. Here a
    real group of that shape (its leader exited, its child sleeps), recorded before the boot."""
    sh, child = _leaderless_group()
    try:
        kind_dir = _records(tmp_path, f"{sh.pid} 12345")
        record = next(kind_dir.glob("*/running.cmd"))
        os.utime(record, (0, 0))  # written before this boot
        assert reaper.stop_recorded_groups([record], grace=0.0) == []
        assert not record.exists()
        os.kill(child, 0)  # still runs
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sh.pid, 9)


NOBODY = 65534


def _group_with_pid(pid: int, argv: list[str]) -> subprocess.Popen[bytes] | None:
    """`argv` started as the leader of a new session whose pid is `pid` (the kernel's next
    pid set through /proc/sys/kernel/ns_last_pid, as a wrap of the pids gives it in time), or
    None if another process of the host took that pid first."""
    Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True
    )
    if proc.pid == pid:
        return proc
    os.killpg(proc.pid, 9)  # ours: started just above, in a session of its own
    proc.wait(timeout=60)
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (ns_last_pid, setpriv)")
@pytest.mark.parametrize("theirs", [True, False])
def test_a_pid_reused_by_another_users_group_is_not_signalled(tmp_path: Path, theirs: bool) -> None:
    """A command's whole group ended while the agent was killed; in the same boot its pid went
    to uid 65534's process (a real other user), which made it a session and left a child, as a
    daemon does (fork, setsid, fork). Before (2026-12-06, ninth session) the leader gone and
    the group there were enough: the guard and the next agent sent SIGTERM, as root, to
    their group. Now a group is stopped only if one of its processes runs as the recorded user:
    theirs is left alone; ours (the same shape, root's) is stopped. Every kill is stubbed."""
    first = subprocess.Popen(["sleep", "300"], start_new_session=True)
    started = reaper.start_time(first.pid)
    os.killpg(first.pid, 9)  # ours: the command's group ended
    first.wait(timeout=60)
    who = [f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] if theirs else []
    argv = ["setpriv", *who, "sh", "-c", "sleep 300 & echo $!"]
    reused = None
    for _ in range(20):  # another process of the host may take the pid first
        if (reused := _group_with_pid(first.pid, argv)) is not None:
            break
    if reused is None:  # (nothing of ours left to stop)
        pytest.skip("the pid was taken by another process each time")
    try:
        assert reused.stdout is not None
        child = int(reused.stdout.readline())
        reused.stdout.close()
        reused.wait(timeout=60)  # the leader is gone, its group remains
        assert os.getpgid(child) == first.pid
        kind_dir = _records(tmp_path, f"{first.pid} {started} 0")
        # The next agent's reaper (Python)...
        want = "[] []" if theirs else f"[{first.pid}] [{first.pid}]"
        assert _run_python(PYTHON, str(kind_dir)) == want
        # ... and the guard (sh), kill stubbed but for its probe (`kill -s 0`).
        kind_dir = _records(tmp_path / "guard", f"{first.pid} {started} 0")
        log = tmp_path / "kills"
        _run_guard(kind_dir, log, PROBE_KILL)
        said = log.read_text() if log.exists() else ""
        assert (f"-s TERM -- -{first.pid}" in said) != theirs, said
        os.kill(child, 0)  # still runs: nothing was signalled
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(reused.pid, 9)  # the group this test started: reused.pid is first.pid


PYTHON_AS = """
import os, sys
from pathlib import Path
calls = []
os.killpg = lambda pgid, sig: calls.append(pgid)
from resources._lib import reaper
paths = reaper.recorded(Path(sys.argv[1]))
stopped = reaper.stop_recorded_groups(paths, grace=0.0, uid=int(sys.argv[2]))
print(stopped, sorted(set(calls)))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (setpriv)")
@pytest.mark.parametrize("user", [None, NOBODY])
def test_an_older_agents_record_without_uid_is_still_reaped(
    tmp_path: Path, user: int | None
) -> None:
    """An agent upgraded in place: the records an older agent left are "PID STARTTIME" (no
    UID). A group whose leader left (the daemon shape) is still stopped, by the next agent's
    reaper and by the guard: the agent's own command's, and (the reaper) one of a command run
    as `user` (uid 65534, a real other user), which exec's init names as the record's user.
    Before the ninth session's review such a record was taken as root's: the `user`
    command's group ran on. Every kill is stubbed."""
    who = [f"--reuid={user}", f"--regid={user}", "--clear-groups"] if user else []
    sh, child = _leaderless_group(["setpriv", *who])
    try:
        line = f"{sh.pid} 12345"  # the old format; the leader gone, its start time is moot
        kind_dir = _records(tmp_path, line)
        assert (
            _run_python(PYTHON_AS, str(kind_dir), str(user or os.geteuid()))
            == f"[{sh.pid}] [{sh.pid}]"
        )
        assert not list(kind_dir.glob("*/running.*"))
        if user is None:  # the guard: its agent's own records (its user's), the old format too
            kind_dir = _records(tmp_path / "guard", line)
            log = tmp_path / "kills"
            _run_guard(kind_dir, log, PROBE_KILL)
            assert f"-s TERM -- -{sh.pid}" in log.read_text()
        os.kill(child, 0)  # nothing was signalled
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sh.pid, 9)  # the group this test started


@pytest.mark.parametrize("exported", [False, True], ids=["plain", "guard-exported"])
def test_the_guards_script_reaches_none_of_its_children(tmp_path: Path, exported: bool) -> None:
    """The guard is started as GUARD_ARGV, its script in GUARD_VARIABLE: what it runs (`sleep`,
    `id`) inherits none of it, even when the agent's own environment exports `guard`, the
    name the launcher keeps the script in (an exported name stays exported when assigned:
    each child got the whole script in `guard=`, review_user3). Here the script is `env`,
    run as the guard's child would be."""
    env = {**os.environ, reaper.GUARD_VARIABLE: "env # the script"}
    if exported:
        env["guard"] = "the agent's own"
    else:
        env.pop("guard", None)
    done = subprocess.run(
        [*reaper.GUARD_ARGV, str(tmp_path)],
        stdin=subprocess.DEVNULL,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "the script" not in done.stdout, done.stdout
