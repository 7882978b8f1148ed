"""svc: the real D-Bus code path against the fake systemd on a private dbus-daemon."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from engine.errors import ResourceError, ValidationError
from engine.resource import UID, Edgeable, is_refreshable
from resources.svc import Bus, SvcRes
from tests.conftest import Running
from tests.fakes.systemd import FakeSystemd, running_fake

Start = Callable[..., Awaitable[Running]]

WEB = """[Unit]
Description=a web server
[Service]
ExecStart=/usr/sbin/web
ExecReload=/bin/kill -HUP $MAINPID
[Install]
WantedBy=multi-user.target
"""
NO_RELOAD = WEB.replace("ExecReload=/bin/kill -HUP $MAINPID\n", "")
FAILING = WEB.replace("/usr/sbin/web", "/bin/false")
STATIC = "[Service]\nExecStart=/usr/sbin/helper\n"


@pytest.fixture
async def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeSystemd]:
    async with running_fake(tmp_path, monkeypatch.setenv) as fake:
        fake.write_unit("web.service", WEB)
        yield fake


@pytest.fixture
def start(fake: FakeSystemd, run_resource: Start) -> Start:
    """run_resource, set up after (so torn down before) the fake."""
    return run_resource


def svc(**params: Any) -> SvcRes:
    params.setdefault("name", "web")
    return SvcRes(**params)


def active(fake: FakeSystemd, unit: str = "web.service") -> bool:
    return fake.unit(unit).active_state == "active"


def enabled(fake: FakeSystemd, unit: str = "web.service") -> bool:
    return fake.file_state(unit) == "enabled"


# the idempotency timeline -------------------------------------------------------------------


async def test_starts_and_enables_then_nothing_to_do(start: Start, fake: FakeSystemd) -> None:
    running = await start(svc(state="running", startup="enabled"))
    assert fake.subscribers, "the watch subscribed to systemd's signals"
    assert await running.res.check_apply(True) is False
    assert active(fake) and enabled(fake)
    assert fake.daemon_reloads == 1  # enable is followed by a daemon-reload
    await running.handle.next_event()  # our own change is seen by the watch
    assert await running.res.check_apply(True) is True
    methods = [call[0] for call in fake.calls]
    assert methods.count("StartUnit") == 1 and methods.count("EnableUnitFiles") == 1


async def test_stopped_from_outside_is_detected_and_repaired(
    start: Start, fake: FakeSystemd
) -> None:
    running = await start(svc(state="running"))
    assert await running.res.check_apply(True) is False
    assert await running.res.check_apply(True) is True
    fake.stop_from_outside("web.service")
    await running.handle.next_event()
    assert not active(fake)
    assert await running.res.check_apply(True) is False
    assert active(fake)
    assert fake.unit("web.service").starts == 2
    assert await running.res.check_apply(True) is True


async def test_repaired_within_milliseconds(start: Start, fake: FakeSystemd) -> None:
    """Event -> check_apply, as the engine does it: a stop from outside is undone at once."""
    running = await start(svc(state="running"))
    await running.res.check_apply(True)

    async def engine() -> None:
        while True:
            await running.handle.next_event(timeout=60)
            await running.res.check_apply(True)

    task = asyncio.create_task(engine())
    try:
        unit = fake.unit("web.service")
        began = time.perf_counter()
        fake.stop_from_outside("web.service")
        await fake.wait_for(lambda: unit.starts == 2 and unit.active_state == "active")
        took = time.perf_counter() - began
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert took < 0.5, f"repair took {took * 1000:.1f} ms"


async def test_crash_is_repaired(start: Start, fake: FakeSystemd) -> None:
    running = await start(svc(state="running"))
    await running.res.check_apply(True)
    fake.crash("web.service")
    await running.handle.next_event()
    assert await running.res.check_apply(True) is False
    assert active(fake)


async def test_disabled_from_outside_is_repaired(start: Start, fake: FakeSystemd) -> None:
    running = await start(svc(startup="enabled"))
    assert await running.res.check_apply(True) is False
    assert await running.res.check_apply(True) is True
    fake.manager.disable_unit_files(["web.service"], False)  # `systemctl disable web`
    await running.handle.next_event()
    assert await running.res.check_apply(True) is False
    assert enabled(fake)


async def test_stops_and_disables(start: Start, fake: FakeSystemd) -> None:
    fake.manager.enable_unit_files(["web.service"], False, False)
    fake.manager.queue_job(fake.unit("web.service"), "start")
    running = await start(svc(state="stopped", startup="disabled"))
    assert await running.res.check_apply(True) is False
    assert fake.unit("web.service").active_state == "inactive"
    assert fake.file_state("web.service") == "disabled"
    assert await running.res.check_apply(True) is True


async def test_noop_changes_nothing(
    start: Start, fake: FakeSystemd, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="engine")
    running = await start(svc(state="running", startup="enabled"))
    assert await running.res.check_apply(False) is False
    assert await running.res.check_apply(False) is False
    assert not active(fake) and not enabled(fake)
    assert caplog.messages[:2] == [
        "svc[web]: would enable web.service at boot",
        "svc[web]: would start web.service",
    ]
    assert not [c for c in fake.calls if c[0] in ("StartUnit", "EnableUnitFiles", "Reload")]


async def test_logs_one_line_per_change_and_why_nothing(
    start: Start, fake: FakeSystemd, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="engine")
    running = await start(svc(state="running", startup="enabled"))
    await running.res.check_apply(True)
    assert caplog.messages == [
        "svc[web]: enabled web.service at boot",
        "svc[web]: started web.service",
    ]
    caplog.clear()
    await running.res.check_apply(True)
    assert caplog.messages == [
        "svc[web]: nothing to do: web.service is active (loaded), its unit file is enabled"
    ]


async def test_unmanaged_does_nothing(start: Start, fake: FakeSystemd) -> None:
    running = await start(svc())
    assert await running.res.check_apply(True) is True
    assert not [c for c in fake.calls if c[0] == "LoadUnit"]


# jobs and failures ---------------------------------------------------------------------------


async def test_job_removed_after_the_reply(start: Start, fake: FakeSystemd) -> None:
    fake.job_order = "after-reply"
    running = await start(svc(state="running"))
    assert await running.res.check_apply(True) is False
    assert active(fake)


async def test_failed_job_is_a_failure_naming_the_result(start: Start, fake: FakeSystemd) -> None:
    fake.write_unit("bad.service", FAILING)
    running = await start(svc(name="bad", state="running"))
    with pytest.raises(ResourceError, match=r"could not start bad.service: .*result 'failed'"):
        await running.res.check_apply(True)
    assert fake.unit("bad.service").active_state == "failed"


async def test_missing_unit(start: Start, fake: FakeSystemd) -> None:
    running = await start(svc(name="ghost", state="running"))
    with pytest.raises(ResourceError, match=r"cannot start ghost.service: no such unit"):
        await running.res.check_apply(True)
    stopped = await start(svc(name="ghost2", state="stopped", startup="disabled"))
    assert await stopped.res.check_apply(True) is True  # nothing runs, nothing is enabled


async def test_unit_file_appearing_later_is_picked_up(start: Start, fake: FakeSystemd) -> None:
    running = await start(svc(name="late", state="running"))
    with pytest.raises(ResourceError):
        await running.res.check_apply(True)
    fake.write_unit("late.service", WEB)
    fake.manager.reload()  # what the file resource's notify -> daemon-reload would do
    await running.handle.next_event()
    assert await running.res.check_apply(True) is False
    assert active(fake, "late.service")


async def test_static_unit_cannot_be_enabled(start: Start, fake: FakeSystemd) -> None:
    fake.write_unit("helper.service", STATIC)
    running = await start(svc(name="helper", startup="enabled"))
    with pytest.raises(ResourceError, match="no \\[Install\\] section"):
        await running.res.check_apply(True)


# refresh -------------------------------------------------------------------------------------


async def test_refresh_reloads(start: Start, fake: FakeSystemd) -> None:
    running = await start(svc(state="running"))
    await running.res.check_apply(True)
    running.handle.refresh_flag = True
    assert await running.res.check_apply(True) is False
    unit = fake.unit("web.service")
    assert ("ReloadOrRestartUnit", "web.service", "replace") in fake.calls
    assert (unit.reloads, unit.restarts, unit.starts) == (1, 0, 1)


async def test_refresh_restarts_without_exec_reload(start: Start, fake: FakeSystemd) -> None:
    fake.write_unit("plain.service", NO_RELOAD)
    running = await start(svc(name="plain", state="running"))
    await running.res.check_apply(True)
    running.handle.refresh_flag = True
    assert await running.res.check_apply(True) is False
    assert fake.unit("plain.service").restarts == 1


async def test_refresh_skipped_when_starting_or_stopped(start: Start, fake: FakeSystemd) -> None:
    running = await start(svc(state="running"))
    running.handle.refresh_flag = True
    assert await running.res.check_apply(True) is False  # the start is the refresh
    stopped = await start(svc(name="web2", state="stopped"))
    fake.write_unit("web2.service", WEB)
    stopped.handle.refresh_flag = True
    assert await stopped.res.check_apply(True) is True
    assert not [c for c in fake.calls if c[0] == "ReloadOrRestartUnit"]


async def test_is_refreshable() -> None:
    assert is_refreshable(svc())


# connection, subscriptions, session ----------------------------------------------------------


async def test_cleanup_releases_the_connection(start: Start, fake: FakeSystemd) -> None:
    running = await start(svc(state="running"))
    await running.res.check_apply(True)
    assert running.task is not None
    running.task.cancel()
    await asyncio.gather(running.task, return_exceptions=True)
    await running.res.cleanup()
    await running.handle.run_cleanups()
    await fake.wait_for(lambda: not fake.subscribers)  # systemd sees the client leave
    assert Bus._open == {}


async def test_resources_share_one_connection(start: Start, fake: FakeSystemd) -> None:
    fake.write_unit("db.service", WEB)
    web = await start(svc(state="running"))
    db = await start(svc(name="db", state="running"))
    await asyncio.gather(web.res.check_apply(True), db.res.check_apply(True))
    assert len(fake.subscribers) == 1
    assert active(fake) and active(fake, "db.service")


async def test_unrelated_units_wake_nobody(start: Start, fake: FakeSystemd) -> None:
    fake.write_unit("other.service", WEB)
    running = await start(svc(state="running"))
    await running.res.check_apply(True)
    await running.handle.next_event()
    fake.manager.queue_job(fake.unit("other.service"), "start")
    assert await running.handle.no_event(within=0.1)


async def test_session_uses_the_session_bus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_resource: Start
) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent")
    async with running_fake(tmp_path, monkeypatch.setenv, session=True) as fake:
        fake.write_unit("agent.service", WEB.replace("multi-user", "default"))
        running = await run_resource(svc(name="agent", state="running", session=True))
        assert await running.res.check_apply(True) is False
        assert active(fake, "agent.service")
        path = tmp_path / "config/systemd/user/agent.service"
        assert running.res.autoedges() == [[UID("file", str(path))]]
        await _stop(running)


async def test_no_bus_is_a_clear_failure(
    monkeypatch: pytest.MonkeyPatch, run_resource: Start
) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")
    running = await run_resource(svc(state="running"), watch=False)
    with pytest.raises(ResourceError, match="cannot connect to D-Bus at unix:path=/nonexistent"):
        await running.res.check_apply(True)


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
    with pytest.raises(ValidationError) as err:
        svc(**params).validate()
    assert err.value.key == key


@pytest.mark.parametrize(
    ("name", "unit"),
    [("ssh", "ssh.service"), ("ssh.socket", "ssh.socket"), ("a.b", "a.b.service")],
)
def test_unit_name(name: str, unit: str) -> None:
    assert svc(name=name).unit == unit


def test_edges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MGMT_SYSTEMD_UNIT_DIR", "/srv/units")
    res = svc(name="nginx")
    assert isinstance(res, Edgeable)
    assert res.uids() == [UID("svc", "nginx")]
    assert res.autoedges() == [
        [
            UID("file", "/srv/units/nginx.service"),
            UID("file", "/usr/lib/systemd/system/nginx.service"),
            UID("file", "/lib/systemd/system/nginx.service"),
        ]
    ]
    assert svc(name="nginx", session=True).uids() == [UID("svc", "session:nginx")]
