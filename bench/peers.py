"""The same N files with this project and with the peer tools installed here (salt-call --local,
puppet apply, pyinfra @local), whole-process wall time: a first run (the files absent) and a
no-op run (all in place), the tools interleaved round by round; medians and ratios printed.

A tool that is not installed is skipped, and the output says so. Each tool writes its own
directory. This project fsyncs every file it writes; the peers do not. Before each first run
the tool's last files are moved aside, not deleted (all are deleted at the end); with
`--delete-between` they are deleted right before it, as this script did before 2026-12-04 (see
`common.make_absent`: on this machine that costs every tool ~O(N) more system CPU per new file).

salt-call and pyinfra are looked up on PATH, then in `.bench-peers/bin/` of this checkout: a
scratch venv for the benchmark only (not a dependency of the project). Make it on the
interpreter this tree's .venv is built on, so that both sides of a ratio run on the same
Python (Debian's optimized build runs salt-call 5% and this tree's start 12-15% faster than
pyenv's default build: docs/benchmarks.md, "The interpreter"):

    $(.venv/bin/python -c 'import sys; print(sys._base_executable)') -m venv .bench-peers
    .bench-peers/bin/pip install salt pyinfra

The interpreter of each Python tool (this tree, BASE, salt-call, pyinfra) is printed first, and
one line warns of each that differs from this tree's. BASE without a .venv of its own runs on
the interpreter that runs this script (`common.base_launcher`).

`--base DIR` adds another checkout of this project, started as this tree is: through a copy
of this tree's `.venv/bin/mgmt` launcher made for DIR (`common.base_launcher`: Python with
`-SP`, DIR's .venv or this one's for a byte-compiled `git archive`); until 2026-12-05 it ran as
`python -m mgmt` in DIR (with `site` and runpy, which the launcher skips), as bench/cron.py
still does.

Each round also measures the kernel's floor (`floor`): the same N files made durable by a bare
loop in this process, no tool's Python (8 threads: an O_TMPFILE open, write, fchmod, fsync and
link each, as this project writes a file), first in the round, in its own directory moved aside
like the tools'. Its system CPU moves with the file system's recent history (ext4's scan of
recently freed inodes, see `make_absent`) from one round to the next: each round's line prints
it beside the first runs' wall and CPU (user + system, the child's), so a slow first run can be
told from a slow kernel (docs/benchmarks.md, "Reading peers.py's floor").

`--update`: the runs timed are updates, not first runs: before each, the tool's directory
holds the N files with other content (`OLD`, mode 0644; written by a bare loop, then the file
system synced, untimed: files written long ago), and the tool rewrites each (a template edit).
No no-op run. The floor then replaces N existing files as this project does (a new inode
written, fchmod'ed and fsynced, linked at a temp name, renamed over the old: whose inode is
freed), in its own directory prepared the same way.

`--busy N`: N busy-loop processes (nice 0, `common.busy_loops`) run beside every run of every
tool and the floor, all rounds long: the figure "with other work running" (issue 16), made
repeatable. On this 2-core machine `--busy 2` keeps both cores busy: each tool's threads and
child processes then wait for a core at each wake-up. The script starts the loops before the
first round and kills them after the last, on an error, Ctrl-C or SIGTERM too; the kernel
kills them if the script is killed (PR_SET_PDEATHSIG). The summary line says the load and
the loops.

`--control`: after each tool's no-op run (its update run with `--update`), a process that
only burns CPU (`BURN`: a Python loop on this script's interpreter, no I/O, one thread) until
its own CPU time equals that run's (user + system), timed the same way beside the same busy
loops. Each tool's summary line then says its wall over its CPU beside its control's: where the
two match, the run lost to the others what any process of that much CPU loses on this kernel,
no wait of its own. (Beside two busy loops on two cores, a 60 ms process shares the core it
lands on with one loop, ~2x its CPU; a ~1 s one is moved between the cores: ~1.5x.)

    .venv/bin/python bench/peers.py [--count 100] [--rounds 5] [--base DIR] [--delete-between]
        [--update] [--busy N] [--control]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ctypes
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import (
    MGMT,
    ROOT,
    Parser,
    base_launcher,
    busy_loops,
    checkout,
    files_graph,
    make_absent,
    run_child,
    run_script,
    whole,
)

Setup = Callable[[Path, Path, int], list[str]]  # (work dir, output dir, count) -> argv
Run = tuple[list[str], Path, Path]  # a tool's argv, its cwd and its output directory
Figures = tuple[float, float, float]  # wall, user and system CPU seconds


def mgmt(work: Path, out: Path, count: int) -> list[str]:
    graph = work / "graph.yaml"
    graph.write_text(files_graph(out, count))
    return [*MGMT, "run", "--converged-timeout=0", "--tmp-prefix", "--no-watch", "yaml", str(graph)]


def salt(work: Path, out: Path, count: int) -> list[str]:
    (work / "states").mkdir()
    lines = [f"{out}:\n  file.directory: []\n"]
    lines += [
        f'{out}/f{i}:\n  file.managed:\n    - contents: "file number {i}"\n' for i in range(count)
    ]
    (work / "states" / "files.sls").write_text("".join(lines))
    (work / "minion").write_text(
        f"file_client: local\nfile_roots:\n  base: [{work / 'states'}]\n"
        f"cachedir: {work / 'cache'}\npki_dir: {work / 'pki'}\nlog_file: {work / 'log'}\n"
    )
    return ["salt-call", "--local", f"--config-dir={work}", "state.apply", "files"]


def puppet(work: Path, out: Path, count: int) -> list[str]:
    lines = [f"file {{ '{out}': ensure => directory }}\n"]
    lines += [
        f"file {{ '{out}/f{i}': ensure => file, content => \"file number {i}\\n\" }}\n"
        for i in range(count)
    ]
    (work / "site.pp").write_text("".join(lines))
    dirs = [f"--{d}dir={work / d}" for d in ("conf", "var", "code", "log", "run")]
    return ["puppet", "apply", *dirs, str(work / "site.pp")]


def pyinfra(work: Path, out: Path, count: int) -> list[str]:
    lines = ["from pyinfra.operations import files\n", f"files.directory(path={str(out)!r})\n"]
    lines += [
        f"files.put(src=io.StringIO('file number {i}\\n'), dest={str(out)!r} + '/f{i}')\n"
        for i in range(count)
    ]
    (work / "deploy.py").write_text("import io\n" + "".join(lines))
    return ["pyinfra", "-y", "@local", str(work / "deploy.py")]


TOOLS: dict[str, tuple[str, Setup]] = {
    "mgmt": ("", mgmt),
    "salt-call --local": ("salt-call", salt),
    "puppet apply": ("puppet", puppet),
    "pyinfra @local": ("pyinfra", pyinfra),
}


def find(binary: str) -> str | None:
    """The tool on PATH, else in the benchmark's scratch venv (see the module doc)."""
    found = shutil.which(binary)
    scratch = ROOT / ".bench-peers" / "bin" / binary
    return found or (str(scratch) if scratch.exists() else None)


TRAMPOLINE = re.compile(r"'''exec' ['\"]?([^'\" ]+)")  # pip's /bin/sh script for a long path
SAY_PYTHON = (
    "import os, platform, sys;"
    " print(platform.python_version(), os.path.realpath(sys._base_executable))"
)


def python_of(program: str) -> str | None:
    """The Python the program runs on (its `#!` line's: a venv's python, `env python3`, pip's
    `/bin/sh` trampoline; or the program itself, an interpreter): its version and the real path
    of the interpreter (a venv's, the one it was made from). None if the program is not a Python
    one (puppet: Ruby) or its Python does not say."""
    with open(program, "rb") as f:
        head = f.read(1024).decode("utf-8", "replace")
    python = program
    if head.startswith("#!"):
        first, _, rest = head[2:].partition("\n")
        words = first.split()
        if words[:1] == ["/bin/sh"]:
            found = TRAMPOLINE.match(rest)
            words = [found.group(1)] if found else []
        elif words and os.path.basename(words[0]) == "env":
            words = [shutil.which(words[1]) or ""] if len(words) > 1 else []
        python = words[0] if words else ""
    if not os.path.basename(python).startswith("python"):
        return None
    said = subprocess.run(
        [python, "-c", SAY_PYTHON], capture_output=True, text=True, timeout=60, check=False
    )
    return said.stdout.strip() if said.returncode == 0 else None


def short(label: str) -> str:
    """A tool's name in a round's line."""
    return "base" if label == "mgmt (base)" else label.split(maxsplit=1)[0]


def interpreters(runs: dict[str, Run]) -> None:
    """Each tool's Python, and a line for each that runs on another than this tree's."""
    pythons = {label: python_of(argv[0]) for label, (argv, _, _) in runs.items()}
    said = [f"{short(label)} {python or '(not Python)'}" for label, python in pythons.items()]
    print("interpreters: " + ", ".join(said))
    for label, python in pythons.items():
        if python is not None and python != pythons["mgmt"]:
            print(f"warning: {label} runs on Python {python}, mgmt on Python {pythons['mgmt']}")


def based(base: Path, launcher: Path) -> Setup:
    """The mgmt setup for the checkout `base`, started as this tree is (through `launcher`,
    made for it: `common.base_launcher`)."""
    start = base_launcher(base, launcher)

    def setup(work: Path, out: Path, count: int) -> list[str]:
        return [*start, *mgmt(work, out, count)[len(MGMT) :]]

    return setup


FLOOR_THREADS = 8  # as this project's I/O threads
_libc = ctypes.CDLL(None, use_errno=True)  # syncfs(2), which os lacks
OLD = b"an older version of file number %d, before the edit\n"  # --update's files before


def syncfs(fd: int, shown: Path) -> None:
    """syncfs(2) of the file system holding the open `fd`."""
    if _libc.syncfs(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(shown))


def prepare(out: Path, count: int) -> None:
    """--update's starting point: the new directory `out` holding the `count` files with other
    content (`OLD`, mode 0644), on disk (its file system synced: files written long ago)."""
    out.mkdir()
    dir_fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i in range(count):
            fd = os.open(f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dir_fd)
            try:
                os.write(fd, OLD % i)
                os.fchmod(fd, 0o644)
            finally:
                os.close(fd)
        syncfs(dir_fd, out)
    finally:
        os.close(dir_fd)


def floor(
    out: Path,
    count: int,
    *,
    grouped: bool = False,
    threads: int = FLOOR_THREADS,
    update: bool = False,
) -> Figures:
    """The kernel's floor: `count` durable files in the new directory `out`, made by a bare loop
    on FLOOR_THREADS threads (or `threads`) as safefs makes a new file (O_TMPFILE, write, fchmod, fsync, link
    through /proc/self/fd). Wall, user and system CPU seconds of this process (the rest of it
    is idle meanwhile). `grouped`: no fsync per file; all are made, then one syncfs(2) of their
    file system, then each is linked (a group commit: bench/fsync_floor.py). `update`: `out`
    holds the files already (`prepare`, untimed); each is replaced as safefs replaces a file
    (the new inode linked at a temp name, renamed over the old one)."""
    flags = os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC
    if update:
        prepare(out, count)
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    if not update:
        out.mkdir()
    dir_fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def make(i: int) -> int:
        fd = os.open(".", flags, 0o600, dir_fd=dir_fd)
        try:
            os.write(fd, b"file number %d\n" % i)
            os.fchmod(fd, 0o644)
            if not grouped:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def link(i: int, fd: int) -> None:
        try:
            if update:
                os.link(f"/proc/self/fd/{fd}", f".tmp{i}", dst_dir_fd=dir_fd)
                os.rename(f".tmp{i}", f"f{i}", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            else:
                os.link(f"/proc/self/fd/{fd}", f"f{i}", dst_dir_fd=dir_fd)
        finally:
            os.close(fd)

    try:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            if grouped:
                fds = list(pool.map(make, range(count)))
                syncfs(dir_fd, out)
                list(pool.map(link, range(count), fds))
            else:
                list(pool.map(lambda i: link(i, make(i)), range(count)))
    finally:
        os.close(dir_fd)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    return wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def interleaved(
    makers: dict[str, Callable[[Path], Figures]], rounds: int, prefix: str
) -> dict[str, list[Figures]]:
    """Each maker called `rounds` times with a new directory to make its files in (all in one
    temporary directory), interleaved, the order reversed every other round; none deleted
    before the end (a delete makes the next run's inodes dearer: `common.make_absent`), all at
    the end. Each maker's figures, in order."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    figures: dict[str, list[Figures]] = {name: [] for name in makers}
    try:
        for round_ in range(rounds):
            for name in makers if round_ % 2 == 0 else reversed(list(makers)):
                out = work / f"r{sum(map(len, figures.values()))}"
                figures[name].append(makers[name](out))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return figures


def medians(runs: list[Figures]) -> Figures:
    """The median wall, user and system CPU of `runs`."""
    wall, user, system = (statistics.median(run[i] for run in runs) for i in range(3))
    return wall, user, system


def timed(argv: list[str], cwd: Path) -> Figures:
    """The child's wall, user and system CPU seconds (its own children's included)."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    run_child(argv, cwd)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def one_run(
    label: str, run: Run, count: int, delete: bool, update: bool
) -> tuple[Figures, Figures | None]:
    """A tool's first run, its output made absent before, then its no-op run; `update`: its
    update run, its output holding other content before (`prepare`), and no no-op run."""
    argv, work, out = run
    make_absent(out, out.parent / "aside", delete)
    if update:
        prepare(out, count)
    first = timed(argv, work)
    made = len(list(out.iterdir())) if out.is_dir() else 0
    if made != count:  # a tool that exits 0 without doing the work
        raise SystemExit(f"{label} made {made} of {count} files: {argv}")
    if update and (out / "f0").read_bytes() == OLD % 0:
        raise SystemExit(f"{label} did not rewrite {out / 'f0'}: {argv}")
    return first, None if update else timed(argv, work)


# `--control`'s process: CPU only, until its own CPU time (the interpreter's start included)
# reaches argv[1] seconds; the clock read every ~20 us of loop.
BURN = (
    "import sys, time\n"
    "target, clock = float(sys.argv[1]), time.process_time\n"
    "while clock() < target:\n"
    "    for _ in range(1000): pass\n"
)


def control(figures: Figures) -> Figures:
    """A process burning as much CPU as the run `figures` (user + system), timed as a tool."""
    _, user, system = figures
    return timed([sys.executable, "-S", "-c", BURN, f"{user + system:.6f}"], ROOT)


def stretch(runs: list[Figures]) -> float:
    """The median of the runs' wall over their CPU (user + system)."""
    return statistics.median(wall / max(user + system, 1e-9) for wall, user, system in runs)


def cpu(figures: Figures) -> str:
    """A run's wall and CPU, as a round's line prints them."""
    wall, user, system = figures
    return f"{wall:.3f}s (cpu {user:.3f}+{system:.3f})"


def report(
    first: dict[str, list[float]],
    noop: dict[str, list[float]],
    floors: list[Figures],
    what: str = "first run",
) -> None:
    """The medians of each tool's runs and of the kernel's floor, with their ratios to mgmt's
    (`what`: the runs timed first; no no-op column without no-op runs)."""
    base_first = statistics.median(first["mgmt"])
    for label, firsts in first.items():
        f = statistics.median(firsts)
        line = f"  {label:18s} {what} {f:7.3f}s ({f / base_first:5.1f}x mgmt)"
        if noop[label]:
            n, base_noop = statistics.median(noop[label]), statistics.median(noop["mgmt"])
            line += f"   no-op {n:7.3f}s ({n / base_noop:5.1f}x mgmt)"
        print(line)
    wall, user, system = (statistics.median(f[i] for f in floors) for i in range(3))
    print(
        f"  {'kernel floor':18s} {what} {wall:7.3f}s ({wall / base_first:5.1f}x mgmt)"
        f"   cpu user {user:.3f}s system {system:.3f}s (a bare loop, {FLOOR_THREADS} threads)"
    )


def report_controls(
    timed_runs: dict[str, list[Figures]], controls: dict[str, list[Figures]]
) -> None:
    """Each tool's wall over CPU beside its control's (`--control`)."""
    print("wall over CPU, each run's and its control's (a process burning as much CPU, no I/O):")
    for label, runs in timed_runs.items():
        cpus = statistics.median(user + system for _, user, system in runs)
        print(
            f"  {label:18s} {stretch(runs):5.2f}x its cpu ({cpus:.3f}s)"
            f"   control {stretch(controls[label]):5.2f}x"
            f" (wall {statistics.median(w for w, _, _ in controls[label]):.3f}s)"
        )


def measure(runs: dict[str, Run], args: argparse.Namespace, floor_out: Path) -> None:
    """The rounds (each: the floor in `floor_out`, then every tool's runs), beside `--busy`
    busy loops; the medians printed."""
    first: dict[str, list[float]] = {label: [] for label in runs}
    noop: dict[str, list[float]] = {label: [] for label in runs}
    floors: list[Figures] = []
    timed_runs: dict[str, list[Figures]] = {label: [] for label in runs}  # `--control`'s
    controls: dict[str, list[Figures]] = {label: [] for label in runs}
    floor_out.parent.mkdir()
    how = "deleted" if args.delete_between else "moved aside"
    what = "update" if args.update else "first run"
    beside = f", beside {args.busy} busy loops" if args.busy else ""
    print(f"{args.count} files; {what}s per round, wall (cpu user+system), the last files {how}:")
    with busy_loops(args.busy):
        for round_ in range(args.rounds):
            make_absent(floor_out, floor_out.parent / "aside", args.delete_between)
            floors.append(floor(floor_out, args.count, update=args.update))
            line = [f"floor {cpu(floors[-1])}"]
            for label, run in runs.items():  # interleaved: A B C, A B C, ...
                timed_first, timed_noop = one_run(
                    label, run, args.count, args.delete_between, args.update
                )
                first[label].append(timed_first[0])
                if timed_noop is not None:
                    noop[label].append(timed_noop[0])
                line.append(f"{short(label)} {cpu(timed_first)}")
                if args.control:  # the no-op run's CPU (else the first or update run's)
                    timed_runs[label].append(timed_noop or timed_first)
                    controls[label].append(control(timed_runs[label][-1]))
                    line[-1] += f" [control {controls[label][-1][0]:.3f}s]"
            print(f"  round {round_ + 1}: " + ", ".join(line), flush=True)
        load = os.getloadavg()[0]  # (before the loops stop)
    print(f"{args.rounds} rounds, load {load:.1f}{beside} (whole process, median):")
    report(first, noop, floors, what)
    if args.control:
        report_controls(timed_runs, controls)


def main() -> None:
    parser = Parser()
    parser.add_argument("--count", type=whole(1), default=100)
    parser.add_argument("--rounds", type=whole(1), default=5)
    parser.add_argument("--base", type=Path, help="another checkout of mgmt, interleaved")
    parser.add_argument(
        "--delete-between",
        action="store_true",
        help="delete each tool's last files right before its first run, not move them aside",
    )
    parser.add_argument(
        "--update",
        action="store_true",
        help="time updates: the files exist with other content before each run (no no-op run)",
    )
    parser.add_argument(
        "--busy", type=whole(0), default=0, help="busy-loop processes running beside every run"
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="after each tool's no-op run, a process burning as much CPU (see the module doc)",
    )
    args = parser.parse_args()
    if args.base is not None:
        args.base = checkout(args.base, "--base")
    root = Path(tempfile.mkdtemp(prefix="mgmt-bench-peers-"))
    runs: dict[str, Run] = {}
    tools = dict(TOOLS)
    if args.base is not None:
        base = ("", based(args.base.resolve(), root / "base-mgmt"))
        tools = {"mgmt": TOOLS["mgmt"], "mgmt (base)": base, **TOOLS}
    for label, (binary, setup) in tools.items():
        path = find(binary) if binary else ""
        if path is None:
            print(f"{label}: not installed here, skipped")
            continue
        work = root / label.split()[0].replace("(", "").replace(")", "") / str(len(runs))
        work.mkdir(parents=True)
        out = work / "out"
        argv = setup(work, out, args.count)
        cwd = args.base if label == "mgmt (base)" else work
        runs[label] = ([path, *argv[1:]] if binary else argv, cwd, out)
    interpreters(runs)
    try:
        measure(runs, args, root / "floor" / "out")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    run_script(main)
