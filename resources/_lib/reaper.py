"""The guard of an engine's exec commands: when the agent dies, its commands die with it.

An exec command runs in a session of its own, so that a timeout or a stop signals its whole
process group, and so nothing stopped it when the agent was killed (SIGKILL: a cron job's
`timeout -s KILL`, the OOM killer, a crash): it ran on, orphaned, until the next agent on that
prefix stopped it (exec's init; a `--tmp-prefix` run has no next one). Under our systemd unit
the cgroup's kill covers a daemon; a cron run or a foreground `mgmt run` had nothing.

The guard is a small shell process (GUARD, run by /bin/sh as `mgmt-exec-guard DIR`: ~1 ms to
start, where a Python one took ~10 ms of CPU and made a one-shot run wait for it at its end),
started by an engine's first exec command (`resources.exec._Groups`) in a session of its own (a
signal to the agent's process group does not reach it). Its stdin is the read end of a pipe
whose one write end the agent holds, close-on-exec (no command inherits it). The kernel closes
that end when the agent's process ends, however it ends: the guard reads EOF, stops every
process group still recorded under DIR (`PREFIX/var/exec/NAME/running.*`, exec's records, as
`stop_recorded_groups` does: SIGTERM to each group that is still the one recorded, SIGKILL to
what is left after GRACE), says so on the agent's stderr, and exits. A graceful stop closes the
pipe once every command has ended: the guard finds no record and exits.

Not PR_SET_PDEATHSIG: it reaches the one process it is set on (a shell's children run on, the
group is not signalled), is cleared by a set-uid program's exec, fires when the *thread* that
forked ends (here the loop's thread, which asyncio's subprocess forks from), and can only be
set in the child (preexec_fn, unsafe in a threaded process, or a wrapper such as util-linux's
`setpriv --pdeathsig`: one more exec per command). mgmt sets Setpgid and no death signal: its
commands outlive a killed agent.

Also here, for the next agent (exec's init) and the tests, what reads and stops a record in
Python: the guard's logic, step for step.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

GRACE = 1.0  # seconds between SIGTERM and SIGKILL (resources._lib.proc's)
PID_MAX = 1 << 22  # the kernel's PID_MAX_LIMIT: a larger recorded pid is no process's


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot, /proc/PID/stat field 22), or None
    if it is gone: with the pid it names one process for good (a pid is reused, not both)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            fields = stat_file.read().rsplit(b")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return int(fields[19])  # field 22 of stat; fields here start at field 3


def record_group(path: Path, pid: int, uid: int | None = None) -> None:
    """Write `path`: the group of `pid` (a new session's leader) runs a command now, as the
    real user `uid` (default: ours), "PID STARTTIME UID".
    Removed by `forget_group` once it has ended; found by `stop_recorded_group` when the agent
    that started it died (SIGKILL, a crash) before it ended."""
    started = start_time(pid)
    if started is None:
        return
    # Not durable on purpose: after a crash of the host no command of it runs any more. Best
    # effort: a full disk does not fail the command (it is then not recorded). Whole or not
    # at all (written aside, then renamed): a kill of the agent as it wrote one left it empty,
    # read as no record by the guard and the next agent (the command ran on).
    aside = path.with_name(f".{path.name}.new")  # (not `running.*`: never read as a record)
    with contextlib.suppress(OSError):
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with open(fd, "w") as out:
            out.write(f"{pid} {started} {os.geteuid() if uid is None else uid}\n")
        os.rename(aside, path)


def forget_group(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def stop_recorded_group(path: Path, grace: float = GRACE, *, uid: int | None = None) -> int | None:
    """Stop the process group recorded in `path` if it still runs (blocking: in a worker
    thread); the pid stopped, or None. See stop_recorded_groups."""
    stopped = stop_recorded_groups([path], grace, uid=uid)
    return stopped[0] if stopped else None


def stop_recorded_groups(
    paths: Iterable[Path], grace: float = GRACE, *, uid: int | None = None
) -> list[int]:
    """Stop the process groups recorded in `paths` that still run, all at once (blocking);
    the pids stopped. A recorded pid is signalled only as the group it was: its leader with
    the recorded start time, or, the leader gone, the processes left in its group (a pid is
    not reused while a group of that id has a member) if one of them runs as the recorded
    real user (`_group_of`: the group may be another's, see there). A record without a user
    (an agent before 2026-12-06, ninth session) is taken as `uid`'s (exec's init: the
    resource's `user`; before the ninth session's review always ours, so a `user` command's
    group that an older agent left was not stopped), default ours. Each record is removed."""
    default_uid = os.geteuid() if uid is None else uid
    alive: list[int] = []
    booted = _boot_time()
    for path in paths:
        try:
            fields = path.read_text().split()
            if len(fields) not in (2, 3):
                raise ValueError(path)
            pid, started = int(fields[0]), int(fields[1])
            user = int(fields[2]) if len(fields) == 3 else default_uid
            # One from before this boot (a crash of the host): its pid names another process
            # now, and the group of a daemon whose leader left (fork, setsid, fork) passes the
            # check below: a start time is counted from the boot.
            stale = path.stat().st_mtime < booted
        except (OSError, ValueError):
            forget_group(path)
            continue
        if stale:
            forget_group(path)
            continue
        if not 1 < pid <= PID_MAX:  # no command's: killpg(1) is kill(-1), every process
            forget_group(path)
            continue
        now = start_time(pid)
        if now == started or (now is None and _group_of(pid, user)):
            alive.append(pid)
            _signal_group(pid, signal.SIGTERM)
        forget_group(path)
    for sig in (signal.SIGKILL, None):
        deadline = time.monotonic() + grace
        while any(map(_group_exists, alive)) and time.monotonic() < deadline:
            time.sleep(0.02)  # not our children: no pidfd for a group; a short, bounded wait
        if sig is not None:
            for pid in filter(_group_exists, alive):
                _signal_group(pid, sig)
    return alive


def recorded(kind_dir: Path) -> list[Path]:
    """The records under `kind_dir` (exec's: DIR/NAME/running.WHAT)."""
    found: list[Path] = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(kind_dir):
            if entry.is_dir(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    names = os.listdir(entry.path)
                    found += [Path(entry.path, n) for n in names if n.startswith("running.")]
    return found


def _boot_time() -> float:
    """When the host booted (seconds since the epoch: /proc/stat's btime), 0 if unknown."""
    with contextlib.suppress(OSError, ValueError), open("/proc/stat", "rb") as stat_file:
        for line in stat_file:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    return 0.0


def _group_of(pgid: int, uid: int) -> bool:
    """Whether a process of the group `pgid` runs as the real user `uid` (/proc/N/stat's field
    5, /proc/N/status's Uid). The leader of a recorded command gone, the group of its id may
    be another's: once the command's whole group ended (the agent killed meanwhile), the pid
    is free, and in the same boot (pid_max is 32768 by default) another user's process that
    gets it, makes it a session (setsid) and leaves a child (a daemon: fork, setsid, fork)
    holds a group of that id. Before 2026-12-06 (ninth session) the guard and the next agent
    signalled it as root: uid 65534's daemon was stopped (tests/resources/test_reaper.py).
    Their processes run as them, ours as the command's user: one member of that user is
    enough (a member that changed its real user, su, is no sign of another's group). A scan
    of /proc: only when a record's leader is gone, after a crash of the agent."""
    with contextlib.suppress(OSError), os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as stat_file:
                    if int(stat_file.read().rsplit(b")", 1)[1].split()[2]) != pgid:
                        continue
                with open(f"/proc/{entry.name}/status", "rb") as status:
                    for line in status:
                        if line.startswith(b"Uid:"):
                            if int(line.split()[1]) == uid:
                                return True
                            break
            except (OSError, ValueError, IndexError):
                continue
    return False


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# The guard (dash, POSIX sh): $1 the records' directory, stdin the agent's pipe. A record is
# "PID STARTTIME UID" (UID missing: an older agent's, ours); STARTTIME is field 22 of
# /proc/PID/stat, read after the command's name (which may hold spaces and parentheses:
# everything up to the last ") " is dropped). The leader gone, its group is stopped only if
# one of its processes runs as UID (stat's field 5, status's Uid: `_group_of`).
GUARD = r"""
while read -r _; do :; done
ours() {
    for stat_file in /proc/[0-9]*/stat; do
        read -r stat < "$stat_file" 2> /dev/null || continue
        set -- ${stat##*) }
        [ "$3" = "$pid" ] || continue  # field 5: its group
        while read -r key real _; do
            [ "$key" = "Uid:" ] || continue
            [ "$real" = "$uid" ] && return 0
            break
        done < "${stat_file%stat}status" 2> /dev/null
    done
    return 1
}
stopped=
for record in "$1"/*/running.*; do
    [ -f "$record" ] || continue
    pid= start= uid= now=
    read -r pid start uid < "$record"
    rm -f -- "$record"
    # Digits only, no leading 0, not 1: "-1" (or "-01") is every process, "-0" our group.
    case "$pid:$start" in *[!0-9:]* | :* | *: | 0* | 1:*) continue ;; esac
    case "$uid" in "") uid=$(id -ru) ;; *[!0-9]*) continue ;; esac
    if read -r stat < "/proc/$pid/stat" 2> /dev/null; then
        set -- ${stat##*) }
        shift 19
        now=$1
    fi
    if [ "$now" = "$start" ] || { [ -z "$now" ] && kill -s 0 -- "-$pid" 2> /dev/null && ours; }; then
        kill -s TERM -- "-$pid" 2> /dev/null
        stopped="$stopped $pid"
    fi
done
[ -n "$stopped" ] || exit 0
tries=0
while [ "$tries" -lt 20 ]; do
    left=
    for pid in $stopped; do
        kill -s 0 -- "-$pid" 2> /dev/null && left=1
    done
    [ -n "$left" ] || break
    sleep 0.05
    tries=$((tries + 1))
done
for pid in $stopped; do
    kill -s KILL -- "-$pid" 2> /dev/null
done
echo "mgmt: exec: the agent ended with commands running: stopped their process groups" \
    "(pid$stopped)" >&2
"""

# How the guard is started (then DIR): the script comes in the environment, so that its
# command line is one short line in `ps` and `systemctl status` (given as `sh -c`'s argument,
# its 50 lines were the command line: ~2,000 characters on the unit's CGroup list). `guard`
# unset first: a name the agent's environment exports stays exported when assigned, and
# each command the guard runs (`sleep`, `id`) got the whole script (review_user3).
GUARD_VARIABLE = "_MGMT_EXEC_GUARD"
GUARD_ARGV = (
    "/bin/sh",
    "-c",
    f'unset guard; guard=${GUARD_VARIABLE}; unset {GUARD_VARIABLE}; eval "$guard"',
    "mgmt-exec-guard",
)
