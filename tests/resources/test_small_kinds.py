"""noop, print, msg and timer: the idempotency timeline and their refresh behaviour."""

from __future__ import annotations

import logging

import pytest

from engine.errors import ValidationError
from resources.msg import MsgRes
from resources.noop import NoopRes
from resources.print import PrintRes
from resources.timer import TimerRes


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


def test_timer_interval_must_be_positive() -> None:
    with pytest.raises(ValidationError, match="interval"):
        TimerRes(name="t", interval=0).validate()
