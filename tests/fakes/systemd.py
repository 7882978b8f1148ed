"""A test double of systemd's D-Bus API, served on a private dbus-daemon.

systemd cannot run here (it is not PID 1), so the svc, cron and hostname resources are tested
against this service, which implements the subset of systemd's interfaces they use with the
real names, object paths, signals, job semantics and error names:

- org.freedesktop.systemd1.Manager at /org/freedesktop/systemd1: Subscribe, Unsubscribe,
  GetUnit, LoadUnit, StartUnit, StopUnit, RestartUnit, ReloadOrRestartUnit, EnableUnitFiles,
  DisableUnitFiles, GetUnitFileState, Reload; signals JobNew, JobRemoved, UnitFilesChanged,
  Reloading. As in systemd, unit and job signals go out only while a client is subscribed
  (a client that disconnects is unsubscribed), and by default a job's JobRemoved is sent
  *before* the reply that names the job (`job_order = "after-reply"` for the other order).
- org.freedesktop.systemd1.Unit objects at /org/freedesktop/systemd1/unit/<escaped name>:
  Id, Description, LoadState, ActiveState, SubState, UnitFileState, FragmentPath,
  NeedDaemonReload, with PropertiesChanged on every state transition.
- org.freedesktop.hostname1 at /org/freedesktop/hostname1: Hostname (transient, kept in
  memory: the machine's real hostname is never touched), StaticHostname (the hostname file,
  re-read on every query), PrettyHostname (PRETTY_HOSTNAME= in the machine-info file),
  SetHostname, SetStaticHostname (which, as in hostnamed, also sets the transient name),
  SetPrettyHostname, with PropertiesChanged.

Units are files in `unit_dir`, as in /etc/systemd/system; their contents decide behaviour:
[Install] WantedBy=/RequiredBy= makes a unit enable-able (EnableUnitFiles symlinks it into
`<unit_dir>/<target>.wants/`, as systemctl does), otherwise it is static; a service whose
ExecStart= is /bin/false or /usr/bin/false fails to start (job result "failed", ActiveState
"failed"); ExecReload= makes ReloadOrRestartUnit reload instead of restart; a timer whose
target unit (Unit=, default <name>.service) has no file fails to start.

Three ways to run it:
    async with running_fake(tmp_path, monkeypatch.setenv) as fake: ...   # in-process
    with fake_systemd_process(units={"ssh.service": TEXT}) as env: ...   # a child process
    python -m tests.fakes.systemd --address ADDR --unit-dir DIR [...]     # prints READY
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
NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"
UNIT_MASKED = "org.freedesktop.systemd1.UnitMasked"
ALREADY_SUBSCRIBED = "org.freedesktop.systemd1.AlreadySubscribed"
NOT_SUBSCRIBED = "org.freedesktop.systemd1.NotSubscribed"
INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
FILE_NOT_FOUND = "org.freedesktop.DBus.Error.FileNotFound"
JOB_MODES = {
    "replace",
    "fail",
    "isolate",
    "ignore-dependencies",
    "ignore-requirements",
    "flush",
    "replace-irreversibly",
}
FAILING = {"/bin/false", "/usr/bin/false"}
READY = "READY"
BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:tmpdir=/tmp</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""

Changes = Annotated[list[list[str]], DBusSignature("a(sss)")]
EnableReply = Annotated[list[Any], DBusSignature("ba(sss)")]
StrList = Annotated[list[str], DBusSignature("as")]


def unit_object_path(unit: str) -> str:
    """sd-bus's label escaping, as systemd names unit objects."""
    label = "".join(
        ch if ch.isascii() and ch.isalnum() and not (i == 0 and ch.isdigit()) else f"_{ord(ch):02x}"
        for i, ch in enumerate(unit)
    )
    return f"{MANAGER_PATH}/unit/{label or '_'}"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file's sections -> key -> values (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif current is not None and "=" in line:
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


class PrivateBus:
    """A private dbus-daemon (our child process, stopped by its pid); `address` once started."""

    def __init__(self) -> None:
        self.address = ""
        self._dir = tempfile.TemporaryDirectory(prefix="mgmt-dbus-")
        self._log = open(Path(self._dir.name, "dbus-daemon.log"), "w")  # noqa: SIM115
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> str:
        config = Path(self._dir.name, "bus.conf")
        config.write_text(BUS_CONFIG)
        self._proc = subprocess.Popen(
            ["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address=1"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,  # it warns that it may not raise its fd limit here
            text=True,
        )
        self.address = _read_line(self._proc, 10.0, "dbus-daemon", self._log.name).strip()
        return self.address

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


# systemd1 --------------------------------------------------------------------------------------


class Unit(ServiceInterface):
    """One unit object (org.freedesktop.systemd1.Unit)."""

    def __init__(self, fake: FakeSystemd, name: str) -> None:
        super().__init__(f"{SYSTEMD}.Unit")
        self.fake = fake
        self.unit_id = name  # (self.name is the interface's name, for dbus-fast)
        self.path = unit_object_path(name)
        self.load_state = "not-found"
        self.loaded_text: str | None = None
        self.active_state = "inactive"
        self.sub_state = "dead"
        self.starts = self.stops = self.restarts = self.reloads = 0

    @property
    def file(self) -> Path:
        return self.fake.unit_dir / self.unit_id

    @property
    def kind(self) -> str:
        return self.unit_id.rpartition(".")[2]

    def load(self) -> None:
        """(Re)read the unit file, as a daemon-reload does."""
        try:
            text: str | None = self.file.read_text()
        except (FileNotFoundError, NotADirectoryError):
            text = None
        self.loaded_text = text
        masked = self.fake.file_state(self.unit_id) == "masked"
        self.set_load_state("masked" if masked else "not-found" if text is None else "loaded")

    def section(self, name: str) -> dict[str, list[str]]:
        return parse_unit(self.loaded_text or "").get(name, {})

    def set_load_state(self, state: str) -> None:
        if state != self.load_state:
            self.load_state = state
            self.fake.emit_unit(self, {"LoadState": state})

    def set_state(self, active: str, sub: str) -> None:
        if (active, sub) != (self.active_state, self.sub_state):
            self.active_state, self.sub_state = active, sub
            self.fake.emit_unit(self, {"ActiveState": active, "SubState": sub})

    @dbus_property(access=PropertyAccess.READ, name="Id")
    def id_(self) -> DBusStr:
        return self.unit_id

    @dbus_property(access=PropertyAccess.READ, name="Description")
    def description(self) -> DBusStr:
        return (self.section("Unit").get("Description") or [self.unit_id])[-1]

    @dbus_property(access=PropertyAccess.READ, name="LoadState")
    def load_state_(self) -> DBusStr:
        return self.load_state

    @dbus_property(access=PropertyAccess.READ, name="ActiveState")
    def active_state_(self) -> DBusStr:
        return self.active_state

    @dbus_property(access=PropertyAccess.READ, name="SubState")
    def sub_state_(self) -> DBusStr:
        return self.sub_state

    @dbus_property(access=PropertyAccess.READ, name="UnitFileState")
    def unit_file_state(self) -> DBusStr:
        return self.fake.file_state(self.unit_id) or ""

    @dbus_property(access=PropertyAccess.READ, name="FragmentPath")
    def fragment_path(self) -> DBusStr:
        return str(self.file) if self.load_state == "loaded" else ""

    @dbus_property(access=PropertyAccess.READ, name="NeedDaemonReload")
    def need_daemon_reload(self) -> DBusBool:
        try:
            text: str | None = self.file.read_text()
        except (FileNotFoundError, NotADirectoryError):
            text = None
        return text != self.loaded_text


class Manager(ServiceInterface):
    """org.freedesktop.systemd1.Manager."""

    def __init__(self, fake: FakeSystemd) -> None:
        super().__init__(f"{SYSTEMD}.Manager")
        self.fake = fake
        self._next_job = 0

    # methods -------------------------------------------------------------------------------

    @dbus_method(name="Subscribe")
    def subscribe(self):  # void: no return signature
        sender = self.fake.record("Subscribe")
        if sender in self.fake.subscribers:
            raise DBusError(ALREADY_SUBSCRIBED, "Client is already subscribed.")
        self.fake.subscribers.add(sender)

    @dbus_method(name="Unsubscribe")
    def unsubscribe(self):  # void: no return signature
        sender = self.fake.record("Unsubscribe")
        if sender not in self.fake.subscribers:
            raise DBusError(NOT_SUBSCRIBED, "Client is not subscribed.")
        self.fake.subscribers.discard(sender)

    @dbus_method(name="GetUnit")
    def get_unit(self, name: DBusStr) -> DBusObjectPath:
        self.fake.record("GetUnit", name)
        unit = self.fake.units.get(name)
        if unit is None:
            raise DBusError(NO_SUCH_UNIT, f"Unit {name} not loaded.")
        return unit.path

    @dbus_method(name="LoadUnit")
    def load_unit(self, name: DBusStr) -> DBusObjectPath:
        self.fake.record("LoadUnit", name)
        return self.fake.load(name).path

    @dbus_method(name="StartUnit")
    def start_unit(self, name: DBusStr, mode: DBusStr) -> DBusObjectPath:
        return self._queue("StartUnit", name, mode, "start")

    @dbus_method(name="StopUnit")
    def stop_unit(self, name: DBusStr, mode: DBusStr) -> DBusObjectPath:
        return self._queue("StopUnit", name, mode, "stop")

    @dbus_method(name="RestartUnit")
    def restart_unit(self, name: DBusStr, mode: DBusStr) -> DBusObjectPath:
        return self._queue("RestartUnit", name, mode, "restart")

    @dbus_method(name="ReloadOrRestartUnit")
    def reload_or_restart_unit(self, name: DBusStr, mode: DBusStr) -> DBusObjectPath:
        return self._queue("ReloadOrRestartUnit", name, mode, "reload-or-restart")

    @dbus_method(name="EnableUnitFiles")
    def enable_unit_files(self, files: StrList, runtime: DBusBool, force: DBusBool) -> EnableReply:
        self.fake.record("EnableUnitFiles", files, runtime, force)
        changes: list[list[str]] = []
        carries = False
        for name in (os.path.basename(f) for f in files):
            carries |= self._enable(name, changes)
        if changes:
            self.fake.emit_manager(self.unit_files_changed)
        return [carries, changes]

    @dbus_method(name="DisableUnitFiles")
    def disable_unit_files(self, files: StrList, runtime: DBusBool) -> Changes:
        self.fake.record("DisableUnitFiles", files, runtime)
        changes: list[list[str]] = []
        for name in (os.path.basename(f) for f in files):
            for link in self.fake.links(name):
                link.unlink()
                changes.append(["unlink", str(link), ""])
        if changes:
            self.fake.emit_manager(self.unit_files_changed)
        return changes

    @dbus_method(name="GetUnitFileState")
    def get_unit_file_state(self, file: DBusStr) -> DBusStr:
        self.fake.record("GetUnitFileState", file)
        state = self.fake.file_state(os.path.basename(file))
        if state is None:
            raise DBusError(FILE_NOT_FOUND, "No such file or directory")
        return state

    @dbus_method(name="Reload")
    def reload(self):  # void: no return signature
        self.fake.record("Reload")
        self.fake.daemon_reloads += 1
        self.fake.emit_manager(self.reloading, True)
        for unit in list(self.fake.units.values()):
            unit.load()
        self.fake.emit_manager(self.reloading, False)
        self.fake.changed()

    # signals -------------------------------------------------------------------------------

    @dbus_signal(name="JobNew")
    def job_new(self, id_: int, job: str, unit: str) -> Annotated[list[Any], DBusSignature("uos")]:
        return [id_, job, unit]

    @dbus_signal(name="JobRemoved")
    def job_removed(
        self, id_: int, job: str, unit: str, result: str
    ) -> Annotated[list[Any], DBusSignature("uoss")]:
        return [id_, job, unit, result]

    @dbus_signal(name="UnitFilesChanged")
    def unit_files_changed(self):  # void: no return signature
        return None

    @dbus_signal(name="Reloading")
    def reloading(self, active: bool) -> DBusBool:
        return active

    # jobs ----------------------------------------------------------------------------------

    def _queue(self, method: str, name: str, mode: str, kind: str) -> str:
        self.fake.record(method, name, mode)
        if mode not in JOB_MODES:
            raise DBusError(INVALID_ARGS, f"Job mode {mode} invalid.")
        unit = self.fake.load(name)
        if unit.load_state == "masked":
            raise DBusError(UNIT_MASKED, f"Unit {name} is masked.")
        if unit.load_state != "loaded":
            inactive = unit.active_state in ("inactive", "failed")
            if kind == "stop" and inactive:
                raise DBusError(NO_SUCH_UNIT, f"Unit {name} not loaded.")
            if kind != "stop":
                raise DBusError(NO_SUCH_UNIT, f"Unit {name} not found.")
        return self.queue_job(unit, kind)

    def queue_job(self, unit: Unit, kind: str) -> str:
        """Start a job; it finishes before or after the caller's reply (fake.job_order)."""
        self._next_job += 1
        job_id, path = self._next_job, f"{MANAGER_PATH}/job/{self._next_job}"
        self.fake.emit_manager(self.job_new, job_id, path, unit.unit_id)

        def finish() -> None:
            result = self._run(unit, kind)
            self.fake.emit_manager(self.job_removed, job_id, path, unit.unit_id, result)
            self.fake.changed()

        if self.fake.job_order == "before-reply":
            finish()
        else:
            self.fake.later(finish)
        return path

    def _run(self, unit: Unit, kind: str) -> str:
        """Carry out a job on a unit; the job's result."""
        if kind == "stop":
            return self._stop(unit)
        if kind == "restart":
            unit.restarts += 1
            self._stop(unit)
            return self._start(unit)
        if kind == "reload-or-restart":
            if unit.active_state != "active":
                return self._start(unit)
            if unit.section("Service").get("ExecReload"):
                unit.reloads += 1
                unit.set_state("reloading", "reload")
                unit.set_state("active", "running")
                return "done"
            unit.restarts += 1
            self._stop(unit)
        return self._start(unit)

    def _start(self, unit: Unit) -> str:
        if unit.active_state == "active":
            return "done"
        unit.starts += 1
        unit.set_state("activating", "start")
        if self._fails(unit):
            unit.set_state("failed", "failed")
            return "failed"
        sub = {"service": "running", "timer": "waiting"}.get(unit.kind, "active")
        unit.set_state("active", sub)
        return "done"

    def _stop(self, unit: Unit) -> str:
        if unit.active_state in ("inactive", "failed"):
            return "done"
        unit.stops += 1
        unit.set_state("deactivating", "stop")
        unit.set_state("inactive", "dead")
        return "done"

    def _fails(self, unit: Unit) -> bool:
        if unit.kind == "timer":
            target = (unit.section("Timer").get("Unit") or [unit.unit_id[:-6] + ".service"])[-1]
            return not (self.fake.unit_dir / target).exists()
        starts = unit.section("Service").get("ExecStart", [])
        return any(cmd.split()[0].lstrip("-@:+!") in FAILING for cmd in starts if cmd)

    def _enable(self, name: str, changes: list[list[str]]) -> bool:
        state = self.fake.file_state(name)
        path = self.fake.unit_dir / name
        if state is None:
            raise DBusError(NO_SUCH_UNIT, f"Unit file {path} does not exist.")
        if state == "masked":
            raise DBusError(UNIT_MASKED, f"Unit file {path} is masked.")
        install = parse_unit(path.read_text()).get("Install", {})
        for key, suffix in (("WantedBy", "wants"), ("RequiredBy", "requires")):
            for target in " ".join(install.get(key, [])).split():
                link = self.fake.unit_dir / f"{target}.{suffix}" / name
                if not link.is_symlink():
                    link.parent.mkdir(parents=True, exist_ok=True)
                    link.symlink_to(path)
                    changes.append(["symlink", str(link), str(path)])
        return bool(install)


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
        self,
        unit_dir: Path,
        hostname_file: Path,
        machine_info_file: Path,
        transient_hostname: str = "localhost",
    ) -> None:
        self.unit_dir = unit_dir
        self.hostname_file = hostname_file
        self.machine_info_file = machine_info_file
        self.units: dict[str, Unit] = {}
        self.subscribers: set[str] = set()
        self.calls: list[tuple[Any, ...]] = []  # (method, *args) of every call, in order
        self.daemon_reloads = 0
        self.job_order = "before-reply"  # or "after-reply"
        self.manager = Manager(self)
        self.hostname1 = Hostname1(self, transient_hostname)
        self.bus: MessageBus | None = None
        self._sender = ""
        self._tick = asyncio.Event()
        self._later: set[asyncio.Handle] = set()

    async def start(self, address: str) -> None:
        self.unit_dir.mkdir(parents=True, exist_ok=True)
        bus = await MessageBus(bus_address=address, bus_type=BusType.SESSION).connect()
        self.bus = bus
        bus.add_message_handler(self._on_message)
        rule = "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged'"
        await bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="AddMatch",
                signature="s",
                body=[rule],
            )
        )
        bus.export(MANAGER_PATH, self.manager)
        bus.export(HOSTNAME1_PATH, self.hostname1)
        await bus.request_name(SYSTEMD)
        await bus.request_name(HOSTNAME1)

    async def stop(self) -> None:
        for handle in self._later:
            handle.cancel()
        self._later.clear()
        if self.bus is not None:
            self.bus.disconnect()
            with contextlib.suppress(Exception):
                await self.bus.wait_for_disconnect()
            self.bus = None

    # for tests -----------------------------------------------------------------------------

    def unit(self, name: str) -> Unit:
        """The unit object (loaded from its file on first use, as systemd does)."""
        return self.load(name)

    def stop_from_outside(self, name: str) -> None:
        """What `systemctl stop NAME` by another client does: a stop job."""
        self.manager.queue_job(self.load(name), "stop")

    def crash(self, name: str) -> None:
        """The unit's process dies: ActiveState "failed", no job involved."""
        self.load(name).set_state("failed", "failed")
        self.changed()

    def write_unit(self, name: str, text: str) -> Path:
        path = self.unit_dir / name
        path.write_text(text)
        return path

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait (bounded) until predicate() holds; re-checked on every change the fake makes."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._tick.clear()
                await self._tick.wait()

    def env(self, address: str, session: bool = False) -> dict[str, str]:
        """What a client needs to find this fake."""
        if session:
            config = str(self.unit_dir.parent.parent)  # <XDG_CONFIG_HOME>/systemd/user
            return {"DBUS_SESSION_BUS_ADDRESS": address, "XDG_CONFIG_HOME": config}
        return {
            "DBUS_SYSTEM_BUS_ADDRESS": address,
            "MGMT_SYSTEMD_UNIT_DIR": str(self.unit_dir),
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

    def later(self, fn: Callable[[], None]) -> None:
        def run() -> None:
            self._later.discard(handle)
            fn()

        handle = asyncio.get_running_loop().call_soon(run)
        self._later.add(handle)

    def load(self, name: str) -> Unit:
        """The unit object; an unloaded one is (re)read, as systemd retries not-found units."""
        unit = self.units.get(name)
        if unit is None:
            unit = self.units[name] = Unit(self, name)
            assert self.bus is not None
            self.bus.export(unit.path, unit)
        if unit.load_state != "loaded":
            unit.load()
        return unit

    def links(self, name: str) -> list[Path]:
        """The enablement symlinks of a unit in <unit_dir>/*.wants|requires/."""
        return [
            link
            for pattern in ("*.wants", "*.requires")
            for link in self.unit_dir.glob(f"{pattern}/{name}")
            if link.is_symlink()
        ]

    def file_state(self, name: str) -> str | None:
        """systemd's unit file state, None when there is no unit file."""
        path = self.unit_dir / name
        if path.is_symlink() and os.readlink(path) == "/dev/null":
            return "masked"
        if not path.is_file():
            return None
        if self.links(name):
            return "enabled"
        install = parse_unit(path.read_text()).get("Install", {})
        if install.get("WantedBy") or install.get("RequiredBy") or install.get("Alias"):
            return "disabled"
        return "static"

    def emit_unit(self, unit: Unit, changed: dict[str, Any]) -> None:
        if self.subscribers:
            unit.emit_properties_changed(changed)
        self.changed()

    def emit_manager(self, signal_fn: Callable[..., Any], *args: Any) -> None:
        if self.subscribers:
            signal_fn(*args)

    def _on_message(self, msg: Message) -> None:
        """Runs before the method handlers: remembers who calls; forgets who left."""
        if msg.message_type is MessageType.METHOD_CALL:
            self._sender = msg.sender or ""
        elif msg.message_type is MessageType.SIGNAL and msg.member == "NameOwnerChanged":
            name, _old, new = msg.body
            if not new:
                self.subscribers.discard(name)
                self.changed()


# ways to run it --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running_fake(
    tmp_path: Path,
    setenv: Callable[[str, str], None] | None = None,
    session: bool = False,
    transient_hostname: str = "localhost",
) -> AsyncIterator[FakeSystemd]:
    """In-process fake on its own private bus; `setenv` (monkeypatch.setenv) points clients at it.

    The system flavour serves unit files from tmp_path/system; the session flavour from
    tmp_path/config/systemd/user (XDG_CONFIG_HOME=tmp_path/config).
    """
    unit_dir = tmp_path / ("config/systemd/user" if session else "system")
    fake = FakeSystemd(
        unit_dir, tmp_path / "hostname", tmp_path / "machine-info", transient_hostname
    )
    with PrivateBus() as address:
        await fake.start(address)
        try:
            for key, value in fake.env(address, session).items():
                if setenv is not None:
                    setenv(key, value)
            yield fake
        finally:
            await fake.stop()


@contextlib.contextmanager
def fake_systemd_process(
    units: dict[str, str] | None = None, transient_hostname: str = "localhost"
) -> Iterator[dict[str, str]]:
    """A private dbus-daemon and this fake as a child process; yields the env for clients."""
    with tempfile.TemporaryDirectory(prefix="mgmt-fake-") as tmp, PrivateBus() as address:
        unit_dir = Path(tmp, "system")
        unit_dir.mkdir()
        for name, text in (units or {}).items():
            (unit_dir / name).write_text(text)
        files = {"hostname": Path(tmp, "hostname"), "machine-info": Path(tmp, "machine-info")}
        argv = [sys.executable, "-m", "tests.fakes.systemd", "--address", address]
        argv += ["--unit-dir", str(unit_dir), "--hostname-file", str(files["hostname"])]
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
            fake = FakeSystemd(unit_dir, files["hostname"], files["machine-info"])
            yield fake.env(address)
        finally:
            _stop(proc)


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeSystemd(
        Path(args.unit_dir),
        Path(args.hostname_file),
        Path(args.machine_info_file),
        args.transient_hostname,
    )
    await fake.start(args.address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(READY, flush=True)
    await stop.wait()
    await fake.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.systemd", description=__doc__)
    parser.add_argument("--address", required=True, help="D-Bus address to serve on")
    parser.add_argument("--unit-dir", required=True, help="directory of unit files")
    parser.add_argument("--hostname-file", default="/tmp/mgmt-fake-hostname")
    parser.add_argument("--machine-info-file", default="/tmp/mgmt-fake-machine-info")
    parser.add_argument("--transient-hostname", default="localhost")
    asyncio.run(_serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
