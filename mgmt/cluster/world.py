"""The World on etcd (engine/world.py describes the API and the key layout)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from aetcd import rpc

from engine.errors import WorldError
from engine.world import (
    EXPORTED,
    HOST_STRINGS,
    SCHEDULE,
    Changes,
    Exported,
    JoinInfo,
    Memberships,
    check_key,
    per_host,
    schedule_key,
    strings_key,
)
from mgmt.cluster.client import EtcdClient
from mgmt.cluster.mirror import Mirror
from mgmt.collectscope import shown

log = logging.getLogger("cluster")

TXN_OPS = 100  # etcd refuses transactions of more than 128 operations (--max-txn-ops)
JOIN_WAIT = 5.0  # seconds schedule_join waits for this host's key to be written


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed: %r", task.get_name(), task.exception())


class EtcdWorld:
    """A World whose state lives in etcd, reached through one failing-over client."""

    def __init__(self, client: EtcdClient, hostname: str) -> None:
        self.client = client
        self._hostname = hostname
        self.join: JoinInfo | None = None  # how another agent joins (engine.world.JoinInfo)
        self.memberships = Memberships()
        self._malformed: set[bytes] = set()  # keys of malformed exported records, logged once
        # Every host's exported records, kept by res_watch()'s events while one is held; each
        # record decoded once per revision (a change costs O(change), not a read of them all).
        self._exported = Mirror()
        self._decoded: dict[bytes, tuple[int, Exported | None]] = {}
        # This host's records as last exported, by id (the object kept to check it): key, value.
        self._encoded: dict[int, tuple[Exported, bytes, bytes]] = {}
        # What res_list() gives while the cluster has not answered since the agent started
        # (ClusterLink: the records kept at the last run); None once a read succeeded.
        self.last_known: list[Exported] | None = None

    @property
    def hostname(self) -> str:
        return self._hostname

    def _watch(self, key: str, prefix: bool) -> Changes:
        async def subscribe(signal: Callable[[], None]) -> Callable[[], Awaitable[None]]:
            return await self.client.subscribe(key.encode(), signal, prefix=prefix)

        return Changes(subscribe)

    # strings ------------------------------------------------------------------------------

    def _key(self, key: str, mapped: bool) -> bytes:
        check_key(key)
        return strings_key(key, self.hostname if mapped else None).encode()

    async def str_get(self, key: str, mapped: bool = False) -> str | None:
        value = await self.client.get(self._key(key, mapped))
        return value.decode() if value is not None else None

    async def str_set(self, key: str, value: str, mapped: bool = False) -> None:
        await self.client.put(self._key(key, mapped), value.encode())

    async def str_del(self, key: str, mapped: bool = False) -> None:
        await self.client.delete(self._key(key, mapped))

    async def str_cas(
        self, key: str, expected: str | None, value: str, mapped: bool = False
    ) -> bool:
        """One transaction: put `value` if the key holds `expected` (None: does not exist)."""
        raw = self._key(key, mapped)
        if expected is None:  # an absent key has version 0
            compare = rpc.Compare(key=raw, target=rpc.Compare.VERSION, result=rpc.Compare.EQUAL)
        else:
            compare = rpc.Compare(
                key=raw, target=rpc.Compare.VALUE, result=rpc.Compare.EQUAL, value=expected.encode()
            )
        put = rpc.RequestOp(request_put=rpc.PutRequest(key=raw, value=value.encode()))
        response = await self.client.txn([compare], [put])
        return bool(response.succeeded)

    def str_watch(self, key: str, mapped: bool = False) -> Changes:
        return self._watch(self._key(key, mapped).decode(), prefix=False)

    async def str_map_get(self, key: str) -> dict[str, str]:
        check_key(key)
        raw, _ = await self.client.get_prefix(HOST_STRINGS.encode())
        items = {k.decode(errors="replace"): v for k, v in raw.items()}
        return {h: items[strings_key(key, h)].decode() for h in per_host(HOST_STRINGS, key, items)}

    async def str_map_set(self, key: str, value: str) -> None:
        check_key(key)
        await self.client.put(strings_key(key, self.hostname).encode(), value.encode())

    async def str_map_del(self, key: str) -> None:
        check_key(key)
        await self.client.delete(strings_key(key, self.hostname).encode())

    def str_map_watch(self, key: str) -> Changes:
        check_key(key)
        return self._watch(HOST_STRINGS, prefix=True)  # every key's (host first): spurious items

    # exported resources -------------------------------------------------------------------

    async def res_export(self, records: Sequence[Exported]) -> None:
        """Make this host's exported set exactly `records` (one transaction when it fits)."""
        mine = f"{EXPORTED}{self.hostname}/".encode()
        if self._exported.synced:  # a stale copy costs one more write: the collector sees it
            current = {k: v for k, (v, _) in self._exported.values.items() if k.startswith(mine)}
        else:
            current, _ = await self.client.get_prefix(mine)
        wanted = dict(self._encode(records))
        ops = [
            rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=v))
            for k, v in wanted.items()
            if current.get(k) != v
        ]
        ops += [
            rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=k))
            for k in current
            if k not in wanted
        ]
        for start in range(0, len(ops), TXN_OPS):
            batch = ops[start : start + TXN_OPS]
            response = await self.client.txn([], batch)
            revision = int(response.header.revision)  # every change of a transaction has it
            for op in batch:  # known now, before its watch event: the next export compares
                if op.HasField("request_put"):
                    self._exported.change(op.request_put.key, op.request_put.value, revision)
                else:
                    self._exported.change(op.request_delete_range.key, None, revision)
        if ops:
            log.debug("exported %d resources (%d changes)", len(wanted), len(ops))

    def _encode(self, records: Sequence[Exported]) -> list[tuple[bytes, bytes]]:
        """Each record's key and value as stored; a record object given again (the link makes
        one per changed resource: ClusterLink._records_of) is not encoded again."""
        last, made = self._encoded, {}
        out = []
        for record in records:
            hit = last.get(id(record))
            if hit is None or hit[0] is not record:
                hit = (record, record.key.encode(), record.to_json().encode())
            made[id(record)] = hit
            out.append(hit[1:])
        self._encoded = made
        return out

    async def res_list(self) -> list[Exported]:
        mirror = self._exported
        if not mirror.synced:
            generation = mirror.generation
            try:
                scan = await self.client.scan(EXPORTED.encode())
            except WorldError:
                if self.last_known is None:
                    raise
                return list(self.last_known)
            self.last_known = None
            mirror.load(scan, generation)
            items = scan.items if mirror.held == 0 else mirror.values
        else:
            items = mirror.values
        records, malformed, decoded = [], set(), {}
        for key, (value, revision) in sorted(items.items()):
            known = self._decoded.get(key)
            record = known[1] if known is not None and known[0] == revision else None
            if record is None:
                try:
                    record = Exported.from_key(key.decode(), value)
                except (WorldError, UnicodeDecodeError) as err:
                    malformed.add(key)
                    if key not in self._malformed:  # not at every read: any host could flood
                        log.warning("ignoring a malformed exported record: %s", shown(str(err)))
            decoded[key] = (revision, record)
            if record is not None:
                records.append(record)
        self._malformed, self._decoded = malformed, decoded
        return records

    def res_watch(self) -> Changes:
        mirror = self._exported

        async def subscribe(signal: Callable[[], None]) -> Callable[[], Awaitable[None]]:
            cancel = await self.client.subscribe(
                EXPORTED.encode(), signal, prefix=True, events=mirror.apply
            )
            mirror.held += 1

            async def unsubscribe() -> None:
                mirror.held -= 1
                await cancel()

            return unsubscribe

        return Changes(subscribe)

    # scheduling ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def schedule_join(
        self, namespace: str, ttl: int, linger: bool = False
    ) -> AsyncIterator[None]:
        """This host's key in the namespace, bound to a lease of its own (renewed meanwhile);
        entering waits (up to JOIN_WAIT s) until the key is written, so that a first read
        already counts this host. Leaving revokes the lease (the key goes at once) or, with
        `linger`, only stops renewing it: the key goes when the lease expires, ttl s later."""
        check_key(namespace)
        key = schedule_key(namespace, self.hostname).encode()
        leases: list[int] = []
        written = asyncio.Event()
        holder: asyncio.Task[None] | None = None

        async def on_lease(lease: int) -> None:
            leases.append(lease)
            await self.client.put(key, b"", lease=lease)
            written.set()

        async def enter() -> None:
            nonlocal holder
            holder = asyncio.create_task(
                self.client.keep_leased(ttl, on_lease), name=f"schedule {namespace}"
            )
            holder.add_done_callback(_report)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(JOIN_WAIT):
                    await written.wait()

        async def leave() -> None:
            if holder is not None:
                holder.cancel()
                await asyncio.gather(holder, return_exceptions=True)
            if leases and not linger:
                with contextlib.suppress(WorldError):  # else the key expires with the lease
                    await self.client.lease_revoke(leases[-1])

        async with self.memberships.hold(namespace, enter, leave):
            yield

    async def schedule_persist(self, namespace: str) -> None:
        """This host's key in the namespace without a lease: it stays until withdrawn."""
        check_key(namespace)
        await self.client.put(schedule_key(namespace, self.hostname).encode(), b"")

    async def schedule_withdraw(self, namespace: str) -> bool:
        """Delete this host's key in the namespace (however held), unless a join of this agent
        holds it; True if one was deleted."""
        check_key(namespace)
        if self.memberships.held(namespace):
            return False
        return await self.client.delete(schedule_key(namespace, self.hostname).encode()) > 0

    async def schedule_entry(self, namespace: str) -> str | None:
        check_key(namespace)
        lease = await self.client.lease_of(schedule_key(namespace, self.hostname).encode())
        if lease is None:
            return None
        return "leased" if lease else "persisted"

    async def schedule_hosts(self, namespace: str) -> list[str]:
        check_key(namespace)
        keys = await self.client.keys_by_creation(SCHEDULE.encode())
        return per_host(SCHEDULE, namespace, (k.decode(errors="replace") for k in keys))

    def schedule_watch(self, namespace: str) -> Changes:
        check_key(namespace)
        return self._watch(SCHEDULE, prefix=True)  # every namespace's: spurious items
