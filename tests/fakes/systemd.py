"""What a contained `systemd --user` cannot be made to do, as a D-Bus service on a private bus.

svc and cron are tested against a real systemd (tests/systemd_fixture.py). Two things are not:

- org.freedesktop.hostname1 (the hostname kind): hostnamed is a system service of its own, not
  part of a user manager, and the tests must never change this machine's hostname. This one
  keeps the transient name in memory, the static name in a file (re-read on every query) and
  PRETTY_HOSTNAME= in a machine-info file: Hostname, StaticHostname, PrettyHostname,
  DefaultHostname, HostnameSource, SetHostname, SetStaticHostname (which, as in hostnamed,
  also sets the transient name), SetPrettyHostname, with PropertiesChanged.
- systemd's JobRemoved *before* the reply that names the job. A real manager replies to
  StartUnit first and ends the job later; clients must cope with both orders, and the real
  manager cannot be made to produce this one on demand. Here org.freedesktop.systemd1.Manager
  has Subscribe and a StartUnit that sends JobRemoved (result `fake.job_result`) first.

Three ways to run it:
    async with running_fake(tmp_path, monkeypatch.setenv) as fake: ...   # in-process
    with fake_systemd_process() as env: ...                               # a child process
    python -m tests.fakes.systemd --address ADDR [...]                    # prints READY
The last may be started by the bus at the first call to it (`PrivateBus(activatable=...)`, as
the system bus starts hostnamed): it serves until its connection is lost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import select
import shlex
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

from dbus_fast import BusType, Message, MessageType, PropertyAccess
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusBool, DBusObjectPath, DBusSignature, DBusStr
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property, dbus_signal

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
HOSTNAME1 = "org.freedesktop.hostname1"
HOSTNAME1_PATH = "/org/freedesktop/hostname1"
ALREADY_SUBSCRIBED = "org.freedesktop.systemd1.AlreadySubscribed"
INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
READY = "READY"
BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>{listen}</listen>
  <servicedir>{services}</servicedir>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


class PrivateBus:
    """A private dbus-daemon (our child process, stopped by its pid); `address` once started.

    `activatable`: services the bus starts at their first call (bus activation, as the system
    bus starts hostnamed), by name: the argv it runs. Those listen on a socket file of their
    own (the same address after `restart()`: a D-Bus restart, which ends the services it
    started with their connection)."""

    def __init__(self, activatable: dict[str, list[str]] | None = None) -> None:
        self.address = ""
        self._dir = tempfile.TemporaryDirectory(prefix="mgmt-dbus-")
        self._log = open(Path(self._dir.name, "dbus-daemon.log"), "w")  # noqa: SIM115
        self._proc: subprocess.Popen[str] | None = None
        services = Path(self._dir.name, "services")
        services.mkdir()
        listen = "unix:tmpdir=/tmp"
        if activatable:
            listen = f"unix:path={self._dir.name}/bus"
        for name, argv in (activatable or {}).items():
            text = f"[D-BUS Service]\nName={name}\nExec={shlex.join(argv)}\n"
            Path(services, f"{name}.service").write_text(text)
        self._config = Path(self._dir.name, "bus.conf")
        self._config.write_text(BUS_CONFIG.format(listen=listen, services=services))

    def __enter__(self) -> str:
        self._start()
        return self.address

    def _start(self) -> None:
        self._proc = subprocess.Popen(
            ["dbus-daemon", f"--config-file={self._config}", "--nofork", "--print-address=1"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,  # it warns that it may not raise its fd limit here
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},  # for what it starts (this module)
        )
        self.address = _read_line(self._proc, 10.0, "dbus-daemon", self._log.name).strip()

    def restart(self) -> None:
        """Stop the daemon and start it again, at the same address (`activatable` only)."""
        if self._proc is not None:
            _stop(self._proc)
        self._start()

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            _stop(self._proc)
        self._log.close()
        self._dir.cleanup()


def _read_line(proc: subprocess.Popen[str], timeout: float, what: str, log: str) -> str:
    """The first line a child prints on stdout, waiting at most `timeout` seconds."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        _stop(proc)
        tail = Path(log).read_text()[-2000:] if os.path.exists(log) else ""
        raise RuntimeError(f"{what} did not start (exit code {proc.returncode}): {tail}")
    return line


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


# systemd1: a job whose JobRemoved comes before the reply ------------------------------------


class Manager(ServiceInterface):
    """org.freedesktop.systemd1.Manager: Subscribe, StartUnit (JobRemoved first), JobRemoved."""

    def __init__(self, fake: FakeSystemd) -> None:
        super().__init__(f"{SYSTEMD}.Manager")
        self.fake = fake
        self._next_job = 0

    @dbus_method(name="Subscribe")
    def subscribe(self):  # void: no return signature
        sender = self.fake.record("Subscribe")
        if sender in self.fake.subscribers:
            raise DBusError(ALREADY_SUBSCRIBED, "Client is already subscribed.")
        self.fake.subscribers.add(sender)

    @dbus_method(name="StartUnit")
    def start_unit(self, name: DBusStr, mode: DBusStr) -> DBusObjectPath:
        self.fake.record("StartUnit", name, mode)
        self._next_job += 1
        path = f"{MANAGER_PATH}/job/{self._next_job}"
        self.job_removed(self._next_job, path, name, self.fake.job_result)  # before the reply
        return path

    @dbus_signal(name="JobRemoved")
    def job_removed(
        self, id_: int, job: str, unit: str, result: str
    ) -> Annotated[list[Any], DBusSignature("uoss")]:
        return [id_, job, unit, result]


# hostname1 -------------------------------------------------------------------------------------


class Hostname1(ServiceInterface):
    """org.freedesktop.hostname1 (the static and pretty names live in files, as in hostnamed)."""

    def __init__(self, fake: FakeSystemd, transient: str) -> None:
        super().__init__(HOSTNAME1)
        self.fake = fake
        self.transient = transient

    @property
    def static(self) -> str:
        try:
            lines = self.fake.hostname_file.read_text().splitlines()
        except FileNotFoundError:
            return ""
        return next((ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")), "")

    @property
    def pretty(self) -> str:
        for line in self._machine_info():
            key, _, value = line.partition("=")
            if key == "PRETTY_HOSTNAME":
                words = shlex.split(value)
                return words[0] if words else ""
        return ""

    def _machine_info(self) -> list[str]:
        try:
            return self.fake.machine_info_file.read_text().splitlines()
        except FileNotFoundError:
            return []

    @dbus_property(access=PropertyAccess.READ, name="Hostname")
    def hostname(self) -> DBusStr:
        return self.transient

    @dbus_property(access=PropertyAccess.READ, name="StaticHostname")
    def static_hostname(self) -> DBusStr:
        return self.static

    @dbus_property(access=PropertyAccess.READ, name="PrettyHostname")
    def pretty_hostname(self) -> DBusStr:
        return self.pretty

    @dbus_property(access=PropertyAccess.READ, name="DefaultHostname")
    def default_hostname(self) -> DBusStr:
        return "localhost"

    @dbus_property(access=PropertyAccess.READ, name="HostnameSource")
    def hostname_source(self) -> DBusStr:
        return "static" if self.static else "transient"

    @dbus_method(name="SetHostname")
    def set_hostname(self, name: DBusStr, interactive: DBusBool):  # void: no return signature
        self.fake.record("SetHostname", name, interactive)
        name = name or self.static or "localhost"
        _check_hostname(name)
        if name != self.transient:
            self.transient = name
            self.emit_properties_changed({"Hostname": name})
            self.fake.changed()

    @dbus_method(name="SetStaticHostname")
    def set_static_hostname(
        self, name: DBusStr, interactive: DBusBool
    ):  # void: no return signature
        self.fake.record("SetStaticHostname", name, interactive)
        if name:
            _check_hostname(name)
        if name == self.static:
            return
        if name:
            self.fake.hostname_file.write_text(name + "\n")
            self.transient = name  # hostnamed sets the kernel's hostname to the static one
        else:
            self.fake.hostname_file.unlink(missing_ok=True)
        changed = {"StaticHostname": name, "Hostname": self.transient}
        self.emit_properties_changed({**changed, "HostnameSource": self.hostname_source})
        self.fake.changed()

    @dbus_method(name="SetPrettyHostname")
    def set_pretty_hostname(
        self, name: DBusStr, interactive: DBusBool
    ):  # void: no return signature
        self.fake.record("SetPrettyHostname", name, interactive)
        if any(ord(ch) < 32 for ch in name):
            raise DBusError(INVALID_ARGS, f"Invalid pretty hostname '{name}'")
        if name == self.pretty:
            return
        lines = [ln for ln in self._machine_info() if not ln.startswith("PRETTY_HOSTNAME=")]
        if name:
            lines.append(f"PRETTY_HOSTNAME={shlex.quote(name)}")
        self.fake.machine_info_file.write_text("".join(ln + "\n" for ln in lines))
        self.emit_properties_changed({"PrettyHostname": name})
        self.fake.changed()


def _check_hostname(name: str) -> None:
    labels = name.split(".")
    ok = len(name) <= 64 and all(
        lab and all(ch.isascii() and (ch.isalnum() or ch in "-_") for ch in lab) for lab in labels
    )
    if not ok:
        raise DBusError(INVALID_ARGS, f"Invalid hostname '{name}'")


# the whole service -----------------------------------------------------------------------------


class FakeSystemd:
    """The fake systemd1 + hostname1 on one bus connection, with hooks for tests."""

    def __init__(
        self, hostname_file: Path, machine_info_file: Path, transient_hostname: str = "localhost"
    ) -> None:
        self.hostname_file = hostname_file
        self.machine_info_file = machine_info_file
        self.subscribers: set[str] = set()
        self.calls: list[tuple[Any, ...]] = []  # (method, *args) of every call, in order
        self.job_result = "done"
        self.manager = Manager(self)
        self.hostname1 = Hostname1(self, transient_hostname)
        self.bus: MessageBus | None = None
        self._sender = ""
        self._tick = asyncio.Event()

    async def start(self, address: str) -> None:
        bus = await MessageBus(bus_address=address, bus_type=BusType.SESSION).connect()
        self.bus = bus
        bus.add_message_handler(self._on_message)
        bus.export(MANAGER_PATH, self.manager)
        bus.export(HOSTNAME1_PATH, self.hostname1)
        await bus.request_name(SYSTEMD)
        await bus.request_name(HOSTNAME1)

    async def stop(self) -> None:
        if self.bus is not None:
            self.bus.disconnect()
            with contextlib.suppress(Exception):
                await self.bus.wait_for_disconnect()
            self.bus = None

    # for tests -----------------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait (bounded) until predicate() holds; re-checked on every change the fake makes."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._tick.clear()
                await self._tick.wait()

    def env(self, address: str) -> dict[str, str]:
        """What a client needs to find this fake."""
        return {
            "DBUS_SYSTEM_BUS_ADDRESS": address,
            "MGMT_HOSTNAME_FILE": str(self.hostname_file),
            "MGMT_MACHINE_INFO_FILE": str(self.machine_info_file),
        }

    # internals -----------------------------------------------------------------------------

    def record(self, method: str, *args: Any) -> str:
        """Note a call; the caller's unique name."""
        self.calls.append((method, *args))
        return self._sender

    def changed(self) -> None:
        self._tick.set()

    def _on_message(self, msg: Message) -> None:
        """Runs before the method handlers: remembers who calls."""
        if msg.message_type is MessageType.METHOD_CALL:
            self._sender = msg.sender or ""


# ways to run it --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running_fake(
    tmp_path: Path,
    setenv: Callable[[str, str], None] | None = None,
    transient_hostname: str = "localhost",
) -> AsyncIterator[FakeSystemd]:
    """In-process fake on its own private bus; `setenv` (monkeypatch.setenv) points clients at it.

    The static hostname lives in tmp_path/hostname, the pretty one in tmp_path/machine-info.
    """
    fake = FakeSystemd(tmp_path / "hostname", tmp_path / "machine-info", transient_hostname)
    with PrivateBus() as address:
        await fake.start(address)
        try:
            for key, value in fake.env(address).items():
                if setenv is not None:
                    setenv(key, value)
            yield fake
        finally:
            await fake.stop()


@contextlib.contextmanager
def fake_systemd_process(transient_hostname: str = "localhost") -> Iterator[dict[str, str]]:
    """A private dbus-daemon and this fake as a child process; yields the env for clients."""
    with tempfile.TemporaryDirectory(prefix="mgmt-fake-") as tmp, PrivateBus() as address:
        files = {"hostname": Path(tmp, "hostname"), "machine-info": Path(tmp, "machine-info")}
        argv = [sys.executable, "-m", "tests.fakes.systemd", "--address", address]
        argv += ["--hostname-file", str(files["hostname"])]
        argv += ["--machine-info-file", str(files["machine-info"])]
        argv += ["--transient-hostname", transient_hostname]
        log = Path(tmp, "fake.log")
        with open(log, "w") as stderr:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        try:
            line = _read_line(proc, 20.0, "the fake systemd", str(log))
            if line.strip() != READY:
                raise RuntimeError(f"the fake systemd said {line!r}")
            yield FakeSystemd(files["hostname"], files["machine-info"]).env(address)
        finally:
            _stop(proc)


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeSystemd(
        Path(args.hostname_file), Path(args.machine_info_file), args.transient_hostname
    )
    await fake.start(args.address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(READY, flush=True)
    assert fake.bus is not None
    lost = asyncio.ensure_future(fake.bus.wait_for_disconnect())  # type: ignore[no-untyped-call]
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait([lost, stopped], return_when=asyncio.FIRST_COMPLETED)  # a lost bus: done
    stopped.cancel()
    if not lost.done():
        await fake.stop()
    await asyncio.gather(lost, stopped, return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.systemd", description=__doc__)
    starter = os.environ.get("DBUS_STARTER_ADDRESS")  # set by a bus that starts us (activation)
    parser.add_argument(
        "--address", required=not starter, default=starter, help="D-Bus address to serve on"
    )
    parser.add_argument("--hostname-file", default="/tmp/mgmt-fake-hostname")
    parser.add_argument("--machine-info-file", default="/tmp/mgmt-fake-machine-info")
    parser.add_argument("--transient-hostname", default="localhost")
    asyncio.run(_serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
