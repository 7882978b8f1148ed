"""Running a short system tool to completion (apt-get, dpkg-query, useradd...).

argv only (no shell), bounded by a timeout; on a timeout or a cancellation its whole process
group is stopped (SIGTERM, then SIGKILL after GRACE) and always waited for: no zombies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import weakref
from collections.abc import Mapping

from engine.errors import ResourceError

GRACE = 1.0  # seconds between SIGTERM and SIGKILL
TAIL = 8  # output lines quoted in a failure

_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


def loop_lock(name: str) -> asyncio.Lock:
    """A lock named `name` for the running event loop (tools that must not overlap)."""
    locks = _locks.setdefault(asyncio.get_running_loop(), {})
    return locks.setdefault(name, asyncio.Lock())


async def run_command(
    argv: list[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    ok: tuple[int, ...] | None = (0,),
    label: str | None = None,
    grace: float = GRACE,
) -> tuple[int, str, str]:
    """Run `argv` to completion; (exit code, stdout, stderr).

    ResourceError if it cannot start, times out, or exits with a code not in `ok` (None: any
    code is fine). `env` is laid over the agent's environment. `label` names the command in
    errors (default: argv[0]). `grace`: seconds between SIGTERM and SIGKILL when stopped.
    """
    what = label or argv[0]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    except OSError as error:
        raise ResourceError(f"{argv[0]}: cannot start: {error}") from error
    try:
        async with asyncio.timeout(timeout):
            raw_out, raw_err = await proc.communicate()
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


async def stop_group(proc: asyncio.subprocess.Process, grace: float = GRACE) -> None:
    """If `proc` still runs: SIGTERM its group, SIGKILL after `grace`; always wait for it."""
    if proc.returncode is None:
        _signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await proc.wait()
    if proc.returncode is None:
        _signal_group(proc.pid, signal.SIGKILL)
    await proc.wait()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
