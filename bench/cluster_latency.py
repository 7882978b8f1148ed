"""Cluster propagation latency: three agents on this machine, one of them (h1) changes the
content of its exported files N times; time until the files are updated by the other two.

h1 exports one file per collector (`meta: {export: [h2]}`, `{export: [h3]}`) so that each
update on disk is attributable to one agent; h2 and h3 collect them. The clock starts when h1's
graph file is replaced and stops when the file (measured with inotify here) holds the new
content: graph-file reload, export transaction, etcd raft commit across the three members,
watch event, re-read, graph swap, atomic write.

`--nice N` also measures this tree's agents started with `mgmt run --nice N` (their etcd
members inherit it).

Target (issue 16): p50 <= 10 ms, p99 <= 30 ms. etcd's own commit + watch is ~2.3 ms here.

`--stages` adds where the time goes, per stage (p50 and p90 over the changes, and p50 over the
slowest tenth of them, per tree): every agent imports bench/stages/sitecustomize.py, which
timestamps a few of its methods and the garbage collector's passes (see there). Every run also
prints the CPU each agent and its etcd member used per change and, in IDLE seconds after the
changes, per second. `MGMT_BENCH_PROFILE=DIR PYTHONPATH=bench/stages` profiles each agent's main
thread (cProfile, DIR/<pid>.prof; wall time: inflated on a loaded machine).

`--baseline DIR` runs the same measurement, round after round, with the agents of another
checkout (e.g. `git archive BASE | tar -x -C DIR`) and prints both side by side with the load.

    .venv/bin/python bench/cluster_latency.py [--count 100] [--short-timings] [--rounds 1]
        [--baseline DIR] [--stages]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from common import ROOT, checkout, cluster_agent_argv, fmt_ms, percentiles, run_script, terminate

sys.path.insert(0, str(ROOT))
from engine.watcher import PathWatcher
from mgmt.cluster.pki import create_ca

HOSTS = ("h1", "h2", "h3")
IDLE = 2.0  # seconds after the changes in which the CPU the processes use idle is measured


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for sock in socks:
        sock.close()
    return ports


def exporter_graph(work: Path, token: str) -> str:
    lines = ["graph: h1", "resources:", "  file:"]
    for peer in HOSTS[1:]:
        lines += [
            f'    - name: "@@{work}/shared/{peer}/value"',
            f'      content: "{token}\\n"',
            f"      meta: {{export: [{peer}]}}",
        ]
    return "\n".join(lines) + "\n"


def collector_graph(work: Path, host: str) -> str:
    return f"graph: {host}\ncollect:\n  - {{kind: file, pattern: {work}/shared/}}\n"


def replace(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def wait_all(
    watcher: AsyncIterator[object], paths: list[Path], token: str
) -> dict[Path, float]:
    """Seconds (perf_counter) at which each path first held `token`."""
    done: dict[Path, float] = {}

    def check() -> None:
        for path in paths:
            if path not in done:
                try:
                    if path.read_text() == token + "\n":
                        done[path] = time.perf_counter()
                except OSError:
                    pass

    async with asyncio.timeout(30):
        check()
        while len(done) < len(paths):
            await anext(watcher)
            check()
    return done


async def all_members(log: Path) -> None:
    """Until h1 logged that h2 and h3 are voting members (on each write to its log). Measured
    while a nominee was still starting, one change took 3.9 s (and one 25 s): the cluster had
    two members, one of them not running, so no quorum until it was replaced."""
    async with asyncio.timeout(60), PathWatcher([log]) as watcher:
        writes = aiter(watcher)
        while log.read_text().count("is now a voting member") < len(HOSTS) - 1:  # noqa: ASYNC240
            await anext(writes)


Marks = list[tuple[float, list[float]]]  # per change: its start, when each collector had it
CpuUse = dict[str, float]  # process ("h1 agent", "h1 etcd"...) -> CPU seconds it used


def cpu_of(agents: dict[str, int]) -> CpuUse:
    """CPU seconds (user + system) used so far by each agent and its children (its etcd)."""
    tick = os.sysconf("SC_CLK_TCK")
    use: CpuUse = {}

    def seconds(pid: int) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick  # utime, stime

    for host, pid in agents.items():
        use[f"{host} agent"] = seconds(pid)
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            use[f"{host} etcd"] = use.get(f"{host} etcd", 0.0) + seconds(int(child))
    return use


async def measure(
    tree: Path,
    nice: int,
    args: argparse.Namespace,
    stages: Path | None,
    *,
    marks: Marks,
    cpu: CpuUse,
) -> tuple[list[float], list[float], int]:
    """Seconds per collector update and per change (both updated), and the etcd members; with
    `stages`, the agents write their stage timestamps there, and each change goes in marks;
    the CPU each process used during the changes is added to `cpu`."""
    env = None
    if stages is not None:
        hook = {"PYTHONPATH": str(ROOT / "bench" / "stages"), "MGMT_BENCH_STAGES": str(stages)}
        env = {**os.environ, **hook}
    work = Path(tempfile.mkdtemp(prefix="mgmt-bench-cluster-"))
    ports = free_ports(2 * len(HOSTS))
    timings = ["--etcd-heartbeat-interval", "10", "--etcd-election-timeout", "100"]
    procs: list[asyncio.subprocess.Process] = []
    targets = [work / "shared" / peer / "value" for peer in HOSTS[1:]]
    create_ca(work / "cluster-ca")  # every host mints its certificate from it
    try:
        token = secrets.token_hex(8)
        for i, host in enumerate(HOSTS):
            graph = work / f"{host}.yaml"
            graph.write_text(exporter_graph(work, token) if i == 0 else collector_graph(work, host))
            extra = [
                *(timings if args.short_timings else []),
                *(["--nice", str(nice)] if nice else []),
            ]
            argv = cluster_agent_argv([sys.executable, "-m", "mgmt"], host, i, work, ports, *extra)
            log = (work / f"{host}.log").open("w")
            procs.append(
                await asyncio.create_subprocess_exec(
                    *argv, "yaml", str(graph), stdout=log, stderr=log, cwd=tree, env=env
                )
            )
        (work / "shared" / "h2").mkdir(parents=True)
        (work / "shared" / "h3").mkdir(parents=True)
        async with PathWatcher(targets) as events:
            watcher = aiter(events)
            await wait_all(watcher, targets, token)
            await all_members(work / "h1.log")  # not measuring the cluster's growth
            for _ in range(10):  # warm up
                token = secrets.token_hex(8)
                replace(work / "h1.yaml", exporter_graph(work, token))
                await wait_all(watcher, targets, token)
            per_host: list[float] = []
            both: list[float] = []
            agents = {host: proc.pid for host, proc in zip(HOSTS, procs, strict=True)}
            before = cpu_of(agents)
            for _ in range(args.count):
                token = secrets.token_hex(8)
                start = time.perf_counter()
                replace(work / "h1.yaml", exporter_graph(work, token))
                done = await wait_all(watcher, targets, token)
                per_host += [t - start for t in done.values()]
                both.append(max(done.values()) - start)
                marks.append((start, list(done.values())))
            after = cpu_of(agents)
            for name, used in after.items():
                cpu[name] = cpu.get(name, 0.0) + used - before.get(name, 0.0)
            await asyncio.sleep(IDLE)  # a window of no change: what the processes use idle
            for name, used in cpu_of(agents).items():
                cpu[f"idle {name}"] = cpu.get(f"idle {name}", 0.0) + used - after.get(name, 0.0)
        members = (work / "h1.log").read_text().count("is now a voting member")
        return per_host, both, members + 1
    finally:
        await terminate(procs)
        shutil.rmtree(work, ignore_errors=True)


def stage_report(stages: Path, marks: Marks) -> list[str]:
    """Milliseconds of each stage (bench/stages/sitecustomize.py): its median and p90 over the
    changes, and its median over the slowest tenth of them (where the tail comes from)."""
    agents = {
        f.stem: [(int(t) / 1e9, name) for t, name in (line.split() for line in f.open())]
        for f in stages.glob("*.txt")
    }
    steps: dict[str, list[tuple[int, float]]] = {}  # per stage: (change, milliseconds)
    slowest = sorted(range(len(marks)), key=lambda i: marks[i][0] - max(marks[i][1]))
    tail = set(slowest[: max(1, len(marks) // 10)])
    change = 0

    def add(step: str, begin: float | None, end: float | None) -> None:
        if begin is not None and end is not None:
            steps.setdefault(step, []).append((change, (end - begin) * 1000))

    for change, (start, done) in enumerate(marks):  # noqa: B007 (add() reads it)
        window = [(pid, [(t, n) for t, n in stamps if start <= t <= max(done)])
                  for pid, stamps in agents.items()]  # fmt: skip

        def first(stamps: list[tuple[float, str]], name: str, after: float = start) -> float | None:
            return next((t for t, n in stamps if n == name and t >= after), None)

        exporter = next((s for _, s in window if first(s, "reload>") is not None), [])
        # Each stage is looked for after the one before it: an `export>` stamp earlier than
        # this change's `apply>` fell in its window once, and the stage came out negative.
        reload = first(exporter, "reload>")
        applied = first(exporter, "apply>", reload or start)
        export = first(exporter, "export>", applied or start)
        add("h1: graph file replaced -> reload", start, reload)
        add("h1: reload -> graph read, parsed (thread)", reload, applied)
        add("h1: graph -> export transaction", applied, export)
        add(
            "h1: export transaction (etcd commit)",
            export,
            first(exporter, "export<", export or start),
        )
        for _, stamps in window:
            event = first(stamps, "read>")
            if stamps is exporter or event is None:
                continue
            swap = first(stamps, "engine_apply>", event)
            write = first(stamps, "write>", event)
            add("collector: export sent -> watch event", export, event)
            add("collector: watch event -> graph swap", event, swap)
            add("collector: graph swap -> file's check", swap, first(stamps, "check>", event))
            add("collector: check -> write", first(stamps, "check>", event), write)
            seen = min((d for d in done if write is not None and d >= write), default=None)
            add("collector: write -> on disk (thread, fsync, rename)", write, seen)
    for change, (start, done) in enumerate(marks):  # the collector's passes (any agent)
        paused = 0.0
        for stamps in agents.values():
            begin = None
            for t, name in stamps:
                if name == "gc>":
                    begin = t
                elif name == "gc<" and begin is not None:
                    paused += max(0.0, min(t, max(done)) - max(begin, start))
                    begin = None
        steps.setdefault("any agent: garbage collection during it", []).append(
            (change, paused * 1000)
        )
    lines = []
    for step, samples in steps.items():
        ms = sorted(m for _, m in samples)
        slow = [m for i, m in samples if i in tail] or [0.0]
        lines.append(
            f"      {step:52s} p50 {statistics.median(ms):6.2f}  p90 {ms[int(0.9 * len(ms))]:6.2f}"
            f"  slowest tenth p50 {statistics.median(slow):6.2f} ms"
        )
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=100, help="changes per round and tree")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--baseline", type=Path, help="another checkout, measured alternately")
    parser.add_argument("--nice", type=int, default=0, help="also this tree's agents at --nice N")
    parser.add_argument("--stages", action="store_true", help="also the time of each stage")
    parser.add_argument(
        "--short-timings", action="store_true", help="etcd heartbeat 10 ms, election 100 ms"
    )
    args = parser.parse_args()
    if args.baseline is not None:
        args.baseline = checkout(args.baseline, "--baseline")
    trees = {"this tree": (ROOT, 0)}
    if args.nice:
        trees[f"this tree, --nice {args.nice}"] = (ROOT, args.nice)
    if args.baseline is not None:
        trees["baseline"] = (args.baseline.resolve(), 0)
    per_host: dict[str, list[float]] = {name: [] for name in trees}
    both: dict[str, list[float]] = {name: [] for name in trees}
    loads: dict[str, list[float]] = {name: [] for name in trees}
    members = 0
    scratch = Path(tempfile.mkdtemp(prefix="mgmt-bench-stages-"))
    stages = {name: scratch / str(i) for i, name in enumerate(trees)} if args.stages else {}
    marks: dict[str, Marks] = {name: [] for name in trees}
    cpu: dict[str, CpuUse] = {name: {} for name in trees}
    try:
        for directory in stages.values():
            directory.mkdir()
        for _ in range(args.rounds):
            for name, (tree, nice) in trees.items():
                one, all_, members = await measure(
                    tree, nice, args, stages.get(name), marks=marks[name], cpu=cpu[name]
                )
                per_host[name] += one
                both[name] += all_
                loads[name].append(os.getloadavg()[0])
        print(
            f"cluster latency, {args.count} changes x {args.rounds} rounds, 3 agents ({members} etcd "
            f"members), {'short' if args.short_timings else 'default'} etcd timings, "
            f"{os.cpu_count()} cores (target p50<=10ms p99<=30ms):"
        )
        for name, (tree, _nice) in trees.items():
            load = "-".join(f"{x:.1f}" for x in (min(loads[name]), max(loads[name])))
            print(f"  {name} ({tree}), load {load}:")
            print(f"    file updated on a collector: {fmt_ms(percentiles(per_host[name]))}")
            print(f"    updated on both collectors:  {fmt_ms(percentiles(both[name]))}")
            changes, idle = args.count * args.rounds, IDLE * args.rounds
            busy = {k: v for k, v in cpu[name].items() if not k.startswith("idle ")}
            print(
                "    CPU per change (ms): "
                + ", ".join(f"{k} {v / changes * 1000:.1f}" for k, v in sorted(busy.items()))
            )
            print(
                "    CPU idle (ms per s): "
                + ", ".join(f"{k} {cpu[name][f'idle {k}'] / idle * 1000:.1f}" for k in sorted(busy))
            )
            if name in stages:
                print("    stages (ms over the changes; the last column: over the slowest tenth):")
                print("\n".join(stage_report(stages[name], marks[name])))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    run_script(main)
