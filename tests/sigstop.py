"""SIGSTOP a process and go on once it has stopped: every one of its threads.

`os.kill(pid, SIGSTOP)` returns once the signal is queued. The kernel wakes one thread of the
process to take it, and that thread stops the others; until then they run on. On a loaded
machine that is long enough for a stopped etcd to answer a request sent after the kill (CI,
2026-12-07: test_stop_bounded's call "in flight to a hung member" got its answer). So: a child
of this process, and waitid(WSTOPPED | WNOWAIT), which the kernel answers once the whole group
has stopped and which leaves the child waitable (for its exit, asyncio's). A process that is
not our child has no such event (ChildProcessError here).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator

BOUND = 30.0  # seconds: against a hang, never a timing


@contextlib.asynccontextmanager
async def stopped(pid: int) -> AsyncIterator[None]:
    """Our child `pid` stopped (SIGSTOP) while the block runs, from the moment all its threads
    have (waitid: WEXITED too, so that the wait cannot outlive it); continued (SIGCONT) after
    it. Both through a pidfd: never another process that got its pid once it was reaped."""
    pidfd = os.pidfd_open(pid)
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGSTOP)
        async with asyncio.timeout(BOUND):
            await asyncio.to_thread(os.waitid, os.P_PID, pid, os.WSTOPPED | os.WEXITED | os.WNOWAIT)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGCONT)
        os.close(pidfd)
