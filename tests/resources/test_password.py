"""password: made once, kept in the real var dir (0600), sent, remade on drift or refresh."""

from __future__ import annotations

import os
import string
from collections.abc import Awaitable, Callable

import pytest

from engine.errors import ValidationError
from resources.password import PasswordRes
from tests.conftest import Running

Start = Callable[..., Awaitable[Running]]


async def test_made_kept_sent_and_remade(
    run_resource: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    res = PasswordRes(name="pass0", length=8)
    running = await run_resource(res)
    assert await res.check_apply(False) is False  # --noop: nothing made, nothing sent
    assert running.handle.sent == {}
    assert await res.check_apply(True) is False
    first = running.handle.sent["password"]
    assert isinstance(first, str) and len(first) == 8
    assert set(first) <= set(string.ascii_letters + string.digits)
    stored = running.handle.var_dir / "password"
    assert stored.read_text() == first + "\n"
    assert os.stat(stored).st_mode & 0o777 == 0o600
    assert "made a new password (none is kept)" in caplog.text
    assert first not in caplog.text  # never logged
    await running.handle.next_event()  # our own write
    assert await res.check_apply(True) is True
    # Another run (a new resource of the same name): the same password is sent.
    again = PasswordRes(name="pass0", length=8)
    other = await run_resource(again, watch=False)
    assert await again.check_apply(True) is True
    assert other.handle.sent["password"] == first
    # Drift: an edited password is an event and is replaced.
    stored.write_text("short\n")
    await running.handle.next_event()
    assert await res.check_apply(True) is False
    second = running.handle.sent["password"]
    assert second != first and len(second) == 8
    # A refresh (notify edge) makes a new one.
    running.handle.refresh_flag = True
    assert await res.check_apply(True) is False
    assert running.handle.sent["password"] != second


def test_length_is_validated() -> None:
    with pytest.raises(ValidationError) as err:
        PasswordRes(name="p", length=0).validate()
    assert err.value.key == "length"
