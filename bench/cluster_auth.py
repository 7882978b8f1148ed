"""What a connection to an etcd member with authentication costs: one member (this tree's
Cluster, `--cluster-user root`, short timings as the tests), then N fresh connections, each
one status request, with a password (etcd's Authenticate: a bcrypt check) and without (the
probe of whether a member answers, `EtcdClient.member_answers`). Prints p50, p90, p99 and
max of each, in ms, and the load. Figures are what the machine gives: run it beside a loaded
machine to see what a 0.5 s request timeout leaves (docs/clustering.md, a slow cluster).

    .venv/bin/python bench/cluster_auth.py [--count 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, fmt_ms, percentiles, run_script

sys.path.insert(0, str(ROOT))
from mgmt.cluster.client import EtcdClient
from mgmt.cluster.cluster import Cluster
from tests.mgmt.cluster.helpers import options

PASSWORD = "bench-password"


async def connect_times(urls: list[str], count: int, authenticate: bool) -> list[float]:
    """Seconds each of `count` fresh connections took to answer one status request."""
    user, password = ("root", PASSWORD) if authenticate else (None, None)
    times = []
    for _ in range(count):
        client = EtcdClient(urls, user=user, password=password, call_timeout=30, retry_for=30)
        start = time.monotonic()
        try:
            await client.status()
            times.append(time.monotonic() - start)
        finally:
            await client.close()
    return times


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        opts = options("bench", user="root", password=PASSWORD, insecure=True)
        cluster = Cluster(opts, Path(tmp))
        try:
            if not await cluster.start():
                raise SystemExit("bench: the etcd member did not start")
            urls = cluster.options.advertise_client_urls
            for authenticate in (True, False, True, False):
                stats = percentiles(await connect_times(urls, args.count, authenticate))
                label = "with a password" if authenticate else "without one   "
                print(f"{label}: {fmt_ms(stats)} (load {os.getloadavg()[0]:.1f})")
        finally:
            await cluster.stop()


if __name__ == "__main__":
    run_script(main)
