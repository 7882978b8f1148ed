"""Drift repaired while the agent is busy, and a path clash refused at scale (tester17 F2, F6,
F9): a running `mgmt run --prefix P yaml G` agent of N files (each case a fresh agent, on a
fresh directory), timed from outside:

- first-run: once the first file exists, delete it every 0.5 s (after its repair) until the
  first run has converged (its `converged:` line): the time until each deletion is repaired;
- swap: an agent converged with N/2 files is given the N (the other N/2 on disk already:
  they need no change); the file f0, kept, is deleted every 0.2 s from the rename until the
  swap's `converged:` line: each deletion's repair time;
- clash: an agent converged with N files is given the graph with one more file resource of
  f1's path: the time from the rename to the `both manage` line in its log.

A repair is seen by polling the path every 2 ms (a bound of 20 s). `--base DIR` runs each case
with that checkout too, right after this tree's. Each case prints the load average.

    .venv/bin/python bench/busy_drift.py [--count 20000] [--base /tmp/base_y]
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import (
    MGMT,
    Parser,
    base_launcher,
    checkout,
    files_graph,
    fmt_ms,
    percentiles,
    run_script,
    whole,
)

BOUND = 600.0  # seconds: a hang-preventing bound for the agent's steps


def load() -> str:
    return "load " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def write_graph(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.rename(path)


def wait_log(log: Path, needle: str, skip: int = 0) -> float:
    """Poll `log` (from byte `skip`) every 10 ms until `needle` is in it; the time it was seen."""
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        if needle in log.read_text(errors="replace")[skip:]:
            return time.perf_counter()
        time.sleep(0.01)
    raise TimeoutError(f"{needle!r} not in {log} after {BOUND} s")


def repair_time(path: Path) -> float:
    """Delete `path`, then the seconds until it is back (polled every 2 ms)."""
    os.unlink(path)
    start = time.perf_counter()
    deadline = start + 20
    while not path.exists():
        if time.perf_counter() > deadline:
            return float("inf")
        time.sleep(0.002)
    return time.perf_counter() - start


def summary(samples: list[float]) -> str:
    return fmt_ms(percentiles(samples)) if samples else "none"


def probe_until(path: Path, done: Callable[[], bool], pause: float) -> list[float]:
    """Repair times of `path`, deleted every `pause` s until `done()`."""
    samples = []
    while not done():
        samples.append(repair_time(path))
        time.sleep(pause)
    return samples


def swapped(log: Path, skip: int) -> bool:
    """Whether the log, from byte `skip`, has a `graph swap:` line and then `converged:`."""
    text = log.read_text(errors="replace")[skip:]
    return "converged:" in text.partition("graph swap:")[2]


class Agent:
    def __init__(self, mgmt: list[str], work: Path, graph: Path) -> None:
        self.log = work / "agent.log"
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [*mgmt, "run", "--prefix", str(work / "prefix"), "yaml", str(graph)],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    def logged(self, needle: str) -> bool:
        return needle in self.log.read_text(errors="replace")

    def size(self) -> int:
        return self.log.stat().st_size

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def first_run(mgmt: list[str], count: int, work: Path) -> str:
    out = work / "out"
    out.mkdir()
    graph = work / "g.yaml"
    graph.write_text(files_graph(out, count))
    agent = Agent(mgmt, work, graph)
    try:
        first = out / "f0"
        deadline = time.monotonic() + BOUND
        while not first.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        samples = probe_until(first, lambda: agent.logged("converged:"), 0.5)
    finally:
        agent.stop()
    return f"{len(samples)} repairs during the first run: {summary(samples)}"


def swap(mgmt: list[str], count: int, work: Path) -> str:
    out = work / "out"
    out.mkdir()
    for i in range(count):
        (out / f"f{i}").write_text(f"file number {i}\n")
    graph = work / "g.yaml"
    graph.write_text(files_graph(out, count // 2))
    agent = Agent(mgmt, work, graph)
    try:
        wait_log(agent.log, "converged:")
        skip = agent.size()
        write_graph(graph, files_graph(out, count))
        start = time.perf_counter()
        samples = probe_until(out / "f0", lambda: swapped(agent.log, skip), 0.2)
        took = time.perf_counter() - start
    finally:
        agent.stop()
    return (
        f"{len(samples)} repairs of a kept file during the swap ({took:.1f} s): {summary(samples)}"
    )


def clash(mgmt: list[str], count: int, work: Path) -> str:
    out = work / "out"
    out.mkdir()
    graph = work / "g.yaml"
    text = files_graph(out, count)
    graph.write_text(text)
    agent = Agent(mgmt, work, graph)
    try:
        wait_log(agent.log, "converged:")
        skip = agent.size()
        extra = f'    - name: x1\n      path: {out}/f1\n      content: "different\\n"\n'
        start = time.perf_counter()
        write_graph(graph, text + extra)
        seen = wait_log(agent.log, "both manage", skip)
    finally:
        agent.stop()
    return f"refused after {(seen - start) * 1000:.0f} ms"


CASES = {"first-run": first_run, "swap": swap, "clash": clash}


def main() -> None:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=whole(2), default=20000)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--base", type=Path, help="another checkout, run after this tree's")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mgmt-bench-busy-") as where:
        trees = [("this", MGMT)]
        if args.base is not None:
            base = checkout(args.base, "--base")
            trees.append(("BASE", base_launcher(base, Path(where) / "mgmt-base")))
        for case in args.cases:
            for name, mgmt in trees:
                work = Path(tempfile.mkdtemp(prefix=f"{case}-{name}-", dir=where))
                result = CASES[case](mgmt, args.count, work)
                print(f"{case} N={args.count} {name}: {result} ({load()})", flush=True)


if __name__ == "__main__":
    run_script(main)
