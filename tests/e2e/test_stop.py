"""A stop during a large first run (engine/stopgate.py): what is in progress finishes, nothing
new starts, the agent exits promptly, and the next run does the rest. The real `mgmt` command,
real files, real signals."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
from pathlib import Path

import pytest

from tests.e2e.helpers import Daemon, free_port, run_mgmt, wait_path
from tests.e2e.test_exec_lifetime import guards

N = 10000  # files: a first run of a few seconds here (2,000 were written whole before a stop landed, once in CI, 2026-12-05)
CREATED = re.compile(r"file\[f(\d+)\]: created (\S+)$")


def many_files(tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "out"
    out.mkdir()
    lines = ["graph: many", "resources:", "  file:"]
    lines += [f'    - {{name: f{i}, path: {out}/f{i}, content: "file {i}\\n"}}' for i in range(N)]
    graph = tmp_path / "graph.yaml"
    graph.write_text("\n".join(lines) + "\n")
    return graph, out


def created(daemon: Daemon) -> set[str]:
    return {m[2] for line in daemon.lines if (m := CREATED.search(line))}


def complete(out: Path) -> set[str]:
    """The paths under `out`, each asserted to be a managed file with its whole content (no
    temp file of an interrupted write)."""
    paths = set()
    for path in out.iterdir():
        i = int(path.name.removeprefix("f"))  # a temp file (.mgmt.*) fails here
        assert path.read_text() == f"file {i}\n", path
        paths.add(str(path))
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_stop_during_a_first_run_leaves_the_rest_to_the_next_run(
    tmp_path: Path, sig: signal.Signals
) -> None:
    graph, out = many_files(tmp_path)
    async with Daemon(["run", "--tmp-prefix", "yaml", str(graph)]) as first:
        await first.wait_log(": created ", timeout=120)
        first.signal(sig)
        # A hang bound: it exits in about a second here (it wrote every queued file before).
        assert await first.wait(timeout=60) == 0  # a stop asked for is a clean stop
    done = complete(out)
    assert done == created(first)  # a "created" line for each file there, and only for them
    assert 0 < len(done) < N, "every file was written after the signal"
    undone = f"stopped: {N - len(done)} of {N} resources left undone"
    assert any(undone in line for line in first.lines), first.log
    assert not any("failed" in line or "Traceback" in line for line in first.lines), first.log

    async with Daemon(["run", "--converged-timeout=0", "--tmp-prefix", str(graph)]) as second:
        assert await second.wait(timeout=120) == 0
    assert complete(out) == done | created(second)
    assert len(created(second)) == N - len(done)


EXEC_SIG = """
exec "hi" {
	cmd => "/bin/cat",
	args => ["FIFO"],
	SIG
	donecmd => "echo all done",
}
"""


@pytest.mark.parametrize(
    ("sig", "signals"), [("SIGCONT", 1), ("", 1), ("SIGCONT", 2)], ids=["sig", "default", "twice"]
)
async def test_a_graceful_stop_sends_a_running_exec_its_sig(
    tmp_path: Path, sig: str, signals: int
) -> None:
    """mgmt's examples/lang/exec-sig.mcl, its `sleep` a `cat` of a FIFO that the test ends: the
    first Ctrl-C sends the command `sig` (SIGTERM by default, which ends it) and its run is
    not done (no donecmd, whatever its exit code), as mgmt's exec when its context is
    cancelled; a second one kills it (a forced stop, exit 1), and the stop's summary names it
    either way."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code = EXEC_SIG.replace("FIFO", str(fifo))
    code = code.replace("SIG\n", f'sig => "{sig}",\n' if sig else "")
    program = tmp_path / "exec-sig.mcl"
    program.write_text(code)
    async with Daemon(["run", "--tmp-prefix", "lang", str(program)]) as daemon:
        # Opened once cat has opened it to read: the command runs.
        writer = await asyncio.to_thread(open, fifo, "w")
        try:
            daemon.signal(signal.SIGINT)
            await daemon.wait_log(f"exec[hi]: cmd: stopping: sent {sig or 'SIGTERM'}")
            if signals == 2:
                daemon.signal(signal.SIGINT)
                assert await daemon.wait() == 1
        finally:
            writer.close()  # cat, still running if SIGCONT was all it got, reads its end
        if signals == 1:
            assert await daemon.wait() == 0
    how = "exited with code 0" if sig else "killed by signal 15"
    if signals == 1:
        assert f"exec[hi]: cmd stopped ({how}): not done, the next run runs it" in daemon.log
        # The summary names the interrupted exec, and no count of refused ones (none were).
        undone = "stopped: 1 of 1 resource left undone (exec[hi] interrupted); the next run"
        assert undone in daemon.log
        assert "check_appl" not in daemon.log.split("stopped: 1 of 1")[1]
    else:  # the forced stop kills it, and names it too
        assert "exec[hi]: cmd killed (a forced stop): not done" in daemon.log
        undone = "stopped: 1 of 1 resource left undone (exec[hi] interrupted); the next run"
        assert undone in daemon.log
    assert "all done" not in daemon.log and "ran:" not in daemon.log
    assert "failed" not in daemon.log and "Traceback" not in daemon.log


async def test_a_stop_names_the_resource_waiting_to_retry(tmp_path: Path) -> None:
    """A SIGTERM while a resource waits for its next try: the stop's summary names it (as
    --max-runtime's "did not converge" does), so a cron mail says what was left undone."""
    graph = tmp_path / "retry.yaml"
    graph.write_text(
        "graph: r\nresources:\n  exec:\n    - {name: flaky, cmd: /bin/false, "
        "meta: {retry: 100, delay: 60000}}\n  noop:\n    - {name: fine}\n"
    )
    async with Daemon(["run", "--tmp-prefix", str(graph)]) as daemon:
        await daemon.wait_log("exec[flaky]: failed, retrying in 60s")
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0  # a stop asked for is a clean one
    undone = "stopped: 1 of 2 resources left undone (exec[flaky] retrying after a failure); the"
    assert undone in daemon.log, daemon.log


def running(pid: int) -> bool:
    """The process exists and is not a zombie (its reaper, outside this test, may be slow)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            return stat_file.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False


async def test_a_command_left_by_a_killed_agent_is_stopped_before_it_runs_again(
    tmp_path: Path,
) -> None:
    """tester6's finding 4: SIGKILL of the agent orphans its running command (the shell and
    the `sleep` below it) when its guard is killed too (reaper.py: else it stops them,
    tests/e2e/test_exec_lifetime.py); the next agent on that prefix stops that process group
    before the resource runs again, so one command never runs twice at once."""
    pids = tmp_path / "pids"
    graph = tmp_path / "graph.yaml"
    line = '    - {name: mig, cmd: "sleep 300 & echo $$ $! > PIDS; wait; echo end >> PIDS", shell: /bin/sh}'
    graph.write_text(f"graph: k\nresources:\n  exec:\n{line.replace('PIDS', str(pids))}\n")
    prefix = tmp_path / "prefix"
    async with Daemon(["run", "--prefix", str(prefix), str(graph)]) as first:
        await first.wait_log("exec[mig]: running:")
        # Recorded beside the run (a few ms after it started): a kill before is not covered.
        for path in (pids, prefix / "var/exec/mig/running.cmd"):
            await wait_path(path, lambda p: p.exists() and p.read_text().endswith("\n"))
        assert first.proc is not None
        (guard,) = guards(first.proc.pid)
        os.kill(guard, signal.SIGKILL)  # (both killed: `kill -9` of every process of the user)
        first.signal(signal.SIGKILL)
        await first.wait()
    shell, sleep = (int(pid) for pid in pids.read_text().split())
    assert running(shell) and running(sleep)  # orphaned: what the next agent must stop
    graph.write_text("graph: k\nresources:\n  exec:\n    - {name: mig, cmd: /bin/true}\n")
    args = ["run", "--prefix", str(prefix), "--converged-timeout=0", str(graph)]
    async with Daemon(args) as second:
        assert await second.wait() == 0
    stopped = f"cmd of an earlier agent (pid {shell}) still ran: stopped its process group"
    assert any(stopped in line for line in second.lines), second.log
    assert not running(shell) and not running(sleep)
    assert "end" not in pids.read_text()
    assert not list(prefix.glob("var/exec/mig/running.*"))  # the second run's record is gone


@pytest.mark.parametrize("how", ["removed", "moved"])
async def test_an_agent_whose_prefix_is_removed_stops_and_says_why(
    tmp_path: Path, how: str
) -> None:
    """tester11's finding 4: the prefix removed under a running agent (`rm -rf`, tmpfiles'
    ageing) took its lock and status socket: `mgmt status` found no agent for the rest of its
    life and a second agent ran beside it, unsaid. It stops, exit 1 (the unit restarts it: a
    fresh start makes them again), and says why; a touch of the lock file is no removal."""
    prefix = tmp_path / "prefix"
    graph = tmp_path / "g.yaml"
    graph.write_text("graph: g\nresources:\n  noop:\n    - name: n\n")
    async with Daemon(["run", "--prefix", str(prefix), "yaml", str(graph)]) as daemon:
        await daemon.wait_log("converged:")
        os.utime(prefix / ".mgmt-agent.lock")  # an event, not a removal
        os.chmod(prefix / ".mgmt-agent.lock", 0o600)
        code, out = await asyncio.to_thread(run_mgmt, ["status", "--prefix", str(prefix)], 30)
        assert code == 0, out  # still there: its events came before the answer
        if how == "removed":
            shutil.rmtree(prefix)
        else:
            prefix.rename(tmp_path / "elsewhere")
        assert await daemon.wait() == 1
    said = f"main: the prefix {prefix} was removed or moved under this agent"
    assert sum(said in line for line in daemon.lines) == 1, daemon.log


@pytest.mark.slow
async def test_a_command_ignoring_sigterm_is_killed_after_the_stops_grace(tmp_path: Path) -> None:
    """tester11's finding 9: a command that ignores SIGTERM (a backup script, dpkg) held a
    graceful stop for ever: `systemctl stop` waited TimeoutStopSec (90 s), SIGKILLed all and
    the unit ended `failed`, without the agent's `stopped:` line. Its group is killed after
    STOP_GRACE (10 s), said in a line naming it, and the stop ends cleanly (exit 0)."""
    started = tmp_path / "started"
    graph = tmp_path / "g.yaml"
    cmd = f"trap '' TERM; touch {started}; sleep 1000"
    graph.write_text(
        f'graph: g\nresources:\n  exec:\n    - {{name: stubborn, cmd: "{cmd}", shell: /bin/sh}}\n'
    )
    async with Daemon(["run", "--tmp-prefix", "yaml", str(graph)]) as daemon:
        await wait_path(started, Path.exists)
        daemon.signal(signal.SIGTERM)
        await daemon.wait_log("exec[stubborn]: cmd: stopping: sent SIGTERM")
        assert await daemon.wait(timeout=60) == 0
    assert "exec[stubborn]: cmd: did not end within 10s of SIGTERM: killed (SIGKILL)" in daemon.log
    undone = "stopped: 1 of 1 resource left undone (exec[stubborn] interrupted)"
    assert undone in daemon.log, daemon.log


async def test_an_agent_that_does_not_stop_in_time_is_killed_not_left_running(
    tmp_path: Path,
) -> None:
    """The tests' own bound (tests/e2e/helpers.py, Daemon.stop): an agent still running at it
    is killed before the TimeoutError goes on. Before, it was left running and its Popen,
    collected during a later test's setup, failed that test (CI: test_http_server_ui's
    "unraisable exception warnings", from the cluster fight test's agent). SIGCONT is a
    signal the agent does not stop for."""
    ports = [f"--client-urls=https://127.0.0.1:{free_port()}"]  # not 2379/2380: another
    ports.append(f"--server-urls=https://127.0.0.1:{free_port()}")  # agent's may be there
    daemon = Daemon(["run", "--prefix", str(tmp_path / "prefix"), *ports, "empty"])
    await daemon.__aenter__()
    try:
        await daemon.wait_log("agent starting")
        with pytest.raises(TimeoutError):
            await daemon.stop(signal.SIGCONT, timeout=1)
        assert daemon.proc is not None and daemon.proc.returncode == -signal.SIGKILL
    finally:
        await daemon.__aexit__(None, None, None)


async def test_a_stop_during_a_graph_swap_says_the_new_graph_was_not_put_in_place(
    tmp_path: Path,
) -> None:
    """opsuser, 2026-12-06: a stop (SIGTERM, `systemctl restart`) while a swap was under way
    logged `graph file changed: swapping in the new graph`, then exited 0, and nothing said
    that the new graph had not been put in place. Here the swap waits for the command it
    replaces (its `sig: SIGCONT` is ignored, up to the 10 s bound) when the stop comes."""
    graph = tmp_path / "graph.yaml"

    def write(cmd: str) -> None:
        new = tmp_path / "graph.new"
        new.write_text(
            "graph: swap\nresources:\n  exec:\n"
            f"    - {{name: long, cmd: '{cmd}', sig: SIGCONT}}\n"
            f'  file:\n    - {{name: {tmp_path}/out/f, content: "f\\n"}}\n'
        )
        new.rename(graph)

    write("sleep 60")
    async with Daemon(["run", "--prefix", str(tmp_path / "prefix"), "yaml", str(graph)]) as daemon:
        await daemon.wait_log("running: sleep 60")
        write("sleep 61")
        await daemon.wait_log("graph file changed: swapping in the new graph")
        daemon.signal(signal.SIGTERM)
        await daemon.wait_log(
            "stopped during a graph swap: the new graph (2 resources) was not put in place; "
            "the next run applies it"
        )
        daemon.signal(signal.SIGTERM)  # the second: no need to wait for the bound
        await daemon.wait()
    assert "running: sleep 61" not in daemon.log
