"""The World: what a resource (or the agent) may ask of the cluster, and an in-memory one.

mgmt's World interface, narrowed to what this project uses:

- strings: `str_get/str_set/str_del/str_watch(key)` on `/_mgmt/strings/<key>`, and
  `str_cas(key, expected, value)`: set only if the key still holds `expected` (None: absent);
  each with `mapped=True` works on this host's entry of the per-host map `key` instead;
- per-host maps: `str_map_get/str_map_set/str_map_del/str_map_watch(key)` on
  `/_mgmt/hoststrings/<host>/<key>` (set and del touch this host's entry only);
- exported resources: `res_export(records)` replaces this host's set under
  `/_mgmt/exported/<host>/<kind>/<name>`, `res_list()` returns every host's, `res_watch()`.
- scheduling: `schedule_join(namespace, ttl, linger=False)` is an async context manager that
  keeps this host in `/_mgmt/scheduled/<host>/<namespace>` while entered (bound to a lease of
  `ttl` seconds on etcd, so a host that dies leaves it within ttl; on exit the lease is revoked,
  or, `linger`, left to expire); `schedule_persist(namespace)` puts this host's key without a
  lease (it stays until withdrawn), `schedule_withdraw(namespace)` deletes it unless a join of
  this agent holds it, `schedule_entry(namespace)` says how it is held ("leased", "persisted"
  or None); `schedule_hosts(namespace)` lists the hosts in the order they joined;
  `schedule_watch(namespace)`.

A watch is an async context manager that is subscribed once entered and then iterates one
`None` per change (changes that arrive faster than they are read coalesce into one): read the
state after entering, then re-read on each item. Spurious items are possible; a missed change is
not. Operations raise `WorldError` when the cluster cannot answer; a watch survives a lost
cluster and yields once it is back (the state may have changed meanwhile).

`MemoryWorld` is the in-memory implementation for engine tests: several of them (one per
"host") may share one `MemoryStore`. The etcd implementation is `mgmt.cluster.world.EtcdWorld`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.errors import ValidationError, WorldError
from engine.meta import Meta
from engine.params import build, to_plain
from engine.resource import Resource, lookup

ROOT = "/_mgmt/"
STRINGS = ROOT + "strings/"
EXPORTED = ROOT + "exported/"
# Per-host keys put the host first, so that one etcd key range holds all of a host's keys of
# a kind: a host's etcd role may write its own range only (mgmt/cluster/identity.py).
HOST_STRINGS = ROOT + "hoststrings/"
SCHEDULE = ROOT + "scheduled/"

Unsubscribe = Callable[[], Awaitable[None] | None]


class Changes:
    """A subscription: `async with changes: async for _ in changes: ...` (see the module doc).

    `subscribe(signal)` is called on entry and returns the unsubscribe callable; the World calls
    `signal()` on every change.
    """

    def __init__(self, subscribe: Callable[[Callable[[], None]], Awaitable[Unsubscribe]]) -> None:
        self._subscribe = subscribe
        self._unsubscribe: Unsubscribe | None = None
        self._pending = asyncio.Event()

    def signal(self) -> None:
        self._pending.set()

    async def __aenter__(self) -> Changes:
        self._unsubscribe = await self._subscribe(self.signal)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._unsubscribe is not None:
            result = self._unsubscribe()
            self._unsubscribe = None
            if inspect.isawaitable(result):
                await result

    def __aiter__(self) -> AsyncIterator[None]:
        return self

    async def __anext__(self) -> None:
        await self._pending.wait()
        self._pending.clear()


@dataclass(frozen=True)
class Exported:
    """One exported resource as stored in the cluster (the value is `to_json()`)."""

    # The host that exported it.
    host: str
    # Its kind and name (without the "@@").
    kind: str
    name: str
    # Its kind-specific parameters as plain data.
    params: dict[str, Any] = field(default_factory=dict)
    # Its meta parameters that differ from the defaults.
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, host: str, res: Resource) -> Exported:
        return cls(host, res.kind, res.name, res.params(), _meta_changes(res.meta))

    @property
    def key(self) -> str:
        return f"{EXPORTED}{self.host}/{self.kind}/{self.name}"

    def to_json(self) -> str:
        return json.dumps({"params": self.params, "meta": self.meta}, sort_keys=True)

    @classmethod
    def from_key(cls, key: str, value: str | bytes) -> Exported:
        """Parse a stored record; WorldError if the key or the JSON is not one."""
        host, sep1, rest = key.removeprefix(EXPORTED).partition("/")
        kind, sep2, name = rest.partition("/")
        if not key.startswith(EXPORTED) or not (sep1 and sep2 and host and kind and name):
            raise WorldError(f"{key}: not an exported resource key")
        try:
            data = json.loads(value)
            params, meta = data["params"], data.get("meta", {})
        except (ValueError, TypeError, KeyError) as err:
            raise WorldError(f"{key}: not an exported resource record: {err}") from err
        if not isinstance(params, dict) or not isinstance(meta, dict):
            raise WorldError(f"{key}: params and meta must be mappings")
        return cls(host, kind, name, params, meta)

    def visible_to(self, host: str) -> bool:
        """`meta: {export: [hosts]}` limits who may collect it ([] or "*": everyone)."""
        allowed = self.meta.get("export") or []
        return not allowed or "*" in allowed or host in allowed

    def build(
        self, params: dict[str, Any] | None = None, meta: dict[str, Any] | None = None
    ) -> Resource:
        """The resource again, with `params` and `meta` overriding the exported ones;
        ValidationError if this host's kind refuses them."""
        cls = lookup(self.kind)
        if cls is None:
            raise ValidationError(f"unknown kind {self.kind!r}", "kind")
        res = build(cls, {**self.params, **(params or {}), "name": self.name})
        res.meta = build(Meta, {**self.meta, **(meta or {})}, prefix="meta.")
        res.validate()
        return res


def _meta_changes(meta: Meta) -> dict[str, Any]:
    default = to_plain(Meta())
    return {k: v for k, v in to_plain(meta).items() if v != default[k]}


def strings_key(key: str, host: str | None = None) -> str:
    """The etcd key of a string (`/_mgmt/strings/<key>`) or of a host's map entry
    (`/_mgmt/hoststrings/<host>/<key>`)."""
    return f"{STRINGS}{key}" if host is None else f"{HOST_STRINGS}{host}/{key}"


def per_host(prefix: str, name: str, keys: Iterable[str]) -> list[str]:
    """The hosts of the per-host keys `<prefix><host>/<name>` among `keys` (in their order)."""
    out = []
    for key in keys:
        host, sep, rest = key.removeprefix(prefix).partition("/")
        if key.startswith(prefix) and sep and host and rest == name:
            out.append(host)
    return out


def check_key(key: str) -> None:
    """A world key is non-empty, with no empty path segment and no leading/trailing '/'."""
    if not key or key.startswith("/") or key.endswith("/") or "//" in key or "\0" in key:
        raise ValidationError(
            f"expected a non-empty key like 'app/version' (no leading, trailing or double '/'), "
            f"got {key!r}",
            "key",
        )


@dataclass(frozen=True)
class JoinInfo:
    """How another agent joins this cluster as a client (the `remote` kind's tunnel; mgmt's
    EndpointsWorld): a World that can say so has it as its `join` attribute."""

    url: str  # an etcd client URL this host reaches (its own, or a seed's)
    ca_dir: str | None  # the cluster's CA (ca.pem, ca.key) a joiner mints from; None: none
    insecure: bool  # plain http, no certificates (--insecure-cluster)


def join_info(world: object) -> JoinInfo | None:
    """The world's JoinInfo, if it has one."""
    join = getattr(world, "join", None)
    return join if isinstance(join, JoinInfo) else None


class World(Protocol):
    """The narrow cluster API resources and the agent use (see the module doc)."""

    # This agent's joins of scheduling pools (who holds which namespace now).
    memberships: Memberships

    @property
    def hostname(self) -> str: ...

    async def str_get(self, key: str, mapped: bool = False) -> str | None: ...

    async def str_set(self, key: str, value: str, mapped: bool = False) -> None: ...

    async def str_del(self, key: str, mapped: bool = False) -> None: ...

    async def str_cas(
        self, key: str, expected: str | None, value: str, mapped: bool = False
    ) -> bool: ...

    def str_watch(self, key: str, mapped: bool = False) -> Changes: ...

    async def str_map_get(self, key: str) -> dict[str, str]: ...

    async def str_map_set(self, key: str, value: str) -> None: ...

    async def str_map_del(self, key: str) -> None: ...

    def str_map_watch(self, key: str) -> Changes: ...

    async def res_export(self, records: Sequence[Exported]) -> None: ...

    async def res_list(self) -> list[Exported]: ...

    def res_watch(self) -> Changes: ...

    def schedule_join(
        self, namespace: str, ttl: int, linger: bool = False
    ) -> AbstractAsyncContextManager[None]: ...

    async def schedule_persist(self, namespace: str) -> None: ...

    async def schedule_withdraw(self, namespace: str) -> bool: ...

    async def schedule_entry(self, namespace: str) -> str | None: ...

    async def schedule_hosts(self, namespace: str) -> list[str]: ...

    def schedule_watch(self, namespace: str) -> Changes: ...


class Memberships:
    """Reference-counted pool memberships of this host: the first join of a namespace enters
    it, the last one to leave leaves it (two call sites scheduling in one namespace share it)."""

    def __init__(self) -> None:
        self._count: dict[str, int] = {}
        self._leave: dict[str, Callable[[], Awaitable[None]]] = {}  # the first joiner's

    def held(self, namespace: str) -> bool:
        """Whether a join of this agent holds the namespace now."""
        return bool(self._count.get(namespace))

    @contextlib.asynccontextmanager
    async def hold(
        self,
        namespace: str,
        enter: Callable[[], Awaitable[None]],
        leave: Callable[[], Awaitable[None]],
    ) -> AsyncIterator[None]:
        """Enter (the first joiner's `enter`) unless already in; on exit, the last one out
        runs the `leave` of the joiner that entered."""
        first = not self._count.get(namespace)
        self._count[namespace] = self._count.get(namespace, 0) + 1
        if first:
            self._leave[namespace] = leave
        try:
            if first:
                await enter()
            yield
        finally:
            self._count[namespace] -= 1
            if not self._count[namespace]:
                del self._count[namespace]
                await self._leave.pop(namespace)()


def schedule_key(namespace: str, host: str) -> str:
    """A host's key in a scheduling namespace (`/_mgmt/scheduled/<host>/<namespace>`)."""
    return f"{SCHEDULE}{host}/{namespace}"


# The in-memory implementation ----------------------------------------------------------------


class MemoryStore:
    """A shared key space with prefix watches, standing in for etcd in engine tests."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.revision = 0
        self.available = True  # False: every operation raises WorldError (a lost cluster)
        self._watchers: list[tuple[str, bool, Callable[[], None]]] = []

    def _check(self) -> None:
        if not self.available:
            raise WorldError("the cluster is unreachable")

    def get(self, key: str) -> str | None:
        self._check()
        return self.data.get(key)

    def get_prefix(self, prefix: str) -> dict[str, str]:
        self._check()
        return {k: v for k, v in self.data.items() if k.startswith(prefix)}

    def commit(self, puts: dict[str, str], deletes: Sequence[str] = ()) -> None:
        """Apply puts and deletes atomically (one revision, one signal per watcher).

        As in etcd, every put is an event for watchers, even of an unchanged value.
        """
        self._check()
        changed = set(puts) | {k for k in deletes if k in self.data}
        self.data.update(puts)
        for key in deletes:
            self.data.pop(key, None)
        self.revision += 1
        for prefix, is_prefix, signal in list(self._watchers):
            if any(k.startswith(prefix) if is_prefix else k == prefix for k in changed):
                signal()

    def set_available(self, available: bool) -> None:
        """Lose (False) or regain (True) the cluster; watchers are signalled on return."""
        self.available = available
        if available:
            for _, _, signal in list(self._watchers):
                signal()

    def watch(self, key: str, prefix: bool) -> Changes:
        async def subscribe(signal: Callable[[], None]) -> Unsubscribe:
            entry = (key, prefix, signal)
            self._watchers.append(entry)
            return lambda: self._watchers.remove(entry)

        return Changes(subscribe)


@dataclass
class MemoryWorld:
    """A World on a MemoryStore, as seen from `hostname`."""

    hostname: str
    store: MemoryStore = dataclasses.field(default_factory=MemoryStore)
    memberships: Memberships = dataclasses.field(default_factory=Memberships)
    # Namespaces this host's key was put in without a lease (schedule_persist).
    _persisted: set[str] = dataclasses.field(default_factory=set)

    def _key(self, key: str, mapped: bool) -> str:
        return strings_key(key, self.hostname if mapped else None)

    async def str_get(self, key: str, mapped: bool = False) -> str | None:
        return self.store.get(self._key(key, mapped))

    async def str_set(self, key: str, value: str, mapped: bool = False) -> None:
        self.store.commit({self._key(key, mapped): value})

    async def str_del(self, key: str, mapped: bool = False) -> None:
        self.store.commit({}, [self._key(key, mapped)])

    async def str_cas(
        self, key: str, expected: str | None, value: str, mapped: bool = False
    ) -> bool:
        if self.store.get(self._key(key, mapped)) != expected:
            return False
        self.store.commit({self._key(key, mapped): value})
        return True

    def str_watch(self, key: str, mapped: bool = False) -> Changes:
        return self.store.watch(self._key(key, mapped), prefix=False)

    async def str_map_get(self, key: str) -> dict[str, str]:
        items = self.store.get_prefix(HOST_STRINGS)
        return {h: items[strings_key(key, h)] for h in per_host(HOST_STRINGS, key, items)}

    async def str_map_set(self, key: str, value: str) -> None:
        self.store.commit({strings_key(key, self.hostname): value})

    async def str_map_del(self, key: str) -> None:
        self.store.commit({}, [strings_key(key, self.hostname)])

    def str_map_watch(self, key: str) -> Changes:
        return self.store.watch(HOST_STRINGS, prefix=True)  # every key's: spurious items

    async def res_export(self, records: Sequence[Exported]) -> None:
        current = self.store.get_prefix(f"{EXPORTED}{self.hostname}/")
        wanted = {r.key: r.to_json() for r in records}
        puts = {k: v for k, v in wanted.items() if current.get(k) != v}
        stale = [k for k in current if k not in wanted]
        if puts or stale:
            self.store.commit(puts, stale)

    async def res_list(self) -> list[Exported]:
        return [Exported.from_key(k, v) for k, v in sorted(self.store.get_prefix(EXPORTED).items())]

    def res_watch(self) -> Changes:
        return self.store.watch(EXPORTED, prefix=True)

    @contextlib.asynccontextmanager
    async def schedule_join(
        self, namespace: str, ttl: int, linger: bool = False
    ) -> AsyncIterator[None]:
        check_key(namespace)
        key = schedule_key(namespace, self.hostname)  # no leases here: left on exit (linger too)

        async def enter() -> None:
            self._persisted.discard(namespace)
            self.store.commit({key: ""})

        async def leave() -> None:
            with contextlib.suppress(WorldError):
                self.store.commit({}, [key])

        async with self.memberships.hold(namespace, enter, leave):
            yield

    async def schedule_persist(self, namespace: str) -> None:
        check_key(namespace)
        self.store.commit({schedule_key(namespace, self.hostname): ""})
        self._persisted.add(namespace)

    async def schedule_withdraw(self, namespace: str) -> bool:
        check_key(namespace)
        key = schedule_key(namespace, self.hostname)
        if self.memberships.held(namespace) or self.store.get(key) is None:
            return False
        self.store.commit({}, [key])
        self._persisted.discard(namespace)
        return True

    async def schedule_entry(self, namespace: str) -> str | None:
        check_key(namespace)
        if self.store.get(schedule_key(namespace, self.hostname)) is None:
            return None
        held = namespace in self._persisted and not self.memberships.held(namespace)
        return "persisted" if held else "leased"

    async def schedule_hosts(self, namespace: str) -> list[str]:
        return per_host(SCHEDULE, namespace, self.store.get_prefix(SCHEDULE))  # in join order

    def schedule_watch(self, namespace: str) -> Changes:
        return self.store.watch(SCHEDULE, prefix=True)  # every namespace's: spurious items
