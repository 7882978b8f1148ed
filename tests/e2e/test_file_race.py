"""A repair racing with `rm -rf` of its directory, through the real daemon: whatever the
timing, a failure names the managed path and what happened (`directory /x/y vanished while
writing`), never the agent's internals (a /proc/self/fd/N descriptor, a `.mgmt.` temp name); and once
the removals stop, every file is repaired. (It was not: each file's spare, made with O_TMPFILE
in the directory, held the removed directory, whose DELETE_SELF then never came: the watchers
stayed on it, and in most runs some files, or all, were never made again. engine/watcher.py,
PARENT_MASK; tests/engine/test_watcher.py has the deterministic case.) Known and open:
removals paced by the repairs (each once a random file was made again) leave, in most runs, a
file or two whose repair failed with "No such file or directory" and that no event checks
again; not asserted here until fixed."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
from pathlib import Path

from tests.e2e.helpers import Daemon, has_content, wait_path

N = 100  # files in one directory: many writes in flight when it goes
REMOVALS = 200
FAILED = re.compile(r"file\[f\d+\]: failed: (.*)$")
PLAIN = re.compile(
    r"could not create (parent directory )?\S+: "
    r"(directory \S+ vanished while writing|No such file or directory)"
)


async def test_a_repair_racing_rm_rf_of_its_directory_says_what_happened(tmp_path: Path) -> None:
    top = tmp_path / "d"
    lines = ["graph: race", "resources:", "  file:"]
    lines += [f'    - {{name: f{i}, path: {top}/e/f{i}, content: "{i}\\n"}}' for i in range(N)]
    graph = tmp_path / "graph.yaml"
    graph.write_text("\n".join(lines) + "\n")
    async with Daemon(["run", "--tmp-prefix", "yaml", str(graph)]) as daemon:
        await daemon.wait_log("converged: all")
        for _ in range(REMOVALS):  # each removal starts N repairs, the next cuts them short
            await asyncio.to_thread(shutil.rmtree, top, ignore_errors=True)
        for i in range(N):
            await wait_path(top / "e" / f"f{i}", has_content(f"{i}\n"))
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
        failures = [m[1] for line in daemon.lines if (m := FAILED.search(line))]
        assert "/proc/" not in daemon.log and ".mgmt." not in daemon.log, daemon.log
        assert all(PLAIN.fullmatch(text) for text in failures), failures
