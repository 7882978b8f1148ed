"""Drift repair latency: delete (and overwrite) a managed file N times while the daemon runs;
time until it is back with the right content, measured with inotify in this process.

Target: p50 <= 2 ms, p99 <= 10 ms; also with `--busy 2`: two busy-loop processes beside it
(both cores of this machine busy). With `--busy`, each round measures, side by side:

- quiet:          no busy loops, the agent at nice 0 (the baseline);
- busy:           the busy loops running, the agent at nice 0;
- busy, nice N:   the busy loops running, the agent started with `mgmt run --nice N`.

`--pause MS` waits that long after each repair before the next drift (default 0: back to back,
which leaves the agent no time for work it does after a repair, such as its spare copy).

`--settle MS` waits that long after the agent has put its file in place before the first drift
(default 200: a daemon at rest, the work it does after its convergence done, as when a file
drifts minutes or days after the agent started; since 2026-12-06, morning, that work includes
the spares it makes before a first drift, resources/_lib/spare.py). `--settle 0` measures a
drift right at the agent's convergence, as before (its first repair may then wait for the
spare being made).

`--siblings N` also manages the file's directory (`mode: "0755"`) and N other files in it:
a drift then has a managed parent and N siblings (before 2026-12-05, night, each repair checked
the directory again and poked all N: ~40 ms of CPU at N = 1,000).

`--baseline DIR` measures the agent of another checkout too (e.g. `git archive BASE | tar -x -C
DIR`), each configuration alternately with this tree's, and prints both.

`first` is the median and the slowest of the line's agents' first repair of that kind (with
one round, the one; counted in the percentiles too). Until 2026-12-06, morning, an agent's
first repair of its file wrote and fsynced it, as no spare was made before
(resources/_lib/spare.py), and its first overwrite after deletes did too: with `--rounds 2`
those were 2 of the 200 samples of each line, and the p99 (the second largest) often one of
them. A daemon now makes the spare ahead, in its idle time after convergence (`--settle`).

Each line also says how often the agent's threads went to sleep per repair (`switches`: the
voluntary context switches of all its threads, /proc/PID/task/*/status, over the line's drifts):
a count the machine's load does not move, unlike the times; each is a wake-up that waits for a
core when both are busy. `cpu` is the CPU time of all its threads per repair
(/proc/PID/task/*/schedstat), which the load moves less than the times.

The busy loops always run at nice 0. `--observer-nice M` runs this process (the clock, the
drift and the inotify observer) at nice M, so that its own wait for a core is not counted as
the agent's; the figures say which was used.

    .venv/bin/python bench/drift_latency.py [--count 200] [--busy 2] [--nice -10] [--rounds 2]
        [--observer-nice -10] [--baseline DIR] [--pause MS] [--settle MS] [--siblings N]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from common import (
    BUSY,
    MGMT,
    ROOT,
    Parser,
    checkout,
    fmt_ms,
    percentiles,
    run_script,
    seconds,
    terminate,
    whole,
)

sys.path.insert(0, str(ROOT))
from engine.watcher import PathWatcher

CONTENT = "hello world\n"
DRIFTS = ("delete", "overwrite")


def switches(pid: int) -> int:
    """The voluntary context switches of every thread of process pid so far."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total


def cpu_ns(pid: int) -> int:
    """The CPU time (ns) of every thread of process pid so far."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            total += int((task / "schedstat").read_text().split()[0])
    return total


def good(path: Path) -> bool:
    try:
        return path.read_text() == CONTENT
    except OSError:
        return False


async def repaired(watcher: PathWatcher, path: Path) -> None:
    async with asyncio.timeout(10):
        async for _ in watcher:
            if good(path):
                return


async def measure(path: Path, count: int, drift: str, pause: float) -> list[float]:
    samples = []
    async with PathWatcher([path]) as watcher:
        for _ in range(count):
            if pause:
                await asyncio.sleep(pause)  # pacing the drifts (the agent's work is done)
            start = time.perf_counter()
            if drift == "delete":
                os.unlink(path)
            else:
                path.write_text("tampered\n")  # noqa: ASYNC240
            await repaired(watcher, path)
            samples.append(time.perf_counter() - start)
    return samples


@contextlib.asynccontextmanager
async def busy_loops(count: int, unnice: list[str]) -> AsyncIterator[None]:
    loops = [
        await asyncio.create_subprocess_exec(*unnice, sys.executable, "-c", BUSY, str(os.getpid()))
        for _ in range(count)
    ]
    try:
        yield
    finally:
        await terminate(loops)


@contextlib.asynccontextmanager
async def agent(
    work: Path, nice: int, unnice: list[str], tree: Path, siblings: int = 0, *, settle: float = 0
) -> AsyncIterator[tuple[Path, int]]:
    """A running agent of `tree` enforcing one file (returned `settle` ms after it holds the
    content; with `siblings`, once they do too: their directory managed, and that many files
    beside it).

    The file is removed first: the content left by the previous agent would say "ready" before
    this one had started, and the first drift measured its start-up (0.2-2 s, issue 16)."""
    path = work / "out" / "hello"
    path.unlink(missing_ok=True)
    others = [path.with_name(f"sibling{i}") for i in range(siblings)]
    for other in others:
        other.unlink(missing_ok=True)
    graph = work / "graph.yaml"
    text = (
        f"graph: drift\nresources:\n  file:\n    - name: hello\n      path: {path}\n"
        f'      content: "hello world\\n"\n'
    )
    if siblings:
        text += f'    - name: dir\n      path: {path.parent}/\n      mode: "0755"\n'
        text += "".join(
            f'    - name: {other.name}\n      path: {other}\n      content: "hello world\\n"\n'
            for other in others
        )
    graph.write_text(text)
    proc = await asyncio.create_subprocess_exec(
        *unnice, *(MGMT if tree == ROOT else [sys.executable, "-m", "mgmt"]), "run",
        "--nice", str(nice), "--tmp-prefix", "yaml", str(graph),
        stderr=asyncio.subprocess.DEVNULL, cwd=tree,
    )  # fmt: skip
    try:
        async with asyncio.timeout(20), PathWatcher([path.parent]) as watcher:
            waiting, changes = [path, *others], aiter(watcher)
            while True:
                waiting = [one for one in waiting if not good(one)]
                if not waiting:
                    break
                await anext(changes)
        if settle:
            await asyncio.sleep(settle / 1000)  # a daemon at rest
        yield path, proc.pid
    finally:
        await terminate([proc])


async def main() -> None:
    parser = Parser()
    parser.add_argument("--count", type=whole(1), default=200, help="drifts of each kind per round")
    parser.add_argument("--busy", type=whole(0), default=0, help="busy-loop processes beside it")
    parser.add_argument("--nice", type=int, default=-10, help="the agent's --nice under load")
    parser.add_argument("--rounds", type=whole(1), default=1, help="rounds of all configurations")
    parser.add_argument("--observer-nice", type=int, default=0, help="this process's nice level")
    parser.add_argument("--baseline", type=Path, help="another checkout, measured alternately")
    parser.add_argument(
        "--pause", type=seconds, default=0, help="ms between a repair and the next drift"
    )
    parser.add_argument(
        "--settle", type=seconds, default=200, help="ms from the agent's file in place to a drift"
    )
    parser.add_argument(
        "--siblings", type=whole(0), default=0, help="N more files in its directory, managed too"
    )
    args = parser.parse_args()
    if args.baseline is not None:
        args.baseline = checkout(args.baseline, "--baseline")
    if args.observer_nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.observer_nice)
    # What this process starts runs at nice 0 (or its own --nice), not at the observer's level.
    unnice = ["nice", "-n", str(-args.observer_nice)] if args.observer_nice else []
    kinds = [("quiet", 0, 0)]
    if args.busy:
        kinds += [("busy", args.busy, 0), (f"busy, nice {args.nice}", args.busy, args.nice)]
    trees = [("", ROOT)] + ([("base ", args.baseline.resolve())] if args.baseline else [])
    configs = [(tag + name, busy, nice, tree) for name, busy, nice in kinds for tag, tree in trees]
    samples: dict[tuple[str, str], list[float]] = {}
    loads: dict[str, list[float]] = {}
    firsts: dict[tuple[str, str], list[float]] = {}  # each agent's first repair of a kind
    slept: dict[tuple[str, str], list[int]] = {}  # voluntary context switches per line
    spent: dict[tuple[str, str], list[int]] = {}  # the agent's CPU ns per line
    work = Path(tempfile.mkdtemp(prefix="mgmt-bench-drift-"))
    try:
        for _ in range(args.rounds):
            for name, busy, nice, tree in configs:  # interleaved: the machine's load moves
                async with (
                    busy_loops(busy, unnice),
                    agent(work, nice, unnice, tree, args.siblings, settle=args.settle) as (
                        path,
                        pid,
                    ),
                ):
                    for drift in DRIFTS:
                        before, cpu = switches(pid), cpu_ns(pid)
                        got = await measure(path, args.count, drift, args.pause / 1000)
                        samples.setdefault((name, drift), []).extend(got)
                        firsts.setdefault((name, drift), []).append(got[0])
                        slept.setdefault((name, drift), []).append(switches(pid) - before)
                        spent.setdefault((name, drift), []).append(cpu_ns(pid) - cpu)
                    loads.setdefault(name, []).append(os.getloadavg()[0])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"drift repair, {args.count} drifts x {args.rounds} rounds per line (target p50<=2ms "
        f"p99<=10ms), {os.cpu_count()} cores, observer at nice {args.observer_nice}"
        + f", first drift {args.settle:g} ms after the agent's file is in place"
        + (f", {args.siblings} managed siblings" if args.siblings else "")
        + ":"
    )
    if args.baseline:
        print(f"  (base: {args.baseline})")
    for name, _busy, _nice, _tree in configs:
        load = "-".join(f"{x:.1f}" for x in (min(loads[name]), max(loads[name])))
        for drift in DRIFTS:
            figures = fmt_ms(percentiles(samples[(name, drift)]))
            ones = sorted(firsts[(name, drift)])
            first = f"{ones[len(ones) // 2] * 1000:.2f}/" if len(ones) > 1 else ""
            first += f"{ones[-1] * 1000:.2f}"
            per = sum(slept[(name, drift)]) / len(samples[(name, drift)])
            cpu = sum(spent[(name, drift)]) / len(samples[(name, drift)]) / 1000
            print(
                f"  {name:21s} {drift:9s} {figures}  first={first}ms  switches {per:.1f}"
                f"  cpu {cpu:.0f}us"
                f"  (load {load})"
            )


if __name__ == "__main__":
    run_script(main)
