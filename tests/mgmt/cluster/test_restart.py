"""A data dir etcd can never start again (every voter removed: what hosts leaving together
used to leave behind): etcd's Go panic reaches the log, and the agent moves the data aside."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from engine.errors import WorldError
from mgmt.cluster.client import EtcdClient
from mgmt.cluster.cluster import KEEP_ASIDE, PEERS_FILE, Cluster, has_member, move_aside
from mgmt.cluster.datadir import OWNER_FILE
from mgmt.cluster.etcdproc import TAIL, EtcdProcess, EtcdSpec
from mgmt.cluster.options import Options
from tests.mgmt.cluster.helpers import members, options, pid_alive, wait_pid_gone

PANIC = "panic: removed all voters"


async def no_voters_left(tmp_path: Path) -> tuple[Path, Options]:
    """A real etcd data dir whose only member removed itself (etcd allows it with
    --strict-reconfig-check=false, as the agents run it); its options."""
    async with members(tmp_path) as (node,):
        client = EtcdClient([node.client_url], call_timeout=2)
        try:
            (own,) = await client.members()
            with pytest.raises(WorldError):  # the member stops as it applies its removal
                await client.member_remove(own.id)
        finally:
            await client.close()
        async with asyncio.timeout(20):
            await node.proc.exited.wait()
    return tmp_path / node.name, node.opts


async def test_etcds_panic_is_the_reason_and_its_last_lines_are_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir, opts = await no_voters_left(tmp_path)
    proc = EtcdProcess(EtcdSpec("m0", data_dir, opts))
    caplog.set_level(logging.ERROR, logger="cluster")
    try:
        with pytest.raises(WorldError, match=f"etcd exited at start: {PANIC}"):
            await proc.start(timeout=30)
    finally:
        await proc.stop()
    assert proc.pid is not None and not pid_alive(proc.pid)
    said = [r.getMessage() for r in caplog.records]
    assert f"etcd m0: {PANIC}" in said  # the operator sees what etcd said
    assert any(f"failed to start (code 2): {PANIC}" in line for line in said)
    assert 2 <= sum(line.startswith("etcd m0: ") for line in said) <= TAIL + 2  # bounded


async def test_a_host_without_seeds_moves_the_dead_data_aside_and_starts_anew(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir, _ = await no_voters_left(tmp_path / "old")
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    data_dir.rename(prefix / "etcd")
    (prefix / OWNER_FILE).write_text("")  # ours (mgmt.cluster.datadir)
    caplog.set_level(logging.INFO, logger="cluster")
    cluster = Cluster(options("h1"), prefix)
    try:
        assert await cluster.start(wait=30)
        await cluster.world.str_set("k", "new cluster")
        assert await cluster.world.str_get("k") == "new cluster"
        assert cluster.member is not None and cluster.member.pid is not None
        pid = cluster.member.pid
    finally:
        await cluster.stop()
    await wait_pid_gone(pid)
    (aside,) = prefix.glob("etcd.unusable-*")
    # Its keys kept, for a manual recovery; not its write-ahead log (64 MB preallocated: on a
    # small file system the copy kept etcd from starting again).
    assert (aside / "member" / "snap" / "db").is_file() and not has_member(aside)
    said = "\n".join(r.getMessage() for r in caplog.records)
    assert f"etcd cannot start from its data dir ({PANIC}): moved it to {aside} (its keys, " in said
    assert f"etcdctl snapshot restore {aside}/member/snap/db --skip-hash-check" in said
    assert f"the {KEEP_ASIDE} newest such copies are kept" in said
    assert "starting a new cluster" in said and "started a new cluster" in said


async def test_a_host_that_left_joins_the_members_it_left_rather_than_a_new_cluster(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No --seeds, no data dir, but it left a cluster at its last stop: it waits for those
    members as a client and volunteer (it used to start a second cluster of its own)."""
    (tmp_path / PEERS_FILE).write_text('["http://127.0.0.1:9"]\n')
    caplog.set_level(logging.INFO, logger="cluster")
    cluster = Cluster(options("h1"), tmp_path)
    try:
        assert not await cluster.start(wait=0.5)
        assert cluster.options.seeds == ["http://127.0.0.1:9"]
        assert not cluster.serving and cluster.member is None
    finally:
        await cluster.stop()
    assert f"joining the members this host knew last ({tmp_path / PEERS_FILE}: " in caplog.text
    assert not (tmp_path / "etcd").exists()


def test_what_is_moved_aside_is_bounded(tmp_path: Path) -> None:
    """Each unusable data dir keeps its keys only, and only the newest KEEP_ASIDE copies stay
    (older ones, here 3, are deleted): repeated failures cannot fill the file system."""
    for i in range(3):
        old = tmp_path / f"etcd.unusable-2026010{i}T000000"
        (old / "member" / "snap").mkdir(parents=True)
        (old / "member" / "snap" / "db").write_bytes(b"old")
        os.utime(old, (1000 + i, 1000 + i))
    data = tmp_path / "etcd"
    (data / "member" / "wal").mkdir(parents=True)
    (data / "member" / "snap").mkdir(parents=True)
    (data / "member" / "wal" / "0.wal").write_bytes(b"\0" * 4096)
    (data / "member" / "snap" / "db").write_bytes(b"k" * 100)
    aside, kept = move_aside(data)
    assert not data.exists() and kept == 100
    assert not (aside / "member" / "wal").exists()
    left = sorted(p.name for p in tmp_path.glob("etcd.unusable-*"))
    assert len(left) == KEEP_ASIDE and aside.name in left
    assert "etcd.unusable-20260102T000000" in left  # the newest older one
