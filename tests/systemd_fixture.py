"""A real systemd service manager for tests: `systemd --user`, contained by scripts/user-systemd.

`scripts/user-systemd start DIR` runs systemd (the same org.freedesktop.systemd1 API as the
system manager) in cgroups of its own and a private mount namespace, and `stop DIR` kills it and
everything it started. It is the only way these tests start systemd. A test module takes one
manager for all its tests (about 0.6 s to start; the `manager` fixture below, which
tests/conftest.py registers for every module) and gives each test units of its own names.

`manager.env(session)` points a client (the resource in this process, or an `mgmt` child) at
it: the session bus and $XDG_CONFIG_HOME for `session: true`; for the system code path
(`session: false`) DBUS_SYSTEM_BUS_ADDRESS is the same bus and MGMT_SYSTEMD_UNIT_DIR its unit
directory. `async with manager.client() as sd:` is the test's own subscribed D-Bus connection,
to look at units and to wait (bounded) for a condition, re-checked on every systemd signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shlex
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "scripts" / "user-systemd"
SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = f"{SYSTEMD}.Manager"
WAIT = 15.0  # seconds: a hang-preventing bound, not a latency budget


class RealSystemd:
    """One running `systemd --user` (see the module docstring)."""

    def __init__(self, directory: Path, assignments: dict[str, str]) -> None:
        self.directory = directory
        self.vars = assignments  # HOME, XDG_CONFIG_HOME, XDG_RUNTIME_DIR, DBUS_SESSION_BUS...
        self.bus = assignments["DBUS_SESSION_BUS_ADDRESS"]
        self.unit_dir = Path(assignments["UNIT_DIR"])
        self.pid = int(assignments["SYSTEMD_PID"])
        self._names = itertools.count(1)

    def env(self, session: bool = False) -> dict[str, str]:
        """What a client of the resource needs: the session path, or the system path."""
        if session:
            keys = ("DBUS_SESSION_BUS_ADDRESS", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR")
            return {key: self.vars[key] for key in keys}
        return {"DBUS_SYSTEM_BUS_ADDRESS": self.bus, "MGMT_SYSTEMD_UNIT_DIR": str(self.unit_dir)}

    def name(self, stem: str) -> str:
        """A unit name no other test of this manager uses."""
        return f"{stem}-{next(self._names)}"

    def write_unit(self, name: str, text: str) -> Path:
        path = self.unit_dir / name
        path.write_text(text)
        return path

    def link(self, target: str, unit: str) -> Path:
        """Where `systemctl enable` puts the link that WantedBy=<target> makes."""
        return self.unit_dir / f"{target}.wants" / unit

    async def systemctl(self, *args: str) -> str:
        """`systemctl --user ARGS` against this manager; its output (a failure raises)."""
        proc = await asyncio.create_subprocess_exec(
            "systemctl",
            "--user",
            *args,
            env={**os.environ, **self.vars},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        async with asyncio.timeout(WAIT):
            out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise AssertionError(f"systemctl --user {shlex.join(args)}: {out.decode()}")
        return out.decode()

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[Client]:
        conn = await MessageBus(bus_address=self.bus).connect()
        client = Client(conn)
        try:
            await client.subscribe()
            yield client
        finally:
            conn.disconnect()
            with contextlib.suppress(Exception):
                await conn.wait_for_disconnect()


class Client:
    """The test's own connection to the manager, subscribed to its signals."""

    def __init__(self, conn: MessageBus) -> None:
        self.conn = conn
        self._tick = asyncio.Event()
        conn.add_message_handler(self._on_message)

    async def subscribe(self) -> None:
        rule = f"type='signal',sender='{SYSTEMD}'"
        await self.call(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "AddMatch",
            "s",
            rule,
        )
        await self.manager("Subscribe")

    def _on_message(self, msg: Message) -> None:
        if msg.message_type is MessageType.SIGNAL:
            self._tick.set()

    async def call(
        self, destination: str, path: str, interface: str, member: str, sig: str = "", *body: Any
    ) -> list[Any]:
        msg = Message(
            destination=destination,
            path=path,
            interface=interface,
            member=member,
            signature=sig,
            body=list(body),
        )
        async with asyncio.timeout(WAIT):
            reply = await self.conn.call(msg)
        if reply.message_type is MessageType.ERROR:
            raise AssertionError(f"{member}: {reply.error_name}: {reply.body}")
        return list(reply.body)

    async def manager(self, member: str, sig: str = "", *body: Any) -> list[Any]:
        return await self.call(SYSTEMD, MANAGER_PATH, MANAGER, member, sig, *body)

    async def props(self, unit: str, interface: str = "Unit") -> dict[str, Any]:
        """The unit's properties (`interface` "Service" for MainPID, Result...)."""
        (path,) = await self.manager("LoadUnit", "s", unit)
        (props,) = await self.call(
            SYSTEMD,
            path,
            "org.freedesktop.DBus.Properties",
            "GetAll",
            "s",
            f"{SYSTEMD}.{interface}",
        )
        return {key: variant.value for key, variant in props.items()}

    async def active(self, unit: str) -> str:
        return str((await self.props(unit))["ActiveState"])

    async def main_pid(self, unit: str) -> int:
        return int((await self.props(unit, "Service"))["MainPID"])

    async def file_state(self, unit: str) -> str:
        try:
            (state,) = await self.manager("GetUnitFileState", "s", unit)
        except AssertionError:
            return "missing"
        return str(state)

    async def reload(self) -> None:
        """daemon-reload, as `systemctl daemon-reload` does."""
        await self.manager("Reload")

    async def wait_until(
        self, predicate: Callable[[], Awaitable[bool]], timeout: float = WAIT
    ) -> None:
        """Wait until `predicate()` holds: re-checked on every systemd signal, bounded."""
        async with asyncio.timeout(timeout):
            while True:
                self._tick.clear()
                if await predicate():
                    return
                await self._tick.wait()

    async def running_with_new_pid(self, unit: str, old: int) -> int:
        """Wait until `unit` is active with a main PID other than `old`; that PID."""
        pid = 0

        async def restarted() -> bool:
            nonlocal pid
            pid = await self.main_pid(unit)
            return pid not in (0, old) and await self.active(unit) == "active"

        await self.wait_until(restarted)
        return pid


def start(directory: Path) -> RealSystemd:
    """Start a manager in `directory` (blocking, about 0.6 s)."""
    proc = subprocess.run(
        [str(TOOL), "start", str(directory)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{TOOL.name} start failed: {proc.stderr.strip()}")
    assignments = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return RealSystemd(directory, assignments)


def stop(directory: Path) -> None:
    subprocess.run(
        [str(TOOL), "stop", str(directory)], check=False, capture_output=True, timeout=60
    )


@contextlib.contextmanager
def real_systemd(factory: pytest.TempPathFactory) -> Iterator[RealSystemd]:
    """A manager for the length of the block (a module-scoped fixture's body)."""
    directory = factory.mktemp("systemd")
    manager = start(directory)
    try:
        yield manager
    finally:
        stop(directory)


@contextlib.contextmanager
def systemd_env(units: dict[str, str] | None = None) -> Iterator[dict[str, str]]:
    """A manager of its own with `units` written, for an `mgmt` child taking the system path
    (`session: false`): yields the environment that points it there."""
    with tempfile.TemporaryDirectory(prefix="mgmt-systemd-") as tmp:
        directory = Path(tmp)
        manager = start(directory)
        try:
            for name, text in (units or {}).items():
                manager.write_unit(name, text)
            yield manager.env(session=False)
        finally:
            stop(directory)


# The fixtures (tests/conftest.py registers this module as a plugin) --------------------------


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealSystemd]:
    """One real systemd manager for the tests of a module."""
    with real_systemd(tmp_path_factory) as started:
        yield started


@pytest.fixture
async def sd(manager: RealSystemd, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Client]:
    """Both code paths pointed at the manager (the system one and `session: true`, for this
    process's resources and for `mgmt` children), and the test's own connection to it."""
    for session in (False, True):
        for key, value in manager.env(session).items():
            monkeypatch.setenv(key, value)
    async with manager.client() as client:
        yield client
