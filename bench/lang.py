"""The language: compile + type-check time of a ~500-line program, and the time from an input
event (a file read by os.readfile changes) to the new graph applied (the output file written by
the engine), measured with inotify in this process against a running `mgmt run lang` daemon;
the CPU the datetime demo uses while idle between its once-a-second updates; and the same event
-> applied time in a program of --stream resources (a `for` over iter.range: bench/swap.py's
--lang figure, the language's graph stream at scale).

Targets: compile <= 100 ms; event to applied <= 5 ms (small program), <= 50 ms at 10,000.

    .venv/bin/python bench/lang.py [--count 200] [--stream 10000] [--rounds 10]

`--unrolled N [N ...]` measures big programs instead (issue 16): `mgmt check FILE` and `mgmt run
--noop --tmp-prefix --converged-timeout=0 lang FILE` (`--no-run`: check only) of N one-line
`file` resources written out (`unrolled`, as a generator from an inventory writes them) and of
the same N made by a `for` over a list of N names (`loop`) (`--graph`: also `mgmt check
--graph FILE`, which prints the first graph), each a whole process: its wall
time, its CPU (user + system, os.wait4's) and its peak RSS, the median of `--repeat` runs (each
round runs every side once, interleaved); with `--base DIR` the same through DIR (started as
this tree is: `common.base_launcher`), side by side. Nothing is written (--noop).

    .venv/bin/python bench/lang.py --unrolled 1000 5000 25000 [--repeat 3] [--base DIR] [--no-run]
        [--graph]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import swap
from common import (
    MGMT,
    ROOT,
    base_launcher,
    checkout,
    fmt_ms,
    percentiles,
    run_script,
    terminate,
)

sys.path.insert(0, str(ROOT))
from engine.watcher import PathWatcher


def big_program(blocks: int = 25) -> str:
    """About 20 lines per block: bindings in scrambled order, lambdas, ifs, resources."""
    out = ['import "fmt"', 'import "strings"', 'import "iter"', 'import "math"', ""]
    for i in range(blocks):
        out += [
            f'$label{i} = strings.to_upper($name{i}) + fmt.printf("-%d", $count{i})',
            f'$name{i} = "service{i}"',
            f"$count{i} = math.mod({i} * 7 + 3, 5) + len($ports{i})",
            f"$ports{i} = iter.map([80, 443, {8000 + i}], func($p) {{ $p + {i} }})",
            f"$double{i} = func($x) {{ $x * 2 }}",
            f"$config{i} = struct{{name => $name{i}, count => $double{i}($count{i}), on => $count{i} > 2}}",
            f'$text{i} = if $config{i}->on {{ "enabled" }} else {{ "disabled" }}',
            f"if $config{i}->count > 3 {{",
            f'\tfile "/tmp/mgmt-bench/{i}/big" {{',
            f'\t\tcontent => fmt.printf("%s %v\\n", $label{i}, $ports{i}),',
            '\t\tmode => "0644",',
            "\t\tMeta:retry => 3,",
            "\t}",
            "} else {",
            f'\tfile "/tmp/mgmt-bench/{i}/small" {{ content => "${{text{i}}}\\n", }}',
            "}",
            f'noop "n{i}" {{ comment => $text{i}, Depend => File["/tmp/mgmt-bench/{i}/x"], }}',
            f'file "/tmp/mgmt-bench/{i}/x" {{ state => "exists", }}',
            f'Noop["n{i}"] -> Noop["m{i}"]',
            f'noop "m{i}" {{}}',
        ]
    return "\n".join(out) + "\n"


def bench_compile(runs: int) -> None:
    from mgmt.lang import compile_text
    from mgmt.lang.parser import warm

    start = time.perf_counter()
    warm()
    tables = time.perf_counter() - start
    text = big_program()
    lines = text.count("\n")
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        compile_text(text, "big.mcl")
        samples.append(time.perf_counter() - start)
    print(
        f"compile + type-check, {lines} lines, {runs} runs: "
        + fmt_ms(percentiles(samples))
        + f"  min={min(samples) * 1000:.2f}ms"
    )
    print(f"  parser tables (once per process, from mgmt/lang/_tables.py): {tables * 1000:.1f} ms")


PROGRAM = """
import "os"
$value = os.readfile("{input}")
file "{output}" {{
	state => "exists",
	content => "seen ${{value}}",
}}
noop "steady" {{}}
"""


async def bench_latency(count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="mgmt-bench-lang-") as tmp:
        root = Path(tmp)
        source, output, program = root / "input", root / "output", root / "main.mcl"
        source.write_text("0")
        program.write_text(PROGRAM.format(input=source, output=output))
        proc = await asyncio.create_subprocess_exec(
            *MGMT,
            "run",
            "--tmp-prefix",
            "lang",
            str(program),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        samples: list[float] = []
        try:
            async with PathWatcher([output]) as watcher:
                async with asyncio.timeout(20):
                    while not (output.exists() and output.read_text() == "seen 0"):
                        await anext(aiter(watcher))
                for i in range(1, count + 1):
                    want = f"seen {i}"
                    start = time.perf_counter()
                    source.write_text(str(i))
                    async with asyncio.timeout(10):
                        async for _ in watcher:
                            try:
                                if output.read_text() == want:
                                    break
                            except OSError:
                                continue
                    samples.append(time.perf_counter() - start)
        finally:
            await terminate([proc])
    print(f"event -> applied ({count}x): " + fmt_ms(percentiles(samples)))


async def bench_idle_cpu(seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="mgmt-bench-lang-") as tmp:
        env = {**os.environ, "MGMT_DEMO_DIR": tmp}
        proc = await asyncio.create_subprocess_exec(
            *MGMT,
            "run",
            "--tmp-prefix",
            "lang",
            str(ROOT / "examples/datetime.mcl"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env=env,
        )
        try:
            out = Path(tmp) / "datetime"
            async with asyncio.timeout(20), PathWatcher([out]) as watcher:
                while not out.exists():
                    await anext(aiter(watcher))
            before = _cpu(proc.pid)
            await asyncio.sleep(seconds)  # measuring an interval, not synchronising
            used = _cpu(proc.pid) - before
        finally:
            await terminate([proc])
    print(
        f"datetime demo: {used:.3f} s CPU over {seconds:.0f} s "
        f"({used / seconds * 100:.2f}% of a core, {seconds:.0f} updates)"
    )


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scale_program(count: int, shape: str, out: Path) -> str:
    """N `file` resources (under `out`, never written: the runs are --noop): one statement
    each (`unrolled`), or one statement in a `for` over a list of the N names (`loop`)."""
    if shape == "unrolled":
        return "".join(
            f'file "{out}/f{i}" {{ state => "exists", content => "hello {i}\\n", mode => "0644", }}\n'
            for i in range(count)
        )
    names = ", ".join(f'"f{i}"' for i in range(count))
    return (
        f"$names = [{names}]\n"
        "for $i, $n in $names {\n"
        f'\tfile "{out}/${{n}}" {{ state => "exists", content => "hello ${{n}}\\n", '
        'mode => "0644", }\n}\n'
    )


def measured(argv: list[str]) -> tuple[float, float, int]:
    """One process to its end (its exit code must be 0): wall s, CPU s, peak RSS KiB."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()  # (a run's log: read as it comes, so the pipe never fills)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"{' '.join(argv)}: exit {proc.returncode}: {err.decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def bench_unrolled(
    counts: list[int], repeat: int, base: Path | None, run: bool, graph: bool = False
) -> None:
    with tempfile.TemporaryDirectory(prefix="mgmt-bench-lang-") as tmp:
        work = Path(tmp)
        sides = {"this": MGMT}
        if base is not None:
            sides["base"] = base_launcher(base, work / "base-mgmt")
        commands = {"check": ["check"]}
        if graph:
            commands["graph"] = ["check", "--graph"]
        if run:
            commands["run"] = ["run", "--noop", "--tmp-prefix", "--converged-timeout=0", "lang"]
        env_size = str(64 << 20)  # (--max-graph-size: 16 MiB by default, 2.4 MB at 25,000)
        os.environ["MGMT_MAX_GRAPH_SIZE"] = env_size
        print(f"load before: {os.getloadavg()[0]:.1f}")
        for count in counts:
            for shape in ("unrolled", "loop"):
                program = work / f"{shape}{count}.mcl"
                program.write_text(scale_program(count, shape, work / "never"))
                size = program.stat().st_size
                for name, command in commands.items():
                    samples: dict[str, list[tuple[float, float, int]]] = {s: [] for s in sides}
                    for _ in range(repeat):
                        for side, start in sides.items():
                            samples[side].append(measured([*start, *command, str(program)]))
                    shown = []
                    for side, got in samples.items():
                        wall = statistics.median(s[0] for s in got)
                        cpu = statistics.median(s[1] for s in got)
                        rss = max(s[2] for s in got) / 1024
                        shown.append(f"{side} {wall:6.2f} s wall {cpu:6.2f} s CPU {rss:5.0f} MiB")
                    print(
                        f"{shape:8} {count:6} ({size / 1e6:.2f} MB) {name:5}: "
                        + "  |  ".join(shown)
                    )
        print(f"load after: {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--stream", type=int, default=10000, help="resources (0: skip)")
    parser.add_argument("--rounds", type=int, default=10, help="events x3 at --stream")
    parser.add_argument("--unrolled", type=int, nargs="+", metavar="N", help="big programs only")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, at --unrolled")
    parser.add_argument("--base", type=Path, help="another checkout, at --unrolled")
    parser.add_argument("--no-run", action="store_true", help="mgmt check only, at --unrolled")
    parser.add_argument("--graph", action="store_true", help="and check --graph, at --unrolled")
    args = parser.parse_args()
    if args.unrolled:
        base = checkout(args.base, "--base") if args.base is not None else None
        bench_unrolled(args.unrolled, args.repeat, base, not args.no_run, args.graph)
        return
    bench_compile(args.runs)
    asyncio.run(bench_latency(args.count))
    asyncio.run(bench_idle_cpu(10))
    if args.stream:
        asyncio.run(swap.lang(args.stream, args.rounds))
    print(
        "targets: compile <= 100 ms, event -> applied <= 5 ms, <= 50 ms at 10,000",
        file=sys.stderr,
    )


if __name__ == "__main__":
    run_script(main)
