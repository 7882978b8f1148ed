"""A one-shot run stopped by SIGTERM while a resource fails (tester15 #5): a clean stop, exit
0, as mgmt's ^C is; under --detailed-exitcodes the caller asked for the run's outcome: 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.helpers import Daemon, signal

GRAPH = """graph: g
resources:
  exec:
    - name: forever
      cmd: /bin/false
      meta: {retry: -1, delay: 1000}
"""


@pytest.mark.parametrize(("flags", "code"), [([], 0), (["--detailed-exitcodes"], 1)])
async def test_a_stopped_one_shot_run_with_a_failure(
    tmp_path: Path, flags: list[str], code: int
) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text(GRAPH)
    args = ["run", "--tmp-prefix", "--converged-timeout=1", *flags, "yaml", str(graph)]
    async with Daemon(args) as daemon:
        await daemon.wait_log("exec[forever]: failed, retrying in 1s (forever)")
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == code, daemon.log
        assert ("1 of 1 resource failed: exec[forever]" in daemon.log) == bool(code)


@pytest.mark.parametrize(("flags", "code"), [([], 0), (["--detailed-exitcodes"], 1)])
async def test_a_stopped_one_shot_run_with_work_undone(
    tmp_path: Path, flags: list[str], code: int
) -> None:
    """Stopped with nothing failed but work undone: under --detailed-exitcodes it exited 3,
    "changes made, none failed", which a CI runner records as success for a run that did not
    finish (tester17 F10); now 1, said. Without the flag: 0, a clean stop, as before."""
    from tests.e2e.helpers import wait_path

    started = tmp_path / "started"
    graph = tmp_path / "g.yaml"
    graph.write_text(
        "graph: g\nresources:\n  file:\n"
        f'    - name: f\n      path: {tmp_path}/f\n      content: "x\\n"\n'
        "  exec:\n    - name: long\n      shell: /bin/sh\n"
        f"      cmd: touch {started} && exec sleep 600\n"
    )
    args = ["run", "--tmp-prefix", "--converged-timeout=0", *flags, "yaml", str(graph)]
    async with Daemon(args) as daemon:
        await wait_path(started, lambda p: p.exists(), timeout=60)
        await daemon.wait_log("file[f]: created")
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == code, daemon.log
        said = "stopped before converging: 1 of 2 resources left undone: exit 1"
        assert (said in daemon.log) == bool(code), daemon.log


async def test_a_crash_of_the_interpreter_says_where_each_thread_was(tmp_path: Path) -> None:
    """The interpreter itself crashing (a SIGSEGV in native code: seen twice under load at an
    agent's stop, cause unknown) prints every thread's stack on stderr before the process dies,
    so the journal says where; a real agent, a real SIGSEGV."""
    graph = tmp_path / "g.yaml"
    graph.write_text(
        f"graph: g\nresources:\n  file:\n    - name: {tmp_path / 'f'}\n      content: x\n"
    )
    async with Daemon(["run", "--tmp-prefix", "yaml", str(graph)]) as daemon:
        await daemon.wait_log("converged")
        daemon.signal(signal.SIGSEGV)
        assert await daemon.wait() == -signal.SIGSEGV
        assert "Fatal Python error: Segmentation fault" in daemon.log, daemon.log
        assert "Current thread" in daemon.log or "Thread 0x" in daemon.log, daemon.log
