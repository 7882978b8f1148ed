"""svc against a real systemd (`systemd --user`, tests/systemd_fixture.py).

Most tests take the system code path (`session: false`) pointed at the manager's bus through
DBUS_SYSTEM_BUS_ADDRESS and MGMT_SYSTEMD_UNIT_DIR; the ones parametrized on `session` take the
session path too. Each test has units of its own names, on one manager per module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Message

from engine.errors import ResourceError, ValidationError
from engine.handle import Shared
from engine.resource import UID, Edgeable, Refreshable
from resources._lib import systemd
from resources._lib.systemd import Bus, Buses, install_links, job, unit_file_names
from resources.svc import SvcRes
from tests.aio import OnLog
from tests.conftest import Running
from tests.fakes.systemd import running_fake
from tests.systemd_fixture import Client, RealSystemd

Start = Callable[..., Awaitable[Running]]

SERVICE = """[Unit]
Description=a test service
[Service]
ExecStart=/bin/sleep infinity
{extra}
[Install]
WantedBy=default.target
"""
STATIC = "[Service]\nExecStart=/bin/sleep infinity\n"


@pytest.fixture
def start(sd: Client, run_resource: Start) -> Start:
    """run_resource, set up after (so torn down before) the test's connection."""
    return run_resource


def unit(manager: RealSystemd, stem: str = "web", text: str = SERVICE, **extra: str) -> str:
    """A new unit file (its name unused so far); the unit's full name."""
    name = manager.name(stem) + ".service"
    manager.write_unit(name, text.format(extra="\n".join(f"{k}={v}" for k, v in extra.items())))
    return name


def svc(name: str, **params: Any) -> SvcRes:
    return SvcRes(name=name.removesuffix(".service"), **params)


async def up(sd: Client, name: str) -> bool:
    return await sd.active(name) == "active" and await sd.file_state(name) == "enabled"


# the idempotency timeline -------------------------------------------------------------------


@pytest.mark.parametrize("session", [False, True], ids=["system-path", "session"])
async def test_starts_and_enables_then_nothing_to_do(
    manager: RealSystemd, sd: Client, start: Start, session: bool
) -> None:
    name = unit(manager)
    running = await start(svc(name, state="running", startup="enabled", session=session))
    assert await running.res.check_apply(True) is False
    assert await up(sd, name)
    assert manager.link("default.target", name).is_symlink()
    await running.handle.next_event()  # inotify sees the link it made (signals are muted)
    assert await running.res.check_apply(True) is True


async def test_stopped_by_hand_is_repaired(manager: RealSystemd, sd: Client, start: Start) -> None:
    name = unit(manager)
    running = await start(svc(name, state="running"))
    assert await running.res.check_apply(True) is False
    assert await running.res.check_apply(True) is True
    await manager.systemctl("stop", name)
    await running.handle.next_event()
    assert await sd.active(name) == "inactive"
    assert await running.res.check_apply(True) is False
    assert await sd.active(name) == "active"
    assert await running.res.check_apply(True) is True


async def test_crash_is_repaired(manager: RealSystemd, sd: Client, start: Start) -> None:
    name = unit(manager)
    running = await start(svc(name, state="running"))
    await running.res.check_apply(True)
    old = await sd.main_pid(name)
    os.kill(old, signal.SIGKILL)
    await sd.wait_until(lambda: _is(sd, name, "failed"))
    await running.handle.next_event()
    assert await running.res.check_apply(True) is False
    assert await sd.running_with_new_pid(name, old) != old


async def test_a_stop_by_hand_is_let_finish_then_repaired(
    manager: RealSystemd,
    sd: Client,
    start: Start,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A start while someone's stop job runs would cancel it and count twice against the
    unit's start limit (a few stops and a crash: start-limit-hit): the stop finishes first."""
    fifo = tmp_path / "stop"
    os.mkfifo(fifo)
    name = unit(manager, ExecStop=f"/bin/sh -c 'read line < {fifo}'")
    removed: dict[str, str] = {}

    def on_job_removed(msg: Message) -> None:
        if msg.member == "JobRemoved" and msg.body[2] == name:
            removed[msg.body[1]] = msg.body[3]

    sd.conn.add_message_handler(on_job_removed)
    running = await start(svc(name, state="running"))
    assert await running.res.check_apply(True) is False
    old = await sd.main_pid(name)
    await manager.systemctl("stop", "--no-block", name)  # ExecStop waits on the FIFO
    await sd.wait_until(lambda: _is(sd, name, "deactivating"))
    (stop_job,) = (await sd.props(name))["Job"][1:]
    repair = await _repair_waiting(running, caplog, "deactivating")  # lets the stop finish
    await _feed(fifo, "go")  # the stop may finish
    async with asyncio.timeout(15):
        assert await repair is False
    assert removed[stop_job] == "done"  # not "canceled" by our start
    assert await sd.running_with_new_pid(name, old) != old


async def _feed(fifo: Path, line: str) -> None:
    """Write a line to the FIFO a unit's command reads (once it opens it)."""
    writer = await asyncio.to_thread(os.open, fifo, os.O_WRONLY)
    os.write(writer, line.encode() + b"\n")
    os.close(writer)


async def _repair_waiting(
    running: Running, caplog: pytest.LogCaptureFixture, state: str = "activating"
) -> asyncio.Task[bool]:
    """A repair (check_apply(True)) begun, once it waits for the unit to finish `state`."""
    caplog.set_level(logging.DEBUG, logger="engine")
    waiting = OnLog(f"finish {state}")
    logging.getLogger("engine").addHandler(waiting)
    try:
        repair = asyncio.create_task(running.res.check_apply(True))
        async with asyncio.timeout(15):
            await waiting.seen.wait()
    finally:
        logging.getLogger("engine").removeHandler(waiting)
    return repair


async def test_an_auto_restart_in_progress_is_let_come_up_not_started(
    manager: RealSystemd,
    sd: Client,
    start: Start,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A crash of a `Restart=always` unit: systemd restarts it (`activating`: the hold-off, then
    the start, held here in ExecStartPre). A start of ours then merged into systemd's job or,
    in the hold-off, was a "hurry up" counted against the start limit, and said `started`:
    the repair waits for the state the unit reaches, and it came up: nothing to do."""
    fifo = tmp_path / "pre"
    os.mkfifo(fifo)
    name = unit(
        manager,
        ExecStartPre=f"/bin/sh -c 'read line < {fifo}'",
        Restart="always",
        RestartSec="100ms",
    )
    running = await start(svc(name, state="running"))
    first = asyncio.create_task(running.res.check_apply(True))
    await _feed(fifo, "go")
    async with asyncio.timeout(15):
        assert await first is False
    old = await sd.main_pid(name)
    os.kill(old, signal.SIGKILL)
    await sd.wait_until(lambda: _is(sd, name, "activating"))
    repair = await _repair_waiting(running, caplog)
    await _feed(fifo, "go")  # systemd's restart comes up
    async with asyncio.timeout(15):
        assert await repair is True
    assert (await sd.props(name, "Service"))["NRestarts"] == 1
    assert await sd.active(name) == "active" and await sd.main_pid(name) != old


async def test_a_start_not_ours_that_fails_is_repaired_after_it(
    manager: RealSystemd,
    sd: Client,
    start: Start,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Someone's start is in progress (`activating`) and fails: the repair, which waited for
    it, starts the unit then."""
    fifo = tmp_path / "pre"
    os.mkfifo(fifo)
    name = unit(manager, ExecStartPre=f"/bin/sh -c 'read line < {fifo}; [ \"$line\" = go ]'")
    running = await start(svc(name, state="running"))
    await manager.systemctl("start", "--no-block", name)
    await sd.wait_until(lambda: _is(sd, name, "activating"))
    theirs = (await sd.props(name))["InvocationID"]
    repair = await _repair_waiting(running, caplog)
    await _feed(fifo, "fail")  # someone's start fails

    async def started_again() -> bool:  # the repair's start, in its own ExecStartPre
        props = await sd.props(name)
        return props["ActiveState"] == "activating" and props["InvocationID"] != theirs

    await sd.wait_until(started_again)  # (their reader gone: a line now is the new one's)
    await _feed(fifo, "go")
    async with asyncio.timeout(15):
        assert await repair is False
    assert await sd.active(name) == "active"
    assert f"started {name}" in caplog.text


async def test_a_crash_right_after_our_start_is_seen(
    manager: RealSystemd, sd: Client, start: Start
) -> None:
    """The process dies as soon as systemd announces it, around the end of our start job:
    that is drift, not our start's echo (see UnitChanges and Mute)."""
    name = unit(manager)
    (path,) = await sd.manager("LoadUnit", "s", name)
    killed: list[int] = []

    def kill_at_once(msg: Message) -> None:
        if msg.path != path or msg.member != "PropertiesChanged" or killed:
            return
        pid = msg.body[1].get("MainPID")
        if pid is not None and pid.value:
            os.kill(pid.value, signal.SIGKILL)  # in the handler: before anything else runs
            killed.append(pid.value)

    sd.conn.add_message_handler(kill_at_once)
    running = await start(svc(name, state="running"))
    with contextlib.suppress(ResourceError):  # the job may or may not have ended "done"
        await running.res.check_apply(True)
    assert killed
    await running.handle.next_event()
    assert await running.res.check_apply(True) is False
    assert await sd.running_with_new_pid(name, killed[0]) != killed[0]


async def _is(sd: Client, name: str, state: str) -> bool:
    return await sd.active(name) == state


# enablement drift: systemd signals some of it, inotify sees the rest ---------------------------


async def _disable_with_systemctl(manager: RealSystemd, sd: Client, name: str) -> None:
    await manager.systemctl("disable", name)  # removes the link itself: no signal at all


async def _disable_over_dbus(manager: RealSystemd, sd: Client, name: str) -> None:
    await sd.manager("DisableUnitFiles", "asb", [name], False)  # UnitFilesChanged


async def _remove_link_and_reload(manager: RealSystemd, sd: Client, name: str) -> None:
    manager.link("default.target", name).unlink()
    await sd.reload()  # Reloading


async def _remove_link(manager: RealSystemd, sd: Client, name: str) -> None:
    manager.link("default.target", name).unlink()  # no signal at all


DISABLES = [_disable_with_systemctl, _disable_over_dbus, _remove_link_and_reload, _remove_link]


@pytest.mark.parametrize("disable", DISABLES, ids=lambda f: f.__name__.lstrip("_"))
async def test_disabled_by_hand_is_enabled_again(
    manager: RealSystemd,
    sd: Client,
    start: Start,
    disable: Callable[[RealSystemd, Client, str], Awaitable[None]],
) -> None:
    name = unit(manager)
    running = await start(svc(name, state="running", startup="enabled"))
    assert await running.res.check_apply(True) is False
    await running.handle.next_event()
    assert await running.res.check_apply(True) is True
    await disable(manager, sd, name)
    await running.handle.next_event()
    assert await sd.file_state(name) == "disabled"
    assert await running.res.check_apply(True) is False
    assert await up(sd, name)
    assert await running.res.check_apply(True) is True


async def test_enabled_by_hand_is_disabled_again(
    manager: RealSystemd, sd: Client, start: Start
) -> None:
    name = unit(manager)
    running = await start(svc(name, startup="disabled"))
    assert await running.res.check_apply(True) is True
    await manager.systemctl("enable", name)  # a link made by systemctl itself: no signal
    await running.handle.next_event()
    assert await running.res.check_apply(True) is False
    assert await sd.file_state(name) == "disabled"
    assert not manager.link("default.target", name).exists()


async def test_stops_and_disables(manager: RealSystemd, sd: Client, start: Start) -> None:
    name = unit(manager)
    await manager.systemctl("enable", "--now", name)
    running = await start(svc(name, state="stopped", startup="disabled"))
    assert await running.res.check_apply(True) is False
    assert await sd.active(name) == "inactive"
    assert await sd.file_state(name) == "disabled"
    assert await running.res.check_apply(True) is True


async def test_noop_changes_nothing(
    manager: RealSystemd, sd: Client, start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="engine")
    name = unit(manager)
    running = await start(svc(name, state="running", startup="enabled"))
    assert await running.res.check_apply(False) is False
    assert await running.res.check_apply(False) is False
    assert await sd.active(name) == "inactive" and await sd.file_state(name) == "disabled"
    res = running.res.name
    assert (
        caplog.messages
        == [
            f"svc[{res}]: would enable {name} at boot",
            f"svc[{res}]: would reload systemd's units (daemon-reload)",
            f"svc[{res}]: would start {name}",
        ]
        * 2
    )


async def test_logs_one_line_per_change_and_why_nothing(
    manager: RealSystemd, start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="engine")
    name = unit(manager)
    running = await start(svc(name, state="running", startup="enabled"))
    await running.res.check_apply(True)
    res = running.res.name
    assert caplog.messages == [
        f"svc[{res}]: enabled {name} at boot",
        f"svc[{res}]: reloaded systemd's units (daemon-reload)",
        f"svc[{res}]: started {name}",
    ]
    caplog.clear()
    await running.res.check_apply(True)
    assert caplog.messages == [
        f"svc[{res}]: nothing to do: {name} is active (loaded), its unit file is enabled"
    ]


async def test_unmanaged_does_nothing(monkeypatch: pytest.MonkeyPatch, run_resource: Start) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")
    running = await run_resource(svc("web"), watch=False)
    assert await running.res.check_apply(True) is True  # not even a connection


# units that cannot be run ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("session", "journal"),
    [(False, "journalctl -u"), (True, "journalctl --user -u")],
    ids=["system-path", "session"],
)
async def test_failed_start_is_a_failure_naming_the_job_result(
    manager: RealSystemd, sd: Client, start: Start, session: bool, journal: str
) -> None:
    text = SERVICE.replace("/bin/sleep infinity", "/nonexistent/binary")
    name = unit(manager, "bad", text, Type="exec")  # the job waits for the exec()
    running = await start(svc(name, state="running", session=session))
    events = running.handle.events
    error = rf"could not start {name}: its job ended with result 'failed' \(unit result 'exit-code'"
    with pytest.raises(ResourceError, match=error) as failure:
        await running.res.check_apply(True)
    assert f"see `{journal} {name}`" in str(failure.value)
    assert await sd.active(name) == "failed"
    # systemd's echo of our own failed job is no drift: it would start it again, forever.
    assert await running.handle.no_event(within=0.3)
    assert running.handle.events == events


async def test_missing_unit(manager: RealSystemd, start: Start) -> None:
    name = manager.name("ghost")
    running = await start(svc(name, state="running"))
    where = manager.unit_dir
    with pytest.raises(
        ResourceError, match=rf"cannot start {name}.service: no such unit .*{where}"
    ):
        await running.res.check_apply(True)
    stopped = await start(svc(manager.name("ghost"), state="stopped", startup="disabled"))
    assert await stopped.res.check_apply(True) is True  # nothing runs, nothing is enabled


async def test_unit_file_appearing_later_is_picked_up(
    manager: RealSystemd, sd: Client, start: Start
) -> None:
    name = manager.name("late") + ".service"
    running = await start(svc(name, state="running"))
    with pytest.raises(ResourceError, match="no such unit"):
        await running.res.check_apply(True)
    manager.write_unit(name, SERVICE.format(extra=""))  # seen by inotify, no daemon-reload
    await running.handle.next_event()
    assert await running.res.check_apply(True) is False
    assert await sd.active(name) == "active"


async def test_masked_unit(manager: RealSystemd, sd: Client, start: Start) -> None:
    name = unit(manager)
    (manager.unit_dir / name).unlink()  # a unit file in the admin's directory cannot be masked
    await manager.systemctl("mask", name)
    await sd.reload()
    running = await start(svc(name, state="running"))
    with pytest.raises(ResourceError, match=rf"cannot start {name}: it is masked: unmask it"):
        await running.res.check_apply(True)
    enabled = await start(svc(name, startup="enabled"))
    with pytest.raises(ResourceError, match=rf"cannot enable {name}: it is masked: unmask it"):
        await enabled.res.check_apply(True)
    stopped = await start(svc(name, state="stopped", startup="disabled"))
    assert await stopped.res.check_apply(True) is True


async def test_static_unit_cannot_be_enabled(manager: RealSystemd, start: Start) -> None:
    name = unit(manager, "helper", STATIC)
    running = await start(svc(name, startup="enabled"))
    with pytest.raises(ResourceError, match=r"no \[Install\] section \(state 'static'\)"):
        await running.res.check_apply(True)


async def test_static_unit_is_started_though_it_cannot_be_enabled(
    manager: RealSystemd, sd: Client, start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    """What can be applied is (the start), then the enable problem is the failure."""
    caplog.set_level(logging.INFO, logger="engine")
    name = unit(manager, "helper", STATIC)
    running = await start(svc(name, state="running", startup="enabled"))
    for _ in range(2):
        with pytest.raises(ResourceError, match=rf"cannot enable {name}: it has no \[Install\]"):
            await running.res.check_apply(True)
        assert await sd.active(name) == "active"
        assert await sd.file_state(name) == "static"
    started = [r for r in caplog.records if r.getMessage().endswith(f": started {name}")]
    assert len(started) == 1
    await manager.systemctl("stop", name)  # the watch still repairs it
    await running.handle.next_event()
    with pytest.raises(ResourceError, match=rf"cannot enable {name}"):
        await running.res.check_apply(True)
    assert await sd.active(name) == "active"


async def test_templated_unit(manager: RealSystemd, sd: Client, start: Start) -> None:
    stem = manager.name("tmpl")
    manager.write_unit(f"{stem}@.service", SERVICE.format(extra=""))
    name = f"{stem}@one.service"
    running = await start(svc(f"{stem}@one", state="running", startup="enabled"))
    assert await running.res.check_apply(True) is False
    assert await up(sd, name)
    manager.link("default.target", name).unlink()  # the instance's link, by hand
    await running.handle.next_event()
    assert await running.res.check_apply(True) is False
    assert await up(sd, name)
    assert await sd.active(f"{stem}@two.service") == "inactive"


# refresh -------------------------------------------------------------------------------------


async def test_refresh_reloads(
    manager: RealSystemd, sd: Client, start: Start, tmp_path: Path
) -> None:
    marker = tmp_path / "reloaded"
    name = unit(manager, ExecReload=f"/bin/touch {marker}")
    running = await start(svc(name, state="running"))
    await running.res.check_apply(True)
    pid = await sd.main_pid(name)
    running.handle.refresh_flag = True
    assert await running.res.check_apply(True) is False
    assert marker.exists() and await sd.main_pid(name) == pid  # reloaded, not restarted


async def test_refresh_restarts_without_exec_reload(
    manager: RealSystemd, sd: Client, start: Start
) -> None:
    name = unit(manager)
    running = await start(svc(name, state="running"))
    await running.res.check_apply(True)
    pid = await sd.main_pid(name)
    running.handle.refresh_flag = True
    assert await running.res.check_apply(True) is False
    assert await sd.main_pid(name) not in (0, pid)


async def test_refresh_skipped_when_starting_or_stopped(
    manager: RealSystemd, sd: Client, start: Start, tmp_path: Path
) -> None:
    marker = tmp_path / "reloaded"
    name = unit(manager, ExecReload=f"/bin/touch {marker}")
    running = await start(svc(name, state="running"))
    running.handle.refresh_flag = True
    assert await running.res.check_apply(True) is False  # the start is the refresh
    assert await running.res.check_apply(True) is False  # a refresh while running reloads
    stopped = await start(svc(unit(manager), state="stopped"))
    stopped.handle.refresh_flag = True
    assert await stopped.res.check_apply(True) is True
    assert marker.exists()


async def test_edited_unit_file_is_reloaded_and_a_refresh_restarts(
    manager: RealSystemd, sd: Client, start: Start
) -> None:
    name = unit(manager)
    running = await start(svc(name, state="running"))
    await running.res.check_apply(True)
    pid = await sd.main_pid(name)
    edited = SERVICE.format(extra="").replace("sleep infinity", "sleep 3600")
    manager.write_unit(name, edited)  # by hand: seen by inotify, systemd's copy is stale
    await running.handle.next_event()
    assert (await sd.props(name))["NeedDaemonReload"] is True
    assert await running.res.check_apply(True) is False  # daemon-reload, no restart
    assert (await sd.props(name))["NeedDaemonReload"] is False
    assert await sd.main_pid(name) == pid
    running.handle.refresh_flag = True  # the notify comes after our watch saw the edit
    assert await running.res.check_apply(True) is False  # a restart: a new definition
    restarted = await sd.main_pid(name)
    assert restarted not in (0, pid)
    manager.write_unit(name, edited.replace("3600", "3601"))  # as a file resource would,
    assert await running.res.check_apply(True) is False  # notifying: daemon-reload, restart
    new = await sd.main_pid(name)
    assert new not in (0, pid, restarted)
    (exec_start,) = (await sd.props(name, "Service"))["ExecStart"]
    assert exec_start[1] == ["/bin/sleep", "3601"]  # the new definition runs


async def test_is_refreshable() -> None:
    assert isinstance(svc("web"), Refreshable)


# connection and subscriptions ------------------------------------------------------------------


async def test_cleanup_releases_the_connection(manager: RealSystemd, start: Start) -> None:
    running = await start(svc(unit(manager), state="running"))
    await running.res.check_apply(True)
    await _stop(running)
    assert _buses(running).open == {}


async def test_resources_share_one_connection(
    manager: RealSystemd, sd: Client, start: Start
) -> None:
    web, db = unit(manager), unit(manager, "db")
    one = await start(svc(web, state="running"))
    two = await start(svc(db, state="running"))
    await asyncio.gather(one.res.check_apply(True), two.res.check_apply(True))
    assert len(_buses(one).open) == 1 and _buses(one) is _buses(two)
    assert await sd.active(web) == "active" and await sd.active(db) == "active"


async def test_unrelated_units_wake_nobody(manager: RealSystemd, start: Start) -> None:
    other = unit(manager, "other")
    running = await start(svc(unit(manager), state="running"))
    await running.res.check_apply(True)  # its own start wakes nobody either
    await manager.systemctl("start", other)
    await manager.systemctl("disable", other)
    assert await running.handle.no_event(within=0.2)


async def test_no_bus_is_a_clear_failure(
    monkeypatch: pytest.MonkeyPatch, run_resource: Start
) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")
    running = await run_resource(svc("web", state="running"), watch=False)
    with pytest.raises(ResourceError, match="cannot connect to D-Bus at unix:path=/nonexistent"):
        await running.res.check_apply(True)


async def test_job_removed_before_the_reply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one order a real manager cannot be made to produce: the fake's (tests/fakes)."""
    async with running_fake(tmp_path, monkeypatch.setenv) as fake:
        shared = Shared()
        bus = await Bus.acquire(False, shared)
        try:
            await bus.subscribe_systemd()
            async with asyncio.timeout(5):
                await job(bus, "StartUnit", "web.service", "start", session=False)
                fake.job_result = "failed"
                with pytest.raises(ResourceError, match="result 'failed'"):
                    await job(bus, "StartUnit", "web.service", "start", session=False)
        finally:
            await bus.release()
            await shared.aclose()
    assert [call[0] for call in fake.calls] == ["Subscribe", "StartUnit", "StartUnit"]


@contextlib.contextmanager
def _logged(caplog: pytest.LogCaptureFixture, text: str) -> Iterator[OnLog]:
    """An OnLog for `text` on the engine's logger (INFO and up captured) inside the block."""
    caplog.set_level(logging.INFO, logger="engine")
    seen = OnLog(text)
    logging.getLogger("engine").addHandler(seen)
    try:
        yield seen
    finally:
        logging.getLogger("engine").removeHandler(seen)


def _lines(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in record.getMessage() for record in caplog.records)


async def test_a_dbus_restart_is_survived(
    manager: RealSystemd, start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    """`systemctl restart dbus` (an upgrade of the package): the watch reconnects, subscribes
    again and checks the unit (no meta rewatch); a stop by hand afterwards is repaired."""
    name = unit(manager)
    running = await start(svc(name, state="running"))
    assert await running.res.check_apply(True) is False
    with _logged(caplog, "reconnected to D-Bus") as back:
        await manager.systemctl("restart", "dbus.service")
        async with asyncio.timeout(15):
            await back.seen.wait()
    await running.handle.next_event()  # the check once back
    assert await running.res.check_apply(True) is True
    await manager.systemctl("stop", name)
    await running.handle.next_event()
    assert await running.res.check_apply(True) is False
    async with manager.client() as sd:
        assert await sd.active(name) == "active"
    assert _lines(caplog, "lost the D-Bus connection") == 1
    assert _lines(caplog, "reconnected to D-Bus") == 1


async def test_a_stop_while_dbus_is_away_is_repaired_once_it_is_back(
    manager: RealSystemd,
    start: Start,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bus stopped (socket and daemon), the unit stopped by hand meanwhile (systemctl
    reaches the manager without the bus), the bus started again: the watch's check on
    reconnecting repairs it. An attempt at once after the loss is refused (then the socket
    made again wakes the next, by inotify) or pends until the socket listens again: the
    delays between attempts are made far longer than the test's bounds."""
    monkeypatch.setattr(systemd, "RECONNECT_MIN", 600.0)
    monkeypatch.setattr(systemd, "RECONNECT_MAX", 600.0)
    name = unit(manager)
    running = await start(svc(name, state="running"))
    assert await running.res.check_apply(True) is False
    with _logged(caplog, "reconnected to D-Bus") as back:
        await manager.systemctl("stop", "dbus.socket", "dbus.service")
        await manager.systemctl("stop", name)
        assert await running.handle.no_event(within=0.2)
        await manager.systemctl("start", "dbus.socket")
        async with asyncio.timeout(15):
            await back.seen.wait()
    await running.handle.next_event()
    assert await running.res.check_apply(True) is False
    async with manager.client() as sd:
        assert await sd.active(name) == "active"
    assert _lines(caplog, "lost the D-Bus connection") == 1


async def test_a_bus_not_there_at_first_is_waited_for(
    manager: RealSystemd, start: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watch sends its startup event (check_apply says what is wrong), then connects as
    soon as the bus's socket appears (inotify: the delays between attempts are made far
    longer than the test's bounds), and the check after it starts the unit."""
    monkeypatch.setattr(systemd, "RECONNECT_MIN", 600.0)
    monkeypatch.setattr(systemd, "RECONNECT_MAX", 600.0)
    socket = tmp_path / "bus"
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={socket}")
    name = unit(manager)
    running = await start(svc(name, state="running"))
    with pytest.raises(ResourceError, match="cannot connect to D-Bus"):
        await running.res.check_apply(True)
    socket.symlink_to(manager.bus.removeprefix("unix:path="))  # the bus appears
    await running.handle.next_event()
    assert await running.res.check_apply(True) is False
    async with manager.client() as sd:
        assert await sd.active(name) == "active"


def test_reconnect_backoff() -> None:
    """At once, then doubling up to the bound; a new Backoff after a connection that lasted."""
    backoff = systemd.Backoff()
    delays = [backoff.next() for _ in range(10)]
    assert delays[:3] == [0.0, systemd.RECONNECT_MIN, 2 * systemd.RECONNECT_MIN]
    assert delays == sorted(delays) and delays[-1] == systemd.RECONNECT_MAX


def _buses(running: Running) -> Buses:
    """The D-Bus connections of the resource's engine (here: of the test's resources)."""
    return running.handle.shared.get(systemd.__name__, Buses)


async def _stop(running: Running) -> None:
    if running.task is not None:
        running.task.cancel()
        await asyncio.gather(running.task, return_exceptions=True)
    await running.res.cleanup()
    await running.handle.run_cleanups()


# params and capabilities ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"state": "started"}, "state"),
        ({"startup": "on"}, "startup"),
        ({"name": "a/b"}, "name"),
        ({"name": "x" * 300}, "name"),
    ],
)
def test_validation(params: dict[str, Any], key: str) -> None:
    params.setdefault("name", "web")
    with pytest.raises(ValidationError) as err:
        SvcRes(**params).validate()
    assert err.value.key == key


@pytest.mark.parametrize(
    ("name", "unit_name"),
    [("ssh", "ssh.service"), ("ssh.socket", "ssh.socket"), ("a.b", "a.b.service")],
)
def test_unit_name(name: str, unit_name: str) -> None:
    assert SvcRes(name=name).unit == unit_name


def test_unit_files_and_links() -> None:
    assert unit_file_names("getty@tty1.service") == ["getty@tty1.service", "getty@.service"]
    assert unit_file_names("web.service") == ["web.service"]
    text = "[Unit]\nWantedBy=x.target\n[Install]\nWantedBy=a.target b.target\nRequiredBy=c.target\nAlias=w.service\n"
    assert install_links(text, "web.service", "/u") == [
        "/u/a.target.wants/web.service",
        "/u/b.target.wants/web.service",
        "/u/c.target.requires/web.service",
        "/u/w.service",
    ]


def test_edges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MGMT_SYSTEMD_UNIT_DIR", "/srv/units")
    res = SvcRes(name="nginx")
    assert isinstance(res, Edgeable)
    assert res.uids() == [UID("svc", "nginx")]
    files = [
        "/srv/units/nginx.service",
        "/usr/lib/systemd/system/nginx.service",
        "/lib/systemd/system/nginx.service",
    ]
    assert res.autoedges() == [[UID("file", path) for path in files]]
    # Beside a package, the package shipping its unit file too.
    assert res.lazy_autoedges(frozenset({"pkgfile"})) == [[UID("pkgfile", p) for p in files]]
    monkeypatch.setenv("XDG_CONFIG_HOME", "/home/u/.config")
    user = SvcRes(name="agent@1", session=True)
    assert user.uids() == [UID("svc", "session:agent@1")]
    assert user.autoedges()[0][:2] == [
        UID("file", "/home/u/.config/systemd/user/agent@1.service"),
        UID("file", "/home/u/.config/systemd/user/agent@.service"),
    ]
