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


def fighting_graph(tmp_path: Path, *, watched: bool) -> Path:
    """f0, and an exec whose `ifcmd` writes f0: after f0 along a notify edge (each repair of
    f0 refreshes the exec, whose guard undoes it), or watching f0 itself (`watched`: each of
    its guard's writes is its own next event)."""
    f0, calm = tmp_path / "f0", tmp_path / "calm"
    watch = f"watchfiles: [{f0}]" if watched else ""
    edge = (
        ""
        if watched
        else (
            "edges:\n  - {from: {kind: file, name: f0}, to: {kind: exec, name: guarded}, notify: true}"
        )
    )
    graph = tmp_path / "graph.yaml"
    graph.write_text(
        textwrap.dedent(f"""\
        graph: fight
        resources:
          file:
            - {{name: f0, path: {f0}, content: "want\\n"}}
            - {{name: calm, path: {calm}, content: "calm\\n"}}
          exec:
            - name: guarded
              cmd: /bin/true
              ifcmd: 'printf bad > {f0}; exit 1'
              ifshell: /bin/sh
              {watch}
        """)
        + edge
        + "\n"
    )
    return graph


async def test_a_file_the_graphs_own_guard_keeps_writing_is_told_naming_that_command(
    tmp_path: Path,
) -> None:
    """A graph that fights itself (a guard writing a file the graph manages, refreshed by its
    repair) is told once, naming the command, not "another process"; the rest of the graph
    keeps working (a drift of another file is repaired meanwhile)."""
    graph = fighting_graph(tmp_path, watched=False)
    async with Daemon(["run", "--tmp-prefix", str(graph)]) as daemon:
        await daemon.wait_log(f"file[f0]: changed behind our back {REPAIRS} times", timeout=60)
        told = next(line for line in daemon.lines if "changed behind our back" in line)
        assert "each time while exec[guarded]'s ifcmd ran" in told, told
        assert "another process" not in told, told
        assert "repaired each time" in told, told
        (tmp_path / "calm").unlink()
        await daemon.wait_log(f"file[calm]: created {tmp_path}/calm", timeout=60, count=2)
        assert (tmp_path / "calm").read_text() == "calm\n"
        assert daemon.log.count("changed behind our back") == 1
        assert await daemon.stop() == 0


async def test_an_exec_whose_guard_writes_its_own_watched_file_is_told_under_noop(
    tmp_path: Path,
) -> None:
    """An exec watching a file its own guard writes runs again at each of its runs: under
    --noop too, told once for the exec (its own command named) and once for the file (found
    changed, not repaired)."""
    graph = fighting_graph(tmp_path, watched=True)
    async with Daemon(["run", "--noop", "--tmp-prefix", str(graph)]) as daemon:
        await daemon.wait_log(f"exec[guarded]: run again {REPAIRS} times", timeout=60)
        await daemon.wait_log(f"file[f0]: changed behind our back {REPAIRS} times", timeout=60)
        told = next(line for line in daemon.lines if "exec[guarded]: run again" in line)
        assert "while its own ifcmd ran" in told, told
        told = next(line for line in daemon.lines if "changed behind our back" in line)
        assert "each time while exec[guarded]'s ifcmd ran" in told, told
        assert "not repaired: noop" in told, told
        assert "content updated" not in daemon.log  # nothing applied (the guard writes on)
        assert await daemon.stop() == 0
