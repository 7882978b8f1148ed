"""A one-off experiment (issue 16, docs/benchmarks.md "perfkern"): the floor of bench/peers.py
(N new durable files on 8 threads: each an O_TMPFILE open, write, fchmod, fsync and link at
its name through /proc/self/fd, then closed) against the same N files made by one thread
through io_uring, no Python thread at all: the opens are submitted W at a time; each open's
completion gets its fchmod here, then a chain of write -> fsync -> link -> close submitted at
once (IOSQE_IO_LINK: each step only after the last one succeeded, so each file is on disk
before it gets its name, as now). The kernel runs what blocks (the open, the fsync, the link)
on its own io-wq workers (`--workers`: at most that many, as IORING_REGISTER_IOWQ_MAX_WORKERS
sets; the kernel's default is min(entries, 4 x CPUs)). Wall, user and system CPU of this
process (io_uring's workers are its threads), rounds interleaved, medians printed. The ring is
the engine's (engine/uring.py's Ring: ctypes, `syscall`), Linux 5.15 or later, x86-64 or arm64.

    .venv/bin/python bench/uring_floor.py [--count 1000] [--rounds 5] [--workers 8,32]
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

from common import ROOT, run_script
from peers import FLOOR_THREADS, Figures, floor, interleaved, medians

sys.path.insert(0, str(ROOT))
from engine.uring import (
    AT_FDCWD,
    AT_SYMLINK_FOLLOW,
    OP_CLOSE,
    OP_FSYNC,
    OP_LINKAT,
    OP_OPENAT,
    OP_WRITE,
    SQE_IO_LINK,
    Ring,
    address,
)

_STEPS = 4  # write, fsync, link, close: a file's chain after its open


def uring_floor(out: Path, count: int, *, window: int = 256, workers: int | None = None) -> Figures:
    """`count` durable files in the new directory `out`, as `peers.floor` makes them, through
    one io_uring (see the module doc), at most `window` files in flight."""
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    out.mkdir()
    dir_fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    ring = Ring(max(64, 1 << (window * (1 + _STEPS) - 1).bit_length()), workers)
    dot = ctypes.c_char_p(b".")
    datas = [ctypes.c_char_p(b"file number %d\n" % i) for i in range(count)]
    sizes = [len(b"file number %d\n" % i) for i in range(count)]
    names = [ctypes.c_char_p(b"f%d" % i) for i in range(count)]
    procs: dict[int, ctypes.c_char_p] = {}
    flags = os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC
    opened = made = in_flight = 0
    try:
        while made < count:
            while opened < count and in_flight < window and ring.free() >= 1 + _STEPS:
                ring.put(
                    OP_OPENAT, dir_fd, opened << 3, addr=address(dot), length=0o600, op_flags=flags
                )
                opened += 1
                in_flight += 1
            ring.enter(1)
            for data, result in ring.reap():
                i, step = data >> 3, data & 7
                if result < 0:
                    raise OSError(-result, f"file {i}, step {step}: {os.strerror(-result)}")
                if step == 0:  # opened: its chain
                    fd = result
                    os.fchmod(fd, 0o644)
                    procs[i] = path = ctypes.c_char_p(b"/proc/self/fd/%d" % fd)
                    chain = [
                        (OP_WRITE, fd, datas[i], sizes[i], 0, 0),
                        (OP_FSYNC, fd, None, 0, 0, 0),
                        (OP_LINKAT, AT_FDCWD, path, dir_fd, names[i], AT_SYMLINK_FOLLOW),
                        (OP_CLOSE, fd, None, 0, 0, 0),
                    ]
                    for n, (op, on, addr, length, addr2, op_flags) in enumerate(chain, 1):
                        ring.put(
                            op,
                            on,
                            i << 3 | n,
                            flags=SQE_IO_LINK if n < _STEPS else 0,
                            addr=0 if addr is None else address(addr),
                            length=length,
                            off=address(addr2) if isinstance(addr2, ctypes.c_char_p) else 0,
                            op_flags=op_flags,
                        )
                elif step == _STEPS:  # closed: done
                    del procs[i]
                    made += 1
                    in_flight -= 1
    finally:
        ring.close()
        os.close(dir_fd)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    return wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--window", type=int, default=256, help="files in flight at most")
    parser.add_argument(
        "--workers", default="8", help="io-wq workers at most, comma-separated (a run each)"
    )
    parser.add_argument(
        "--threads", default=str(FLOOR_THREADS), help="the floor's threads, comma-separated"
    )
    args = parser.parse_args()
    if platform.machine() not in ("x86_64", "aarch64"):
        raise SystemExit(f"{platform.machine()}: the syscall numbers here are x86-64's and arm64's")
    makers: dict[str, Callable[[Path], Figures]] = {}
    for threads in args.threads.split(","):
        makers[f"threads {threads}"] = functools.partial(
            _checked, args.count, floor, threads=int(threads)
        )
    for workers in args.workers.split(","):
        makers[f"io_uring {workers}"] = functools.partial(
            _checked, args.count, uring_floor, window=args.window, workers=int(workers)
        )
    for kind, runs in interleaved(makers, args.rounds, "mgmt-bench-uring-").items():
        wall, user, system = medians(runs)
        print(
            f"{kind:12s}: {args.count} files: wall {wall:.3f} s (min "
            f"{min(r[0] for r in runs):.3f}), user {user:.3f} s, system {system:.3f} s "
            f"(median of {len(runs)}), load {os.getloadavg()[0]:.1f}"
        )


def _checked(count: int, make: Callable[..., Figures], out: Path, **how: int) -> Figures:
    """`make(out, count, **how)`, and check that `out` holds `count` files then."""
    figures = make(out, count, **how)
    if len(os.listdir(out)) != count:
        raise SystemExit(f"{make.__name__} {how}: {out} does not hold {count} files")
    return figures


if __name__ == "__main__":
    run_script(main)
