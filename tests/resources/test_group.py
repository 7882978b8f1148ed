"""group: real groupadd/groupmod/groupdel on this machine (root); names are unique and removed."""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from engine.errors import ResourceError, ValidationError
from engine.resource import UID, Edgeable
from resources.group import GroupRes
from tests.conftest import Running

Start = Callable[..., Awaitable[Running]]

pytestmark = pytest.mark.host
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (groupadd)")


async def run(*argv: str) -> None:
    """Run a command as an operator would; fail the test if it fails."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(30):
        _, err = await proc.communicate()
    assert proc.returncode == 0, f"{argv}: {err.decode()}"


def gid_of(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def free_gid(start: int = 62000) -> int:
    """A gid that no group has (below nogroup's 65534)."""
    used = {g.gr_gid for g in grp.getgrall()}
    return next(gid for gid in range(start, 65000) if gid not in used)


@pytest.fixture
async def names() -> AsyncIterator[Callable[[], str]]:
    """`names()` makes a unique group name; every one of them is deleted afterwards."""
    made: list[str] = []

    def make() -> str:
        made.append(f"mgmt-test-{secrets.token_hex(3)}")
        return made[-1]

    yield make
    for name in made:
        if gid_of(name) is not None:
            await run("groupdel", name)


@needs_root
async def test_timeline_create_drift_repair(
    run_resource: Start, names: Callable[[], str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    name, gid = names(), free_gid()
    running = await run_resource(GroupRes(name=name, gid=gid))
    res, handle = running.res, running.handle

    assert await res.check_apply(False) is False
    assert gid_of(name) is None
    assert f"would create group {name} with gid {gid}" in caplog.text

    assert await res.check_apply(True) is False
    assert gid_of(name) == gid
    assert f"group[{name}]: created group {name} with gid {gid}" in caplog.text
    assert await res.check_apply(True) is True
    assert f"nothing to do: group {name} exists with gid {gid}" in caplog.text
    assert await handle.no_event(0.2)

    # drift: another gid
    await run("groupmod", "--gid", str(gid + 1), name)
    await handle.next_event()
    assert await res.check_apply(False) is False
    assert gid_of(name) == gid + 1
    assert f"would change gid of group {name} from {gid + 1} to {gid}" in caplog.text
    assert await res.check_apply(True) is False
    assert gid_of(name) == gid
    assert await res.check_apply(True) is True

    # drift: deleted
    await run("groupdel", name)
    await handle.next_event()
    assert await res.check_apply(True) is False
    assert gid_of(name) == gid
    assert await res.check_apply(True) is True


@needs_root
async def test_absent_deletes(
    run_resource: Start, names: Callable[[], str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    name = names()
    await run("groupadd", name)
    running = await run_resource(GroupRes(name=name, state="absent"))
    assert await running.res.check_apply(False) is False
    assert gid_of(name) is not None
    assert await running.res.check_apply(True) is False
    assert gid_of(name) is None
    assert f"deleted group {name}" in caplog.text
    assert await running.res.check_apply(True) is True
    assert f"nothing to do: group {name} does not exist" in caplog.text
    # recreated by hand: the watch sees it, the resource deletes it again
    await run("groupadd", name)
    await running.handle.next_event()
    assert await running.res.check_apply(True) is False
    assert gid_of(name) is None


@needs_root
async def test_unmanaged_gid_is_left_alone(run_resource: Start, names: Callable[[], str]) -> None:
    name = names()
    running = await run_resource(GroupRes(name=name), watch=False)
    assert await running.res.check_apply(True) is False
    gid = gid_of(name)
    assert gid is not None
    assert await running.res.check_apply(True) is True


@needs_root
async def test_gid_of_another_group_is_an_error(
    run_resource: Start, names: Callable[[], str]
) -> None:
    taken = grp.getgrnam("root").gr_gid
    running = await run_resource(GroupRes(name=names(), gid=taken), watch=False)
    with pytest.raises(ResourceError, match=f"gid {taken} already belongs to group 'root'"):
        await running.res.check_apply(False)


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"name": ""}, "name"),
        ({"name": "-g"}, "name"),
        ({"name": "a:b"}, "name"),
        ({"name": "a,b"}, "name"),
        ({"name": "1234"}, "name"),
        ({"name": "x" * 33}, "name"),
        ({"name": "ok", "gid": -1}, "gid"),
        ({"name": "ok", "gid": 2**32 - 1}, "gid"),
        ({"name": "ok", "state": "absent", "gid": 10}, "gid"),
    ],
)
def test_validate_names_the_field(params: dict[str, Any], key: str) -> None:
    with pytest.raises(ValidationError) as err:
        GroupRes(**params).validate()
    assert err.value.key == key


def test_validate_accepts() -> None:
    GroupRes(name="www-data").validate()
    GroupRes(name="_svc.x", gid=0).validate()
    GroupRes(name="old", state="absent").validate()


def test_uids() -> None:
    res = GroupRes(name="wheel", gid=10)
    assert isinstance(res, Edgeable)
    assert res.uids() == [UID("group", "wheel"), UID("group", "10")]
    assert GroupRes(name="wheel").uids() == [UID("group", "wheel")]
    assert res.autoedges() == []
