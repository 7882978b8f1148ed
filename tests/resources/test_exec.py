"""exec: real subprocesses on a real tmp_path; events awaited with timeouts, never slept on."""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from engine.errors import ResourceError, ValidationError
from engine.handle import Shared
from engine.meta import Meta
from engine.params import build
from engine.stopgate import Interrupted
from resources.exec import SHOWN_HEAD, SHOWN_TAIL, ExecRes
from tests.aio import OnLog
from tests.conftest import Running
from tests.e2e.helpers import wait_path

Start = Callable[..., Awaitable[Running]]


def runs(log: Path) -> int:
    """How many times a command that appends a line to `log` has run."""
    return len(log.read_text().splitlines()) if log.exists() else 0


def appender(log: Path, **params: Any) -> ExecRes:
    return ExecRes(name="x", cmd=f"echo ran >> {log}", shell="/bin/sh", **params)


async def wait_gone(pid: int, within: float = 5.0) -> None:
    """Wait (bounded) until process `pid` has exited, using a pidfd (no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    exited = asyncio.Event()
    loop.add_reader(fd, exited.set)
    try:
        async with asyncio.timeout(within):
            await exited.wait()
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def cmdline(pid: int) -> list[str]:
    """The argv process `pid` runs."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def alive(pid: int) -> bool:
    """Running (not exited, not a zombie: this sandbox's PID 1 does not reap orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


# the idempotency timeline -------------------------------------------------------------------


async def test_runs_once_on_startup(run_resource: Start, tmp_path: Path) -> None:
    log = tmp_path / "log"
    running = await run_resource(appender(log))
    assert await running.res.check_apply(True) is False
    assert runs(log) == 1
    assert await running.res.check_apply(True) is True  # paired execution: no new event
    assert runs(log) == 1


async def test_refresh_runs_again(run_resource: Start, tmp_path: Path) -> None:
    log = tmp_path / "log"
    running = await run_resource(appender(log))
    assert await running.res.check_apply(True) is False
    running.handle.refresh_flag = True
    assert await running.res.check_apply(True) is False
    assert runs(log) == 2


async def test_noop_reports_but_does_not_run(
    run_resource: Start, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    log = tmp_path / "log"
    running = await run_resource(appender(log))
    assert await running.res.check_apply(False) is False
    assert await running.res.check_apply(False) is False  # still pending: nothing was done
    assert runs(log) == 0
    assert f"would run: echo ran >> {log}" in caplog.text
    assert await running.res.check_apply(True) is False
    assert runs(log) == 1


async def test_poll_ticks_are_events(run_resource: Start, tmp_path: Path) -> None:
    # With meta.poll the engine's ticks (not our watch) call check_apply: each one runs.
    log = tmp_path / "log"
    running = await run_resource(appender(log, meta=Meta(poll=60)), watch=False)
    assert await running.res.check_apply(True) is False
    assert await running.res.check_apply(True) is False
    assert runs(log) == 2


# guards: creates, ifcmd -----------------------------------------------------------------------


async def test_creates_existing_skips(run_resource: Start, tmp_path: Path) -> None:
    log, marker = tmp_path / "log", tmp_path / "marker"
    marker.touch()
    running = await run_resource(appender(log, creates=str(marker)))
    assert await running.res.check_apply(True) is True
    assert runs(log) == 0


async def test_creates_made_by_the_command_guards_refreshes(
    run_resource: Start, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    res = ExecRes(name="x", cmd="touch", args=[str(marker)], creates=str(marker))
    running = await run_resource(res)
    assert await running.res.check_apply(True) is False
    assert marker.exists()
    running.handle.refresh_flag = True
    assert await running.res.check_apply(True) is True


async def test_ifcmd_false_skips_until_an_event_makes_it_true(
    run_resource: Start, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    log, flag = tmp_path / "log", tmp_path / "flag"
    res = appender(log, ifcmd=f"test -e {flag}", watchfiles=[str(flag)])
    running = await run_resource(res)
    assert await running.res.check_apply(True) is True
    assert "nothing to do: ifcmd exited with code 1" in caplog.text
    assert await running.res.check_apply(False) is True  # ifcmd runs in noop too: still false
    flag.touch()
    await running.handle.next_event()
    assert await running.res.check_apply(False) is False
    assert runs(log) == 0
    assert await running.res.check_apply(True) is False
    assert runs(log) == 1
    assert await running.res.check_apply(True) is True


# failures -------------------------------------------------------------------------------------


async def test_non_zero_exit_fails_with_stderr(run_resource: Start) -> None:
    res = ExecRes(name="x", cmd="echo oops >&2; exit 3", shell="/bin/sh")
    running = await run_resource(res)
    with pytest.raises(ResourceError, match=r"cmd exited with code 3; stderr: oops"):
        await running.res.check_apply(True)
    assert res.stderr == "oops\n"
    with pytest.raises(ResourceError):  # still pending: a retry runs it again
        await running.res.check_apply(True)


async def test_missing_program_fails(run_resource: Start, tmp_path: Path) -> None:
    running = await run_resource(ExecRes(name="x", cmd=str(tmp_path / "nope")))
    with pytest.raises(ResourceError, match="cmd: cannot start"):
        await running.res.check_apply(True)


async def test_timeout_kills_the_whole_process_group(run_resource: Start, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    cmd = f"sleep 30 & echo $! > {pidfile}; sleep 30"
    running = await run_resource(ExecRes(name="x", cmd=cmd, shell="/bin/sh", timeout=1))
    with pytest.raises(ResourceError, match="cmd timed out after 1s"):
        await running.res.check_apply(True)
    background = int(pidfile.read_text())
    await wait_gone(background)
    assert not alive(background)


async def test_timeout_stops_the_group_with_sigterm_first(
    run_resource: Start, tmp_path: Path
) -> None:
    """The one policy of resources/_lib/proc.py: SIGTERM, so a command can clean up."""
    marker = tmp_path / "terminated"
    cmd = f"trap 'echo term > {marker}; exit 1' TERM; sleep 30 & wait"
    running = await run_resource(ExecRes(name="x", cmd=cmd, shell="/bin/sh", timeout=1))
    with pytest.raises(ResourceError, match="cmd timed out after 1s"):
        await running.res.check_apply(True)
    assert marker.read_text() == "term\n"


async def test_timeout_kills_a_group_that_ignores_sigterm(
    run_resource: Start, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    cmd = f"trap '' TERM; sleep 30 & echo $! > {pidfile}; wait"  # sleep inherits the ignore
    running = await run_resource(ExecRes(name="x", cmd=cmd, shell="/bin/sh", timeout=1))
    with pytest.raises(ResourceError, match="cmd timed out after 1s"):
        await running.res.check_apply(True)
    background = int(pidfile.read_text())
    await wait_gone(background)
    assert not alive(background)


async def test_background_child_without_our_output_is_left_alone(
    run_resource: Start, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    cmd = f"sleep 30 >/dev/null 2>&1 & echo $! > {pidfile}"
    running = await run_resource(ExecRes(name="x", cmd=cmd, shell="/bin/sh"))
    assert await running.res.check_apply(True) is False
    background = int(pidfile.read_text())
    try:
        assert alive(background)
    finally:
        os.kill(background, signal.SIGKILL)


async def test_cancel_kills_the_command(run_resource: Start, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    cmd = f"echo $$ > {pidfile}.new; mv {pidfile}.new {pidfile}; exec sleep 30"
    res = ExecRes(name="x", cmd=cmd, shell="/bin/sh", watchfiles=[str(pidfile)])
    running = await run_resource(res)
    task = asyncio.create_task(running.res.check_apply(True))
    await running.handle.next_event()  # the pid file appeared, complete
    pid = int(pidfile.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_gone(pid)
    assert not alive(pid)


# how the command is run -----------------------------------------------------------------------


async def test_args_are_passed_verbatim(run_resource: Start) -> None:
    res = ExecRes(name="x", cmd="printf", args=["<%s>\n", "a b; echo pwned"])
    running = await run_resource(res)
    assert await running.res.check_apply(True) is False
    assert res.stdout == "<a b; echo pwned>\n"


async def test_cmd_without_shell_is_split_not_interpreted(run_resource: Start) -> None:
    res = ExecRes(name="x", cmd="echo 'a b' ; echo pwned")
    running = await run_resource(res)
    assert await running.res.check_apply(True) is False
    assert res.stdout == "a b ; echo pwned\n"


async def test_output_is_kept_and_logged(
    run_resource: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    res = ExecRes(name="x", cmd="echo one; echo two >&2", shell="/bin/sh")
    running = await run_resource(res)
    assert await running.res.check_apply(True) is False
    assert (res.stdout, res.stderr) == ("one\n", "two\n")
    assert sorted(res.output.splitlines()) == ["one", "two"]  # type: ignore[union-attr]
    assert "exec[x]: out: one" in caplog.text
    assert "exec[x]: err: two" in caplog.text


@pytest.mark.parametrize("level", [logging.INFO, logging.DEBUG], ids=["info", "verbose"])
async def test_a_runs_logged_output_is_capped_and_kept_whole(
    run_resource: Start, caplog: pytest.LogCaptureFixture, level: int
) -> None:
    """tester6's finding 5: `seq 200000` logged 200,000 INFO lines. The first and last
    SHOWN_HEAD/SHOWN_TAIL lines are logged, with how many were left out between (at DEBUG,
    --verbose, every line in order); send/recv keeps all of it; binary output is named."""
    caplog.set_level(level)
    res = ExecRes(name="x", cmd="seq 1000; head -c 64 /dev/zero", shell="/bin/sh")
    running = await run_resource(res)
    assert await running.res.check_apply(True) is False
    assert res.stdout == "".join(f"{i}\n" for i in range(1, 1001)) + "\0" * 64
    out = [r for r in caplog.records if r.getMessage().startswith("exec[x]: out: ")]
    info = [r.getMessage().removeprefix("exec[x]: out: ") for r in out if r.levelno == logging.INFO]
    assert info == [
        *(str(i) for i in range(1, SHOWN_HEAD + 1)),
        *(str(i) for i in range(1001 - SHOWN_TAIL + 1, 1001)),
        "(64 characters of binary output, not shown)",
    ]
    left = f"exec[x]: ... {1001 - SHOWN_HEAD - SHOWN_TAIL} output lines left out here"
    assert left in caplog.text
    if level == logging.DEBUG:  # --verbose: every line, in order
        assert [r.getMessage().removeprefix("exec[x]: out: ") for r in out][:1000] == [
            str(i) for i in range(1, 1001)
        ]


async def test_the_kept_output_is_its_last_part_past_the_limit(
    run_resource: Start, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tester13 #11: a command printing 2 GB took the agent's memory, then the agent. Its
    output is kept for send/recv up to KEEP_LIMIT (here 64 KiB), the last part, with a warning."""
    import resources.exec as exec_module

    monkeypatch.setattr(exec_module, "KEEP_LIMIT", 64 << 10)
    caplog.set_level(logging.INFO)
    res = ExecRes(name="x", cmd="seq 100000; echo last >&2", shell="/bin/sh")
    running = await run_resource(res)
    assert await running.res.check_apply(True) is False
    assert res.output is not None and res.stdout is not None
    kept = len(res.output) + exec_module.LINE_COST * len(res.output.splitlines())
    assert kept <= 64 << 10
    assert res.stdout.endswith("\n99999\n100000\n") and res.stderr == "last\n"
    assert (
        "exec[x]: cmd: its output came to more than 65,536 characters: only its last" in caplog.text
    )


async def test_cwd(run_resource: Start, tmp_path: Path) -> None:
    res = ExecRes(name="x", cmd="pwd", cwd=str(tmp_path))
    running = await run_resource(res)
    assert await running.res.check_apply(True) is False
    assert res.stdout == f"{tmp_path}\n"


async def test_env_overlays_and_secrets_are_redacted(
    run_resource: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    env = {"SECRET": "hunter22", "GREETING": "hi"}
    cmd = 'echo "token=$SECRET path=$PATH"; echo hunter22 >&2; exit 1'
    res = ExecRes(name="x", cmd=cmd, shell="/bin/sh", env=env)
    running = await run_resource(res)
    with pytest.raises(ResourceError) as err:
        await running.res.check_apply(True)
    assert "hunter22" not in str(err.value)
    assert f"token=hunter22 path={os.environ['PATH']}\n" == res.stdout  # inherited + overlay
    assert "hunter22" not in caplog.text
    assert "out: token=*** path=" in caplog.text
    assert "err: ***" in caplog.text


async def test_secret_in_the_command_line_is_redacted(
    run_resource: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    res = ExecRes(name="x", cmd="echo", args=["hunter22"], env={"SECRET": "hunter22"})
    running = await run_resource(res)
    assert await running.res.check_apply(False) is False
    assert await running.res.check_apply(True) is False
    assert "would run: echo ***" in caplog.text
    assert "hunter22" not in caplog.text


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
async def test_user_runs_with_its_ids_and_groups(run_resource: Start) -> None:
    res = ExecRes(name="x", cmd="sh -c 'id -u; id -g; id -G; echo $HOME'", user="nobody")
    running = await run_resource(res)
    assert await running.res.check_apply(True) is False
    home = pwd.getpwnam("nobody").pw_dir
    assert (res.stdout or "").splitlines() == ["65534", "65534", "65534", home]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
async def test_user_gets_a_fresh_environment_not_the_agents(
    run_resource: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tester13 #15: a command run as another user got the agent's whole environment (root's
    tokens, root's PATH), readable by that user in /proc/PID/environ. Now it gets what
    `runuser -l` gives (HOME, USER, LOGNAME, SHELL, a standard PATH, the locale), `env` on top;
    without `user` the agent's environment is inherited as before."""
    monkeypatch.setenv("ROOT_API_TOKEN", "tok-ROOTONLY-123")
    monkeypatch.setenv("LANG", "C.UTF-8")
    for name in ("LANGUAGE", "LC_ALL", "TERM", "TZ"):
        monkeypatch.delenv(name, raising=False)
    entry = pwd.getpwnam("nobody")
    res = ExecRes(name="x", cmd="env", user="nobody", env={"APP": "1"})
    running = await run_resource(res)
    assert await running.res.check_apply(True) is False
    seen = dict(line.split("=", 1) for line in (res.stdout or "").splitlines())
    assert seen == {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": entry.pw_dir,
        "USER": "nobody",
        "LOGNAME": "nobody",
        "SHELL": entry.pw_shell,
        "LANG": "C.UTF-8",
        "APP": "1",
    }
    mine = ExecRes(name="y", cmd="env")
    running = await run_resource(mine)
    assert await running.res.check_apply(True) is False
    assert "ROOT_API_TOKEN=tok-ROOTONLY-123" in (mine.stdout or "")


async def test_unknown_user_fails(run_resource: Start) -> None:
    running = await run_resource(ExecRes(name="x", cmd="true", user="no-such-user-here"))
    with pytest.raises(ResourceError, match="no such user"):
        await running.res.check_apply(True)


# watch ------------------------------------------------------------------------------------------


async def test_watchfiles_change_is_an_event(run_resource: Start, tmp_path: Path) -> None:
    log, watched = tmp_path / "log", tmp_path / "watched"
    running = await run_resource(appender(log, watchfiles=[str(watched)]))
    assert await running.res.check_apply(True) is False
    assert await running.res.check_apply(True) is True
    watched.write_text("x")
    await running.handle.next_event()
    assert await running.res.check_apply(True) is False
    assert runs(log) == 2


async def test_watchcmd_lines_are_events_and_its_exit_fails_the_watch(
    run_resource: Start, tmp_path: Path
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    watchcmd = f"cat {fifo}; echo gone >&2; exit 3"
    res = ExecRes(name="x", cmd="true", watchcmd=watchcmd, watchshell="/bin/sh")
    running = await run_resource(res)
    assert await running.res.check_apply(True) is False
    assert await running.res.check_apply(True) is True
    writer = await asyncio.to_thread(os.open, fifo, os.O_WRONLY)
    try:
        for n in (1, 2):
            os.write(writer, b"line\n")
            await running.handle.next_event()
            assert running.handle.events == 1 + n
            assert await running.res.check_apply(True) is False
            assert await running.res.check_apply(True) is True
    finally:
        os.close(writer)  # cat sees EOF and exits: the watch fails
    assert running.task is not None
    with pytest.raises(ResourceError, match=r"watchcmd exited with code 3; stderr: gone"):
        async with asyncio.timeout(5):
            await running.task


async def test_a_running_commands_group_is_recorded_and_the_record_removed_in_order(
    run_resource: Start, engine_shared: Shared, tmp_path: Path
) -> None:
    """leftovers5 7: the records are written and removed by a thread of their own, no run
    waiting for either. While a command runs its record is there (what the next agent reads
    after a SIGKILL, tests/e2e/test_stop.py); each removal comes after its record, so after
    many runs and the engine's stop none is left behind."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    res = ExecRes(name="x", cmd="cat", args=[str(fifo)])
    running = await run_resource(res)
    record = tmp_path / "var" / "exec" / "x" / "running.cmd"
    run = asyncio.create_task(running.res.check_apply(True))
    await wait_path(record, lambda p: p.exists() and p.read_text().endswith("\n"), 10)
    pid, _started, uid = record.read_text().split()
    assert int(uid) == os.geteuid()  # the command's real user (a group found is stopped as its)
    # Open once cat has the FIFO open: its exec is done. Read before, the arguments could be
    # empty (the kernel sets a new image's arguments after the exec's close-on-exec, which is
    # when the spawn returns; firstcap saw it once in a suite).
    writer = await asyncio.to_thread(os.open, fifo, os.O_WRONLY)
    assert cmdline(int(pid)) == ["cat", str(fifo)]  # the command's own process
    os.close(writer)  # cat sees EOF and ends: the run too
    assert await run is False
    quick = ExecRes(name="y", cmd="true")
    again = await run_resource(quick)
    for _ in range(30):
        again.handle.refresh_flag = True
        assert await again.res.check_apply(True) is False
    await engine_shared.aclose()  # the engine's stop: what the thread was given is done
    assert not list((tmp_path / "var" / "exec").glob("*/running.*"))


@pytest.mark.parametrize("end", ["exits", "stops"])
async def test_watchcmd_stderr_is_capped_as_a_runs_output(
    run_resource: Start, caplog: pytest.LogCaptureFixture, end: str
) -> None:
    """leftovers5 1: a chatty watchcmd logged every stderr line at INFO. Now as a run's
    output: its first and last lines at INFO, those between at DEBUG (--verbose); the last
    ones when it ends, whether it exits (the watch fails) or the resource stops."""
    caplog.set_level(logging.DEBUG)
    tail = "exec[x]: watchcmd err: 80"  # at DEBUG as it is left out: line 100 was read
    logged = OnLog(tail)
    logging.getLogger().addHandler(logged)
    after = "exit 3" if end == "exits" else "exec sleep 30"
    res = ExecRes(name="x", cmd="true", watchcmd=f"seq 100 >&2; {after}", watchshell="/bin/sh")
    try:
        running = await run_resource(res)
        assert running.task is not None
        async with asyncio.timeout(10):
            await logged.seen.wait()
        if end == "stops":
            running.task.cancel()
        with pytest.raises(ResourceError if end == "exits" else asyncio.CancelledError):
            async with asyncio.timeout(10):
                await running.task
    finally:
        logging.getLogger().removeHandler(logged)
    err = [r for r in caplog.records if r.getMessage().startswith("exec[x]: watchcmd err: ")]
    info = [r.getMessage().rpartition(" ")[2] for r in err if r.levelno == logging.INFO]
    assert info == [str(i) for i in (*range(1, SHOWN_HEAD + 1), *range(101 - SHOWN_TAIL, 101))]
    assert [r.getMessage().rpartition(" ")[2] for r in err] == [str(i) for i in range(1, 101)]
    assert f"exec[x]: ... {100 - SHOWN_HEAD - SHOWN_TAIL} output lines left out here" in (
        caplog.text
    )


async def test_cancelling_the_watch_kills_watchcmd(run_resource: Start, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    watchcmd = f"echo $$ > {pidfile}; echo ready; exec sleep 30"
    res = ExecRes(name="x", cmd="true", watchcmd=watchcmd, watchshell="/bin/sh")
    running = await run_resource(res)
    await running.handle.next_event()  # "ready"
    pid = int(pidfile.read_text())
    assert running.task is not None
    running.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running.task
    await wait_gone(pid)
    assert not alive(pid)


# validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({}, "cmd"),
        ({"cmd": ""}, "cmd"),
        ({"cmd": "   "}, "cmd"),
        ({"cmd": "echo 'unbalanced"}, "cmd"),
        ({"cmd": "echo", "shell": "/bin/sh", "args": ["x"]}, "shell"),
        ({"cmd": "echo", "shell": ""}, "shell"),
        ({"cmd": "echo", "ifshell": "/bin/sh"}, "ifshell"),
        ({"cmd": "echo", "watchshell": "/bin/sh"}, "watchshell"),
        ({"cmd": "echo", "timeout": -1}, "timeout"),
        ({"cmd": "echo", "cwd": "relative/dir"}, "cwd"),
        ({"cmd": "echo", "ifcmd": "true", "ifcwd": "rel"}, "ifcwd"),
        ({"cmd": "echo", "creates": "rel"}, "creates"),
        ({"cmd": "echo", "watchfiles": ["/ok", "rel"]}, "watchfiles[1]"),
        ({"cmd": "echo", "user": ""}, "user"),
    ],
)
def test_validate_names_the_field(params: dict[str, Any], key: str) -> None:
    with pytest.raises(ValidationError) as err:
        ExecRes(name="x", **params).validate()
    assert err.value.key == key


def test_validate_accepts_the_full_form() -> None:
    ExecRes(
        name="x",
        cmd="make",
        args=["-C", "/srv/app"],
        cwd="/srv",
        env={"A": "b"},
        timeout=10,
        ifcmd="test -d /srv/app",
        creates="/srv/app/out",
        watchcmd="tail -F /var/log/app",
        watchshell="/bin/sh",
        watchfiles=["/etc/app.conf"],
        user="nobody",
        group="nogroup",
    ).validate()


@pytest.mark.parametrize(
    "key",
    [
        *("shell", "cwd", "ifcmd", "ifshell", "ifcwd", "creates"),
        *("watchcmd", "watchshell", "watchcwd", "user", "group"),
    ],
)
def test_an_empty_string_in_a_graph_means_not_set(key: str) -> None:
    """As in mgmt (`shell: ''` etc.): the param keeps its default, the resource is valid."""
    res = build(ExecRes, {"name": "x", "cmd": "true", key: ""})
    res.validate()
    assert getattr(res, key) is None


def test_an_empty_cmd_stays_an_error() -> None:
    with pytest.raises(ValidationError) as err:
        build(ExecRes, {"name": "x", "cmd": ""}).validate()
    assert err.value.key == "cmd"


def test_cmp_compares_params() -> None:
    assert ExecRes(name="x", cmd="true").cmp(ExecRes(name="x", cmd="true"))
    assert not ExecRes(name="x", cmd="true").cmp(ExecRes(name="x", cmd="false"))


async def test_an_event_during_a_run_is_not_swallowed(run_resource: Start, tmp_path: Path) -> None:
    """A watchcmd line printed while the command runs still asks for another run."""
    go = tmp_path / "go"
    fifo = tmp_path / "lines"
    os.mkfifo(fifo)
    res = ExecRes(
        name="x",
        shell="/bin/sh",
        cmd=f"echo run >> {tmp_path}/runs; cat {go}",  # blocks until `go` has content
        watchcmd=f"cat {fifo}",
        watchshell="/bin/sh",
    )
    go.write_text("")
    running = await run_resource(res)
    writer = await asyncio.to_thread(open, fifo, "w")  # the watchcmd's reader is open now
    try:
        assert not await res.check_apply(True)  # startup run
        writer.write("line\n")  # an event ...
        writer.flush()
        await running.handle.next_event()
        assert not await res.check_apply(True)  # ... is a run
        assert await res.check_apply(True)  # and nothing more
    finally:
        writer.close()
    assert (tmp_path / "runs").read_text().count("run") == 2


async def test_a_background_child_does_not_hold_the_run(
    run_resource: Start, tmp_path: Path
) -> None:
    res = ExecRes(name="bg", shell="/bin/sh", cmd="sleep 30 & echo started")
    await run_resource(res)
    async with asyncio.timeout(10):  # GRACE is 1 s; the child would hold it for 30 s
        assert not await res.check_apply(True)
    assert res.stdout == "started\n"


# mgmt's later params: nifcmd, donecmd, mtimes, sig, send_* ----------------------------------


async def test_nifcmd_zero_skips_and_non_zero_runs(
    run_resource: Start, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    log = tmp_path / "log"
    skipped = await run_resource(appender(log, nifcmd="true"))
    assert await skipped.res.check_apply(True) is True
    assert "nothing to do: nifcmd exited with code 0" in caplog.text
    ran = await run_resource(appender(log, nifcmd="false"))
    assert await ran.res.check_apply(True) is False
    assert runs(log) == 1


async def test_donecmd_runs_after_a_successful_run_only(
    run_resource: Start, tmp_path: Path
) -> None:
    done = tmp_path / "done"
    ok = ExecRes(name="x", cmd="true", donecmd=f"touch {done}")
    running = await run_resource(ok)
    assert await running.res.check_apply(False) is False  # noop: neither runs
    assert not done.exists()
    assert await running.res.check_apply(True) is False
    assert done.exists()
    done.unlink()
    failing = ExecRes(name="y", cmd="false", donecmd=f"touch {done}")
    running = await run_resource(failing)
    with pytest.raises(ResourceError, match="cmd exited with code 1"):
        await running.res.check_apply(True)
    assert not done.exists()


async def test_a_failing_donecmd_fails_the_run(run_resource: Start) -> None:
    res = ExecRes(name="x", cmd="true", donecmd="echo nope >&2; exit 4", doneshell="/bin/sh")
    running = await run_resource(res)
    with pytest.raises(ResourceError, match="donecmd exited with code 4; stderr: nope"):
        await running.res.check_apply(True)


async def test_mtimes_force_a_run_past_the_guards_once_per_change(
    run_resource: Start, tmp_path: Path
) -> None:
    log, src = tmp_path / "log", tmp_path / "src"
    src.write_text("v1")
    res = appender(log, mtimes=[str(src)], ifcmd="false")
    running = await run_resource(res)
    assert await running.res.check_apply(True) is False  # no run recorded: forced
    assert runs(log) == 1
    running.handle.refresh_flag = True  # asked again, nothing newer: ifcmd blocks
    assert await running.res.check_apply(True) is True
    running.handle.refresh_flag = False
    os.utime(src, ns=(src.stat().st_atime_ns, time.time_ns() + 10**9))  # a later mtime
    await running.handle.next_event()  # the change is an event
    assert await running.res.check_apply(True) is False
    assert runs(log) == 2
    assert await running.res.check_apply(True) is True


async def test_a_fresh_instance_remembers_the_last_run(run_resource: Start, tmp_path: Path) -> None:
    """The stamp lives in the resource's state directory: an agent restart does not rerun."""
    log, src = tmp_path / "log", tmp_path / "src"
    src.touch()
    first = await run_resource(appender(log, mtimes=[str(src)], ifcmd="false"))
    assert await first.res.check_apply(True) is False
    again = await run_resource(appender(log, mtimes=[str(src)], ifcmd="false"))
    assert await again.res.check_apply(True) is True
    assert runs(log) == 1


async def test_a_missing_mtimes_file_fails(run_resource: Start, tmp_path: Path) -> None:
    running = await run_resource(appender(tmp_path / "log", mtimes=[str(tmp_path / "gone")]))
    with pytest.raises(ResourceError, match=r"mtimes\[0\]: cannot stat .*gone"):
        await running.res.check_apply(True)


async def test_sig_is_what_a_timeout_sends_first(run_resource: Start, tmp_path: Path) -> None:
    marker = tmp_path / "got"
    cmd = f"trap 'echo int > {marker}; exit 1' INT; sleep 30 & wait"
    res = ExecRes(name="x", cmd=cmd, shell="/bin/sh", timeout=1, sig="SIGINT")
    running = await run_resource(res)
    with pytest.raises(ResourceError, match="cmd timed out after 1s"):
        await running.res.check_apply(True)
    assert marker.read_text() == "int\n"


async def test_a_stop_sends_the_running_command_its_sig_and_its_run_is_not_done(
    run_resource: Start, tmp_path: Path
) -> None:
    """The resource's stop (a graceful stop, a swap) sends the running command `sig` and lets
    it end; one that exits 0 after it did not do its work all the same: Interrupted (not
    applied), no donecmd (mgmt's exec when its context is cancelled). Once stopping, no
    command starts."""
    marker, done, ready = tmp_path / "got", tmp_path / "done", tmp_path / "ready"
    trap = f"trap 'echo int > {marker}; kill $!; exit 0' INT"
    cmd = f"{trap}; touch {ready}.new; mv {ready}.new {ready}; sleep 30 & wait"
    res = ExecRes(
        name="x", cmd=cmd, shell="/bin/sh", sig="SIGINT", donecmd=f"touch {done}",
        watchfiles=[str(ready)],
    )  # fmt: skip
    running = await run_resource(res)
    task = asyncio.create_task(res.check_apply(True))
    await running.handle.next_event()  # the trap is set
    running.handle.request_stop()
    with pytest.raises(Interrupted):
        await task
    assert marker.read_text() == "int\n" and not done.exists()
    with pytest.raises(Interrupted):  # stopping: nothing starts
        await res.check_apply(True)


@pytest.mark.parametrize(
    ("sig", "message"),
    [
        ("int", "did you mean 'SIGINT'"),
        ("TERM", "did you mean 'SIGTERM'"),
        ("SIGNOPE", "a signal name such as"),
    ],
)
def test_sig_must_name_a_signal(sig: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as err:
        ExecRes(name="x", cmd="true", sig=sig).validate()
    assert err.value.key == "sig"


async def test_send_output_is_sent_when_no_run_produced_output(
    run_resource: Start, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    marker.touch()
    res = appender(tmp_path / "log", creates=str(marker), send_output="cached\n")
    running = await run_resource(res)
    assert await running.res.check_apply(True) is True
    assert running.handle.sent == {"output": "cached\n"}
    ran = await run_resource(ExecRes(name="y", cmd="echo real", send_output="cached\n"))
    assert await ran.res.check_apply(True) is False
    assert ran.handle.sent["output"] == "real\n"


@pytest.mark.parametrize(
    "key", ["nifcmd", "nifshell", "nifcwd", "donecmd", "doneshell", "donecwd", "sig"]
)
def test_the_new_string_params_take_empty_as_not_set(key: str) -> None:
    res = build(ExecRes, {"name": "x", "cmd": "true", key: ""})
    res.validate()
    assert getattr(res, key) is None


async def test_a_file_changed_while_the_command_runs_asks_for_another_run(
    run_resource: Start, tmp_path: Path
) -> None:
    """The stamp is the run's start: what the command's own run saw change is newer."""
    src = tmp_path / "src"
    src.touch()
    # (0.1 s in: well past the file system clock's granularity, a few ms)
    cmd = f"sleep 0.1; touch {src}"
    res = ExecRes(name="x", cmd=cmd, shell="/bin/sh", mtimes=[str(src)], ifcmd="false")
    running = await run_resource(res)
    assert await running.res.check_apply(True) is False  # ran, and touched src meanwhile
    running.handle.refresh_flag = True
    assert await running.res.check_apply(True) is False  # src is newer than the run's start
