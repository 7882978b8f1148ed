"""hostname: the real D-Bus code path against the fake hostnamed on a private dbus-daemon."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from engine.errors import ValidationError
from resources.hostname import HOSTNAME1, HOSTNAME1_PATH, HostnameRes
from tests.conftest import Running
from tests.fakes.systemd import FakeSystemd, PrivateBus, running_fake

Start = Callable[..., Awaitable[Running]]


@pytest.fixture
async def fake(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeSystemd]:
    async with running_fake(tmp_path, monkeypatch.setenv, transient_hostname="boot") as fake:
        yield fake


@pytest.fixture
def start(fake: FakeSystemd, run_resource: Start) -> Start:
    """run_resource, set up after (so torn down before) the fake."""
    return run_resource


def names(fake: FakeSystemd) -> tuple[str, str, str]:
    """(static, transient, pretty) as hostnamed reports them."""
    h = fake.hostname1
    return h.static, h.transient, h.pretty


def res(**params: Any) -> HostnameRes:
    return HostnameRes(name="host", **params)


async def test_hostname_sets_all_three_then_nothing_to_do(start: Start, fake: FakeSystemd) -> None:
    running = await start(res(hostname="web1"))
    assert await running.res.check_apply(True) is False
    assert names(fake) == ("web1", "web1", "web1")
    assert fake.hostname_file.read_text() == "web1\n"
    assert ("SetStaticHostname", "web1", False) in fake.calls  # interactive=false
    assert await running.res.check_apply(True) is True


async def test_hostname_file_edited_by_hand_is_repaired(start: Start, fake: FakeSystemd) -> None:
    running = await start(res(static_hostname="web1"))
    assert await running.res.check_apply(True) is False
    assert await running.res.check_apply(True) is True
    fake.hostname_file.write_text("intruder\n")  # hostnamed sends no signal for this
    await running.handle.next_event()
    assert await running.res.check_apply(True) is False
    assert fake.hostname_file.read_text() == "web1\n"
    assert await running.res.check_apply(True) is True


async def test_change_through_hostnamed_is_repaired(start: Start, fake: FakeSystemd) -> None:
    running = await start(res(pretty_hostname="Web server #1"))
    assert await running.res.check_apply(True) is False
    fake.hostname1.set_pretty_hostname("something else", False)  # `hostnamectl set-hostname`
    await running.handle.next_event()
    assert await running.res.check_apply(True) is False
    assert fake.hostname1.pretty == "Web server #1"
    assert "PRETTY_HOSTNAME='Web server #1'" in fake.machine_info_file.read_text()


async def test_noop_changes_nothing(
    start: Start, fake: FakeSystemd, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="engine")
    running = await start(res(static_hostname="web1", transient_hostname="web1"))
    assert await running.res.check_apply(False) is False
    assert names(fake) == ("", "boot", "")
    assert caplog.messages == [
        "hostname[host]: would set the static hostname to 'web1'",
        "hostname[host]: would set the transient hostname to 'web1'",
    ]


async def test_one_line_per_change_and_why_nothing(
    start: Start, fake: FakeSystemd, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="engine")
    running = await start(res(transient_hostname="web1", pretty_hostname="Web"))
    await running.res.check_apply(True)
    assert caplog.messages == [
        "hostname[host]: transient hostname set to 'web1' (was 'boot')",
        "hostname[host]: pretty hostname set to 'Web' (was '')",
    ]
    caplog.clear()
    await running.res.check_apply(True)
    assert caplog.messages == [
        "hostname[host]: nothing to do: transient hostname is 'web1', pretty hostname is 'Web'"
    ]


async def test_static_change_keeps_a_different_transient(start: Start, fake: FakeSystemd) -> None:
    """Setting the static name resets the transient one (hostnamed): one call still converges."""
    running = await start(res(static_hostname="web1", transient_hostname="boot"))
    assert await running.res.check_apply(True) is False
    assert names(fake)[:2] == ("web1", "boot")
    assert await running.res.check_apply(True) is True


async def test_only_managed_names_are_touched(start: Start, fake: FakeSystemd) -> None:
    running = await start(res(pretty_hostname="Web"))
    await running.res.check_apply(True)
    assert [c[0] for c in fake.calls] == ["SetPrettyHostname"]
    assert names(fake) == ("", "boot", "Web")


async def test_empty_static_and_pretty_remove_them(start: Start, fake: FakeSystemd) -> None:
    fake.hostname_file.write_text("old\n")
    fake.machine_info_file.write_text("PRETTY_HOSTNAME=Old\nCHASSIS=server\n")
    running = await start(res(static_hostname="", pretty_hostname=""))
    assert await running.res.check_apply(True) is False
    assert not fake.hostname_file.exists()
    assert fake.machine_info_file.read_text() == "CHASSIS=server\n"
    assert await running.res.check_apply(True) is True


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({}, "hostname"),
        ({"hostname": ""}, "hostname"),
        ({"hostname": "bad_name"}, "hostname"),
        ({"static_hostname": "-web"}, "static_hostname"),
        ({"transient_hostname": "a" * 65}, "transient_hostname"),
        ({"transient_hostname": ""}, "transient_hostname"),
        ({"pretty_hostname": "two\nlines"}, "pretty_hostname"),
    ],
)
def test_validation(params: dict[str, Any], key: str) -> None:
    with pytest.raises(ValidationError) as err:
        res(**params).validate()
    assert err.value.key == key


@pytest.fixture
def activating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateBus]:
    """A bus that starts the fake hostnamed (tests/fakes) at the first call to it, as the system
    bus starts hostnamed (bus activation); its transient name is "boot" at each start."""
    files = {"hostname": tmp_path / "hostname", "machine-info": tmp_path / "machine-info"}
    argv = [sys.executable, "-m", "tests.fakes.systemd", "--transient-hostname", "boot"]
    argv += ["--hostname-file", str(files["hostname"])]
    argv += ["--machine-info-file", str(files["machine-info"])]
    bus = PrivateBus(activatable={HOSTNAME1: argv})
    with bus as address:
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
        monkeypatch.setenv("MGMT_HOSTNAME_FILE", str(files["hostname"]))
        monkeypatch.setenv("MGMT_MACHINE_INFO_FILE", str(files["machine-info"]))
        yield bus


@pytest.fixture
def start_activated(activating: PrivateBus, run_resource: Start) -> Start:
    """run_resource, set up after (so torn down before) the bus."""
    return run_resource


async def test_a_dbus_restart_is_survived_and_hostnamed_started_again(
    start_activated: Start, activating: PrivateBus, caplog: pytest.LogCaptureFixture
) -> None:
    """The system bus restarted (an upgrade of dbus): hostnamed, which the bus starts on demand,
    is gone with it until something calls it. The watch reconnects once the bus can start it
    (svc's waits for systemd to be on the bus: hostnamed would never come by itself),
    subscribes again and checks: the check starts hostnamed again, whose transient name is
    back to the boot one, and repairs it; a change through hostnamed afterwards is seen."""
    caplog.set_level(logging.INFO, logger="engine")
    running = await start_activated(res(hostname="web1"))
    assert await running.res.check_apply(True) is False  # its first call starts the fake
    assert await running.res.check_apply(True) is True  # (the echoes of its calls came first)
    running.handle.rearm()
    await asyncio.to_thread(activating.restart)  # the fake ends with its connection
    await running.handle.next_event()  # the check once back
    assert "reconnected to D-Bus" in caplog.text
    caplog.clear()
    assert await running.res.check_apply(True) is False
    assert caplog.messages == ["hostname[host]: transient hostname set to 'web1' (was 'boot')"]
    assert await running.res.check_apply(True) is True
    client = await MessageBus(bus_address=activating.address).connect()
    try:
        reply = await client.call(
            Message(
                destination=HOSTNAME1,
                path=HOSTNAME1_PATH,
                interface=HOSTNAME1,
                member="SetPrettyHostname",
                signature="sb",
                body=["by hand", False],
            )
        )
        assert reply.message_type is MessageType.METHOD_RETURN, reply.body
    finally:
        client.disconnect()
    await running.handle.next_event()  # subscribed again
    assert await running.res.check_apply(True) is False
    assert not any("D-Bus" in message for message in caplog.messages)
