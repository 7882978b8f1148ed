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
from collections.abc import Callable
from pathlib import Path

from common import run_script
from peers import FLOOR_THREADS, Figures, floor, interleaved, medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    makers: dict[str, Callable[[Path], Figures]] = {
        "fsync each": lambda out: floor(out, args.count),
        "one syncfs": lambda out: floor(out, args.count, grouped=True),
    }
    for name, runs in interleaved(makers, args.rounds, "mgmt-bench-fsync-").items():
        wall, user, system = medians(runs)
        print(
            f"{name}: {args.count} files, {FLOOR_THREADS} threads: wall {wall:.3f} s, "
            f"user {user:.3f} s, system {system:.3f} s (median of {len(runs)})"
        )


if __name__ == "__main__":
    run_script(main)
