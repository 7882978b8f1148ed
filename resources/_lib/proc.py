"""Processes: running a short system tool to completion (apt-get, dpkg-query, useradd...), and
stopping a process group (`stop_group`, used by every kind that starts processes).

argv only (no shell), bounded by a timeout; on a timeout or a cancellation its whole process
group is stopped (SIGTERM, then SIGKILL after GRACE) and always waited for: no zombies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import Mapping

from engine.errors import ResourceError
from engine.handle import Shared

GRACE = 1.0  # seconds between SIGTERM and SIGKILL
TAIL = 8  # output lines quoted in a failure


def dies_with_agent() -> list[str]:
    """An argv prefix asking the kernel to SIGKILL the command when the agent dies (SIGKILL,
    the OOM killer: no stop of ours runs), for a child of the agent's main thread (the loop's:
    the death signal fires when the thread that forked it ends) that starts no process of its
    own worth stopping (etcd; Puppet's compile): it reaches that one process, not its group
    (resources._lib.reaper says why exec's commands need more).

    util-linux's `setpriv --pdeathsig` sets it and execs the command (the same pid); without
    setpriv, nothing. Not a `preexec_fn`: Python code run in a child forked from the agent,
    whose gRPC threads are running, crashed it (SIGSEGV) now and then."""
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
    out, err = raw_out.decode(errors="replace"), raw_err.decode(errors="replace")
    code = proc.returncode if proc.returncode is not None else -1
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
