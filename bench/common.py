"""Shared helpers for the benchmark scripts (figures are printed, never asserted)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parents[1]
VENV_MGMT = ROOT / ".venv" / "bin" / "mgmt"
MGMT = [str(VENV_MGMT)] if VENV_MGMT.exists() else [sys.executable, "-m", "mgmt"]


class Parser(argparse.ArgumentParser):
    """A script's arguments: a bad one is refused in one line, before anything starts
    (`scale.py: argument --sizes: must be at least 1, not 0`), exit 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message}", file=sys.stderr)
        sys.exit(2)


def whole(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number, at least `low` (a count of 0 ended in a traceback
    after the agents had started, or never ended)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, not {value}")
        return value

    return parse


def seconds(text: str) -> float:
    """An argparse type: a duration, not negative."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:  # (NaN too)
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


# A busy loop (`--busy`): Ctrl-C (the terminal's SIGINT) ends it without a traceback, and so
# does its parent's end, however it ends (PR_SET_PDEATHSIG: SIGKILL once the thread that
# started it is gone; argv[1] is that parent's pid, in case it ended before the prctl).
BUSY = (
    "import ctypes, os, signal, sys\n"
    "signal.signal(signal.SIGINT, signal.SIG_DFL)\n"
    "ctypes.CDLL(None).prctl(1, signal.SIGKILL)\n"
    "if len(sys.argv) > 1 and os.getppid() != int(sys.argv[1]): sys.exit()\n"
    "while True: pass"
)


@contextlib.contextmanager
def busy_loops(count: int) -> Iterator[None]:
    """`count` busy-loop processes (BUSY, nice 0) running while the block runs: each keeps a
    core busy, as other work on the host would. Killed and waited for when the block ends
    (an exception, Ctrl-C, SIGTERM: `run_script`), and by the kernel if this process is
    killed (BUSY's PR_SET_PDEATHSIG)."""
    loops: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            loops.append(subprocess.Popen([sys.executable, "-c", BUSY, str(os.getpid())]))
        yield
    finally:
        for loop in loops:
            loop.kill()
        for loop in loops:
            loop.wait()


def make_absent(out: Path, aside: Path, delete: bool) -> None:
    """`out` absent before a first run: moved into the directory `aside` (made if need be, on
    the same file system), or deleted when `delete`.

    Moving is the default: ext4 without a journal (this machine's root file system) does not
    reuse an inode number freed in the last 60 s (300 s while its inode table block is dirty),
    and each new inode's allocation looks past every such number in its block group, one buffer
    lookup each (kernel `recently_deleted`). Created right after the last run's files were
    deleted, N new files cost O(N^2) lookups: perf of a 1,000-file first run put ~40% of all
    samples there (0.96 s system CPU), 10,000 files ~2.5 s more system CPU; a first run on a
    machine whose files never existed does not pay it. `delete` measures that case."""
    if delete:
        shutil.rmtree(out, ignore_errors=True)
    elif out.exists():
        aside.mkdir(exist_ok=True)
        out.rename(aside / str(len(list(aside.iterdir()))))  # no inode freed


def files_graph(directory: Path, count: int, name: str = "files") -> str:
    """A graph of `count` file resources under `directory`."""
    lines = [f"graph: {name}", "resources:", "  file:"]
    for i in range(count):
        lines += [
            f"    - name: f{i}",
            f"      path: {directory}/f{i}",
            f'      content: "file number {i}\\n"',
        ]
    return "\n".join(lines) + "\n"


def one_file(name: str, path: Path, content: str) -> str:
    """One file resource as files_graph() writes it."""
    escaped = content.replace("\n", "\\n")
    return f'    - name: {name}\n      path: {path}\n      content: "{escaped}"\n'


def one_changes(
    i: int, count: int, files: Path, base: str
) -> list[tuple[str, str, Path | None, str]]:
    """Round `i` of the one-resource changes of `base` (files_graph(files, count) and an
    `edges` list): (kind, the graph file's text, the file that shows it, its content) each,
    there and back: an edit, an add, a remove, a rename, an edge added then removed. No file
    shows a remove, a rename back, or an edge (None: the daemon's swap line does)."""
    mid = count // 2
    target = files / f"f{mid}"
    old = one_file(f"f{mid}", target, f"file number {mid}\n")
    added, renamed = files / "added", files / "renamed"
    edge = f"  - {{from: {{kind: file, name: f{mid - 1}}}, to: {{kind: file, name: f{mid}}}}}\n"
    return [
        (
            "edit",
            base.replace(old, one_file(f"f{mid}", target, f"edit {i}\n")),
            target,
            f"edit {i}\n",
        ),
        ("edit", base, target, f"file number {mid}\n"),
        (
            "add",
            base.replace(old, old + one_file("added", added, f"added {i}\n")),
            added,
            f"added {i}\n",
        ),
        ("remove", base, None, ""),
        (
            "rename",
            base.replace(old, one_file(f"r{mid}", renamed, f"renamed {i}\n")),
            renamed,
            f"renamed {i}\n",
        ),
        ("rename", base, None, ""),  # f{mid} is on disk already
        ("edge+", base + edge, None, ""),
        ("edge-", base, None, ""),
    ]


STOP_GRACE = 10.0  # seconds a child interrupted by Ctrl-C gets to stop before it is killed


class Terminated(KeyboardInterrupt):
    """SIGTERM, taken as a first Ctrl-C (a `kill`, a CI's timeout): what the script started
    is stopped and its files removed all the same."""


def run_script(main: Callable[[], object]) -> None:
    """Run a script's `main` (a function, or a coroutine function). Ctrl-C or SIGTERM stops
    it: its `finally` blocks stop what it started and remove its files, then one line instead
    of a traceback, and exit 130 (143 for SIGTERM). A second Ctrl-C while they run only says
    so (a third leaves them: the processes and files of a half-done teardown)."""
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        result = main()
        if inspect.iscoroutine(result):
            _run_async(result)
    except Terminated:
        print(f"{Path(sys.argv[0]).name}: terminated", file=sys.stderr)
        sys.exit(143)
    except KeyboardInterrupt:
        print(f"{Path(sys.argv[0]).name}: interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM outside an event loop: unwinds as Ctrl-C does; only once (a second SIGTERM
    during the teardown is ignored)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated


def _run_async(main: Coroutine[Any, Any, object]) -> None:
    """asyncio.run(main), with run_script's Ctrl-C: the first cancels `main` (asyncio.run's
    own handler cancels it on the first and raises KeyboardInterrupt on the next, wherever the
    teardown is). SIGTERM is a first Ctrl-C (later ones are ignored)."""
    interrupts = 0
    terminated = False
    task: asyncio.Task[object] | None = None

    async def run() -> object:
        nonlocal task
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        signal.signal(signal.SIGINT, lambda *_: loop.call_soon_threadsafe(interrupted))
        loop.add_signal_handler(signal.SIGTERM, terminate)
        return await main

    def terminate() -> None:
        nonlocal terminated
        if not terminated and not interrupts:
            terminated = True
            interrupted()

    def interrupted() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1 and task is not None:
            task.cancel()
        elif interrupts == 2:
            print("stopping what it started (Ctrl-C again to leave it)", file=sys.stderr)
        else:
            raise KeyboardInterrupt

    previous = signal.getsignal(signal.SIGINT)
    try:
        asyncio.run(run())
    except asyncio.CancelledError:
        if not interrupts:
            raise
    finally:
        signal.signal(signal.SIGINT, previous)
    if terminated:
        raise Terminated
    if interrupts:
        raise KeyboardInterrupt


def checkout(path: Path, flag: str) -> Path:
    """`path` resolved, if it is a checkout of this project (its `mgmt` package); else exit 2.
    `python -m mgmt` run in any other directory imports this tree's (the venv's path entry):
    a mistyped DIR would compare this tree with itself."""
    path = path.resolve()
    if not (path / "mgmt" / "__main__.py").is_file():
        print(f"{flag} {path}: not a checkout of mgmt (no mgmt/__main__.py in it)", file=sys.stderr)
        sys.exit(2)
    return path


def base_launcher(base: Path, where: Path) -> list[str]:
    """How to start the checkout `base` the way this tree starts (`MGMT`): with this tree's
    `.venv/bin/mgmt` (scripts/install.sh's launcher: Python with `-SP`, the checkout put on
    the path), a copy of it made as the file `where` with `base`'s path instead of this
    tree's, and `base`'s own venv Python if it has one (else this one's: a byte-compiled `git
    archive`); `base` itself is not touched. Without this tree's launcher, `python -m mgmt`,
    to be run in `base` (its cwd), as this tree is then. The same start-up path both sides:
    `python -m mgmt` runs `site` and runpy, which the launcher skips."""
    python = base / ".venv" / "bin" / "python"
    interpreter = str(python) if python.exists() else sys.executable
    if not VENV_MGMT.exists():
        return [interpreter, "-m", "mgmt"]
    text = VENV_MGMT.read_text()
    ours = (f"#!{ROOT / '.venv' / 'bin' / 'python'} ", f"sys.path.append({str(ROOT)!r})")
    theirs = (f"#!{interpreter} ", f"sys.path.append({str(base)!r})")
    for old, new in zip(ours, theirs, strict=True):
        if text.count(old) != 1:
            sys.exit(f"{VENV_MGMT}: not scripts/install.sh's launcher (no {old!r} in it)")
        text = text.replace(old, new)
    where.write_text(text)
    where.chmod(0o700)
    return [str(where)]


def run_child(argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    """subprocess.run(argv, check=True, capture_output=True), except on Ctrl-C: the child is
    sent SIGTERM (after the terminal's SIGINT, `mgmt run` then stops at once) and gets
    STOP_GRACE seconds before SIGKILL, so an `mgmt run --tmp-prefix` removes its prefix
    (subprocess.run kills it after 0.25 s, leaving the prefix in $TMPDIR)."""
    with subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        try:
            out, err = proc.communicate(timeout=1800)
        except BaseException:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=STOP_GRACE)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                proc.kill()
                proc.wait()
            raise
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, argv, out, err)


def timed_run(args: list[str], env: dict[str, str] | None = None) -> float:
    """Wall time of one whole `mgmt` process (exit code must be 0)."""
    start = time.perf_counter()
    run_child([*MGMT, *args], env={**os.environ, **(env or {})})
    return time.perf_counter() - start


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "p50": statistics.median(ordered),
        "p90": pick(0.90),
        "p99": pick(0.99),
        "max": ordered[-1],
    }


def fmt_ms(stats: dict[str, float]) -> str:
    return "  ".join(f"{k}={v * 1000:.2f}ms" for k, v in stats.items())


def cluster_agent_argv(
    mgmt: list[str], host: str, index: int, work: Path, ports: list[int], *extra: str
) -> list[str]:
    """`mgmt run` (before its front-end) for host `index` of a loopback test cluster: its own
    prefix and two ports, the cluster CA in work/cluster-ca, the others joining the first."""
    argv = [
        *mgmt, "run", "--hostname", host, "--prefix", str(work / host),
        "--client-urls", f"https://127.0.0.1:{ports[2 * index]}",
        "--server-urls", f"https://127.0.0.1:{ports[2 * index + 1]}",
        "--cluster-ca-dir", str(work / "cluster-ca"), *extra,
    ]  # fmt: skip
    if index:
        argv += ["--seeds", f"https://127.0.0.1:{ports[0]}"]
    return argv


async def terminate(procs: Iterable[asyncio.subprocess.Process]) -> None:
    """SIGTERM each of `procs` still running, then wait for every one of them."""
    procs = list(procs)
    for proc in procs:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        await proc.wait()
