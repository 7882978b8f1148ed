"""Processes: running a short system tool to completion (apt-get, dpkg-query, useradd...), and
stopping a process group (`stop_group`, used by every kind that starts processes).

argv only (no shell), bounded by a timeout; on a timeout or a cancellation its whole process
group is stopped (SIGTERM, then SIGKILL after GRACE) and always waited for: no zombies. A
transaction that must never be stopped half-way (a package manager's) runs through `run_to_end`
instead: never signalled, left to finish when we stop waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import struct
import subprocess
import threading
from collections.abc import Coroutine, Iterator, Mapping
from typing import Any

from engine.errors import ResourceError
from engine.handle import Shared
from resources._lib import unitscope

GRACE = 1.0  # seconds between SIGTERM and SIGKILL
_FLOCK = "hhqqi"  # struct flock (fcntl(2)): l_type, l_whence, l_start, l_len, l_pid
TAIL = 8  # output lines quoted in a failure

log = logging.getLogger("engine")


def dies_with_agent() -> list[str]:
    """An argv prefix asking the kernel to SIGKILL the command when the agent dies (SIGKILL,
    the OOM killer: no stop of ours runs), for a command that starts no process of its own
    worth stopping (etcd; Puppet's compile): it reaches that one process, not its group
    (resources._lib.reaper says why exec's commands need more).

    The death signal fires when the *thread* that forked the child ends, not the process: only
    the main thread's children ask for it (the agent's loop runs there; asyncio forks on its
    loop). Forked from another thread (an executor's worker, a thread's own loop), a child
    asks for none: it was killed when that thread ended (leaks review, 2026-12-07), and the
    command's own timeout bounds it instead.

    util-linux's `setpriv --pdeathsig` sets it and execs the command (the same pid); without
    setpriv, nothing. Not a `preexec_fn`: Python code run in a child forked from the agent,
    whose gRPC threads are running, crashed it (SIGSEGV) now and then."""
    if threading.current_thread() is not threading.main_thread():
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


def tool_lock(shared: Shared, name: str) -> asyncio.Lock:
    """The engine's lock named `name`: calls of tools that must not overlap (shadow's, apt's)
    hold it, so that they queue instead of failing on each other's file locks."""
    return shared.get(f"{__name__}:lock:{name}", asyncio.Lock)


def file_lock(shared: Shared, path: str) -> asyncio.Lock:
    """The engine's lock of the file `path`: every kind that reads, edits and rewrites a file
    other resources may edit too (line, ssh:authorized_key, host, mount's fstab, augeas,
    json:edit) holds it from its read to its write, so that two resources of one file do not
    lose each other's edits. The path is normalised (no symlink is resolved)."""
    return tool_lock(shared, f"file:{os.path.normpath(path)}")


def lock_holder(path: str) -> tuple[int, str] | None:
    """(pid, program name) of another process holding a POSIX lock (fcntl) on `path`, as the
    kernel says (F_GETLK for a whole-file write lock, as apt asks it); None when none does, or
    it is unknown (an open file description's lock names no pid; a process of another pid
    namespace is 0). Not from /proc/locks: its device numbers are the filesystem's, not
    stat's on btrfs (a subvolume's own), and it lists every lock of the host."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:  # the process holds no lock on it: closing our descriptor releases none
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        kind, _whence, _start, _length, pid = struct.unpack(
            _FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, query)
        )
    except OSError:
        return None
    finally:
        os.close(fd)
    return (pid, _program(pid)) if kind != fcntl.F_UNLCK and pid > 0 else None


def _program(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as comm:
            return comm.read().strip() or "?"
    except OSError:
        return "gone"


async def run_command(
    argv: list[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    ok: tuple[int, ...] | None = (0,),
    label: str | None = None,
    grace: float = GRACE,
    inherit: bool = True,
    stdin: bytes | None = None,
) -> tuple[int, str, str]:
    """Run `argv` to completion, given `stdin` (else /dev/null); (exit code, stdout, stderr).

    ResourceError if it cannot start, times out, or exits with a code not in `ok` (None: any
    code is fine). `env` is laid over the agent's environment (without `inherit`: it is the
    whole environment). `label` names the command in
    errors (default: argv[0]). `grace`: seconds between SIGTERM and SIGKILL when stopped.
    """
    what = label or argv[0]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**(os.environ if inherit else {}), **(env or {})},
            start_new_session=True,
        )
    except OSError as error:
        raise ResourceError(f"{argv[0]}: cannot start: {error}") from error
    try:
        async with asyncio.timeout(timeout):
            raw_out, raw_err = await proc.communicate(stdin)
    except TimeoutError:
        raise ResourceError(f"{what} timed out after {timeout:g}s") from None
    finally:
        await stop_group(proc, grace)
    code = proc.returncode if proc.returncode is not None else -1
    return _outcome(what, code, raw_out, raw_err, ok)


async def run_to_end(
    argv: list[str],
    *,
    timeout: float,
    env: Mapping[str, str],
    label: str,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
    ok: tuple[int, ...] | None = (0,),
    scope: str = "",
) -> tuple[int, str, str]:
    """Run `argv` as run_command does (its environment laid over the agent's), but never stop
    it: a transaction that, stopped half-way, leaves what it changes broken (dpkg's database
    "interrupted": every later apt-get refused until `dpkg --configure -a`; seen 2026-12-07, an
    install's apt-get signalled as --max-runtime's grace ended). Cancelled (a forced stop, a
    grace's end), it is waited for all the same, said in a warning naming its pid, and the
    cancellation goes on once it has ended: if the process exits before (the forced stop's
    bound), it runs on in its own session. At `timeout`, the wait ends (a ResourceError) and it
    runs on, said too, reaped when it ends. Either way how it ended is said when it has
    (`_Ended`: its code, its failure's last lines). Its output goes to memory files, not pipes, so that
    our leaving cannot end it (a SIGPIPE at its next line).

    `scope` (a lowercase word naming the kind, "pkg"): under a systemd unit, it runs in a
    scope of its own, `mgmt-SCOPE-<hex>.scope`, outside the agent's unit, so that neither the
    unit's stop timeout nor its KillMode kills it once the agent has gone
    (resources._lib.unitscope; elsewhere, or refused, as before)."""
    prefix, unit = (
        await unitscope.scope_argv(scope, label, run_command, logger) if scope else ([], "")
    )
    with _memory_file("stdout") as out_fd, _memory_file("stderr") as err_fd:
        try:  # on the loop, as asyncio's own subprocess_exec forks (its Popen too); not
            # asyncio's Process: its transport kills the child when closed or collected
            proc = subprocess.Popen(  # noqa: ASYNC220
                [*prefix, *argv],
                stdin=subprocess.DEVNULL,
                stdout=out_fd,
                stderr=err_fd,
                env={**os.environ, **env},
                start_new_session=True,
            )
        except OSError as error:
            raise ResourceError(f"{argv[0]}: cannot start: {error}") from error
        which = f"pid {proc.pid}, {unit}" if unit else f"pid {proc.pid}"
        if unit:
            logger.info(
                "%s: started (%s): a stop of the agent's unit does not end it", label, which
            )
        else:
            logger.debug("%s: started (%s)", label, which)
        why = "stopped half-way, it would leave what it changes broken"
        try:
            async with asyncio.timeout(timeout):
                await pid_exited(proc.pid)
        except TimeoutError:
            left = f"left running to its end ({which}): {why}"
            logger.warning("%s: %s", label, left)
            ended = _Ended(proc, label, logger, os.dup(out_fd), os.dup(err_fd))
            _reap_when_done(proc, ended)
            raise ResourceError(f"{label} timed out after {timeout:g}s; {left}") from None
        except asyncio.CancelledError:
            logger.warning("%s: stopping: waiting for it to end first (%s): %s", label, which, why)
            await _through_cancellations(pid_exited(proc.pid), f"{label} ({which})")
            _Ended(proc, label, logger, out_fd, err_fd).say()
            raise
        code = proc.wait()  # it has exited: reaped at once
        return _outcome(label, code, _read_all(out_fd), _read_all(err_fd), ok)


async def _through_cancellations(wait: Coroutine[Any, Any, None], name: str) -> None:
    """Await `wait` to its end, whatever cancellations reach us meanwhile, in a task named
    `name`: what a forced stop's report of what still runs names (mgmt.stuck)."""
    done = asyncio.create_task(wait, name=name)
    while not done.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([done])
    done.result()


# The processes run_to_end stopped waiting for (timed out), until they end (kept: a Popen collected while
# its process runs says so in a ResourceWarning).
_LEFT: set[subprocess.Popen[bytes]] = set()


class _Ended:
    """How a transaction whose caller stopped waiting (cancelled, timed out) ended, said once
    it has: its caller cannot say it, and an operator must know whether it did its work (its
    code, and the tail of its output if it failed). `out_fd` and `err_fd`: its memory files
    (`close` closes them: the reaper's copies; the caller's own are closed by the caller)."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        label: str,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
        out_fd: int,
        err_fd: int,
    ) -> None:
        self.proc, self.label, self.logger = proc, label, logger
        self.fds = (out_fd, err_fd)

    def say(self) -> None:
        """Reap it (it has exited) and say how it ended."""
        code, pid = self.proc.wait(), self.proc.pid
        out, err = (_read_all(fd) for fd in self.fds)
        try:
            _outcome(self.label, code, out, err, (0,))
        except ResourceError as failed:
            self.logger.error("%s (pid %d, ended after the wait for it was stopped)", failed, pid)
        else:
            self.logger.warning(
                "%s: ended well (pid %d), after the wait for it was stopped", self.label, pid
            )

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)


def _reap_when_done(proc: subprocess.Popen[bytes], ended: _Ended) -> None:
    """Reap `proc` once it ends, while this loop runs (else init does, once we are gone), and
    say how it ended (`ended`, whose descriptors are closed then)."""
    _LEFT.add(proc)
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(proc.pid)
    except ProcessLookupError:  # already reaped: cannot be, but then nothing is left
        _LEFT.discard(proc)
        ended.close()
        return

    def on_exit() -> None:
        loop.remove_reader(fd)
        os.close(fd)
        try:
            ended.say()
        finally:
            ended.close()
            _LEFT.discard(proc)

    loop.add_reader(fd, on_exit)


@contextlib.contextmanager
def _memory_file(name: str) -> Iterator[int]:
    """An anonymous file in memory (memfd), closed at the end (a child's copy lives on)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def _read_all(fd: int) -> bytes:
    """What a memory file holds, from its start (memory only: no wait on a disk)."""
    chunks, offset = [], 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _outcome(
    what: str, code: int, raw_out: bytes, raw_err: bytes, ok: tuple[int, ...] | None
) -> tuple[int, str, str]:
    """(code, stdout, stderr) decoded; ResourceError quoting its last lines if `code` is not ok."""
    out, err = raw_out.decode(errors="replace"), raw_err.decode(errors="replace")
    if ok is not None and code not in ok:
        tail = " | ".join((err.strip() or out.strip()).splitlines()[-TAIL:]) or "no output"
        raise ResourceError(f"{what} exited with code {code}: {tail}")
    return code, out, err


async def stop_group(
    proc: asyncio.subprocess.Process,
    grace: float = GRACE,
    first: signal.Signals = signal.SIGTERM,
) -> None:
    """Stop a process and its group, the one way every kind does it; always wait for it.

    If `proc` still runs: send `first` (SIGTERM unless the kind lets the user choose, as exec's
    `sig`) to its group; if it has not exited after `grace`, SIGKILL the group. Then wait for
    it; after another `grace`, our end of its pipes is closed, so that a background child that
    left the group and still holds them cannot make us hang.
    """
    if proc.returncode is None:
        _signal_group(proc.pid, first)
        try:
            async with asyncio.timeout(grace):
                await exited(proc)
        except TimeoutError:
            _signal_group(proc.pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(grace):
            await proc.wait()
    close_pipes(proc)
    await proc.wait()


async def exited(proc: asyncio.subprocess.Process) -> None:
    """Wait until the process has exited, whatever holds its pipes (a pidfd: no polling)."""
    if proc.returncode is None:
        await pid_exited(proc.pid)


async def pid_exited(pid: int) -> None:
    """Wait until process `pid` has exited (a pidfd is readable once it has: our child or
    not); at once when there is none (already reaped)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    gone = asyncio.Event()
    loop.add_reader(fd, gone.set)
    try:
        await gone.wait()
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def close_pipes(proc: asyncio.subprocess.Process) -> None:
    """Close our end of the process's pipes (its readers see EOF)."""
    transport = getattr(proc, "_transport", None)
    if isinstance(transport, asyncio.BaseTransport):
        transport.close()


def signal_group(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    """Send `sig` to the process group of `proc` if it still runs (nothing waits)."""
    if proc.returncode is None:
        _signal_group(proc.pid, sig)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
