"""A failure whose cause passes without an event, end to end (engine.heal): the real daemon on
a small tmpfs filled to its last block, `mgmt status` while it fails, then the space freed.
The mounts are taken off whatever the end (helpers.small_fs)."""

from __future__ import annotations

import asyncio
import signal
import textwrap
from pathlib import Path

from tests.e2e.helpers import Daemon, fill, has_content, run_mgmt, small_fs, wait_path


async def test_a_full_disk_freed_is_repaired_without_a_reload(tmp_path: Path) -> None:
    mnt, prefix = tmp_path / "m", tmp_path / "prefix"
    graph = tmp_path / "g.yaml"
    with small_fs(mnt, "64k"):
        (mnt / "data").mkdir()
        (mnt / "fill").mkdir()  # beside, not in, the watched directory: its freeing is unseen
        fill(mnt / "fill" / "big")
        target = mnt / "data" / "f"
        graph.write_text(
            textwrap.dedent(f"""\
            graph: g
            resources:
              file:
                - {{name: f, path: {target}, content: "{"x" * 200}\\n"}}
            """)
        )
        async with Daemon(["run", "--prefix", str(prefix), str(graph)]) as daemon:
            await daemon.wait_log("file[f]: failed: ")
            code, out = await asyncio.to_thread(run_mgmt, ["status", "--prefix", str(prefix)])
            assert code == 1, out
            row = next(line for line in out.splitlines() if line.startswith("file[f] "))
            assert "failed" in row and "next check " in row, out
            assert "No space left on device" in row, out
            (mnt / "fill" / "big").unlink()
            await daemon.wait_log("file[f]: recovered", timeout=30)
            await wait_path(target, has_content("x" * 200 + "\n"))
            failures = [line for line in daemon.lines if "file[f]: failed" in line]
            assert len(failures) == 1, daemon.log  # one line as it began, one as it healed
            assert "(checking again in 1s, then less often" in failures[0]
            code, out = await asyncio.to_thread(run_mgmt, ["status", "--prefix", str(prefix)])
            assert code == 0 and "next check" not in out, out
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
