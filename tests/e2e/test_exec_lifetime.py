"""An exec command does not outlive what started it: a SIGKILLed agent (a cron job's `timeout -s
KILL`, the OOM killer: its guard, resources/_lib/reaper.py, stops the command's whole process
group), a graceful stop (SIGTERM: the command gets `sig`), a graph swap that drops the exec.

The real `mgmt` command, a real shell command whose background child shares its group (what a
death signal on the shell alone would leave running), real signals; each process's end is
awaited through a pidfd (no polling)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from resources._lib.proc import pid_exited
from tests.e2e.helpers import MGMT, ROOT, Daemon, wait_path

# The shell writes its pid and its background sleep's, then waits for it.
CMD = "sleep 300 & echo $$ $! > PIDS.new; mv PIDS.new PIDS; wait"


def graph_text(pids: Path, *, with_exec: bool = True) -> str:
    cmd = CMD.replace("PIDS", str(pids))
    text = "graph: life\nresources:\n  noop:\n    - {name: n}\n"
    if with_exec:
        text += f'  exec:\n    - {{name: long, cmd: "{cmd}", shell: /bin/sh}}\n'
    return text


def life_graph(tmp_path: Path) -> tuple[Path, Path]:
    """The graph file (a noop, the long exec) in `tmp_path`, and where its shell writes pids."""
    pids, graph = tmp_path / "pids", tmp_path / "g.yaml"
    graph.write_text(graph_text(pids))
    return graph, pids


async def started(pids: Path) -> tuple[int, int]:
    """The shell's pid and its sleep's, once written."""
    await wait_path(pids, Path.exists, timeout=30)
    text = await asyncio.to_thread(pids.read_text)
    shell, sleep = (int(pid) for pid in text.split())
    return shell, sleep


async def ended(*pids: int, timeout: float = 30) -> None:
    """Until every process in `pids` has ended (a pidfd is readable once it has; it works for
    processes that are not our children)."""
    async with asyncio.timeout(timeout):
        for pid in pids:
            await pid_exited(pid)


def guards(agent: int) -> set[int]:
    """The pids of the commands' guards (reaper.py) that `agent` started, running now."""
    found = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cmdline = Path(entry.path, "cmdline").read_bytes()
                stat = Path(entry.path, "stat").read_bytes()
            except OSError:
                continue
            parent = int(stat.rsplit(b")", 1)[1].split()[1])
            if b"mgmt-exec-guard" in cmdline and parent == agent:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_killed_agents_command_and_its_group_are_stopped_by_the_guard(
    tmp_path: Path,
) -> None:
    """SIGKILL of the agent (nothing of it runs then): its guard stops the command's whole
    group (the shell and its background sleep), says so on the agent's stderr, removes the
    record, and ends. Before 2026-12-06 (BASE too) both ran on, orphaned, until the next agent
    on that prefix (none for a --tmp-prefix run)."""
    graph, pids = life_graph(tmp_path)
    prefix = tmp_path / "prefix"
    async with Daemon(["run", "--prefix", str(prefix), "yaml", str(graph)]) as daemon:
        await daemon.wait_log("exec[long]: running:")
        shell, sleep = await started(pids)
        # Recorded beside the run (a few ms after it started): a kill before is not covered.
        record = prefix / "var/exec/long/running.cmd"
        await wait_path(record, lambda p: p.exists() and p.read_text().endswith("\n"))
        daemon.signal(signal.SIGKILL)
        await ended(shell, sleep)
        assert await daemon.wait() == -signal.SIGKILL  # its stderr's end: the guard's too
    said = "stopped their process groups (pid"
    line = next((ln for ln in daemon.lines if said in ln), None)
    assert line is not None and f"pid {shell})" in line, daemon.log
    assert not list(prefix.glob("var/exec/long/running.*"))


async def test_a_graceful_stop_ends_the_command_and_its_guard(tmp_path: Path) -> None:
    """SIGTERM to the agent: the command's group gets its `sig` (SIGTERM), the agent exits 0,
    and the guard ends with it (it found nothing left to stop: no line)."""
    graph, pids = life_graph(tmp_path)
    async with Daemon(["run", "--tmp-prefix", "yaml", str(graph)]) as daemon:
        await daemon.wait_log("exec[long]: running:")
        shell, sleep = await started(pids)
        assert daemon.proc is not None
        mine = guards(daemon.proc.pid)
        assert len(mine) == 1, mine
        daemon.signal(signal.SIGTERM)
        await ended(shell, sleep)
        assert await daemon.wait() == 0
    assert "exec[long]: cmd: stopping: sent SIGTERM" in daemon.log
    assert "stopped their process groups" not in daemon.log
    assert not any(map(alive, mine))  # it ended before the agent's stderr closed


async def test_the_guards_command_line_is_one_short_line(tmp_path: Path) -> None:
    """`systemctl status` lists every process of the unit with its command line, as `ps`
    does: the guard's was its whole script (~2,000 characters of shell, given as `sh -c`'s
    argument: user3). It is `/bin/sh -c ... mgmt-exec-guard DIR` now, the script read from
    the environment, which it then leaves to nothing it starts."""
    graph, pids = life_graph(tmp_path)
    prefix = tmp_path / "prefix"
    async with Daemon(["run", "--prefix", str(prefix), "yaml", str(graph)]) as daemon:
        await daemon.wait_log("exec[long]: running:")
        await started(pids)
        assert daemon.proc is not None
        (guard,) = guards(daemon.proc.pid)
        cmdline = await asyncio.to_thread(Path(f"/proc/{guard}/cmdline").read_bytes)
        argv = cmdline.split(b"\0")[:-1]
        assert argv[-2:] == [b"mgmt-exec-guard", str(prefix / "var/exec").encode()], argv
        assert len(b" ".join(argv)) < 200 + len(bytes(prefix)), argv
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


async def test_a_swap_that_drops_the_exec_stops_its_command(tmp_path: Path) -> None:
    """The graph file edited to drop the exec: its running command's group gets SIGTERM (the
    resource's stop) and ends; the rest of the graph runs on."""
    graph, pids = life_graph(tmp_path)
    async with Daemon(["run", "--tmp-prefix", "yaml", str(graph)]) as daemon:
        await daemon.wait_log("exec[long]: running:")
        shell, sleep = await started(pids)
        graph.write_text(graph_text(pids, with_exec=False))
        await daemon.wait_log("exec[long]: cmd: stopping: sent SIGTERM")
        await ended(shell, sleep)
        await daemon.wait_log("converged:")
        assert await daemon.stop() == 0


async def test_a_cron_run_killed_by_timeout_leaves_no_command_running(tmp_path: Path) -> None:
    """The cron line `timeout -s KILL 10 mgmt run --converged-timeout=0 ...` with a command
    that outlasts it: timeout SIGKILLs the agent (and its own process group), the guard (in a
    session of its own) stops the command's group."""
    graph, pids = life_graph(tmp_path)
    argv = ["timeout", "-s", "KILL", "10", *MGMT, "run", "--converged-timeout=0"]
    proc = await asyncio.create_subprocess_exec(
        *argv, "--tmp-prefix", "yaml", str(graph), cwd=ROOT, stderr=asyncio.subprocess.PIPE
    )
    shell, sleep = await started(pids)
    async with asyncio.timeout(60):
        _, err = await proc.communicate()  # the agent's stderr, the guard's too: ended
    # timeout SIGKILLs its own process group too (the agent's), itself with it: -9
    assert proc.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), err
    await ended(shell, sleep)
    assert f"stopped their process groups (pid {shell})" in err.decode(), err
