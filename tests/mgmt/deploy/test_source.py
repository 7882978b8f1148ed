"""A host's deploy source on a real etcd with real signatures: what it runs, what it refuses."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mgmt.cluster.client import EtcdClient
from mgmt.cluster.world import EtcdWorld
from mgmt.deploy.bundle import Bundle
from mgmt.deploy.source import DeploySource, Policy
from mgmt.deploy.store import NEWEST, Record, _put, id_key, push, record, record_maker
from mgmt.yamlgraph import Loaded
from tests.e2e.helpers import run_mgmt
from tests.mgmt.cluster.helpers import members
from tests.mgmt.deploy.keys import Key, make_key, trusted_file


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[EtcdClient]:
    async with members(tmp_path / "etcd") as nodes:
        etcd = EtcdClient([nodes[0].client_url], call_timeout=2)
        try:
            yield etcd
        finally:
            await etcd.close()


def graph(name: str) -> Bundle:
    text = f"graph: {name}\nresources:\n  noop:\n    - name: {name}\n"
    return Bundle("yaml", "g.yaml", {"g.yaml": text.encode()})


async def next_graph(graphs: AsyncIterator[Loaded]) -> str:
    async with asyncio.timeout(10):
        loaded = await anext(graphs)
    return loaded.graph.name


@pytest.fixture
async def host(
    tmp_path: Path, client: EtcdClient
) -> AsyncIterator[tuple[DeploySource, AsyncIterator[Loaded], Key]]:
    alice = make_key(tmp_path / "keys", "alice")
    policy = Policy(trusted_file(tmp_path / "keys", alice), False, False, 1 << 20)
    source = DeploySource("h1", tmp_path / "prefix", policy)
    assert await source.start() is None  # nothing kept yet
    await source.attach_world(EtcdWorld(client, "h1"))
    try:
        yield source, aiter(source), alice
    finally:
        await source.aclose()


async def signed(client: EtcdClient, bundle: Bundle, key: Key) -> Record:
    return await push(client, bundle, record_maker(bundle, key.private))


async def refused(source: DeploySource, deploy_id: int) -> str:
    async with asyncio.timeout(10):
        while source.status.refused != deploy_id:
            source.checked.clear()
            await source.checked.wait()
    return source.status.error


async def test_what_a_host_refuses_and_that_it_keeps_running(
    client: EtcdClient,
    host: tuple[DeploySource, AsyncIterator[Loaded], Key],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, graphs, alice = host
    await signed(client, graph("one"), alice)
    assert await next_graph(graphs) == "one"
    # 2: unsigned.
    await push(client, graph("two"), record_maker(graph("two"), None))
    assert "unsigned" in await refused(source, 2)
    # 3: a record changed after it was signed.
    make = record_maker(graph("three"), alice.private)

    async def tampered(deploy_id: int, parent: int) -> Record:
        return replace(await make(deploy_id, parent), entry="other.yaml")

    await push(client, graph("three"), tampered)
    assert "bad signature" in await refused(source, 3)
    # 4: validly signed, but its files cannot be laid out (`a` and `a/b`).
    hostile = Bundle("yaml", "a", {"a": b"graph: x\n", "a/b": b""})
    await signed(client, hostile, alice)
    assert "cannot extract" in await refused(source, 4)
    assert source.running is not None and source.running.record.id == 1
    # 5: a graph file larger than this host takes.
    source.policy.max_graph_size = 10
    await signed(client, graph("big"), alice)
    assert "larger than this host's --max-graph-size" in await refused(source, 5)
    source.policy.max_graph_size = 1 << 20
    # The loop survived: 6 runs.
    await signed(client, graph("six"), alice)
    assert await next_graph(graphs) == "six"
    # An older deploy made the newest again (a replay): kept running 6.
    with caplog.at_level(logging.WARNING, logger="deploy"):
        await client.put(NEWEST.encode(), b"1")
        async with asyncio.timeout(10):
            while "older than the one running (6)" not in caplog.text:
                source.checked.clear()
                await source.checked.wait()
    assert source.running.record.id == 6
    # An older deploy's record, validly signed, replayed under a newer id: refused, 6 runs on.
    # Put apart (the pointer then read) and in one transaction (the watch carries it).
    one = await record(client, 1)
    assert one is not None
    await client.put(id_key(7).encode(), one.encode())
    await client.put(NEWEST.encode(), b"7")
    assert "its record is deploy 1's" in await refused(source, 7)
    await client.txn([], [_put(id_key(8), one.encode()), _put(NEWEST, b"8")])
    assert "its record is deploy 1's" in await refused(source, 8)
    assert source.running.record.id == 6
    await signed(client, graph("nine"), alice)  # what is pushed next runs
    assert await next_graph(graphs) == "nine"
    # Restarted, the host runs 9 again from what it kept, before reaching the cluster (it
    # keeps it once its graph settled, in a task: stopping finishes that).
    await source.aclose()
    again = DeploySource("h1", tmp_path / "prefix", source.policy)
    first = await again.start()
    assert first is not None and first.graph.name == "nine"
    await again.aclose()


async def test_a_trusted_keys_file_others_can_change_trusts_nothing(
    client: EtcdClient, host: tuple[DeploySource, AsyncIterator[Loaded], Key], tmp_path: Path
) -> None:
    """Whoever can add a line to the trusted keys file can make the host run anything, as
    root: a file (or a directory above it) that others may write is refused, at start (exit 2)
    and at every deploy (the file is read again each time), as sshd's StrictModes does."""
    source, graphs, alice = host
    assert source.policy.trusted_keys is not None
    source.policy.trusted_keys.chmod(0o666)
    await signed(client, graph("one"), alice)
    error = await refused(source, 1)
    assert f"(owner uid {os.geteuid()}, mode 0666): whoever can change it" in error, error
    source.policy.trusted_keys.chmod(0o644)
    await signed(client, graph("two"), alice)
    assert await next_graph(graphs) == "two"
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    keys = trusted_file(shared, alice)
    code, out = await asyncio.to_thread(
        run_mgmt, ["run", "--tmp-prefix", "--trusted-keys", str(keys), "empty"]
    )
    assert code == 2 and out.count("\n") == 1, out
    assert f"--trusted-keys: {shared} can be written by others (mode 0777)" in out, out


async def test_together_waits_for_the_live_hosts_that_run_deploys(
    tmp_path: Path, client: EtcdClient
) -> None:
    from mgmt.deploy.status import HOSTS, HostStatus, status_key

    alice = make_key(tmp_path / "keys", "alice")
    policy = Policy(trusted_file(tmp_path / "keys", alice), False, True, 1 << 20)
    source = DeploySource("h1", tmp_path / "prefix", policy)
    for host in ("h1", "h2", "plain"):  # alive; `plain` runs no deploys (no status key)
        await client.put((HOSTS + host).encode(), b"")
    await client.put(status_key("h2").encode(), HostStatus("h2").encode())
    await source.attach_world(EtcdWorld(client, "h1"))
    graphs = aiter(source)
    try:
        await signed(client, graph("one"), alice)
        async with asyncio.timeout(10):
            while source.status.ready != 1:
                source.checked.clear()
                await source.checked.wait()
        assert source.running is None  # h2 has not got it yet
        await client.put(status_key("h2").encode(), HostStatus("h2", ready=1).encode())
        assert await next_graph(graphs) == "one"  # not held back by `plain`
    finally:
        await source.aclose()


class CountingClient(EtcdClient):
    """The real client, counting its reads (`get`, `txn`: head, record, blob)."""

    reads = 0

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        self.reads += 1
        return await super().get(*args, **kwargs)

    async def txn(self, *args: Any, **kwargs: Any) -> Any:
        self.reads += 1
        return await super().txn(*args, **kwargs)


async def test_a_pushed_deploy_runs_from_the_watchs_events_without_reading_it(
    client: EtcdClient, tmp_path: Path
) -> None:
    alice = make_key(tmp_path / "keys", "alice")
    policy = Policy(trusted_file(tmp_path / "keys", alice), False, False, 1 << 20)
    own = CountingClient(client.endpoints, call_timeout=2)
    source = DeploySource("h1", tmp_path / "prefix", policy)
    try:
        await source.start()
        await source.attach_world(EtcdWorld(own, "h1"))
        graphs = aiter(source)
        await signed(client, graph("one"), alice)
        before = own.reads
        assert await next_graph(graphs) == "one"
        # Newest, record and blob came in the watch's events (one transaction): no read.
        assert own.reads == before
        # A change that does not carry them all (the newest pointer alone): read.
        await signed(client, graph("two"), alice)
        assert await next_graph(graphs) == "two"
        await client.put(NEWEST.encode(), b"1")
        async with asyncio.timeout(10):
            while own.reads == before:
                source.checked.clear()
                await source.checked.wait()
        assert source.running is not None and source.running.record.id == 2
    finally:
        await source.aclose()
        await own.close()


async def test_a_switch_is_recorded_once_its_graph_ran(
    client: EtcdClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host's status (running, converged) and its kept copy are written once the engine
    applied the deploy's graph and it settled: each write is one of every etcd member's log,
    and written at once they competed with the program's own first changes (a real engine
    and converger; the bound made long: this test decides when the graph is applied)."""
    from engine.engine import Engine
    from mgmt.converger import Converger
    from mgmt.deploy import source as deploy_source
    from mgmt.deploy.status import HostStatus, status_key

    monkeypatch.setattr(deploy_source, "HOLD", 60.0)
    alice = make_key(tmp_path / "keys", "alice")
    policy = Policy(trusted_file(tmp_path / "keys", alice), False, False, 1 << 20)
    engine = Engine(hostname="h1", prefix=tmp_path / "engine")
    converger = Converger(engine, timeout=0)
    source = DeploySource("h1", tmp_path / "prefix", policy)
    source.follow_convergence(converger)
    try:
        assert await source.start() is None
        await source.attach_world(EtcdWorld(client, "h1"))
        graphs = aiter(source)
        await signed(client, graph("one"), alice)
        async with asyncio.timeout(10):
            loaded = await anext(graphs)
            while source.running is None:
                source.checked.clear()
                await source.checked.wait()
        # Switched, not applied yet: nothing recorded.
        assert not (tmp_path / "prefix" / "deploy" / "current.json").exists()
        before = await client.get(status_key("h1").encode())  # "runs deploys", from the start
        assert before is not None and HostStatus.decode("h1", before).running == 0
        # Applied and settled: recorded, in one status write.
        revisions: list[bytes] = []
        written = asyncio.Event()

        def seen(events: Any) -> None:
            revisions.extend(bytes(e.kv.value) for e in events or [])

        key = status_key("h1").encode()
        unsubscribe = await client.subscribe(key, written.set, events=seen)
        newer = tmp_path / "prefix" / "deploy" / "2"  # as if deploy 2 were being prepared
        newer.mkdir()
        await engine.apply(loaded.graph)
        async with asyncio.timeout(30):  # hang-preventing bound only
            await written.wait()
        await unsubscribe()
        status = HostStatus.decode("h1", revisions[0])
        assert (status.running, status.converged) == (1, True), revisions
        await source.aclose()  # what it kept is whole once it stopped
        assert (tmp_path / "prefix" / "deploy" / "current.json").exists()
        assert newer.is_dir()  # only older deploys' files are dropped
    finally:
        await source.aclose()
        converger.close()
        await engine.stop(graceful=False)


# A host that keeps deploy 1, then deploy 2 and is killed (SIGKILL) right before it renames
# deploy 2's record into place: the moment the files can least afford it.
KEEPER = """
import hashlib, os, signal, sys
from pathlib import Path
from mgmt.deploy.bundle import Bundle
from mgmt.deploy.source import DeploySource, Policy, Prepared
from mgmt.deploy.store import Record

source = DeploySource("h1", Path(sys.argv[1]), Policy(None, True, False, 1 << 20))
prepared = []
for i in (1, 2):
    text = f"graph: g{i}\\nresources:\\n  noop:\\n    - name: n{i}\\n"
    data = Bundle("yaml", "g.yaml", {"g.yaml": text.encode()}).encode()
    rec = Record(i, i - 1, 0.0, hashlib.sha256(data).hexdigest(), "yaml", "g.yaml")
    prepared.append(Prepared(rec, data, None))
source._keep(prepared[0])

def hook(event, args):
    if event == "os.rename" and str(args[1]).endswith("current.json"):
        os.kill(os.getpid(), signal.SIGKILL)

sys.addaudithook(hook)
source._keep(prepared[1])
"""


async def test_a_host_killed_while_keeping_its_deploy_restarts_with_a_whole_one(
    tmp_path: Path,
) -> None:
    """The kept deploy's record and blob match whenever the agent is killed (kill -9 while it
    writes them after a switch): a restart runs the deploy kept before, not refused."""
    import signal
    import sys

    prefix = tmp_path / "prefix"
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", KEEPER, str(prefix))
    async with asyncio.timeout(30):  # hang-preventing bound only
        assert await proc.wait() == -signal.SIGKILL
    source = DeploySource("h1", prefix, Policy(None, True, False, 1 << 20))
    try:
        loaded = await source.start()
        assert loaded is not None, "the kept deploy was refused"
        assert loaded.graph.name == "g1"
    finally:
        await source.aclose()


async def test_what_a_killed_agent_left_half_written_is_removed_at_the_start(
    tmp_path: Path,
) -> None:
    """A deploy being extracted or kept when the agent was killed (kill -9) left its
    temporary files in the prefix; the next start removes them, keeps the rest."""
    kept = tmp_path / "prefix" / "deploy"
    (kept / ".extract-x1y2z3" / "files").mkdir(parents=True)
    (kept / ".extract-x1y2z3" / "files" / "big").write_bytes(b"x" * 4096)
    (kept / ".current.json.tmp").write_bytes(b"{")
    (kept / "7").mkdir()  # a deploy's directory: `_keep` decides
    source = DeploySource("h1", tmp_path / "prefix", Policy(None, True, False, 1 << 20))
    try:
        assert await source.start() is None  # nothing kept
    finally:
        await source.aclose()
    assert sorted(p.name for p in kept.iterdir()) == ["7"]


async def test_a_deploy_kept_as_before_the_blobs_were_named_by_hash_still_runs(
    tmp_path: Path,
) -> None:
    """An agent upgraded from a version that kept `current.blob` restarts with that deploy,
    and keeps it the new way (one blob, named by its hash)."""
    import hashlib

    kept = tmp_path / "prefix" / "deploy"
    kept.mkdir(parents=True)
    data = graph("old").encode()
    rec = Record(3, 2, 0.0, hashlib.sha256(data).hexdigest(), "yaml", "g.yaml")
    (kept / "current.blob").write_bytes(data)
    (kept / "current.json").write_bytes(rec.encode())
    source = DeploySource("h1", tmp_path / "prefix", Policy(None, True, False, 1 << 20))
    try:
        loaded = await source.start()
        assert loaded is not None and loaded.graph.name == "old"
    finally:
        await source.aclose()
    assert sorted(p.name for p in kept.glob("current.*")) == [
        f"current.{rec.hash}.blob",
        "current.json",
    ]
