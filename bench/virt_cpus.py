"""vCPU hot-plug latency: from a graph change of `cpus` to the domain reporting the new count.

In-process, like the daemon after it noticed the edited graph file: parse the new graph text,
`Engine.apply` it (a graph swap: the changed vertex is replaced), and wait until the running
domain reports the new live vCPU count (read through a connection of our own on every engine
notification; no polling). libvirt's test driver (`test:///default`), alternating 2 <-> 4 vCPUs
(hot-plug and hot-unplug). Target: < 100 ms.

    .venv/bin/python bench/virt_cpus.py [--count 50]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import ROOT, fmt_ms, percentiles, run_script

sys.path.insert(0, str(ROOT))
import libvirt

import resources  # noqa: F401  (the kinds' loader)
from engine.engine import Engine
from engine.events import VertexChanged
from mgmt.yamlgraph import parse

NAME = "bench-vm"
GRAPH = """graph: virt-bench
resources:
  virt:
    - name: bench-vm
      uri: "test:///default"
      state: running
      cpus: {cpus}
      maxcpus: 8
"""


async def until(engine: Engine, predicate: object, timeout: float = 10) -> None:
    """Wait until predicate() holds, re-checked on every engine notification."""
    assert callable(predicate)
    changed = asyncio.Event()
    unsubscribe = engine.listeners.subscribe(VertexChanged, lambda _event: changed.set())
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await changed.wait()
                changed.clear()
    finally:
        unsubscribe()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=50)
    args = parser.parse_args()
    loop = asyncio.get_running_loop()
    loop.set_default_executor(
        ThreadPoolExecutor(max_workers=8, thread_name_prefix="io")
    )  # as the agent
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    prefix = Path(tempfile.mkdtemp(prefix="mgmt-bench-virt-"))
    engine = Engine(hostname="bench", prefix=prefix)
    conn = libvirt.open("test:///default")  # ours: the test driver shares its state in-process

    def live_cpus() -> int:
        try:
            return int(conn.lookupByName(NAME).vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE))
        except libvirt.libvirtError:
            return 0

    try:
        await engine.apply(parse(GRAPH.format(cpus=2)).graph)
        await until(engine, lambda: live_cpus() == 2)
        total, swap = [], []
        cpus = 2
        for _ in range(args.count):
            cpus = 6 - cpus  # 2 -> 4 -> 2 ...
            start = time.perf_counter()
            await engine.apply(parse(GRAPH.format(cpus=cpus)).graph)
            swap.append(time.perf_counter() - start)
            await until(engine, lambda: live_cpus() == cpus)  # noqa: B023
            total.append(time.perf_counter() - start)
        print(
            f"graph change -> new vCPU count, x{args.count}: {fmt_ms(percentiles(total))}  (target < 100 ms)"
        )
        print(f"  of which parse + graph swap: {fmt_ms(percentiles(swap))}")
    finally:
        await engine.stop(graceful=True)
        if live_cpus():
            dom = conn.lookupByName(NAME)
            dom.destroy()
            dom.undefine()
        conn.close()
        shutil.rmtree(prefix, ignore_errors=True)


if __name__ == "__main__":
    run_script(main)
