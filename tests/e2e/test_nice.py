"""`mgmt run --nice N`: every thread of the agent runs at that nice level (mgmt.priority)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.helpers import MGMT, ROOT, Daemon, has_content, nice_levels, run_mgmt, wait_path


def _graph(tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "out"
    graph = tmp_path / "graph.yaml"
    graph.write_text(f'graph: g\nresources:\n  file:\n    - name: {out}\n      content: "x\\n"\n')
    return graph, out


async def test_every_thread_of_the_agent_runs_at_the_nice_level(tmp_path: Path) -> None:
    graph, out = _graph(tmp_path)
    async with Daemon(["run", "--tmp-prefix", "--nice", "7", "yaml", str(graph)]) as daemon:
        await wait_path(out, has_content("x\n"))  # written by an I/O thread: it exists too
        await daemon.wait_log("running at nice 7")
        assert daemon.proc is not None
        assert nice_levels(daemon.proc.pid) == {7}


def test_a_nice_level_out_of_range_is_a_usage_error(tmp_path: Path) -> None:
    graph, out = _graph(tmp_path)
    code, output = run_mgmt(["run", "--tmp-prefix", "--nice", "-21", "yaml", str(graph)])
    assert code == 2
    assert "--nice: expected a level from -20 to 19, got -21" in output
    assert "Traceback" not in output and not out.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping CAP_SYS_NICE needs it first")
def test_a_refused_nice_level_is_said_and_the_graph_still_runs(tmp_path: Path) -> None:
    graph, out = _graph(tmp_path)
    no_nice = ["setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice", "--"]
    run = [*MGMT, "run", "--tmp-prefix", "--converged-timeout", "0", "--nice", "-5"]
    proc = subprocess.run(
        [*no_nice, *run, "yaml", str(graph)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--nice -5: Permission denied; running at nice 0" in proc.stderr
    assert out.read_text() == "x\n"
