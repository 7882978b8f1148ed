"""Per-file cost of the file resource's check_apply, in process: N files in one directory, the
first run (each created: walk, write, fsync, rename) and the no-op run (each checked), as CPU
time per file (steadier than wall time on a shared machine); and the watch of each (its
PathWatcher entered, as the resource's watch does before its first check, then left).

    .venv/bin/python bench/file_check.py [--count 1000] [--runs 9]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import run_script

from engine.handle import Handle
from engine.watcher import PathWatcher
from resources.file import FileRes


async def once(count: int) -> tuple[float, float, float]:
    work = Path(tempfile.mkdtemp(prefix="mgmt-bench-file-"))
    try:
        resources = []
        for i in range(count):
            res = FileRes(name=f"f{i}", path=f"{work}/d/f{i}", content=f"file number {i}\n")
            res.validate()
            await res.init(Handle(kind="file", name=res.name, hostname="h", var_dir=work / "v"))
            resources.append(res)
        start = time.process_time()
        for res in resources:
            await res.check_apply(True)
        first = time.process_time() - start
        start = time.process_time()
        for res in resources:
            assert await res.check_apply(True)
        noop = time.process_time() - start
        start = time.process_time()
        async with contextlib.AsyncExitStack() as stack:
            for res in resources:
                await stack.enter_async_context(PathWatcher(res._watch_paths()))
        watch = time.process_time() - start
        return first / count, noop / count, watch / count
    finally:
        shutil.rmtree(work)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    firsts, noops, watches = zip(*[await once(args.count) for _ in range(args.runs)], strict=True)
    for label, samples in (("first run", firsts), ("no-op", noops), ("watch", watches)):
        print(
            f"{args.count} files, {label}: CPU per file median "
            f"{statistics.median(samples) * 1e6:.1f} us, min {min(samples) * 1e6:.1f} us"
        )


if __name__ == "__main__":
    run_script(main)
