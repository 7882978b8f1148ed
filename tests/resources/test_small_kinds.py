"""noop, print, msg and timer: the idempotency timeline and their refresh behaviour."""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from engine.errors import ResourceError, ValidationError
from resources.msg import MsgRes
from resources.noop import NoopRes
from resources.print import PrintRes
from resources.timer import TimerRes
from tests.conftest import Running

Start = Callable[..., Awaitable[Running]]


async def test_noop_is_always_converged(run_resource: object) -> None:
    running = await run_resource(NoopRes(name="n"))  # type: ignore[operator]
    assert await running.res.check_apply(True)
    running.handle.refresh_flag = True
    assert await running.res.check_apply(True)


async def test_print_logs_and_refresh_only(
    run_resource: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    running = await run_resource(PrintRes(name="p", msg="hi", refresh_only=True))  # type: ignore[operator]
    assert await running.res.check_apply(True)
    assert "msg: hi" not in caplog.text
    running.handle.refresh_flag = True
    assert await running.res.check_apply(True)
    assert "print[p]: msg: hi" in caplog.text


async def test_msg_logs_once_then_again_on_refresh(
    run_resource: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    res = MsgRes(name="m", body="deployed", fields={"app": "x"}, priority="Warning")
    running = await run_resource(res)  # type: ignore[operator]
    assert not await res.check_apply(False)  # noop: would log, logs nothing
    assert "deployed" not in caplog.text
    assert not await res.check_apply(True)
    assert "msg[m]: deployed app=x" in caplog.text
    assert caplog.records[-1].levelno == logging.WARNING
    assert await res.check_apply(True)
    running.handle.refresh_flag = True
    assert not await res.check_apply(True)


async def test_timer_ticks_are_changes_and_refresh_restarts(run_resource: object) -> None:
    res = TimerRes(name="t", interval=0.05)
    running = await run_resource(res)  # type: ignore[operator]
    assert await res.check_apply(True)  # no tick yet after the startup event
    await running.handle.next_event()  # a tick
    assert not await res.check_apply(False)  # noop: reported, not consumed
    assert not await res.check_apply(True)
    assert await res.check_apply(True)
    running.handle.refresh_flag = True
    assert not await res.check_apply(True)  # restarted by the refresh
    await running.handle.next_event()  # and it keeps ticking


@pytest.mark.parametrize("interval", [0, 0.000001, 0.009])
def test_timer_interval_has_a_floor(interval: float) -> None:
    with pytest.raises(ValidationError, match=r"must be at least 0\.01 seconds") as err:
        TimerRes(name="t", interval=interval).validate()
    assert err.value.key == "interval"
    TimerRes(name="t", interval=0.01).validate()


async def test_msg_journal_sends_one_native_datagram(
    run_resource: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real datagram socket stands for journald (none runs here): what arrives is its native
    protocol, the multi-line body in the binary-safe form."""
    path = tmp_path / "journal.sock"
    monkeypatch.setenv("MGMT_JOURNAL_SOCKET", str(path))
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as journald:
        journald.bind(str(path))
        journald.setblocking(False)
        res = MsgRes(name="m", body="two\nlines", priority="Err", fields={"APP": "x"}, journal=True)
        running = await run_resource(res)
        assert await running.res.check_apply(False) is False  # noop: nothing sent
        with pytest.raises(BlockingIOError):
            journald.recv(4096)
        assert await running.res.check_apply(True) is False
        data = journald.recv(4096)
        assert await running.res.check_apply(True) is True
        with pytest.raises(BlockingIOError):
            journald.recv(4096)
    body = b"two\nlines"
    assert data == (b"MESSAGE\n" + struct.pack("<Q", len(body)) + body + b"\nPRIORITY=3\nAPP=x\n")


async def test_msg_journal_absent_is_a_clear_error(
    run_resource: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MGMT_JOURNAL_SOCKET", str(tmp_path / "none"))
    running = await run_resource(MsgRes(name="m", journal=True))
    with pytest.raises(ResourceError, match=r"journal: cannot reach the systemd journal at .*none"):
        await running.res.check_apply(True)


def test_msg_journal_field_names_are_journald_s() -> None:
    with pytest.raises(ValidationError, match="upper-case") as err:
        MsgRes(name="m", fields={"app": "x"}, journal=True).validate()
    assert err.value.key == "fields.app"
    MsgRes(name="m", fields={"app": "x"}).validate()  # only the journal is strict
