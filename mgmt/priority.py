"""`--nice N`: the agent's CPU priority, for every thread it has and will start.

With every core busy at the same nice level, a woken agent waits for a time slice behind the
busy processes: drift repair took p99 77-221 ms beside two busy loops on 2 cores, instead of
~1.5 ms (docs/benchmarks.md). A lower nice value gives the agent a larger share and an earlier
turn. Lowering it needs root (or CAP_SYS_NICE); when that is refused the agent says so once and
runs at the priority it has. Processes the agent starts (etcd, exec's commands) inherit it.
"""

from __future__ import annotations

import contextlib
import logging
import os

log = logging.getLogger("agent")

LOWEST, HIGHEST = 19, -20  # the nice range, least to most CPU


def check(nice: int) -> str | None:
    """Why `nice` is not a nice level, or None."""
    if not HIGHEST <= nice <= LOWEST:
        return f"--nice: expected a level from {HIGHEST} to {LOWEST}, got {nice}"
    return None


def renice(nice: int) -> None:
    """Set every thread of this process to `nice` (Linux keeps a level per thread; threads
    started later inherit the caller's). Nothing happens for 0, the default."""
    if nice == 0:
        return
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]  # no /proc: this thread only
    try:
        for tid in tids:
            with contextlib.suppress(ProcessLookupError):  # a thread that just ended
                os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError as err:
        log.warning(
            "--nice %d: %s; running at nice %d",
            nice,
            err.strerror,
            os.getpriority(os.PRIO_PROCESS, 0),
        )
        return
    log.info("running at nice %d", nice)
