"""A daemon replacing a big graph by another (issue 16, tester11's #1): while the swap runs,
a drift of a resource it keeps is repaired and `mgmt status` answers; then the new graph
runs. The swap is held in its stop by a removed exec whose command the test ends (a graceful
swap waits for a running check of what it removes), so "while" is an order, not a time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path

import pytest

from tests.e2e.helpers import Daemon, has_content, run_mgmt, wait_path

N = 3000  # noops replaced (20,000 held the loop for 10 s before it gave turns in slices)


def graph(tmp_path: Path, prefix: str, hold: bool) -> str:
    lines = [
        "graph: big",
        "resources:",
        "  file:",
        "    - name: guard",
        f"      path: {tmp_path}/guard",
        '      content: "guard\\n"',
    ]
    if hold:  # ignores the swap's SIGTERM, ends when the test writes its FIFO
        fifo = tmp_path / "hold"
        lines += [
            "  exec:",
            "    - name: hold",
            f"      cmd: \"trap '' TERM; read x < {fifo}\"",
            "      shell: /bin/sh",
        ]
    lines += ["  noop:", *(f"    - name: {prefix}{i}" for i in range(N))]
    return "\n".join(lines) + "\n"


def write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.rename(tmp, path)


async def status(prefix: Path) -> dict[str, str]:
    """`mgmt status --json`: each resource's state (it answered: exit 0 or 1, not 2)."""
    code, out = await asyncio.to_thread(run_mgmt, ["status", "--json", "--prefix", str(prefix)])
    assert code in (0, 1), out
    return {v["id"]: v["state"] for v in json.loads(out)["vertices"]}


@pytest.mark.slow
async def test_a_big_swap_repairs_drift_and_answers_status_while_it_runs(tmp_path: Path) -> None:
    prefix, file, guard = tmp_path / "prefix", tmp_path / "g.yaml", tmp_path / "guard"
    os.mkfifo(tmp_path / "hold")
    file.write_text(graph(tmp_path, "n", hold=True))
    try:
        async with Daemon(["run", "--prefix", str(prefix), "yaml", str(file)]) as daemon:
            await daemon.wait_log("exec[hold]: running:", timeout=60)
            await wait_path(guard, has_content("guard\n"), timeout=60)
            write(file, graph(tmp_path, "m", hold=False))
            # The swap has stopped watching what it removes, and waits for the exec's command.
            await daemon.wait_log("exec[hold]: cmd: stopping: sent SIGTERM", timeout=60)
            guard.write_text("drift\n")
            await wait_path(guard, has_content("guard\n"), timeout=60)
            states = await status(prefix)
            assert states["file[guard]"] in ("converged", "applying"), states["file[guard]"]
            assert "noop[n0]" in states  # the old graph's, stopping: the swap goes on
            assert not any("graph swap:" in line for line in daemon.lines)
            fd = os.open(tmp_path / "hold", os.O_WRONLY | os.O_NONBLOCK)  # ENXIO if none reads
            os.write(fd, b"go\n")
            os.close(fd)
            await daemon.wait_log(f"graph swap: 1 kept, {N + 1} stopped, {N} started", timeout=120)
            guard.write_text("drift again\n")
            await wait_path(guard, has_content("guard\n"), timeout=60)
            states = await status(prefix)
            assert "noop[n0]" not in states and f"noop[m{N - 1}]" in states
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait(60) == 0
    finally:  # a failure midway leaves no command reading the FIFO (it ignores SIGTERM)
        with contextlib.suppress(OSError):  # ENXIO: none reads it
            fd = os.open(tmp_path / "hold", os.O_WRONLY | os.O_NONBLOCK)
            os.write(fd, b"go\n")
            os.close(fd)
