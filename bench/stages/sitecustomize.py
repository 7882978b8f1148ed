"""Stage timestamps for bench/cluster_latency.py --stages (imported by an agent at start-up).

With MGMT_BENCH_STAGES=DIR in the environment and this directory on PYTHONPATH, an agent started
from a checkout (its working directory) wraps a few of its own methods and appends one line
per call, `<CLOCK_MONOTONIC ns> <stage>` (">" on entry, "<" on return), to DIR/<pid>.txt: the
graph file's reload and the export transaction (the exporter), the read of the collected
records after a watch event (the collectors), the graph swap, the file's check and its write;
and each pass of the garbage collector (`gc>`/`gc<`, from `gc.callbacks`).
Benchmark use only: the product has no such hook, and nothing here changes what is done.
"""

from __future__ import annotations

import functools
import gc
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

STAGES = (  # (module, class, method, stage)
    ("mgmt.agent", "Agent", "_reload", "reload"),
    ("mgmt.agent", "Agent", "_apply", "apply"),
    ("mgmt.cluster.world", "EtcdWorld", "res_export", "export"),
    ("mgmt.cluster.link", "ClusterLink", "_read", "read"),
    ("engine.engine", "Engine", "apply", "engine_apply"),
    ("resources.file", "FileRes", "check_apply", "check"),
    ("resources.file", "FileRes", "_write", "write"),
)


def _install(out: str) -> None:
    sys.path.insert(0, os.getcwd())  # the checkout's own modules, before anything installed
    log = open(os.path.join(out, f"{os.getpid()}.txt"), "a", buffering=1)  # noqa: SIM115

    def wrap(method: Callable[..., Awaitable[Any]], stage: str) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(method)
        async def stamped(*args: Any, **kwargs: Any) -> Any:
            log.write(f"{time.monotonic_ns()} {stage}>\n")
            try:
                return await method(*args, **kwargs)
            finally:
                log.write(f"{time.monotonic_ns()} {stage}<\n")

        return stamped

    def collecting(phase: str, _info: dict[str, int]) -> None:
        log.write(f"{time.monotonic_ns()} gc{'>' if phase == 'start' else '<'}\n")

    gc.callbacks.append(collecting)
    for module, cls_name, method, stage in STAGES:
        cls = getattr(__import__(module, fromlist=[cls_name]), cls_name, None)
        if hasattr(cls, method):  # an older checkout may lack one: that stage is not shown
            setattr(cls, method, wrap(getattr(cls, method), stage))


def _profile(out: str) -> None:
    """cProfile of the agent's main thread, written to DIR/<pid>.prof at exit."""
    import atexit
    import cProfile

    profile = cProfile.Profile()
    atexit.register(lambda: (profile.disable(), profile.dump_stats(f"{out}/{os.getpid()}.prof")))
    profile.enable()


if os.environ.get("MGMT_BENCH_STAGES") and os.path.isdir("mgmt"):
    _install(os.environ["MGMT_BENCH_STAGES"])
if os.environ.get("MGMT_BENCH_PROFILE") and os.path.isdir("mgmt"):
    _profile(os.environ["MGMT_BENCH_PROFILE"])
