"""mgmt upgraded under a running agent (tester11's finding 3): the checkout changed (`git pull`,
`./scripts/install.sh`), and a kind the agent first meets afterwards is imported from the new
code into the old process. It says so once, and `mgmt status` fails until it is restarted."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import time
from pathlib import Path

from tests.e2e.helpers import MGMT, ROOT, Daemon

PACKAGES = ("engine", "mgmt", "resources")


def checkout(to: Path) -> Path:
    """A copy of this checkout's packages (what `python -m mgmt` imports, run from `to`)."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, to / package, ignore=shutil.ignore_patterns("__pycache__"))
    return to


async def test_a_kind_loaded_from_code_newer_than_the_agent_says_restart_it(
    tmp_path: Path,
) -> None:
    code = checkout(tmp_path / "checkout")
    graph = tmp_path / "g.yaml"
    graph.write_text("graph: g\nresources:\n  noop:\n    - name: n\n")
    prefix = tmp_path / "prefix"
    status = [*MGMT, "status", "--json", "--prefix", str(prefix)]
    async with Daemon(["run", "--prefix", str(prefix), "yaml", str(graph)], cwd=code) as daemon:
        await daemon.wait_log("converged:")
        # The upgrade: print's module changes after the agent started (its mtime: now).
        module = code / "resources" / "print.py"
        module.write_text(module.read_text().replace('"msg: %s"', '"msg(v2): %s"'))
        later = time.time() + 2  # (a clock with a coarse grain: surely after the start)
        os.utime(module, (later, later))
        graph.write_text(graph.read_text() + "  print:\n    - {name: hello, msg: hi}\n")
        await daemon.wait_log("mgmt was upgraded under this agent")
        await daemon.wait_log("print[hello]")
        (line,) = [line for line in daemon.lines if "upgraded under this agent" in line]
        assert f"{module} changed at" in line and "restart it" in line, line
        proc = await asyncio.create_subprocess_exec(
            *status, cwd=code, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        assert await proc.wait() == 1
        assert "mgmt was upgraded under this agent" in json.loads(out)["program_error"]
        daemon.signal(signal.SIGTERM)
        await daemon.wait()
    assert sum("upgraded under this agent" in line for line in daemon.lines) == 1
