"""A collected change in a large graph (issue 16): N local file resources plus C collected ones,
K of the collected records change; time from the new records to the engine's swap done
(ClusterLink's merge and Engine.apply, in-process, noop engine, no etcd: the merge and the swap
alone; bench/cluster_latency.py measures the whole path through etcd).

    .venv/bin/python bench/collect_swap.py [--local 10000] [--collected 200] [--changed 1 100]

Run it in another checkout (`PYTHONPATH=DIR .venv/bin/python DIR/bench/collect_swap.py`) to
compare; a checkout without `ClusterLink.merge` is measured through `graph_for` (no `since`).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import run_script

from engine.engine import Engine
from engine.graph import Graph
from engine.world import Exported
from mgmt.cluster.link import ClusterLink
from mgmt.collectscope import Collect
from mgmt.converger import Converger
from mgmt.yamlgraph import Loaded
from resources.file import FileRes
from tests.mgmt.cluster.helpers import options

ROUNDS = 20


def records(count: int, changed: int, version: int, last: list[Exported]) -> list[Exported]:
    """The records as read after `version`: the `changed` first ones new objects, the others
    the objects of the `last` read (EtcdWorld.res_list decodes a key once per revision)."""
    return [
        Exported.of("db1", FileRes(name=f"/srv/shared/f{i}", content=f"{version}"))
        if i < changed or not last
        else last[i]
        for i in range(count)
    ]


async def one(work: Path, local_count: int, collected: int, changed: int) -> list[float]:
    local = Graph("local")
    for i in range(local_count):
        local.add(FileRes(name=f"{work}/f{i}", content="local\n"))
    loaded = Loaded(local, collect=[Collect("file", "/srv/shared/")])
    link = ClusterLink(options("web1"), work, lambda: None)
    link._published = []  # nothing to publish: no etcd
    engine = Engine(hostname="web1", prefix=work / "prefix", noop=True)
    converger = Converger(engine, 0)
    merge = getattr(link, "merge", None)
    times = []
    try:
        for version in range(ROUNDS + 1):
            link.records = records(collected, changed, version, link.records)
            start = time.perf_counter()
            if merge is not None:
                graph, since = await merge(loaded)
            else:
                graph, since = await link.graph_for(loaded), None
            await engine.apply(graph, since)
            if version:
                times.append((time.perf_counter() - start) * 1000)
            await converger.converged.wait()  # between rounds, outside the time
    finally:
        converger.close()
        await engine.stop()
        await link.cluster.client.close()
    return times


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--local", type=int, default=10_000)
    parser.add_argument("--collected", type=int, default=200)
    parser.add_argument("--changed", type=int, nargs="+", default=[1, 100])
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    for changed in args.changed:
        with tempfile.TemporaryDirectory(prefix="mgmt-bench-collect-") as work:
            times = await one(Path(work), args.local, args.collected, changed)
        print(
            f"local={args.local} collected={args.collected} changed={changed}: merge+swap median "
            f"{statistics.median(times):.2f} ms, max {max(times):.2f} ms "
            f"(load {os.getloadavg()[0]:.1f})"
        )


if __name__ == "__main__":
    run_script(main)
