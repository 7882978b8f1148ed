"""The deploys in etcd, all under `/_mgmt/deploy/` (per-host status: `status.py`):

| key | value |
| --- | --- |
| `newest` | the id of the newest deploy (decimal) |
| `ids/<id, 20 digits>` | the deploy's record (JSON: `Record`) |
| `blobs/<sha256>` | a bundle (`bundle.Bundle.encode()`), named by its hash |

`push` appends deploy N+1 in one transaction that puts its blob, its record and `newest`, and
deletes the deploys older than the newest `keep` (with the blobs no kept deploy names); it
applies only if `newest` is still N, the parent the deploy was made (and signed) on. So a
deploy's blob is never visible without its record or the other way round, two operators racing
cannot overwrite each other, and the history is bounded.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.errors import WorldError
from mgmt.cluster.client import EtcdClient, range_end  # first: grpc's environment (mgmt.cluster)
from mgmt.deploy import DeployError
from mgmt.deploy import sign as signing
from mgmt.deploy.bundle import Bundle

PREFIX = "/_mgmt/deploy/"
NEWEST = PREFIX + "newest"
IDS = PREFIX + "ids/"
BLOBS = PREFIX + "blobs/"
KEEP = 10  # deploys kept by default (`mgmt deploy --keep`)
MAX_FLOOR = 10**15  # a host's status saying it runs a higher id is not believed (`floor`)
SIGNED_HEADER = b"mgmt deploy v1\n"


def id_key(deploy_id: int) -> str:
    return f"{IDS}{deploy_id:020d}"


@dataclass(frozen=True)
class Record:
    id: int
    parent: int  # the newest deploy when this one was made (0: the first)
    time: float  # when it was made (seconds since the epoch, the operator's clock)
    hash: str  # sha256 of its bundle: `blobs/<hash>`
    frontend: str
    entry: str
    key: str = ""  # fingerprint of the signing key ("": unsigned)
    rollback_of: int = 0  # a rollback: the deploy whose content this is
    signature: str = ""  # SSH signature over `payload()` ("": unsigned)
    # The id of the key it was read under (`records`, `head`; 0: not read from one): another
    # than `id` for a record replayed under a newer id. Not part of the record.
    stored_as: int = field(default=0, compare=False)

    def payload(self) -> bytes:
        """What the signature covers: every field but the signature itself."""
        fields = {k: v for k, v in self._fields().items() if k != "signature"}
        return SIGNED_HEADER + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    def encode(self) -> bytes:
        return json.dumps(self._fields(), sort_keys=True).encode()

    def _fields(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "stored_as"}

    @property
    def key_id(self) -> int:
        """The id of the key it is stored under (its own, unless it was replayed there)."""
        return self.stored_as or self.id

    @classmethod
    def decode(cls, data: bytes, where: str) -> Record:
        try:
            doc = json.loads(data)
            if isinstance(doc, dict) and "stored_as" in doc:
                raise TypeError("unexpected keyword argument 'stored_as'")
            record = cls(**doc)
        except (ValueError, TypeError) as err:
            raise DeployError(f"{where}: not a deploy record: {err}") from None
        for name, kind in _TYPES.items():
            value = getattr(record, name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise DeployError(f"{where}: not a deploy record: {name} is {value!r}")
        return record


_TYPES: dict[str, type | tuple[type, ...]] = {
    "id": int,
    "parent": int,
    "time": (int, float),
    "hash": str,
    "frontend": str,
    "entry": str,
    "key": str,
    "rollback_of": int,
    "signature": str,
}


def new_record(bundle: Bundle, deploy_id: int, parent: int, rollback_of: int = 0) -> Record:
    return Record(
        id=deploy_id,
        parent=parent,
        time=round(time.time(), 3),
        hash=bundle.hash,
        frontend=bundle.frontend,
        entry=bundle.entry,
        rollback_of=rollback_of,
    )


def record_maker(
    bundle: Bundle, key: Path | None, rollback_of: int = 0
) -> Callable[[int, int], Awaitable[Record]]:
    """What `push` calls to make the record of deploy `id` on `parent`: signed with `key`
    (an SSH private key, or the public key of one in ssh-agent), or unsigned (None)."""
    fingerprint = signing.key_fingerprint(key) if key is not None else ""

    async def make(deploy_id: int, parent: int) -> Record:
        rec = replace(new_record(bundle, deploy_id, parent, rollback_of), key=fingerprint)
        if key is None:
            return rec
        signature = await asyncio.to_thread(signing.sign, rec.payload(), key)
        return replace(rec, signature=signature)

    return make


def _put(key: str, value: bytes) -> Any:
    from aetcd import rpc

    return rpc.RequestOp(request_put=rpc.PutRequest(key=key.encode(), value=value))


def _delete(key: str) -> Any:
    from aetcd import rpc

    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key.encode()))


async def newest_id(client: EtcdClient) -> int:
    raw = await client.get(NEWEST.encode())
    try:
        return int(raw) if raw is not None else 0
    except ValueError:
        raise DeployError(f"{NEWEST}: not a deploy id: {raw!r}") from None


async def records(client: EtcdClient) -> list[Record]:
    """Every deploy kept, oldest first (records that cannot be read are skipped)."""
    raw, _ = await client.get_prefix(IDS.encode())
    return _decoded(sorted(raw.items()))


def _decoded(items: Iterable[tuple[bytes, bytes]]) -> list[Record]:
    out = []
    for key, value in items:
        try:
            rec = Record.decode(value, key.decode(errors="replace"))
            out.append(replace(rec, stored_as=int(key[len(IDS) :])))
        except (DeployError, ValueError):
            continue
    return out


async def head(client: EtcdClient, limit: int = 0) -> tuple[int, list[Record]]:
    """The newest deploy's id and the records kept (the newest `limit`, 0: all), oldest first:
    one read, one snapshot (a read-only transaction: one round trip)."""
    from aetcd import rpc

    ids = rpc.RangeRequest(
        key=IDS.encode(),
        range_end=range_end(IDS.encode()),
        sort_order=rpc.RangeRequest.DESCEND,
        sort_target=rpc.RangeRequest.KEY,
        limit=limit,
    )
    ops = [
        rpc.RequestOp(request_range=rpc.RangeRequest(key=NEWEST.encode())),
        rpc.RequestOp(request_range=ids),
    ]
    response = await client.txn([], ops)
    pointer, kept = (r.response_range.kvs for r in response.responses)
    raw = bytes(pointer[0].value) if pointer else b"0"
    try:
        newest = int(raw)
    except ValueError:
        raise DeployError(f"{NEWEST}: not a deploy id: {raw!r}") from None
    return newest, _decoded((bytes(kv.key), bytes(kv.value)) for kv in reversed(kept))


async def floor(client: EtcdClient) -> int:
    """The highest deploy id a host's status says it runs or has ready (0: none). A cluster
    that lost its deploys (rebuilt, or every member left at once) numbers its next one above
    it: hosts never switch to an older id, and would keep their deploy whatever is pushed. A
    host writes its own status: an id above MAX_FLOOR is not believed (ids have 20 digits)."""
    from mgmt.deploy.status import STATUS

    statuses, _ = await client.get_prefix(STATUS.encode())
    highest = 0
    for value in statuses.values():
        try:
            doc = json.loads(value)
        except ValueError:
            continue
        for name in ("running", "ready") if isinstance(doc, dict) else ():
            said = doc.get(name)
            if type(said) is int and highest < said <= MAX_FLOOR:
                highest = said
    return highest


async def record(client: EtcdClient, deploy_id: int) -> Record | None:
    raw = await client.get(id_key(deploy_id).encode())
    return Record.decode(raw, id_key(deploy_id)) if raw is not None else None


async def blob(client: EtcdClient, digest: str) -> bytes | None:
    return await client.get((BLOBS + digest).encode())


class NoQuorum(DeployError):
    """The cluster has no leader: nothing can be stored until a quorum answers again."""


async def quorate_head(client: EtcdClient) -> tuple[int, list[Record]]:
    """`head(client)`, read while `require_quorum` asks (no round trip more), dropped if
    there is none (it would wait for its deadline)."""
    newest = asyncio.create_task(head(client))
    try:
        await require_quorum(client)
    except BaseException:
        newest.cancel()
        await asyncio.gather(newest, return_exceptions=True)
        raise
    return await newest


async def require_quorum(client: EtcdClient) -> None:
    """NoQuorum, at once, when the member reached has no leader (a push would wait for its
    reads' deadline, then say `Deadline Exceeded`)."""
    why = await client.no_quorum()
    if why:
        raise NoQuorum(f"{why}: nothing stored")


async def push(
    client: EtcdClient,
    bundle: Bundle,
    make: Callable[[int, int], Awaitable[Record]],
    *,
    force: bool = False,
    keep: int = KEEP,
    attempts: int = 5,
    known: tuple[int, list[Record]] | None = None,
) -> Record:
    """Append a deploy: `make(id, parent)` builds (and signs) its record on the newest one
    (its id the next one, or above what hosts run: `floor`).

    A deploy pushed by someone else meanwhile makes the transaction fail: DeployError, unless
    `force`, which builds the record again on the new newest (up to `attempts` times).
    `known`: `head(client)` read meanwhile by the caller, for the first attempt.
    """
    from aetcd import rpc

    if keep < 1:
        raise DeployError(f"--keep: must be >= 1, got {keep}")
    data = bundle.encode()
    if known is None:  # else the caller read it with `quorate_head`
        known = await quorate_head(client)
    above = await floor(client)
    for _ in range(attempts):
        parent, kept = known or await head(client)
        known = None
        rec = await make(max(parent, above) + 1, parent)
        old, keeping = (
            kept[: max(len(kept) - (keep - 1), 0)],
            kept[-(keep - 1) :] if keep > 1 else [],
        )
        named = {r.hash for r in keeping} | {rec.hash}
        ops = [_put(BLOBS + rec.hash, data), _put(id_key(rec.id), rec.encode())]
        ops.append(_put(NEWEST, str(rec.id).encode()))
        ops += [_delete(id_key(r.key_id)) for r in old]
        ops += [_delete(BLOBS + h) for h in sorted({r.hash for r in old} - named)]
        if parent == 0:
            compare = rpc.Compare(
                key=NEWEST.encode(), target=rpc.Compare.VERSION, result=rpc.Compare.EQUAL, version=0
            )
        else:
            compare = rpc.Compare(
                key=NEWEST.encode(),
                target=rpc.Compare.VALUE,
                result=rpc.Compare.EQUAL,
                value=str(parent).encode(),
            )
        try:
            response = await client.txn([compare], ops)
        except WorldError as err:
            raise DeployError(f"cannot store the deploy: {err}") from None
        if response.succeeded:
            return rec
        if not force:
            now = await newest_id(client)
            raise DeployError(
                f"deploy {rec.id} refused: its parent {parent} is no longer the newest deploy "
                f"({now} was pushed meanwhile); look at `mgmt deploy --list` and push again, "
                "or --force to put it on top"
            )
    raise DeployError(f"deploy refused: the newest deploy kept changing ({attempts} attempts)")


def describe(rec: Record) -> dict[str, Any]:
    """The public fields of a record (no signature), for --list and status."""
    out = asdict(rec)
    out.pop("signature")
    return out
