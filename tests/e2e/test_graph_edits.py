"""Editing a watched graph file the ways editors and scripts do (tester11's finding 10): a
writer's moment (the file truncated before its write, or renamed away by an editor's save) is
not reported as an error; a file left so is, and a FIFO put in place of a deleted file too."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from tests.e2e.helpers import Daemon, has_content, wait_path


def graph_text(tmp_path: Path, n: int) -> str:
    return (
        f"graph: g\nresources:\n  file:\n    - {{name: f, path: {tmp_path}/out, content: '{n}'}}\n"
    )


def in_place(graph: Path, tmp_path: Path) -> None:
    """199 quick edits in place: open(w) truncates, then writes."""
    for n in range(1, 200):
        with open(graph, "w") as file:
            file.write(graph_text(tmp_path, n))


async def test_editors_moments_are_not_errors_but_a_file_left_so_is(tmp_path: Path) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text(graph_text(tmp_path, 0))
    async with Daemon(["run", "--tmp-prefix", "yaml", str(graph)]) as daemon:
        await daemon.wait_log("converged:")
        await asyncio.to_thread(in_place, graph, tmp_path)
        await wait_path(tmp_path / "out", has_content("199"), timeout=30)
        for n in range(200, 210):  # vim's save: the old one renamed away, a new one written
            os.rename(graph, tmp_path / "g.yaml~")
            graph.write_text(graph_text(tmp_path, n))
            os.unlink(tmp_path / "g.yaml~")
        await wait_path(tmp_path / "out", has_content("209"), timeout=30)
        assert "must be a mapping" not in daemon.log and "file is empty" not in daemon.log
        assert "cannot read" not in daemon.log
        assert "keeping the running graph" not in daemon.log, daemon.log
        graph.unlink()  # left so: said (once the settle's second has passed)
        await daemon.wait_log(f"{graph}: cannot read: No such file or directory")
        os.mkfifo(graph)  # another reason: said too (it was taken for the same refusal)
        await daemon.wait_log(f"{graph}: cannot read: not a regular file")
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
