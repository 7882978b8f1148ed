"""What one fsync per new file costs the kernel, against one syncfs(2) for all of them: the
floor of bench/peers.py (N files on 8 threads, each an O_TMPFILE open, write, fchmod, fsync
and link, as this project writes a new file) beside the same N files made without their
fsync, then one `syncfs` of their file system, then linked (a group commit: every file's data
and inode on disk before any of them gets its name, as with the fsyncs). No tool's Python:
the kernel's and the disk's part only, rounds interleaved, medians printed (wall, user and
system CPU of this process). Each run writes a new directory, none is deleted before the end
(a delete makes the next run's inodes dearer: see `common.make_absent`); all are at the end.

    .venv/bin/python bench/fsync_floor.py [--count 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ctypes
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from common import run_script
from peers import FLOOR_THREADS, Figures, floor

_libc = ctypes.CDLL(None, use_errno=True)


def grouped(out: Path, count: int) -> Figures:
    """`count` new files in the new directory `out`, each complete (written, its mode set) on
    FLOOR_THREADS threads without an fsync, then one syncfs of the file system, then each linked
    in. Wall, user and system CPU seconds of this process."""
    flags = os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    out.mkdir()
    dir_fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def make(i: int) -> int:
        fd = os.open(".", flags, 0o600, dir_fd=dir_fd)
        os.write(fd, b"file number %d\n" % i)
        os.fchmod(fd, 0o644)
        return fd

    def link(i: int, fd: int) -> None:
        try:
            os.link(f"/proc/self/fd/{fd}", f"f{i}", dst_dir_fd=dir_fd)
        finally:
            os.close(fd)

    try:
        with concurrent.futures.ThreadPoolExecutor(FLOOR_THREADS) as pool:
            fds = list(pool.map(make, range(count)))
            if _libc.syncfs(dir_fd) != 0:
                code = ctypes.get_errno()
                raise OSError(code, os.strerror(code), str(out))
            list(pool.map(link, range(count), fds))
    finally:
        os.close(dir_fd)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    return wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mgmt-bench-fsync-"))
    made = 0
    figures: dict[str, list[Figures]] = {"fsync each": [], "one syncfs": []}
    try:
        for _ in range(args.rounds):
            for name in figures if made % 2 == 0 else reversed(list(figures)):
                out = work / f"r{made}"
                made += 1
                if name == "fsync each":
                    figures[name].append(floor(out, args.count))
                else:
                    figures[name].append(grouped(out, args.count))
        for name, runs in figures.items():
            wall, user, system = (statistics.median(run[i] for run in runs) for i in range(3))
            print(
                f"{name}: {args.count} files, {FLOOR_THREADS} threads: wall {wall:.3f} s, "
                f"user {user:.3f} s, system {system:.3f} s (median of {len(runs)})"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    run_script(main)
