"""Graph swap: change ONE resource of an N-resource graph file while the daemon runs, and time
from the graph file's rename until the change is done:

- edit: a resource's content changes -> its file has the new content (inotify);
- add: a resource is inserted in the middle of the list -> its file exists with its content;
- remove: that resource is removed again -> the daemon logged the swap (a file that leaves the
  graph stays on disk, so only the log tells);
- rename: a resource's name and path change -> the new file has its content (and back:
  the daemon logged the swap).
- edge+ / edge-: an edge between two resources is added to the graph file's `edges` list, then
  removed -> the daemon logged the swap (the file already has an edge, so the list is there).

Edits go there and back too (the second restores the original content).

With --lang, the same N files come from a program (a `for` over iter.range(N)) instead, and one
of them depends on a file the program reads (os.readfile): the time is from that file's change
to the resource's file on disk, through the function graph, a new graph of N resources, and the
swap (the language's graph stream). Every other change also adds an edge to that resource (an
`if` on the value: `edge+`), and the next one removes it (`edge-`).

The cost should grow with the size of the change, not with N (target: <= 50 ms for N=10,000).
Each figure is printed with the load average (the machine is shared: compare in one run).

With --replace, the whole graph changes instead: N noops replaced by N others (tester11's #1),
timed from the graph file's rename to the `graph swap:` line and to the new graph's first
pass (every new noop checked once: the agent's /metrics, polled every 50 ms), beside a fresh
start of N (to its `converged:` line); and the longest the agent took to answer a request
for a static file on its status socket (a probe every 10 ms: an upper bound of the loop's
longest step) from the rename to 1 s after that end; the agent's RSS before and then. `--base DIR` runs another checkout alternately.

    .venv/bin/python bench/swap.py [--sizes 1000 10000] [--count 20]
    .venv/bin/python bench/swap.py --replace [--sizes 20000] [--count 3] [--base DIR]
    .venv/bin/python bench/swap.py --cpu [--sizes 10000 100000] [--count 3] [--base DIR]
    .venv/bin/python bench/swap.py --yaml-cpu [--sizes 10000 100000] [--count 3] [--base DIR]
    .venv/bin/python bench/swap.py --output-cpu [--sizes 10000 100000] [--count 3] [--base DIR]

The one-resource changes say, beside each figure, the longest the agent took to answer a probe
of its status socket meanwhile (every 10 ms: an upper bound of the loop's longest step, with
the machine's scheduling in it), the CPU the agent's threads used from the write to its swap's
line (the probes' answers in it: `agent CPU`), and the time of a `GET /api/status` (`status`); `--after S`
then makes one more edit and says the longest answer in the S seconds after it. `--base DIR`
runs them in another checkout too, after this one. With --cpu, the same changes are made in
one process (bench/swap_cpu.py: an engine with the agent's listeners, the graphs derived as the
front-ends derive them), timed in CPU: the apply's, and the loop's longest step; with
--prepare-cpu, the small changes that prepared the whole graph again (a file moved, one added in
a managed directory, semaphores, grouped resources, automatic edges off: bench/prepare_cpu.py),
timed so. With
--yaml-cpu, the graph file front-end's part of the same changes (bench/yaml_cpu.py): the
file's read, what tells an edit from a touch, the reparse and its derive, in CPU; with
--output-cpu, the language's (bench/output_cpu.py: `source.Output.build` of an output whose
one statement changed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from common import (
    MGMT,
    ROOT,
    Parser,
    base_launcher,
    checkout,
    files_graph,
    fmt_ms,
    one_changes,
    one_file,
    percentiles,
    run_script,
    seconds,
    terminate,
    whole,
)

sys.path.insert(0, str(ROOT))
from engine.watcher import PathWatcher

Done = Callable[[int], Awaitable[None]]  # given the swaps logged before the change


def has(path: Path, content: str) -> bool:
    try:
        return path.read_text() == content
    except OSError:
        return False


async def until(watcher: PathWatcher, path: Path, content: str) -> None:
    async with asyncio.timeout(120):
        if has(path, content):
            return
        async for _ in watcher:
            if has(path, content):
                return


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.rename(tmp, path)


class Daemon:
    """`mgmt run` on a graph file; its log lines counted as they come (stderr drained)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.swaps = 0
        self.swapped = asyncio.Event()
        self.converged = asyncio.Event()

    async def read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            if b"converged: all" in raw:
                self.converged.set()
            if b"graph swap:" in raw:
                self.swaps += 1
                self.swapped.set()

    async def next_swap(self, seen: int) -> None:
        async with asyncio.timeout(120):
            while self.swaps <= seen:
                self.swapped.clear()
                await self.swapped.wait()


class Prober:
    """Asks the agent for a static file on its status socket every 10 ms: how long each answer
    took is an upper bound of the loop's longest step meanwhile (`longest`)."""

    def __init__(self, sock: Path) -> None:
        self.sock = sock
        self.answers: list[tuple[float, float]] = []  # (when asked, seconds to the answer)

    async def run(self) -> None:
        while True:
            asked = time.perf_counter()
            self.answers.append((asked, await ask(self.sock)))
            await asyncio.sleep(0.01)

    def longest(self, begin: float, end: float) -> float:
        """The longest answer of a probe that overlapped [begin, end]."""
        return max((w for a, w in self.answers if begin <= a + w and a <= end), default=0.0)


async def get(sock: Path, path: str) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(sock))
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: mgmt\r\n\r\n".encode())
        return await reader.read()
    finally:
        writer.close()


async def one(count: int, rounds: int, name: str, mgmt: list[str], after: float) -> None:
    work = Path(tempfile.mkdtemp(prefix="mgmt-bench-swap-"))
    graph, files, prefix = work / "graph.yaml", work / "files", work / "prefix"
    mid = count // 2
    edges = "edges:\n  - {name: e, from: {kind: file, name: f0}, to: {kind: file, name: f1}}\n"
    base = files_graph(files, count) + edges
    graph.write_text(base)
    target, old = files / f"f{mid}", one_file(f"f{mid}", files / f"f{mid}", f"file number {mid}\n")
    proc = await asyncio.create_subprocess_exec(
        *mgmt, "run", "--prefix", str(prefix), "yaml", str(graph), stderr=asyncio.subprocess.PIPE
    )
    daemon = Daemon(proc)
    figures = Figures()
    prober = Prober(prefix / "status.sock")
    quiet = 0.0
    try:
        async with asyncio.TaskGroup() as group:
            reader = group.create_task(daemon.read())
            async with asyncio.timeout(1800):
                await daemon.converged.wait()
            probing = group.create_task(prober.run())
            async with PathWatcher([target, files / "added", files / "renamed"]) as watcher:

                async def step(kind: str, text: str, done: Done) -> None:
                    seen, used, start = daemon.swaps, cpu_of(proc.pid), time.perf_counter()
                    await asyncio.to_thread(write_atomically, graph, text)
                    await done(seen)
                    took = time.perf_counter() - start
                    await daemon.next_swap(seen)  # settled before the next step
                    longest = prober.longest(start, time.perf_counter())
                    figures.add(kind, took, longest, cpu_of(proc.pid) - used)

                def on_disk(path: Path, content: str) -> Done:
                    return lambda _seen: until(watcher, path, content)

                for i in range(rounds):
                    await edit_round(
                        i,
                        count,
                        files=files,
                        base=base,
                        step=step,
                        on_disk=on_disk,
                        next_swap=daemon.next_swap,
                    )
                    start, used = time.perf_counter(), cpu_of(proc.pid)
                    await get(prefix / "status.sock", "/api/status")
                    took, end = time.perf_counter() - start, time.perf_counter()
                    figures.add("status", took, prober.longest(start, end), cpu_of(proc.pid) - used)
                if after:  # one more edit, then the loop's longest step for `after` seconds
                    edited = base.replace(old, one_file(f"f{mid}", target, "after\n"))
                    start = time.perf_counter()
                    await step("edit", edited, on_disk(target, "after\n"))
                    await asyncio.sleep(after)
                    quiet = prober.longest(start, time.perf_counter())
            probing.cancel()
            reader.cancel()
    finally:
        await terminate([proc])
        shutil.rmtree(work, ignore_errors=True)
    figures.say(f"N={count:6d} {name}")
    if after:
        print(
            f"N={count:6d} {name}, the loop's longest step (status socket probe) from an edit "
            f"to {after:.0f} s after it: {quiet * 1000:.0f} ms  (load {os.getloadavg()[0]:.1f})"
        )


class Figures:
    """Per change: its times to done, the longest probe answers, the agent's CPU."""

    KINDS = ("edit", "add", "remove", "rename", "edge+", "edge-", "status")

    def __init__(self) -> None:
        self.took: dict[str, list[float]] = {kind: [] for kind in self.KINDS}
        self.longest: dict[str, list[float]] = {kind: [] for kind in self.KINDS}
        self.cpu: dict[str, list[float]] = {kind: [] for kind in self.KINDS}

    def add(self, kind: str, took: float, longest: float, cpu: float) -> None:
        self.took[kind].append(took)
        self.longest[kind].append(longest)
        self.cpu[kind].append(cpu)

    def cpu_p50(self, kind: str) -> str:
        """The agent's CPU, p50 of the changes during which none of its threads ended (one
        that did took its time along: cpu_of)."""
        whole = [cpu for cpu in self.cpu[kind] if cpu >= 0]
        return f"{statistics.median(whole) * 1000:.1f} ms" if whole else "n/a"

    def say(self, what: str) -> None:
        for kind, values in self.took.items():
            print(
                f"{what}, {kind:6s} one resource x{len(values)}: {fmt_ms(percentiles(values))}"
                f"  longest answer {max(self.longest[kind]) * 1000:.0f} ms"
                f"  agent CPU p50 {self.cpu_p50(kind)}"
                f"  (load {os.getloadavg()[0]:.1f})"
            )


def cpu_of(pid: int) -> float:
    """The CPU seconds the threads of process `pid` ran so far (their schedstat: ns, not
    the 10 ms ticks of /proc/PID/stat); a thread that ended since is not counted (a difference
    may then be negative)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):  # (ended since listed)
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


async def edit_round(
    i: int,
    count: int,
    *,
    files: Path,
    base: str,
    step: Callable[[str, str, Done], Awaitable[None]],
    on_disk: Callable[[Path, str], Done],
    next_swap: Done,
) -> None:
    """Round `i` of the one-resource changes of files_graph(files, count) (`base`)."""
    for kind, text, shown, content in one_changes(i, count, files, base):
        await step(kind, text, next_swap if shown is None else on_disk(shown, content))


async def edits(sizes: list[int], rounds: int, base: Path | None, after: float) -> None:
    """The one-resource changes at each size, this tree then `base` (if given), alternately."""
    with tempfile.TemporaryDirectory(prefix="mgmt-bench-swap-") as where:
        trees = [("this", MGMT)]
        if base is not None:
            base = checkout(base, "--base")
            trees.append(("BASE", base_launcher(base, Path(where) / "mgmt-base")))
            print(f"BASE: {base}")
        for count in sizes:
            for name, mgmt in trees:
                await one(count, rounds, name, mgmt, after)


PROGRAM = """
import "fmt"
import "iter"
import "os"
$value = os.readfile("{input}")
for $i, $n in iter.range({count}) {{
	file fmt.printf("{files}/f%d", $n) {{
		content => if $n == {mid} {{ "seen ${{value}}" }} else {{ fmt.printf("file %d", $n) }},
	}}
}}
noop "anchor" {{}}
if len($value) > 5 {{
	Noop["anchor"] -> File["{files}/f{mid}"]
}}
"""
# The values written, round i: a value change only, one that adds the edge, one that removes it.
STEPS = (("value", "{i}"), ("edge+", "edge-{i}"), ("edge-", "{i}-"))


async def lang(count: int, rounds: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="mgmt-bench-swap-"))
    files, source, program = work / "files", work / "input", work / "main.mcl"
    source.write_text("0")
    mid = count // 2
    target = files / f"f{mid}"
    program.write_text(PROGRAM.format(input=source, count=count, files=files, mid=mid))
    proc = await asyncio.create_subprocess_exec(
        *MGMT, "run", "--tmp-prefix", "lang", str(program), stderr=asyncio.subprocess.PIPE
    )
    daemon = Daemon(proc)
    samples: dict[str, list[float]] = {kind: [] for kind, _ in STEPS}
    try:
        async with asyncio.TaskGroup() as group:
            reader = group.create_task(daemon.read())
            async with asyncio.timeout(600):
                await daemon.converged.wait()
            async with PathWatcher([target]) as watcher:
                for i in range(1, rounds + 1):
                    for kind, pattern in STEPS:
                        value = pattern.format(i=i)
                        seen = daemon.swaps
                        start = time.perf_counter()
                        await asyncio.to_thread(write_atomically, source, value)
                        await until(watcher, target, f"seen {value}")
                        samples[kind].append(time.perf_counter() - start)
                        await daemon.next_swap(seen)
            reader.cancel()
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    for kind, values in samples.items():
        print(
            f"N={count:6d}, lang {kind:6s} x{len(values)}: {fmt_ms(percentiles(values))}"
            f"  (load {os.getloadavg()[0]:.1f})"
        )


def noops(count: int, prefix: str) -> str:
    return "graph: big\nresources:\n  noop:\n" + "".join(
        f"    - name: {prefix}{i}\n" for i in range(count)
    )


async def ask(sock: Path) -> float:
    """Seconds the agent took to answer a GET of a static file on its status socket."""
    start = time.perf_counter()
    await get(sock, "/favicon.svg")
    return time.perf_counter() - start


def checked(port: int) -> float:
    """The agent's check_applies so far (its /metrics), blocking: run in a thread."""
    with socket.create_connection(("127.0.0.1", port), timeout=600) as conn:  # a wedged loop
        conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data = b"".join(iter(lambda: conn.recv(65536), b""))
    found = re.findall(rb"^mgmt_checkapply_total\{[^}]*\} (\S+)$", data, re.M)
    return sum(float(value) for value in found)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def until_checked(port: int, total: int) -> None:
    """Poll the agent's /metrics every 50 ms until it made `total` check_applies (600 s)."""
    bound = time.monotonic() + 600
    while checked(port) < total:
        if time.monotonic() > bound:
            raise TimeoutError(f"fewer than {total} check_applies after 600 s")
        time.sleep(0.05)


async def replace_one(count: int, tree: Path) -> str:
    work = Path(tempfile.mkdtemp(prefix="mgmt-bench-replace-"))
    graph, prefix = work / "graph.yaml", work / "prefix"
    graph.write_text(noops(count, "a"))
    with socket.socket() as probe_port:
        probe_port.bind(("127.0.0.1", 0))
        port = probe_port.getsockname()[1]
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "mgmt", "run", "--prefix", str(prefix)],
        *["--prometheus", "--prometheus-listen", f"127.0.0.1:{port}", "yaml", str(graph)],
        stderr=asyncio.subprocess.PIPE,
        cwd=tree,  # `python -m mgmt` imports the mgmt of its directory
    )
    daemon = Daemon(proc)
    prober = Prober(prefix / "status.sock")

    try:
        async with asyncio.TaskGroup() as group:
            reader = group.create_task(daemon.read())
            async with asyncio.timeout(600):
                await daemon.converged.wait()
            started = time.perf_counter() - start
            probing = group.create_task(prober.run())
            await asyncio.sleep(1)  # its first pass's end (its heap frozen...) is not timed
            before = rss_mib(proc.pid)
            begin = time.perf_counter()
            await asyncio.to_thread(write_atomically, graph, noops(count, "b"))
            await daemon.next_swap(0)
            swapped = time.perf_counter() - begin
            await asyncio.to_thread(until_checked, port, 2 * count)
            done = time.perf_counter() - begin
            await asyncio.sleep(1)  # what follows the first pass (its freeze, convergence)
            after = rss_mib(proc.pid)
            probing.cancel()
            reader.cancel()
    finally:
        await terminate([proc])
        shutil.rmtree(work, ignore_errors=True)
    end = begin + done + 1
    during = [wait for asked, wait in prober.answers if begin <= asked + wait and asked <= end]
    return (
        f"fresh start {started:.2f}s  replace: `graph swap:` {swapped:.2f}s, first pass "
        f"{done:.2f}s, longest answer {max(during, default=0) * 1000:.0f} ms "
        f"({len(during)} probes), RSS {before:.0f} -> {after:.0f} MiB"
    )


async def replace(sizes: list[int], rounds: int, base: Path | None) -> None:
    trees = [("this", ROOT)]
    if base is not None:
        trees.append(("BASE", checkout(base, "--base")))
        print(f"BASE: {trees[1][1]}")
    for count in sizes:
        for _ in range(rounds):
            for name, tree in trees:  # interleaved: the machine's load moves
                figures = await replace_one(count, tree)
                load = os.getloadavg()[0]
                print(f"N={count:6d} {name}: {figures}  (load {load:.1f})", flush=True)


async def cpu(sizes: list[int], rounds: int, base: Path | None, script_name: str) -> None:
    """bench/`script_name` (swap_cpu.py, yaml_cpu.py) in this tree and `base` (if given),
    alternately, at each size."""
    trees = [("this", ROOT)]
    if base is not None:
        trees.append(("BASE", checkout(base, "--base")))
    script = Path(__file__).with_name(script_name)
    for count in sizes:
        for name, tree in trees:
            proc = await asyncio.create_subprocess_exec(
                *[sys.executable, str(script), str(tree), str(count), str(rounds)],
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await proc.communicate()
            if proc.returncode:
                sys.exit(f"{script} in {tree}: exit {proc.returncode}")
            load = os.getloadavg()[0]
            for line in out.decode().splitlines():
                print(f"{name}: {line}  (load {load:.1f})", flush=True)


async def main() -> None:
    parser = Parser()
    parser.add_argument("--sizes", type=whole(2), nargs="+", default=[1000, 10000])
    parser.add_argument("--count", type=whole(1), default=20, help="rounds of the four changes")
    parser.add_argument("--lang", action="store_true", help="from a program instead")
    parser.add_argument("--replace", action="store_true", help="the whole graph replaced")
    parser.add_argument("--cpu", action="store_true", help="in one process, in CPU time")
    parser.add_argument(
        "--yaml-cpu", action="store_true", help="the graph file front-end's stages, in CPU time"
    )
    parser.add_argument(
        "--output-cpu", action="store_true", help="the language's Output.build, in CPU time"
    )
    parser.add_argument(
        "--prepare-cpu",
        action="store_true",
        help="a change that prepares the whole graph again, in one process, in CPU time",
    )
    parser.add_argument("--base", type=Path, help="another checkout, alternately (not --lang)")
    parser.add_argument(
        "--after",
        type=seconds,
        default=0,
        help="then the loop's longest step this long after an edit",
    )
    args = parser.parse_args()
    scripts = {
        "yaml_cpu": "yaml_cpu.py",
        "output_cpu": "output_cpu.py",
        "cpu": "swap_cpu.py",
        "prepare_cpu": "prepare_cpu.py",
    }
    for flag, script in scripts.items():
        if getattr(args, flag):
            await cpu(args.sizes, args.count, args.base, script)
            return
    if args.replace:
        await replace(args.sizes, args.count, args.base)
        return
    if not args.lang:
        await edits(args.sizes, args.count, args.base, args.after)
        return
    for count in args.sizes:
        await lang(count, args.count)


if __name__ == "__main__":
    run_script(main)
