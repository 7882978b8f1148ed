"""Churn (engine.churn): a file another process keeps writing is repaired each time, told once
with what is known, then counted in `mgmt status`. Through the real CLI, a real daemon and a
real other process writing the file."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import textwrap
from pathlib import Path

from engine.churn import REPAIRS
from tests.e2e.helpers import ROOT, Daemon, run_mgmt

ROUNDS = REPAIRS + 5

# Another process: it writes its content whenever it finds ours there, ROUNDS times (as a
# script or another agent would: it never waits for us, it finds our repair and undoes it).
WRITER = f"""
import asyncio, sys
from pathlib import Path
sys.path.insert(0, {str(ROOT)!r})
from engine.watcher import PathWatcher

async def main(path: Path, rounds: int) -> None:
    # woken by inotify on the path (watched before each read: no change missed), never a sleep
    async with PathWatcher([path]) as watcher:
        events = aiter(watcher)
        for _ in range(rounds + 1):
            while path.read_text() != "ours\\n":
                await anext(events)
            if _ < rounds:
                path.write_text("theirs\\n")

asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
"""


async def test_a_file_another_process_keeps_writing_is_told_once_then_counted(
    tmp_path: Path,
) -> None:
    path, prefix = tmp_path / "f", tmp_path / "prefix"
    graph = tmp_path / "graph.yaml"
    graph.write_text(
        textwrap.dedent(f"""\
        graph: churn
        resources:
          file:
            - {{name: f, path: {path}, content: "ours\\n"}}
            - {{name: calm, path: {tmp_path}/calm, content: "calm\\n"}}
        """)
    )
    async with Daemon(["run", "--prefix", str(prefix), str(graph)]) as daemon:
        await daemon.wait_log("converged")
        writer = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WRITER, str(path), str(ROUNDS)
        )
        async with asyncio.timeout(60):
            assert await writer.wait() == 0
        await daemon.wait_log(f"file[f]: changed behind our back {REPAIRS} times in the last")
        assert "another process keeps writing it" in daemon.log
        code, out = await asyncio.to_thread(run_mgmt, ["status", "--prefix", str(prefix)])
        assert code == 0, out
        line = next(ln for ln in out.splitlines() if ln.startswith("file[f] "))
        counted = re.search(r"changed behind our back (\d+) times", line)
        assert counted and int(counted.group(1)) >= REPAIRS, out  # one a round, mostly
        calm = next(ln for ln in out.splitlines() if ln.startswith("file[calm] "))
        assert "behind our back" not in calm
        assert daemon.log.count("changed behind our back") == 1  # told once, then counted
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
