"""Cluster propagation latency: three agents on this machine, one of them (h1) changes the
content of its exported files N times; time until the files are updated by the other two.

h1 exports one file per collector (`meta: {export: [h2]}`, `{export: [h3]}`) so that each
update on disk is attributable to one agent; h2 and h3 collect them. The clock starts when h1's
graph file is replaced and stops when the file (measured with inotify here) holds the new
content: graph-file reload, export transaction, etcd raft commit across the three members,
watch event, re-read, graph swap, atomic write.

`--observer-nice M` runs this process (the clock and the inotify watch that sees each file
updated) at nice M and its agents at 0 (as bench/drift_latency.py): at M < 0 a core is free for
the observer sooner when the machine is busy, so its own wake-up weighs less in the figure.

`--busy N` runs N busy-loop processes (nice 0, `common.busy_loops`) beside every round, the
agents, their etcd members and this observer all sharing the cores with them: the issue's
"with other work running", made repeatable (`--busy 2` keeps both cores of this machine busy).

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
`--etcd-arg ARG` (repeatable) also measures this tree with ARG added to every etcd member's
command line (an `etcd` wrapper first on that variant's PATH), to weigh an etcd setting, e.g.
`--etcd-arg=--wal-dir={shm}` ({shm}: a fresh directory on tmpfs per member) (see docs/benchmarks.md for what each one costs).
`--env "NAME=VALUE ..."` (repeatable: a variant each) also measures this tree with those in its
agents' environment (e.g. a gRPC setting, `GRPC_EXPERIMENTS=...`).

    .venv/bin/python bench/cluster_latency.py [--count 100] [--short-timings] [--rounds 1]
        [--baseline DIR] [--stages] [--etcd-arg ARG ...] [--env "NAME=VALUE ..." ...]
        [--log-files] [--observer-nice M] [--busy N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shlex
import shutil
import socket
import statistics
import sys
import tempfile
import time
from asyncio.subprocess import PIPE, STDOUT, Process, create_subprocess_exec
from collections.abc import AsyncIterator
from pathlib import Path

from common import (
    ROOT,
    Parser,
    busy_loops,
    checkout,
    cluster_agent_argv,
    fmt_ms,
    percentiles,
    run_script,
    terminate,
    whole,
)

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


def replace(path: Path, text: str) -> float:
    """Replace `path` with `text` (a rename); the time (perf_counter) of the rename, when the
    change is there for the agent to see. Writing the temporary file before it is this
    script's work, not counted (an ext4 write waits for the journal when the disk is busy)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    start = time.perf_counter()
    os.replace(tmp, path)
    return start


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


class AgentLog:
    """What an agent wrote to its stdout and stderr, through a pipe (as to journald under
    systemd), kept in memory; or, with `to_file`, a file on the disk that the agent writes
    itself (`mgmt run > FILE`: each line written may wait for an ext4 journal commit, i.e.
    for the fsyncs of every process on the file system)."""

    def __init__(self, path: Path, to_file: bool) -> None:
        self.path = path
        self.text = bytearray()
        self.grew = asyncio.Event()
        self.to_file = to_file

    async def start(self, argv: list[str], cwd: Path, env: dict[str, str]) -> Process:
        """The agent `argv` writing here; follow() must then run until it exits."""
        if not self.to_file:
            return await create_subprocess_exec(*argv, stdout=PIPE, stderr=STDOUT, cwd=cwd, env=env)
        with self.path.open("wb") as out:
            return await create_subprocess_exec(*argv, stdout=out, stderr=out, cwd=cwd, env=env)

    async def follow(self, proc: Process) -> None:
        """The agent's output until it ends (a task per agent; with to_file, nothing to do)."""
        while proc.stdout is not None and (chunk := await proc.stdout.read(65536)):
            self.text += chunk
            self.grew.set()

    def read(self) -> str:
        return self.path.read_text() if self.to_file else self.text.decode(errors="replace")

    async def all_members(self) -> None:
        """Until h1 logged that h2 and h3 are voting members (on each write to its log).
        Measured while a nominee was still starting, one change took 3.9 s (and one 25 s):
        the cluster had two members, one of them not running, so no quorum until it was
        replaced."""
        async with asyncio.timeout(60), contextlib.AsyncExitStack() as stack:
            writes = aiter(await stack.enter_async_context(PathWatcher([self.path])))
            while self.read().count("is now a voting member") < len(HOSTS) - 1:
                self.grew.clear()
                await (anext(writes) if self.to_file else self.grew.wait())


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


def etcd_wrapper(scratch: Path, shm: Path, extra: list[str]) -> dict[str, str]:
    """Environment in which `etcd` (found on PATH by the agents) runs with `extra` appended.
    `{shm}` in an argument is a fresh directory per member on tmpfs, under `shm` (a WAL dir)."""
    etcd = shutil.which("etcd") or "/usr/bin/etcd"
    wrapper = scratch / "etcd-wrapper"
    wrapper.mkdir()
    fresh = f"'\"$(mktemp -d -p {shlex.quote(str(shm))})\"'"
    args = " ".join(shlex.quote(a).replace("{shm}", fresh) for a in extra)
    script = wrapper / "etcd"
    script.write_text(f'#!/bin/sh\nexec {shlex.quote(etcd)} "$@" {args}\n')
    script.chmod(0o755)
    return {"PATH": f"{wrapper}:{os.environ.get('PATH', '')}"}


def agent_command(args: argparse.Namespace) -> list[str]:
    """`python -m mgmt`, at nice 0 when this process runs at --observer-nice (`nice` execs:
    the process is the agent)."""
    unnice = ["nice", "-n", str(-args.observer_nice)] if args.observer_nice else []
    return [*unnice, sys.executable, "-m", "mgmt"]


async def measure(
    tree: Path,
    nice: int,
    args: argparse.Namespace,
    stages: Path | None,
    *,
    marks: Marks,
    cpu: CpuUse,
    extra_env: dict[str, str],
    log_files: bool,
) -> tuple[list[float], list[float], int]:
    """Seconds per collector update and per change (both updated), and the etcd members; with
    `stages`, the agents write their stage timestamps there, and each change goes in marks;
    the CPU each process used during the changes is added to `cpu`."""
    hook = {"PYTHONPATH": str(ROOT / "bench" / "stages"), "MGMT_BENCH_STAGES": str(stages)}
    env = {**os.environ, **extra_env, **(hook if stages is not None else {})}
    work = Path(tempfile.mkdtemp(prefix="mgmt-bench-cluster-"))
    ports = free_ports(2 * len(HOSTS))
    timings = ["--etcd-heartbeat-interval", "10", "--etcd-election-timeout", "100"]
    procs: list[Process] = []
    logs = [AgentLog(work / f"{host}.log", log_files) for host in HOSTS]
    readers: list[asyncio.Task[None]] = []
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
            argv = cluster_agent_argv(agent_command(args), host, i, work, ports, *extra)
            procs.append(await logs[i].start([*argv, "yaml", str(graph)], tree, env))
            readers.append(asyncio.create_task(logs[i].follow(procs[-1])))
        (work / "shared" / "h2").mkdir(parents=True)
        (work / "shared" / "h3").mkdir(parents=True)
        async with PathWatcher(targets) as events:
            watcher = aiter(events)
            await wait_all(watcher, targets, token)
            await logs[0].all_members()  # not measuring the cluster's growth
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
                start = replace(work / "h1.yaml", exporter_graph(work, token))
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
        members = logs[0].read().count("is now a voting member")
        return per_host, both, members + 1
    finally:
        await terminate(procs)
        await asyncio.gather(*readers)  # the pipes' ends: each agent has exited
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
        add("h1: reload -> graph read, parsed", reload, applied)
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


def options() -> argparse.Namespace:
    parser = Parser()
    parser.add_argument("--count", type=whole(1), default=100, help="changes per round and tree")
    parser.add_argument("--rounds", type=whole(1), default=1)
    parser.add_argument("--baseline", type=Path, help="another checkout, measured alternately")
    parser.add_argument("--nice", type=int, default=0, help="also this tree's agents at --nice N")
    parser.add_argument("--stages", action="store_true", help="also the time of each stage")
    parser.add_argument("--observer-nice", type=int, default=0, help="this process's nice level")
    parser.add_argument("--busy", type=whole(0), default=0, help="busy-loop processes beside it")
    parser.add_argument(
        "--short-timings", action="store_true", help="etcd heartbeat 10 ms, election 100 ms"
    )
    parser.add_argument(
        "--etcd-arg",
        action="append",
        default=[],
        help="also this tree with ARG on etcd's command line ({shm}: a fresh dir on tmpfs)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE[ NAME=VALUE...]",
        help="also this tree with these in the agents' environment (repeatable: a variant each)",
    )
    parser.add_argument(
        "--log-files",
        action="store_true",
        help="also this tree with each agent writing its log to a file (not a pipe)",
    )
    args = parser.parse_args()
    if args.baseline is not None:
        args.baseline = checkout(args.baseline, "--baseline")
    return args


Variant = tuple[Path, int, dict[str, str], bool]  # tree, nice, environment, logs to files


def variants(args: argparse.Namespace, scratch: Path, shm: Path) -> dict[str, Variant]:
    """What is measured, by name."""
    trees: dict[str, Variant] = {"this tree": (ROOT, 0, {}, False)}
    if args.nice:
        trees[f"this tree, --nice {args.nice}"] = (ROOT, args.nice, {}, False)
    if args.log_files:
        trees["this tree, logs to files"] = (ROOT, 0, {}, True)
    if args.etcd_arg:
        env = etcd_wrapper(scratch, shm, args.etcd_arg)
        trees[f"this tree, etcd {' '.join(args.etcd_arg)}"] = (ROOT, 0, env, False)
    for assignments in args.env:
        env = dict(item.partition("=")[::2] for item in assignments.split())
        trees[f"this tree, {assignments}"] = (ROOT, 0, env, False)
    if args.baseline is not None:
        trees["baseline"] = (args.baseline.resolve(), 0, {}, False)
    return trees


async def main() -> None:
    args = options()
    if args.observer_nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.observer_nice)
    scratch = Path(tempfile.mkdtemp(prefix="mgmt-bench-stages-"))
    # On tmpfs: the WAL dirs of {shm}, and the stage stamps (written by the agents' loops: on
    # ext4, a write may wait for a journal commit, i.e. for everyone's fsyncs).
    shm = Path("/dev/shm") / scratch.name
    if shm.parent.is_dir() and (args.stages or any("{shm}" in a for a in args.etcd_arg)):
        shm.mkdir()
    trees = variants(args, scratch, shm)
    per_host: dict[str, list[float]] = {name: [] for name in trees}
    both: dict[str, list[float]] = {name: [] for name in trees}
    loads: dict[str, list[float]] = {name: [] for name in trees}
    members = 0
    stamps = shm if shm.is_dir() else scratch
    stages = {name: stamps / str(i) for i, name in enumerate(trees)} if args.stages else {}
    marks: dict[str, Marks] = {name: [] for name in trees}
    cpu: dict[str, CpuUse] = {name: {} for name in trees}
    try:
        for directory in stages.values():
            directory.mkdir()
        with busy_loops(args.busy):
            for _ in range(args.rounds):
                for name, (tree, nice, extra_env, log_files) in trees.items():
                    one, all_, members = await measure(
                        tree, nice, args, stages.get(name), marks=marks[name], cpu=cpu[name],
                        extra_env=extra_env, log_files=log_files,
                    )  # fmt: skip
                    per_host[name] += one
                    both[name] += all_
                    loads[name].append(os.getloadavg()[0])
        print(
            f"cluster latency, {args.count} changes x {args.rounds} rounds, 3 agents ({members} etcd "
            f"members), {'short' if args.short_timings else 'default'} etcd timings, "
            f"{os.cpu_count()} cores, observer at nice {args.observer_nice}, "
            f"beside {args.busy} busy loops "
            "(target p50<=10ms p99<=30ms):"
        )
        for name, (tree, *_) in trees.items():
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
        shutil.rmtree(shm, ignore_errors=True)


if __name__ == "__main__":
    run_script(main)
