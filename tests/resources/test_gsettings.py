"""gsettings: the timeline against the real `gsettings` tool (GLib's keyfile backend in a
temporary config directory), with `gsettings monitor` as the watch."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from engine.errors import ResourceError, ValidationError
from resources._lib.proc import run_command
from resources.gsettings import GsettingsRes, gvariant_str
from tests.conftest import Running

SCHEMA = "org.gnome.desktop.interface"


@pytest.fixture(autouse=True)
def keyfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GSETTINGS_BACKEND", "keyfile")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config" / "glib-2.0" / "settings" / "keyfile"


async def _get(key: str) -> str:
    return (await run_command(["gsettings", "get", SCHEMA, key], timeout=30))[1].strip()


async def test_bool_timeline_with_monitor(run_resource: object) -> None:
    res = GsettingsRes(name=f"{SCHEMA} clock-show-seconds", type="bool", value=True)
    running: Running = await run_resource(res)  # type: ignore[operator]
    assert await res.check_apply(False) is False  # noop
    assert await _get("clock-show-seconds") == "false"
    assert await res.check_apply(True) is False
    assert await _get("clock-show-seconds") == "true"
    assert await res.check_apply(True) is True
    await run_command(["gsettings", "set", SCHEMA, "clock-show-seconds", "false"], timeout=30)
    await running.handle.next_event()  # the monitor reports it (or our own change before)
    assert await res.check_apply(True) is False
    assert await res.check_apply(True) is True


async def test_str_int_and_custom_types(run_resource: object) -> None:
    cases = [
        GsettingsRes(name="theme", schema=SCHEMA, key="gtk-theme", type="str", value="it's"),
        GsettingsRes(name="size", schema=SCHEMA, key="cursor-size", type="int", value=32),
        GsettingsRes(
            name="fonts", schema=SCHEMA, key="font-name", type="custom", value="'Sans 11'"
        ),
    ]
    for res in cases:
        await run_resource(res, watch=False)  # type: ignore[operator]
        assert await res.check_apply(True) is False
        assert await res.check_apply(True) is True  # no flapping: compared as printed
    assert await _get("gtk-theme") == '"it\'s"'
    assert await _get("cursor-size") == "32"


def test_gvariant_str() -> None:
    assert gvariant_str("plain") == "'plain'"
    assert gvariant_str("it's") == '"it\'s"'
    assert gvariant_str("a'b\"c") == "'a\\'b\"c'"
    assert gvariant_str("tab\there") == "'tab\\there'"


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"name": "no-space", "type": "bool", "value": True}, "name"),
        ({"name": "x", "schema": SCHEMA, "type": "bool", "value": True}, "key"),
        ({"name": f"{SCHEMA} k", "type": "bool", "value": "yes"}, "value"),
        ({"name": f"{SCHEMA} k", "type": "int", "value": True}, "value"),
        ({"name": f"{SCHEMA} k", "type": "str", "value": 3}, "value"),
        ({"name": "x", "schema": "-a", "key": "k", "type": "str", "value": "v"}, "schema"),
    ],
)
def test_validation(params: dict[str, object], key: str) -> None:
    with pytest.raises(ValidationError) as err:
        GsettingsRes(**params).validate()  # type: ignore[arg-type]
    assert err.value.key == key


async def test_missing_user_fails_the_check_not_the_watch(run_resource: object) -> None:
    res = GsettingsRes(
        name=f"{SCHEMA} clock-show-seconds", type="bool", value=True, user="mgmt-no-such-user"
    )
    running: Running = await run_resource(res)  # type: ignore[operator]  # startup event came
    with pytest.raises(ResourceError, match="no such user 'mgmt-no-such-user'"):
        await res.check_apply(True)
    assert running.task is not None and not running.task.done()  # it waits for the user


NOBODY = pwd.getpwnam("nobody")


@pytest.mark.skipif(
    os.path.exists(f"/run/user/{NOBODY.pw_uid}/bus"), reason="nobody has a session bus here"
)
async def test_a_user_without_a_session_bus_fails_rather_than_saving_nothing(
    run_resource: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dconf as `nobody`, who is not logged in (no /run/user/65534/bus): `gsettings set` exits
    0 and keeps nothing, saying so on stderr only. Before, the resource reported "set" on every
    run; now it fails naming the missing session bus."""
    nobody = NOBODY
    monkeypatch.setenv("GSETTINGS_BACKEND", "dconf")
    res = GsettingsRes(name=f"{SCHEMA} clock-show-seconds", type="bool", value=True, user="nobody")
    await run_resource(res, watch=False)  # type: ignore[operator]
    with pytest.raises(ResourceError) as err:
        await res.check_apply(True)
    assert str(err.value).startswith(
        f"gsettings set {SCHEMA} clock-show-seconds saved nothing (nobody has no session bus "
        f"/run/user/{nobody.pw_uid}/bus: is the user logged in?): "
    )
    assert "**" not in str(err.value)
