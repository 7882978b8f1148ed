"""systemd over D-Bus: the client that `svc`, `cron` and `hostname` share.

- `Bus.acquire(session, shared)`: one connection per bus address, owned by the engine's
  `Clients` (reference counted, closed with it); the system bus is $DBUS_SYSTEM_BUS_ADDRESS
  (default unix:path=/run/dbus/system_bus_socket), the session bus $DBUS_SESSION_BUS_ADDRESS
  (default unix:path=/run/user/$UID/bus). dbus-fast is imported lazily.
- `Bus.signals(...)`: signals matching some routes as an async iterator of wake-ups; its
  `aclose()` removes the match rules (idempotent, meant for `handle.on_cleanup`).
- systemd jobs: `JobRemoved` can arrive before the reply that names the job, so finished jobs
  are recorded while a job call is in flight and looked up once the reply is in. A job that
  ends with any result but "done" is a failure naming that result and the unit's own Result.
- The echo of a resource's own calls is muted (`Mute`, `UnitChanges`).
- `unit_dir(session)`: where unit files live: $MGMT_SYSTEMD_UNIT_DIR (a path override for tests
  and chroots; default /etc/systemd/system), or $XDG_CONFIG_HOME/systemd/user for a session.
- `UnitFileWatch`: inotify on a unit's file and the links its [Install] section makes.
- `BusUser._watch_unit`: a unit's watch (signals and inotify) that survives D-Bus restarts:
  `_watch_bus` reconnects when the connection is lost (`_reconnect`: at once, on the bus
  socket's inotify events, or after a doubling delay up to RECONNECT_MAX), waits for systemd
  on the bus, subscribes again and sends an event (the unit is checked again). hostname's
  watch is run by `_watch_bus` too, ready once hostnamed is on the bus or can be started by
  it (bus activation: hostnamed runs on demand).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import functools
import os
import re
import time
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from engine.errors import ResourceError, ValidationError
from engine.handle import Handle, Shared
from engine.watcher import PathWatcher
from resources._lib.events import pump_events
from resources._lib.plan import Step, apply_steps

if TYPE_CHECKING:
    from dbus_fast import Message
    from dbus_fast.aio import MessageBus

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = f"{SYSTEMD}.Manager"
UNIT = f"{SYSTEMD}.Unit"
PROPERTIES = "org.freedesktop.DBus.Properties"
DBUS = "org.freedesktop.DBus"  # the bus daemon's name, interface and object
DBUS_PATH = "/org/freedesktop/DBus"
DEFAULT_SYSTEM_BUS = "unix:path=/run/dbus/system_bus_socket"
SYSTEM_UNIT_DIR = "/etc/systemd/system"
VENDOR_UNIT_DIRS = ("/usr/lib/systemd/system", "/lib/systemd/system")
USER_VENDOR_UNIT_DIRS = ("/etc/systemd/user", "/usr/lib/systemd/user")
# [Install] keys that enable a unit by a link in <unit dir>/<target><suffix>/.
INSTALL_LINKS = {"WantedBy": ".wants", "RequiredBy": ".requires", "UpheldBy": ".upholds"}
CALL_TIMEOUT = 25.0  # seconds; D-Bus's own default method call timeout
# Seconds between attempts to reach a lost bus again (doubling), unless its socket file
# changes first (inotify): a watch reconnects at once when the bus is back.
RECONNECT_MIN, RECONNECT_MAX = 0.05, 5.0
FINISHED_KEPT = 256  # finished jobs remembered while waiting for a reply
JOB_MODE = "replace"  # systemctl's default: our job replaces a conflicting queued one
UNIT_TYPES = (
    "service",
    "socket",
    "target",
    "timer",
    "path",
    "mount",
    "automount",
    "swap",
    "slice",
    "scope",
    "device",
)
# Unit types whose interface has a Result property (why the unit last failed).
RESULT_TYPES = frozenset({"service", "socket", "timer", "path", "mount", "automount", "swap"})
UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\@-]+")
UNIT_NAME_MAX = 255
WATCHED = frozenset({"ActiveState", "SubState", "LoadState", "UnitFileState"})
RUNNING = frozenset({"active", "reloading"})
STOPPED = frozenset({"inactive", "failed"})
ENABLED = frozenset({"enabled", "enabled-runtime"})
# Unit file states that EnableUnitFiles cannot turn into "enabled".
FIXED = {
    "static": "it has no [Install] section",
    "indirect": "it is only enabled through another unit (Also=)",
    "generated": "it is generated at boot",
    "transient": "it is transient",
    "masked": "it is masked: unmask it first",
    "masked-runtime": "it is masked at runtime: unmask it first",
    "bad": "its unit file is broken",
    "alias": "it is an alias: enable the unit it names",
}

Route = tuple[str, str, str]  # (object path, interface, member) of a signal


def bus_address(session: bool) -> str:
    """The D-Bus address of the system bus, or of the user's session bus."""
    if session:
        default = f"unix:path=/run/user/{os.getuid()}/bus"
        return os.environ.get("DBUS_SESSION_BUS_ADDRESS") or default
    return os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or DEFAULT_SYSTEM_BUS


def socket_path(address: str) -> str | None:
    """The socket file of a D-Bus address's first `unix:path=` entry; None for another kind
    (an abstract socket, tcp)."""
    transport, _, params = address.split(";", 1)[0].partition(":")
    if transport != "unix":
        return None
    for param in params.split(","):
        key, _, value = param.partition("=")
        if key == "path" and value:
            return urllib.parse.unquote(value)  # D-Bus escapes bytes as %XX
    return None


def unit_dir(session: bool) -> str:
    """Where administrators' unit files live (see the module docstring)."""
    if session:
        config = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
        return os.path.join(config, "systemd", "user")
    return os.environ.get("MGMT_SYSTEMD_UNIT_DIR") or SYSTEM_UNIT_DIR


def unit_search_dirs(session: bool) -> list[str]:
    """Where a unit's file may be, in systemd's order of precedence (the admin's first)."""
    first = unit_dir(session)
    vendor = USER_VENDOR_UNIT_DIRS if session else VENDOR_UNIT_DIRS
    return [first, *(d for d in vendor if d != first)]


def unit_file_names(unit: str) -> list[str]:
    """The files a unit can come from: its own, and for an instance its template's."""
    stem, at, rest = unit.partition("@")
    if not at or not rest.partition(".")[0]:
        return [unit]
    return [unit, f"{stem}@.{rest.rpartition('.')[2]}"]


def install_links(text: str, unit: str, link_dir: str) -> list[str]:
    """The links `systemctl enable` makes for a unit file's [Install] section (WantedBy=,
    RequiredBy=, UpheldBy=, Alias=), whether or not they exist."""
    links: list[str] = []
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, eq, value = line.partition("=")
        if section != "Install" or not eq:
            continue
        key = key.strip()
        for name in value.split():
            if key in INSTALL_LINKS:
                links.append(os.path.join(link_dir, name + INSTALL_LINKS[key], unit))
            elif key == "Alias":
                links.append(os.path.join(link_dir, name))
    return links


def unit_watch_paths(unit: str, session: bool) -> list[str]:
    """What inotify must watch to see a unit's file or enablement change with no signal from
    systemd: every place its file may be, and the links its [Install] section makes (as
    `systemctl enable/disable` does them without the manager, or an admin with ln/rm)."""
    names = unit_file_names(unit)
    files = [os.path.join(d, name) for d in unit_search_dirs(session) for name in names]
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as file:
                text = file.read()
        except OSError:
            continue
        return files + install_links(text, unit, unit_dir(session))
    return files


class UnitFileWatch:
    """inotify on `unit_watch_paths(unit)` (plus `extra` paths), as an async iterator of
    wake-ups. After each change the paths are computed again (an edited [Install] section
    moves the links to watch), so a watch is never lost."""

    def __init__(self, unit: str, session: bool, extra: Iterable[str] = ()) -> None:
        self.unit = unit
        self.session = session
        self.extra = list(extra)
        self.paths: list[str] = []
        self._watcher: PathWatcher | None = None

    async def __aenter__(self) -> UnitFileWatch:
        await self._rewatch()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            await watcher.aclose()

    async def _rewatch(self) -> bool:
        """Watch the paths as they are now; True if they moved."""
        found = await asyncio.to_thread(unit_watch_paths, self.unit, self.session)
        paths = list(dict.fromkeys([*self.extra, *found]))
        if self._watcher is not None and paths == self.paths:
            return False
        watcher = PathWatcher(paths)
        await watcher.__aenter__()
        old, self._watcher, self.paths = self._watcher, watcher, paths
        if old is not None:
            await old.aclose()
        return True

    async def __aiter__(self) -> AsyncIterator[None]:
        while self._watcher is not None:
            changes = cast("AsyncGenerator[None, None]", aiter(self._watcher))
            async with contextlib.aclosing(changes):
                async for _ in changes:
                    moved = await self._rewatch()
                    yield None
                    if moved:
                        break


def unit_object_path(unit: str) -> str:
    """systemd's object path of a unit (sd-bus label escaping: "a.service" -> "a_2eservice")."""
    label = "".join(
        ch if ch.isascii() and ch.isalnum() and not (i == 0 and ch.isdigit()) else f"_{ord(ch):02x}"
        for i, ch in enumerate(unit)
    )
    return f"{MANAGER_PATH}/unit/{label or '_'}"


def check_unit_name(value: str, key: str) -> None:
    """Raise ValidationError unless `value` can be (the start of) a systemd unit name."""
    if not value or len(value) > UNIT_NAME_MAX or not UNIT_NAME.fullmatch(value):
        raise ValidationError(
            f"expected a systemd unit name (letters, digits and :_.\\@-), got {value!r}", key
        )


def unit_key(unit: str, session: bool) -> str:
    """The key of a unit's UID: "sshd" for sshd.service, "session:sshd" for a user unit."""
    key = unit.removesuffix(".service")
    return f"session:{key}" if session else key


class BusLost(ResourceError):
    """The connection to the bus is gone (a D-Bus restart): `Signals` raise it. A watch run
    by `BusUser._watch_bus` reconnects; any other fails, and meta retry reconnects."""

    def __init__(self, address: str) -> None:
        super().__init__(f"lost the D-Bus connection to {address} (meta: {{retry: -1}} reconnects)")
        self.address = address


class BusCallError(ResourceError):
    """A D-Bus method call answered with an error (`name` is e.g. org.freedesktop.DBus...)."""

    def __init__(self, name: str, text: str, what: str) -> None:
        super().__init__(f"{what}: {name}: {text}")
        self.name = name
        self.text = text


# the shared D-Bus layer ----------------------------------------------------------------------


class Mute:
    """A resource's D-Bus calls in flight, counted from sending each call to the moment the bus's
    message handler processes its reply (for a job: its JobRemoved). systemd sends the signals
    a call causes before that reply, on the same connection, in order: while the count is
    above zero, a signal is the echo of our own call (see UnitChanges)."""

    def __init__(self) -> None:
        self.calls = 0

    def __bool__(self) -> bool:
        return self.calls > 0


# The Mute of the task making calls (set by BusUser._apply for the length of its changes).
MUTE: contextvars.ContextVar[Mute | None] = contextvars.ContextVar("mgmt_dbus_mute", default=None)


class Hold:
    """One call (or job) counted in the caller's Mute until `release()` (idempotent)."""

    def __init__(self, mute: Mute | None) -> None:
        self.mute = mute
        if mute is not None:
            mute.calls += 1

    def release(self) -> None:
        if self.mute is not None:
            self.mute.calls -= 1
            self.mute = None


class Signals:
    """Signals on some routes that `accept` approves, as an async iterator of wake-ups.

    Bursts coalesce into one wake-up. Losing the connection raises ResourceError from the
    iterator (the engine's meta retry reconnects). `aclose()` is idempotent.
    """

    def __init__(
        self,
        bus: Bus,
        sender: str,
        routes: list[Route],
        accept: Callable[[Message], bool],
        arg0: str | None = None,
    ) -> None:
        self.bus = bus
        self.routes = routes
        self.accept = accept
        only = f",arg0='{arg0}'" if arg0 is not None else ""
        self.rules = [
            f"type='signal',sender='{sender}',path='{p}',interface='{i}',member='{m}'{only}"
            for p, i, m in routes
        ]
        self._wake = asyncio.Event()
        self._closed = False

    def deliver(self, msg: Message | None) -> None:
        """Called by the bus for every signal on our routes (None: the connection is lost)."""
        if msg is None or self.accept(msg):
            self._wake.set()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.bus.unroute(self)
        if not self.bus.lost:
            for rule in self.rules:
                with contextlib.suppress(ResourceError):
                    await self.bus.call_daemon("RemoveMatch", rule)

    async def __aiter__(self) -> AsyncIterator[None]:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.bus.lost:
                raise BusLost(self.bus.address)
            yield None


class Buses:
    """The open D-Bus connections of one engine, one per bus address (in its `Shared`): each
    closes when its last user releases it, and any left when the engine stops."""

    def __init__(self) -> None:
        self.open: dict[str, Bus] = {}

    async def acquire(self, address: str) -> Bus:
        bus = self.open.get(address)
        if bus is None or bus.lost:
            bus = self.open[address] = Bus(address, self)
        bus.users += 1
        try:
            if bus._connecting is None:
                bus._connecting = asyncio.create_task(bus._connect(), name=f"dbus {address}")
            await asyncio.shield(bus._connecting)
        except BaseException:
            await bus.release()
            raise
        return bus

    async def aclose(self) -> None:
        for bus in list(self.open.values()):
            bus.users = 1
            await bus.release()


class Bus:
    """One D-Bus connection, shared by the resources of an engine (reference counted)."""

    def __init__(self, address: str, owner: Buses) -> None:
        self.address = address
        self.owner = owner
        self.users = 0
        self.lost = False
        self._conn: MessageBus | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._routes: dict[Route, set[Signals]] = {}
        self._subscribed = False
        self._subscribe_lock = asyncio.Lock()
        self._jobs_in_flight = 0
        self._finished: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._job_waiters: dict[str, asyncio.Future[str]] = {}
        self._job_holds: dict[str, Hold] = {}  # job path -> its caller's Hold
        # serial of a call in flight -> its caller's Hold, and what to do at its reply
        self._replies: dict[int, tuple[Hold, Callable[[Message], None] | None]] = {}

    @property
    def gone(self) -> bool:
        """The connection is lost (or closing: a call failed before the monitor saw it)."""
        return self.lost or self._conn is None or not self._conn.connected

    @classmethod
    async def acquire(cls, session: bool, shared: Shared) -> Bus:
        """The engine's connection to the system (or session) bus; `release()` it when done."""
        return await shared.get(__name__, Buses).acquire(bus_address(session))

    async def release(self) -> None:
        self.users -= 1
        if self.users > 0:
            return
        self._forget()
        connecting = self._connecting
        if connecting is not None and not connecting.done():
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
        conn, self._conn = self._conn, None
        if conn is not None:
            # The monitor sees this and ends (cancelling it instead would cancel dbus-fast's
            # own disconnect future).
            conn.disconnect()
        if self._monitor is not None:
            await asyncio.gather(self._monitor, return_exceptions=True)
        self._lose()

    def _forget(self) -> None:
        if self.owner.open.get(self.address) is self:
            del self.owner.open[self.address]

    async def _connect(self) -> None:
        from dbus_fast.aio import MessageBus

        try:
            # Bounded: a socket-activated bus accepts the connection and answers only once
            # its daemon runs (dbus-fast's handshake has no timeout of its own).
            async with asyncio.timeout(CALL_TIMEOUT):
                conn = await MessageBus(bus_address=self.address).connect()
        except Exception as err:
            self.lost = True
            self._forget()
            why = f"no answer in {CALL_TIMEOUT:g} s" if isinstance(err, TimeoutError) else err
            raise ResourceError(f"cannot connect to D-Bus at {self.address}: {why}") from err
        conn.add_message_handler(self._on_message)
        self._conn = conn
        self._monitor = asyncio.create_task(self._watch_connection(conn), name="dbus monitor")

    async def _watch_connection(self, conn: MessageBus) -> None:
        with contextlib.suppress(Exception):
            await conn.wait_for_disconnect()  # type: ignore[no-untyped-call]
        self._forget()
        self._lose()

    def _lose(self) -> None:
        """The connection is gone: wake every subscriber and fail every job waiter."""
        self.lost = True
        for subscribers in list(self._routes.values()):
            for signals in list(subscribers):
                signals.deliver(None)
        for future in self._job_waiters.values():
            if not future.done():
                future.set_exception(ResourceError(f"lost the D-Bus connection to {self.address}"))
        self._job_waiters.clear()

    # calls ---------------------------------------------------------------------------------

    async def call(
        self,
        destination: str,
        path: str,
        interface: str,
        member: str,
        *,
        signature: str = "",
        body: Iterable[Any] = (),
        on_reply: Callable[[Message], None] | None = None,
    ) -> list[Any]:
        """Call a method; its reply's body. An error reply raises BusCallError.

        `on_reply` runs in the message handler as the (non-error) reply is read, in order with
        the signals around it, before the caller resumes."""
        from dbus_fast import Message, MessageType

        what = member
        conn = self._conn
        if conn is None or self.lost:
            raise ResourceError(f"{what}: not connected to D-Bus at {self.address}")
        msg = Message(
            destination=destination,
            path=path,
            interface=interface,
            member=member,
            signature=signature,
            body=list(body),
        )
        hold = Hold(MUTE.get())
        if hold.mute is not None or on_reply is not None:
            msg.serial = conn.next_serial()
            self._replies[msg.serial] = (hold, on_reply)  # see _on_message
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                reply = await conn.call(msg)
        except TimeoutError:
            raise ResourceError(
                f"{what}: {destination} did not answer in {CALL_TIMEOUT}s"
            ) from None
        except Exception as err:
            raise ResourceError(f"{what}: D-Bus call failed: {err}") from err
        finally:
            self._replies.pop(msg.serial, None)
            hold.release()
        if reply.message_type is MessageType.ERROR:
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise BusCallError(reply.error_name or "unknown error", text, what)
        return list(reply.body)

    async def call_daemon(self, member: str, rule: str) -> None:
        """AddMatch/RemoveMatch on the bus daemon itself."""
        await self.call(DBUS, DBUS_PATH, DBUS, member, signature="s", body=[rule])

    async def wait_for_owner(self, name: str, on_demand: bool = False) -> None:
        """Return once `name` (systemd's) is on the bus: at once, or at its NameOwnerChanged
        (systemd joins a restarted bus a moment after it is up). `on_demand`: a service the
        bus starts at its first call (bus activation, as hostnamed): one the bus can start
        (ListActivatableNames) is ready too. Losing the connection meanwhile raises BusLost."""

        def owned(msg: Message) -> bool:
            return bool(msg.body[0] == name and msg.body[2])

        route = (DBUS_PATH, DBUS, "NameOwnerChanged")
        signals = await self.signals(DBUS, [route], owned, arg0=name)
        try:
            (has,) = await self.call(
                DBUS, DBUS_PATH, DBUS, "NameHasOwner", signature="s", body=[name]
            )
            if has:
                return
            if on_demand:
                (names,) = await self.call(DBUS, DBUS_PATH, DBUS, "ListActivatableNames")
                if name in names:
                    return
            changes = cast("AsyncGenerator[None, None]", aiter(signals))
            async with contextlib.aclosing(changes):
                await anext(changes)
        finally:
            await signals.aclose()

    async def get_all(self, destination: str, path: str, interface: str) -> dict[str, Any]:
        """Properties.GetAll, with the variants unwrapped."""
        (props,) = await self.call(
            destination, path, PROPERTIES, "GetAll", signature="s", body=[interface]
        )
        return {name: variant.value for name, variant in props.items()}

    # signals -------------------------------------------------------------------------------

    async def signals(
        self,
        sender: str,
        routes: list[Route],
        accept: Callable[[Message], bool],
        arg0: str | None = None,
    ) -> Signals:
        """Subscribe to `routes` (match rules on the daemon, only for signals whose first
        argument is `arg0` if given); close the result to unsubscribe."""
        subscription = Signals(self, sender, routes, accept, arg0)
        for route in routes:
            self._routes.setdefault(route, set()).add(subscription)
        try:
            for rule in subscription.rules:
                await self.call_daemon("AddMatch", rule)
        except BaseException:
            await subscription.aclose()
            raise
        return subscription

    def unroute(self, subscription: Signals) -> None:
        for route in subscription.routes:
            subscribers = self._routes.get(route)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._routes[route]

    def _on_message(self, msg: Message) -> None:
        from dbus_fast import MessageType

        if msg.message_type in (MessageType.METHOD_RETURN, MessageType.ERROR):
            entry = self._replies.pop(msg.reply_serial, None)
            if entry is not None:
                hold, on_reply = entry
                if on_reply is not None and msg.message_type is MessageType.METHOD_RETURN:
                    on_reply(msg)
                hold.release()
            return
        if msg.message_type is not MessageType.SIGNAL:
            return
        route = (msg.path or "", msg.interface or "", msg.member or "")
        if route == (MANAGER_PATH, MANAGER, "JobRemoved"):
            self._job_removed(msg.body)
        for subscription in list(self._routes.get(route, ())):
            subscription.deliver(msg)

    # systemd -------------------------------------------------------------------------------

    async def subscribe_systemd(self) -> None:
        """Manager.Subscribe once per connection (systemd sends unit and job signals only to
        subscribed clients), plus the match rule for JobRemoved."""
        async with self._subscribe_lock:
            if self._subscribed:
                return
            rule = (
                f"type='signal',sender='{SYSTEMD}',path='{MANAGER_PATH}',"
                f"interface='{MANAGER}',member='JobRemoved'"
            )
            await self.call_daemon("AddMatch", rule)
            try:
                await self.manager("Subscribe")
            except BusCallError as err:
                if not err.name.endswith(".AlreadySubscribed"):
                    raise
            self._subscribed = True

    async def unit_state(
        self, unit: str, names: tuple[str, ...], file_state: bool
    ) -> tuple[dict[str, Any], str | None]:
        """Some of the unit's properties (LoadState "not-found" if it has no file) and, if
        `file_state`, its GetUnitFileState: all asked at once, in one round trip. systemd
        loads a unit on a Get of its object path, as LoadUnit does."""
        path = unit_object_path(unit)
        gets = [
            self.call(SYSTEMD, path, PROPERTIES, "Get", signature="ss", body=[UNIT, name])
            for name in names
        ]
        state = self.unit_file_state(unit) if file_state else _nothing()
        values, file = await asyncio.gather(asyncio.gather(*gets), state)
        props = {name: value[0].value for name, value in zip(names, values, strict=True)}
        return props, file

    async def unit_file_state(self, unit: str) -> str | None:
        """GetUnitFileState ("enabled", "disabled", "static"...), None if there is no file."""
        try:
            (state,) = await self.manager("GetUnitFileState", "s", unit)
        except BusCallError as err:
            if err.name.endswith((".NoSuchUnit", ".FileNotFound")):
                return None
            raise
        return str(state)

    async def run_job(self, method: str, unit: str) -> str:
        """StartUnit/StopUnit/RestartUnit/ReloadOrRestartUnit; waits for the job's result.
        The caller's Mute holds until the JobRemoved is processed."""
        self._jobs_in_flight += 1
        hold = Hold(MUTE.get())

        def track(reply: Message) -> None:
            """At the reply (in the handler): the hold ends with the job's JobRemoved."""
            job = reply.body[0]
            if job in self._finished:
                hold.release()  # it came first
            else:
                self._job_holds[job] = hold

        try:
            (job,) = await self.call(
                SYSTEMD,
                MANAGER_PATH,
                MANAGER,
                method,
                signature="ss",
                body=[unit, JOB_MODE],
                on_reply=track if hold.mute is not None else None,
            )
            result = self._finished.pop(job, None)
            if result is not None:
                return result
            future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self._job_waiters[job] = future
            try:
                return await future
            finally:
                self._job_waiters.pop(job, None)
                self._job_holds.pop(job, None)
        finally:
            hold.release()
            self._jobs_in_flight -= 1
            if not self._jobs_in_flight:
                self._finished.clear()

    def _job_removed(self, body: list[Any]) -> None:
        _id, job, _unit, result = body
        hold = self._job_holds.pop(job, None)
        if hold is not None:
            hold.release()
        future = self._job_waiters.pop(job, None)
        if future is not None:
            if not future.done():
                future.set_result(result)
        elif self._jobs_in_flight:
            self._finished[job] = result  # its reply has not arrived yet
            while len(self._finished) > FINISHED_KEPT:
                self._finished.popitem(last=False)

    async def manager(self, member: str, signature: str = "", *body: Any) -> list[Any]:
        """Call a Manager method."""
        return await self.call(
            SYSTEMD, MANAGER_PATH, MANAGER, member, signature=signature, body=body
        )


async def _nothing() -> None:
    return None


async def job(bus: Bus, method: str, unit: str, verb: str, *, session: bool) -> None:
    """Run a job; any result but "done" is a failure naming the result (and the unit's own
    Result, e.g. 'exit-code' or 'start-limit-hit', when its type has one) and where its log
    is (`journalctl --user` for a unit of the user's manager)."""
    result = await bus.run_job(method, unit)
    if result != "done":
        why = await unit_result(bus, unit)
        detail = f"unit result {why!r}; " if why else ""
        journal = "journalctl --user" if session else "journalctl"
        raise ResourceError(
            f"could not {verb} {unit}: its job ended with result {result!r} "
            f"({detail}see `{journal} -u {unit}`)"
        )


async def unit_result(bus: Bus, unit: str) -> str | None:
    """The Result property of the unit's type-specific interface, if it has one."""
    kind = unit.rpartition(".")[2]
    if kind not in RESULT_TYPES:
        return None
    interface = f"{SYSTEMD}.{kind.capitalize()}"
    try:
        (value,) = await bus.call(
            SYSTEMD,
            unit_object_path(unit),
            PROPERTIES,
            "Get",
            signature="ss",
            body=[interface, "Result"],
        )
    except ResourceError:
        return None
    return str(value.value)


def daemon_reload(bus: Bus) -> Step:
    """Reload (`systemctl daemon-reload`): systemd reads its unit files and links again."""
    reload = functools.partial(bus.manager, "Reload")
    return Step(
        "reload systemd's units (daemon-reload)", "reloaded systemd's units (daemon-reload)", reload
    )


class UnitChanges:
    """A unit watch's test of a signal: may it change what check_apply sees?

    systemd repeats a unit's whole property set whenever any of it changes (after every job,
    at every timer elapse), so a PropertiesChanged counts only if a watched value differs from
    the last one seen. While `muted()` holds (a call of the resource's own is in flight: see
    Mute) nothing counts, but values are still recorded: systemd's echo of our own jobs,
    enables and reloads is no drift (a unit that fails to start would otherwise wake its
    watch, and be started again, forever). systemd sends a job's unit signals before its
    JobRemoved and repeats them after it: the first are muted, the repeat is no change, and
    whatever happens to the unit after the JobRemoved is seen.
    """

    def __init__(self, muted: Callable[[], bool]) -> None:
        self.muted = muted
        self.last: dict[str, Any] = {}

    def __call__(self, msg: Message) -> bool:
        if msg.member == "PropertiesChanged":
            interface, changed, invalidated = msg.body
            if interface != UNIT:
                return False
            values = {key: changed[key].value for key in WATCHED & set(changed)}
            moved = bool(WATCHED & set(invalidated)) or any(
                self.last.get(key) != value for key, value in values.items()
            )
            self.last.update(values)
        elif msg.member == "Reloading":
            moved = not msg.body[0]  # the reload has finished
        else:
            moved = True  # UnitFilesChanged
        return moved and not self.muted()


def systemd_routes(unit: str) -> list[Route]:
    """The signals that tell a watcher that `unit` (or its unit file) may have changed."""
    return [
        (unit_object_path(unit), PROPERTIES, "PropertiesChanged"),
        (MANAGER_PATH, MANAGER, "Reloading"),
        (MANAGER_PATH, MANAGER, "UnitFilesChanged"),
    ]


class Backoff:
    """The delays between attempts to reach a lost bus: none, then RECONNECT_MIN, doubling up
    to RECONNECT_MAX. Kept across a connection that is lost again at once (a bus that
    accepts, then drops us), so that reconnecting does not spin."""

    def __init__(self) -> None:
        self.delay = 0.0

    def next(self) -> float:
        delay = self.delay
        self.delay = min(max(delay * 2, RECONNECT_MIN), RECONNECT_MAX)
        return delay


class BusUser:
    """Mixin for kinds that talk D-Bus: one shared connection, released at cleanup."""

    def _bus_init(self) -> None:
        self._bus: Bus | None = None
        self._bus_lock = asyncio.Lock()
        self._disconnect_registered = False  # among the handle's cleanups
        self._mute = Mute()

    def _unit_changes(self) -> UnitChanges:
        """The test of a unit watch's signals, muted by the calls `_apply` makes."""
        return UnitChanges(self._mute.__bool__)

    async def _apply(self, handle: Handle, changes: list[Step], apply: bool) -> None:
        """apply_steps, its calls counted in this resource's Mute (see UnitChanges)."""
        token = MUTE.set(self._mute)
        try:
            await apply_steps(handle, changes, apply)
        finally:
            MUTE.reset(token)

    async def _connect(self, handle: Handle, session: bool) -> Bus:
        async with self._bus_lock:
            if self._bus is not None and self._bus.lost:
                old, self._bus = self._bus, None
                await old.release()
            if self._bus is None:
                self._bus = await Bus.acquire(session, handle.shared)
                if not self._disconnect_registered:  # once, however often it reconnects
                    handle.on_cleanup(self._disconnect)
                    self._disconnect_registered = True
            return self._bus

    async def _watch_unit(
        self, handle: Handle, session: bool, unit: str, files: Iterable[str] = ()
    ) -> None:
        """A systemd unit's watch: its signals (see systemd_routes, UnitChanges) and inotify
        on its files (UnitFileWatch; `files`: more paths), one event per wake-up, through
        D-Bus restarts (see _watch_bus)."""
        extra = list(files)  # watched again after each reconnection

        async def watch(bus: Bus) -> None:
            signals = await bus.signals(SYSTEMD, systemd_routes(unit), self._unit_changes())
            try:
                await bus.subscribe_systemd()
                async with UnitFileWatch(unit, session, extra) as changes:
                    await handle.event()
                    await pump_events(handle, [signals, changes])
            finally:
                await signals.aclose()

        await self._watch_bus(handle, session, SYSTEMD, watch)

    async def _watch_bus(
        self,
        handle: Handle,
        session: bool,
        name: str,
        watch: Callable[[Bus], Awaitable[None]],
        on_demand: bool = False,
    ) -> None:
        """Run `watch(bus)`, which subscribes, then sends an event and pumps the bus's
        signals, again on a new connection whenever this one is lost (a D-Bus restart or
        upgrade): one warning when it is lost, one line when it is back, and the event that
        `watch` sends then checks the resource again (a change while the bus was away, such
        as a unit stopped by hand, is repaired). A bus not there at first: the startup event
        is sent anyway (check_apply fails, saying why), and the watch waits for it as for a
        lost one. `name`: the service the watch needs on the bus (see _reconnect); `on_demand`:
        one the bus starts at its first call (bus activation, as hostnamed: see
        Bus.wait_for_owner)."""
        address = bus_address(session)
        backoff = Backoff()
        try:
            bus = await self._connect(handle, session)
        except ResourceError as err:
            handle.logger.warning("%s: waiting for it", err)
            await handle.event()
            bus = await self._reconnect(handle, session, name, backoff, on_demand)
            handle.logger.info("connected to D-Bus at %s", address)
        while True:
            since = time.monotonic()
            try:
                await watch(bus)
                return
            except ResourceError:
                if not bus.gone:
                    raise
            if time.monotonic() - since > RECONNECT_MAX:
                backoff = Backoff()  # it had been up a while: a fresh loss, retried at once
            handle.logger.warning("lost the D-Bus connection to %s: reconnecting", address)
            bus = await self._reconnect(handle, session, name, backoff, on_demand)
            handle.logger.info("reconnected to D-Bus at %s: checking again", address)

    async def _reconnect(
        self, handle: Handle, session: bool, name: str, backoff: Backoff, on_demand: bool
    ) -> Bus:
        """A new connection to the bus, with `name` on it (see Bus.wait_for_owner), tried
        after each of `backoff`'s delays (the first is none), cut short when the bus's socket
        file changes (inotify: a bus daemon that starts makes it); until cancelled."""
        address = bus_address(session)
        changed = asyncio.Event()
        path = socket_path(address)
        watcher = None
        if path is not None:  # a watch that fails (on_error) leaves the delays
            watcher = PathWatcher([path], on_change=changed.set, on_error=lambda _err: None)
            watcher.open()
        try:
            while True:
                delay = backoff.next()
                if delay:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await changed.wait()
                changed.clear()
                try:
                    bus = await self._connect(handle, session)
                    await bus.wait_for_owner(name, on_demand)
                    return bus
                except ResourceError as err:
                    handle.logger.debug("D-Bus at %s is not back: %s", address, err)
        finally:
            if watcher is not None:
                watcher.close()

    async def _disconnect(self) -> None:
        bus, self._bus = self._bus, None
        if bus is not None:
            await bus.release()
