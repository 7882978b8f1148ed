"""Export propagation right after a cluster member dies.

Four agents on this machine: h1, h2, h3 run the three etcd members (ideal size 3), h4 is a
client only (`--no-server`). h4 exports one file per member; h1, h2 and h3 collect theirs.
Each trial kills one member's agent with -9 (alternately the raft leader's and a follower's;
its etcd dies with it), changes h4's export at once, and times until every surviving collector
has the new content on disk; then a second change (the cluster settled). The killed agent is
restarted and the next trial waits until it votes again.

    .venv/bin/python bench/export_failover.py [--trials 6] [--short-timings] [--freeze]

`--freeze` stops the member's agent and etcd with SIGSTOP instead: a hung machine or a cut
cable, whose connections stay open (nothing tells the others it is gone).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from cluster_latency import free_ports, replace, wait_all
from common import MGMT, ROOT, run_script, terminate

sys.path.insert(0, str(ROOT))
from engine.watcher import PathWatcher
from mgmt.cluster.client import EtcdClient
from mgmt.cluster.pki import TLSFiles, create_ca, mint

HOSTS = ("h1", "h2", "h3", "h4")
EXPORTER = "h4"
COLLECTORS = ("h1", "h2", "h3")


def exporter_graph(work: Path, token: str) -> str:
    lines = [f"graph: {EXPORTER}", "resources:", "  file:"]
    for peer in COLLECTORS:
        lines += [
            f'    - name: "@@{work}/shared/{peer}/value"',
            f'      content: "{token}\\n"',
            f"      meta: {{export: [{peer}]}}",
        ]
    return "\n".join(lines) + "\n"


def collector_graph(work: Path, host: str) -> str:
    return f"graph: {host}\ncollect:\n  - {{kind: file, pattern: {work}/shared/}}\n"


class Fleet:
    def __init__(self, work: Path, short: bool) -> None:
        self.work = work
        ports = free_ports(2 * len(HOSTS))
        self.client = {h: f"https://127.0.0.1:{ports[2 * i]}" for i, h in enumerate(HOSTS)}
        self.peer = {h: f"https://127.0.0.1:{ports[2 * i + 1]}" for i, h in enumerate(HOSTS)}
        self.ca = work / "cluster-ca"  # every host mints its certificate from it
        create_ca(self.ca)
        self.tls = mint(self.ca, work / "bench-tls", "bench", ["127.0.0.1"])
        self.timings = ["--etcd-heartbeat-interval", "10", "--etcd-election-timeout", "100"]
        self.short = short
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.frozen: list[int] = []  # SIGSTOPped pids: a stop must SIGCONT them to end them

    async def start(self, host: str, seeds: list[str]) -> None:
        argv = [
            *MGMT, "run", "--hostname", host, "--prefix", str(self.work / host),
            "--client-urls", self.client[host], "--server-urls", self.peer[host],
            "--cluster-ca-dir", str(self.ca),
            *(self.timings if self.short else []),
        ]  # fmt: skip
        if host == "h1":
            argv += ["--ideal-cluster-size", "3"]
        if host == "h4":
            argv += ["--no-server"]
        if seeds:
            argv += ["--seeds", ",".join(self.client[s] for s in seeds)]
        log = (self.work / f"{host}.log").open("a")
        graph = self.work / f"{host}.yaml"
        self.procs[host] = await asyncio.create_subprocess_exec(
            *argv, "yaml", str(graph), stdout=log, stderr=log, cwd=ROOT
        )

    async def kill(self, host: str) -> None:
        proc = self.procs.pop(host)
        proc.kill()
        await proc.wait()

    def freeze(self, host: str) -> None:
        """SIGSTOP the agent and its etcd: a hung machine (its connections stay open)."""
        pid = self.procs[host].pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        for each in [pid, *map(int, children)]:
            os.kill(each, signal.SIGSTOP)
            self.frozen.append(each)

    async def stop(self) -> None:
        """Stop every agent (and its etcd); a frozen one would never act on its SIGTERM."""
        for pid in self.frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.frozen.clear()
        await terminate(self.procs.values())

    async def roles(self) -> tuple[str, list[str]]:
        """The leader's name and the started voting members' names (waits up to 60 s until
        there are three)."""
        urls = [self.client[h] for h in HOSTS[:3]]
        client = EtcdClient(urls, tls=self.tls, call_timeout=1.0, name="bench")
        try:
            async with asyncio.timeout(60):
                while True:
                    members = await client.members()
                    voters = sorted(m.name for m in members if m.name and not m.is_learner)
                    status = await client.status()
                    leader = next((m.name for m in members if m.id == status.leader), "")
                    settled = len(voters) == 3 and len(members) == 3 and leader
                    if settled and all([await answers(m.client_urls, self.tls) for m in members]):
                        return leader, voters
                    await asyncio.sleep(0.1)  # a benchmark's poll, not a test's readiness
        finally:
            await client.close()


async def answers(urls: list[str], tls: TLSFiles) -> bool:
    """Whether this member serves (a restarted one is listed before it does)."""
    probe = EtcdClient(urls, tls=tls, call_timeout=0.5, retry_for=0.5, name="probe")
    try:
        return await probe.answers()
    finally:
        await probe.close()


async def change(fleet: Fleet, watcher: AsyncIterator[object], paths: list[Path]) -> float:
    """Seconds from a new export on h4 until every path in `paths` holds it."""
    token = secrets.token_hex(8)
    start = time.perf_counter()
    replace(fleet.work / f"{EXPORTER}.yaml", exporter_graph(fleet.work, token))
    done = await wait_all(watcher, paths, token)
    return max(done.values()) - start


async def trial(
    fleet: Fleet,
    watcher: AsyncIterator[object],
    targets: dict[str, Path],
    kind: str,
    freeze: bool,
) -> tuple[str, str, float, float]:
    """Kill (or freeze) the leader's (or a follower's) agent; time the first change and the
    next one; restart it and wait until it votes and collects again."""
    leader, voters = await fleet.roles()
    victim = leader if kind == "leader" else next(v for v in voters if v != leader)
    alive = [targets[h] for h in COLLECTORS if h != victim]
    if freeze:
        fleet.freeze(victim)
    else:
        await fleet.kill(victim)
    first = await change(fleet, watcher, alive)
    later = await change(fleet, watcher, alive)
    if freeze:
        await fleet.kill(victim)  # its etcd dies with it (PR_SET_PDEATHSIG)
        fleet.frozen.clear()
    await fleet.start(victim, [v for v in voters if v != victim])
    await fleet.roles()
    await change(fleet, watcher, list(targets.values()))
    return victim, kind, first, later


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument(
        "--short-timings", action="store_true", help="etcd heartbeat 10 ms, election 100 ms"
    )
    parser.add_argument(
        "--freeze", action="store_true", help="SIGSTOP the member's agent and etcd, not kill -9"
    )
    args = parser.parse_args()
    logging.getLogger("cluster").setLevel(logging.ERROR)  # the probes' connection errors
    work = Path(tempfile.mkdtemp(prefix="mgmt-bench-failover-"))
    fleet = Fleet(work, args.short_timings)
    first: dict[str, list[float]] = {"leader": [], "follower": []}
    later: list[float] = []
    did, done = ("froze", "frozen") if args.freeze else ("killed", "killed")
    try:
        token = secrets.token_hex(8)
        for host in HOSTS:
            text = exporter_graph(work, token) if host == EXPORTER else collector_graph(work, host)
            (work / f"{host}.yaml").write_text(text)
            (work / "shared" / host).mkdir(parents=True, exist_ok=True)
            await fleet.start(host, [] if host == "h1" else ["h1"])
        targets = {h: work / "shared" / h / "value" for h in COLLECTORS}
        async with PathWatcher(list(targets.values())) as events:
            watcher = aiter(events)
            await wait_all(watcher, list(targets.values()), token)
            for i in range(args.trials):
                victim, kind, once, next_one = await trial(
                    fleet, watcher, targets, "leader" if i % 2 == 0 else "follower", args.freeze
                )
                first[kind].append(once)
                later.append(next_one)
                print(
                    f"trial {i}: {did} {victim} ({kind}): first change {once * 1000:.0f} ms, "
                    f"next {next_one * 1000:.0f} ms"
                )
        print(
            f"export after a member's {'SIGSTOP' if args.freeze else 'kill -9'}, {args.trials} trials, 3 members + 1 client, "
            f"{'short' if args.short_timings else 'default'} etcd timings"
        )
        for kind, samples in first.items():
            if samples:
                print(
                    f"  first change, {kind} {done}: p50 {statistics.median(samples) * 1000:.0f} "
                    f"ms (max {max(samples) * 1000:.0f} ms, {len(samples)} trials)"
                )
        print(f"  the change after it: p50 {statistics.median(later) * 1000:.0f} ms")
    finally:
        await fleet.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    run_script(main)
