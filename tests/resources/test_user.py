"""user: real useradd/usermod/userdel on this machine (root); names are unique and removed."""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import pwd
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from engine.errors import ResourceError, ValidationError
from engine.resource import UID, Edgeable
from resources._lib.ids import PRIMARY_REMOVED, USER_REMOVED
from resources.group import GroupRes
from resources.user import UserRes
from tests.conftest import Running

Start = Callable[..., Awaitable[Running]]
Names = Callable[[], str]

pytestmark = pytest.mark.host
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (useradd)")


async def run(*argv: str) -> None:
    """Run a command as an operator would; fail the test if it fails."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(30):
        _, err = await proc.communicate()
    assert proc.returncode == 0, f"{argv}: {err.decode()}"


def user(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def group(name: str) -> grp.struct_group | None:
    try:
        return grp.getgrnam(name)
    except KeyError:
        return None


def supplementary(name: str) -> set[str]:
    return {g.gr_name for g in grp.getgrall() if name in g.gr_mem}


def free_uid(start: int = 62000) -> int:
    used = {p.pw_uid for p in pwd.getpwall()}
    return next(uid for uid in range(start, 65000) if uid not in used)


@pytest.fixture
async def names() -> AsyncIterator[Names]:
    """`names()` makes a unique name; users and groups of those names are deleted afterwards."""
    made: list[str] = []

    def make() -> str:
        made.append(f"mgmt-test-{secrets.token_hex(3)}")
        return made[-1]

    yield make
    for name in made:
        if user(name) is not None:
            await run("userdel", name)
    for name in made:
        if group(name) is not None:
            await run("groupdel", name)


@pytest.fixture
async def groups(names: Names) -> tuple[str, str]:
    """Two fresh groups (removed with the names)."""
    made = names(), names()
    for name in made:
        await run("groupadd", name)
    return made


# the idempotency timeline -------------------------------------------------------------------


@needs_root
async def test_timeline_create_drift_repair(
    run_resource: Start,
    names: Names,
    groups: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    name, uid = names(), free_uid()
    primary, extra = groups
    wanted = UserRes(
        name=name, uid=uid, group=primary, groups=[extra], homedir="/nonexistent/x", shell="/bin/sh"
    )
    running = await run_resource(wanted)
    res, handle = running.res, running.handle

    assert await res.check_apply(False) is False
    assert user(name) is None
    assert f"would create user {name} (uid {uid}, group {primary}," in caplog.text

    assert await res.check_apply(True) is False
    entry = user(name)
    assert entry is not None
    assert (entry.pw_uid, entry.pw_dir, entry.pw_shell) == (uid, "/nonexistent/x", "/bin/sh")
    assert entry.pw_gid == grp.getgrnam(primary).gr_gid
    assert supplementary(name) == {extra}
    assert not await asyncio.to_thread(os.path.exists, "/nonexistent/x")  # no home is made
    assert f"user[{name}]: created user {name}" in caplog.text
    assert await res.check_apply(True) is True
    assert f"nothing to do: user {name} exists with the wanted uid, group, groups" in caplog.text
    assert await handle.no_event(0.2)

    # drift: shell and supplementary groups changed by hand: one usermod repairs both
    await run("usermod", "--shell", "/bin/bash", "--groups", "", name)
    await handle.next_event()
    assert await res.check_apply(False) is False
    assert f"would change shell of user {name} from /bin/bash to /bin/sh" in caplog.text
    assert f"would change groups of user {name} from [] to [{extra}]" in caplog.text
    assert user(name).pw_shell == "/bin/bash"  # type: ignore[union-attr]
    assert await res.check_apply(True) is False
    assert user(name).pw_shell == "/bin/sh"  # type: ignore[union-attr]
    assert supplementary(name) == {extra}
    assert f"changed shell of user {name} from /bin/bash to /bin/sh" in caplog.text
    assert await res.check_apply(True) is True

    # drift: deleted by hand
    await run("userdel", name)
    await handle.next_event()
    assert await res.check_apply(True) is False
    assert user(name).pw_uid == uid  # type: ignore[union-attr]
    assert await res.check_apply(True) is True


@needs_root
async def test_absent_deletes(
    run_resource: Start, names: Names, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    name = names()
    await run("useradd", name)
    running = await run_resource(UserRes(name=name, state="absent"))
    assert await running.res.check_apply(False) is False
    assert user(name) is not None
    assert await running.res.check_apply(True) is False
    assert user(name) is None
    assert f"deleted user {name}" in caplog.text
    assert await running.res.check_apply(True) is True
    assert f"nothing to do: user {name} does not exist" in caplog.text


@needs_root
async def test_absent_with_a_gid_deletes_as_in_mgmt(run_resource: Start, names: Names) -> None:
    """mgmt's examples write `state: absent` with a gid: accepted, ignored, the user goes."""
    name = names()
    await run("useradd", name)
    running = await run_resource(UserRes(name=name, state="absent", gid=10000))
    assert await running.res.check_apply(True) is False
    assert user(name) is None
    assert await running.res.check_apply(True) is True
    assert running.res.autoedges() == []


@needs_root
async def test_modify_uid_primary_gid_and_home(run_resource: Start, names: Names) -> None:
    name, uid = names(), free_uid()
    await run("useradd", name)
    gid = grp.getgrnam("nogroup").gr_gid
    res = UserRes(name=name, uid=uid, gid=gid, homedir="/srv/x")
    running = await run_resource(res, watch=False)
    assert await running.res.check_apply(True) is False
    entry = user(name)
    assert entry is not None
    assert (entry.pw_uid, entry.pw_gid, entry.pw_dir) == (uid, gid, "/srv/x")
    assert await running.res.check_apply(True) is True


@needs_root
async def test_new_user_joins_its_namesake_group(run_resource: Start, names: Names) -> None:
    # useradd alone refuses ("group exists"); the resource makes it the primary group.
    name = names()
    await run("groupadd", name)
    running = await run_resource(UserRes(name=name), watch=False)
    assert await running.res.check_apply(True) is False
    assert user(name).pw_gid == grp.getgrnam(name).gr_gid  # type: ignore[union-attr]


@needs_root
async def test_uid_of_another_user(run_resource: Start, names: Names) -> None:
    first, second, uid = names(), names(), free_uid()
    await run("useradd", "--uid", str(uid), first)
    taken = await run_resource(UserRes(name=second, uid=uid), watch=False)
    with pytest.raises(ResourceError, match=f"uid {uid} already belongs to user '{first}'"):
        await taken.res.check_apply(False)
    shared = await run_resource(UserRes(name=second, uid=uid, allowduplicateuid=True), watch=False)
    assert await shared.res.check_apply(True) is False
    assert user(second).pw_uid == uid  # type: ignore[union-attr]
    assert await shared.res.check_apply(True) is True


@needs_root
async def test_missing_group(
    run_resource: Start, names: Names, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    name, missing = names(), names()
    running = await run_resource(UserRes(name=name, groups=[missing]), watch=False)
    assert await running.res.check_apply(False) is False  # noop: says what it waits for
    assert f"would create user {name} (groups [{missing}]) (once group '{missing}' exists)" in (
        caplog.text
    )
    with pytest.raises(ResourceError, match=f"group '{missing}' does not exist"):
        await running.res.check_apply(True)
    assert user(name) is None


# validation and capabilities ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"name": "-o"}, "name"),
        ({"name": "a:b"}, "name"),
        ({"name": "a b"}, "name"),
        ({"name": "123"}, "name"),
        ({"name": "x", "uid": -1}, "uid"),
        ({"name": "x", "gid": 2**32}, "gid"),
        ({"name": "x", "gid": 1, "group": "g"}, "group"),
        ({"name": "x", "group": "a,b"}, "group"),
        ({"name": "x", "groups": ["ok", "b:c"]}, "groups[1]"),
        ({"name": "x", "groups": ["a", "a"]}, "groups"),
        ({"name": "x", "homedir": "relative"}, "homedir"),
        ({"name": "x", "homedir": "/a:b"}, "homedir"),
        ({"name": "x", "shell": "sh"}, "shell"),
        ({"name": "x", "allowduplicateuid": True}, "allowduplicateuid"),
        ({"name": "x", "state": "absent", "shell": "sh"}, "shell"),
    ],
)
def test_validate_names_the_field(params: dict[str, Any], key: str) -> None:
    with pytest.raises(ValidationError) as err:
        UserRes(**params).validate()
    assert err.value.key == key


def test_validate_accepts_the_full_form() -> None:
    UserRes(
        name="alice",
        uid=1500,
        group="staff",
        groups=["sudo", "adm"],
        homedir="/home/alice",
        shell="/bin/bash",
        allowduplicateuid=True,
    ).validate()
    UserRes(name="old", state="absent").validate()


def test_uids_and_autoedges() -> None:
    res = UserRes(name="alice", uid=1500, group="staff", groups=["sudo", "staff"])
    assert isinstance(res, Edgeable)
    assert res.uids() == [UID("user", "alice"), UID("user", "1500")]
    assert res.autoedges() == [[UID("group", "staff")], [UID("group", "sudo")]]
    assert UserRes(name="bob", gid=50).autoedges() == [[UID("group", "50")]]
    assert UserRes(name="bob").autoedges() == [[UID("group", "bob")]]
    assert UserRes(name="bob", state="absent").autoedges() == []
    gone = UserRes(name="bob", state="absent")
    assert gone.uids() == [UID("user", "bob"), UID(USER_REMOVED, "bob")]
    named = UserRes(name="bob", state="absent", group="staff", gid=50)
    assert named.uids()[2:] == [UID(PRIMARY_REMOVED, "staff")]
    assert GroupRes(name="bob", state="absent").autoedges() == [
        [UID(USER_REMOVED, "bob")],
        [UID(PRIMARY_REMOVED, "bob")],
    ]
    assert GroupRes(name="bob").autoedges() == []


def test_absent_users_come_before_the_absent_primary_group_they_name(tmp_path: Path) -> None:
    """Absent users naming one absent group as their primary one are all ordered before it; two
    naming it are not refused as managing one thing (the removal is a marker, not a thing
    managed); a present user comes after its present group."""
    from engine.engine import Engine
    from engine.graph import Graph

    graph = Graph("t")
    for res in (
        GroupRes(name="staff", state="absent"),
        UserRes(name="ann", state="absent", group="staff"),
        UserRes(name="ben", state="absent", group="staff"),
        GroupRes(name="web"),
        UserRes(name="www", group="web"),
    ):
        graph.add(res)
    Engine(hostname="h", prefix=tmp_path).prepare(graph)
    assert set(graph.pred[("group", "staff")]) == {("user", "ann"), ("user", "ben")}
    assert set(graph.pred[("user", "www")]) == {("group", "web")}
    assert not graph.pred[("user", "ann")] and not graph.pred[("user", "ben")]
