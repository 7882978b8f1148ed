"""The cluster's fault suite, end to end: real `mgmt` agents with their real etcd on 127.0.0.1.

- a member killed with -9 and restarted rejoins as a voting member;
- etcd's data dir on a full file system (a real tmpfs): a clear error, the local graph still
  converges, and etcd starts once there is room (a nominee then joins, never starting a
  cluster of its own from a failed start's leftovers);
- a lost cluster (a lost quorum; the only etcd killed): the local graph still converges, and
  exports resume when it returns;
- the exports of a host whose agent is gone are withdrawn after `--export-grace`.

Every agent is started through `start()` below (one place to pass credentials to joiners).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from engine.errors import WorldError
from mgmt.cluster.client import EtcdClient, Member
from mgmt.cluster.cluster import LEAVING, has_member
from mgmt.cluster.identity import HOSTS, VOLUNTEERS
from mgmt.cluster.world import EtcdWorld
from tests.e2e.helpers import has_content, run_mgmt, small_fs, wait_logs, wait_path
from tests.e2e.test_cluster_e2e import (
    Host,
    client_of,
    exporter,
    fleet,
    holds,
    lacks,
    summary_written,
    wait_any_log,
    wait_dot,
    wait_promoted,
)
from tests.e2e.test_cluster_restart import remembers
from tests.mgmt.cluster.helpers import wait_pid_gone

T = TypeVar("T")


async def start(host: Host, seeds: list[Host] | None = None) -> None:
    """Start one agent (joining through `seeds`, if any)."""
    await host.start(seeds=seeds or [])


async def start_voters(hosts: list[Host], timeout: float = 20) -> None:
    """Start the first host, then the others joining through it; wait until all vote."""
    first, *others = hosts
    await start(first)
    for host in others:
        await start(host, seeds=[first])
    await wait_voters(hosts, [host.name for host in hosts], timeout=timeout)


def voters(members: list[Member]) -> list[str]:
    """The names of the started voting members."""
    return sorted(m.name for m in members if m.name and not m.is_learner)


async def asked_until(
    hosts: list[Host], ask: Callable[[EtcdClient], Awaitable[T | None]], timeout: float
) -> T:
    """What `ask(client)` (a client of `hosts`' members) gives once it is not None: asked again
    whenever their agents log a line, and at least every second (a change need not be logged:
    an election, a removal logged before it is applied); a WorldError is "not yet"."""
    daemons = [h.daemon for h in hosts if h.daemon is not None]
    async with client_of(*hosts) as client, asyncio.timeout(timeout):
        while True:
            for daemon in daemons:
                daemon._new_line.clear()
            with contextlib.suppress(WorldError):
                found = await ask(client)
                if found is not None:
                    return found
            waits = [asyncio.ensure_future(d._new_line.wait()) for d in daemons]
            try:
                await asyncio.wait(waits, timeout=1, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()


async def wait_voters(hosts: list[Host], names: list[str], timeout: float) -> None:
    """Wait until the member list is exactly `names`, all started and voting: re-read it
    whenever an agent logs a line (each membership step is logged by the leader or the
    member), and at least every second: a removal is logged before it is applied, and no line
    need follow it (a read between the two waited for a line in vain, at load 11). No member
    serving yet is "not yet" (an agent says when its member serves): the first host served
    5 s after its start at load 27, after the client had stopped retrying."""

    async def voting(client: EtcdClient) -> bool | None:
        members = await client.members()
        return (len(members) == len(names) and voters(members) == names) or None

    await asked_until(hosts, voting, timeout)


def three_exporters(tmp_path: Path) -> tuple[list[Host], Path, list[str]]:
    """Hosts h1-h3, each exporting `from <host>` to a file of its name in `shared`: the hosts,
    `shared` and those files' paths."""
    shared = tmp_path / "shared"
    hosts = [Host(f"h{i}", tmp_path) for i in (1, 2, 3)]
    for host in hosts:
        host.graph.write_text(exporter(shared, host.name, f"from {host.name}"))
    return hosts, shared, [f"{shared}/{h.name}" for h in hosts]


@pytest.mark.slow
async def test_a_member_killed_and_restarted_rejoins_as_a_voter(tmp_path: Path) -> None:
    """Three members; kill -9 one and wait until the leader removed it; restart it (its data
    dir is left over): it becomes a voting member again, and the others kept serving."""
    hosts, shared, paths = three_exporters(tmp_path)
    h1, h2, h3 = hosts
    async with fleet(hosts):
        await start(h1)
        for host in (h2, h3):
            await start(host, seeds=[h1])
        assert h1.daemon is not None
        await wait_promoted([h2, h3], 2, timeout=20)
        for host in hosts:
            await wait_dot(host, holds(*paths))
        await h3.kill()
        for pid in h3.pids():
            await wait_pid_gone(pid)
        # The others keep serving exports meanwhile.
        h2.graph.write_text(exporter(shared, "h2", "after the kill"))
        await wait_path(shared / "h2", has_content("after the kill\n"), 10)
        await wait_any_log([h1, h2], "member h3 is gone; removing it", timeout=20)
        await start(h3, seeds=[h1])
        # Within its election timeout plus a few seconds (a generous bound: ~1 s here, and
        # more than 10 s before the fix, when the leader had to drop the unstarted nominee).
        await wait_voters(hosts, ["h1", "h2", "h3"], timeout=8)
        assert not any("did not start" in line for h in hosts for line in h.daemon.lines)
        assert h3.daemon is not None
        h3.graph.write_text(exporter(shared, "h3", "h3 is back"))
        await wait_path(shared / "h3", has_content("h3 is back\n"), 10)


async def test_a_host_that_left_is_not_probed_until_it_comes_back(tmp_path: Path) -> None:
    """Three members; h2 stops cleanly (its row reads `left`): its member goes, and no host
    probes it (`probe h2: ...`, a client of its member alone, logged under --verbose): the
    leader removes a left host's member without one. Back, it is a voting member again."""
    hosts = [Host(f"h{i}", tmp_path, extra_args=["--verbose"]) for i in (1, 2, 3)]
    for host in hosts:
        host.graph.write_text(f"graph: {host.name}\nresources: {{}}\n")
    h1, h2, h3 = hosts
    async with fleet(hosts):
        await start_voters(hosts)
        assert h1.daemon is not None and h3.daemon is not None
        before = {h.name: len(h.daemon.lines) for h in (h1, h3) if h.daemon is not None}
        assert await h2.stop() == 0
        await wait_voters(hosts, ["h1", "h3"], timeout=20)
        for host in (h1, h3):
            assert host.daemon is not None
            after = host.daemon.lines[before[host.name] :]
            assert not [line for line in after if "probe h2" in line], "\n".join(after)
        await start(h2, seeds=[h1])
        await wait_voters(hosts, ["h1", "h2", "h3"], timeout=20)


@pytest.mark.slow
async def test_the_first_host_killed_removed_and_restarted_rejoins(tmp_path: Path) -> None:
    """The host started without --seeds (as the quick start shows) killed with -9; the others
    keep quorum and remove its member. Restarted with its original command, it rejoins the
    members it knew while running (<prefix>/cluster-peers.json, kept up to date by a member),
    not an isolated client: a voting member again, its exports published and collected."""
    hosts, shared, paths = three_exporters(tmp_path)
    h1, h2, h3 = hosts
    async with fleet(hosts):
        await start_voters(hosts)
        for host in hosts:
            await wait_dot(host, holds(*paths))
        peers = h1.root / "h1" / "prefix" / "cluster-peers.json"
        await wait_path(peers, remembers(sorted([h2.url, h3.url])))
        await h1.kill()
        for pid in h1.pids():
            await wait_pid_gone(pid)
        await wait_any_log([h2, h3], "member h1 is gone; removing it", timeout=20)
        await wait_voters([h2, h3], ["h2", "h3"], timeout=10)
        h1.graph.write_text(exporter(shared, "h1", "h1 is back"))
        await start(h1)
        assert h1.daemon is not None
        await h1.daemon.wait_log("joining the members this host knew last", timeout=20)
        await wait_voters(hosts, ["h1", "h2", "h3"], timeout=30)
        await wait_path(shared / "h1", has_content("h1 is back\n"), 20)
        await wait_dot(h1, holds(*paths), timeout=20)
        assert "failed to start" not in h1.daemon.log
        assert "was removed from its cluster" in h1.daemon.log

        # Again, its cluster-peers.json deleted: it knows no member, keeps its data dir (the
        # only record of them) and says so; restarted with --seeds, it rejoins.
        def removals() -> int:
            return sum(
                "member h1 is gone; removing it" in line
                for host in (h2, h3)
                for line in host.daemon.lines  # type: ignore[union-attr]
            )

        before = removals()  # the first removal's lines are in the logs already
        await h1.kill()
        await wait_logs(
            [h2.daemon, h3.daemon],  # type: ignore[list-item]
            lambda: removals() > before or None,
            timeout=20,
        )
        await wait_voters([h2, h3], ["h2", "h3"], timeout=10)
        peers.unlink()
        await start(h1)
        await h1.daemon.wait_log("this host knows no other member", timeout=20)
        assert has_member(h1.root / "h1" / "prefix" / "etcd")
        await h1.stop()
        await start(h1, seeds=[h2])
        await wait_voters(hosts, ["h1", "h2", "h3"], timeout=30)


@pytest.mark.slow
async def test_a_dead_hosts_exports_are_withdrawn_after_the_grace(tmp_path: Path) -> None:
    """`--export-grace 1`: once a killed host's lease expired, the leader withdraws its exports
    a second later, and every collector drops them; the host comes back: they are back. With
    `--export-grace -1` they are kept."""
    shared = tmp_path / "shared"
    h1 = Host("h1", tmp_path, extra_args=["--export-grace", "1"])
    h2 = Host("h2", tmp_path, extra_args=["--no-server"])
    h1.graph.write_text(exporter(shared, "h1", "one"))
    h2.graph.write_text(exporter(shared, "h2", "two"))
    paths = [f"{shared}/h1", f"{shared}/h2"]
    async with fleet([h1, h2]):
        await start(h1)
        await start(h2, seeds=[h1])
        await wait_dot(h1, holds(*paths))
        await h2.kill()
        assert h1.daemon is not None
        await h1.daemon.wait_log("h2's agent is gone: its exports are withdrawn in 1s")
        await h1.daemon.wait_log("withdrew the exports of h2")
        await wait_dot(h1, lacks(paths[1]))
        async with client_of(h1) as client:
            assert [r.host for r in await EtcdWorld(client, "t").res_list()] == ["h1"]
        await start(h2, seeds=[h1])
        await wait_dot(h1, holds(*paths))


@pytest.mark.slow
async def test_a_dead_hosts_exports_can_be_kept(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    h1 = Host("h1", tmp_path, extra_args=["--export-grace", "-1"])
    h2 = Host("h2", tmp_path, extra_args=["--no-server"])
    h1.graph.write_text(exporter(shared, "h1", "one"))
    h2.graph.write_text(exporter(shared, "h2", "two"))
    async with fleet([h1, h2]):
        await start(h1)
        await start(h2, seeds=[h1])
        await wait_dot(h1, holds(f"{shared}/h1", f"{shared}/h2"))
        await h2.kill()
        assert h1.daemon is not None
        await h1.daemon.wait_log("h2's agent is gone: its exports are kept (--export-grace -1)")
        async with client_of(h1) as client:
            assert sorted(r.host for r in await EtcdWorld(client, "t").res_list()) == ["h1", "h2"]
        assert "withdrew" not in h1.daemon.log


@pytest.mark.slow
async def test_etcd_on_a_full_file_system(tmp_path: Path) -> None:
    """The prefix (so etcd's data dir) on a 1 MiB file system, too small for etcd's 64 MiB
    write-ahead log: one clear error naming the data dir, the local graph converges and keeps
    being enforced; once the file system has room, etcd starts and the exports are published
    (a second host collects them)."""
    shared, local = tmp_path / "shared", tmp_path / "local"
    h1 = Host("h1", tmp_path)
    h2 = Host("h2", tmp_path, extra_args=["--no-server"])
    h1.graph.write_text(exporter(shared, "h1", "one", local=local))
    h2.graph.write_text(f"graph: h2\ncollect:\n  - {{kind: file, pattern: {shared}/}}\n")
    with small_fs(tmp_path / "h1" / "prefix", "1m") as resize:
        async with fleet([h1, h2]):
            await start(h1)
            assert h1.daemon is not None
            await h1.daemon.wait_log("the file system is full")
            error = next(line for line in h1.daemon.lines if "the file system is full" in line)
            assert f"{tmp_path}/h1/prefix/etcd" in error and "no space left on device" in error
            await wait_path(local, has_content("mine\n"))
            local.unlink()  # still enforced
            await wait_path(local, has_content("mine\n"))
            assert "Traceback" not in h1.daemon.log
            resize("size=200m")
            await h1.daemon.wait_log("etcd member h1 serving clients", timeout=20)
            await start(h2, seeds=[h1])
            await wait_dot(h2, holds(f"{shared}/h1"))
            assert sum("the file system is full" in line for line in h1.daemon.lines) == 1


def exports_to_each(
    shared: Path, content: str, local: Path, peers: list[str], host: str = "h1"
) -> str:
    """A graph with a local file and one export per peer (`<shared>/for-<peer>`, only that
    peer may collect it), so that a file on disk shows which peer got the export."""
    text = f'graph: {host}\nresources:\n  file:\n    - name: {local}\n      content: "mine\\n"\n'
    for peer in peers:
        text += f'    - name: "@@{shared}/for-{peer}"\n      content: "{content}\\n"\n'
        text += f"      meta: {{export: [{peer}]}}\n"
    return text


@pytest.mark.slow
async def test_a_lost_quorum_and_its_return(tmp_path: Path) -> None:
    """Three members; kill -9 two of them: the survivor says it lost the quorum (once, how many
    members answer; not the lease's `Deadline Exceeded`), keeps enforcing its local graph, and
    an export it changed meanwhile reaches the others once they are back (from their data
    dirs: nobody could remove them without a quorum); it says the quorum is back."""
    shared, local = tmp_path / "shared", tmp_path / "local"
    hosts = [Host(f"h{i}", tmp_path) for i in (1, 2, 3)]
    h1, h2, h3 = hosts
    for host in (h2, h3):
        host.graph.write_text(exporter(shared, host.name, f"from {host.name}"))
    h1.graph.write_text(exports_to_each(shared, "before", local, ["h2", "h3"]))
    async with fleet(hosts):
        await start_voters(hosts)
        for peer in ("h2", "h3"):
            await wait_path(shared / f"for-{peer}", has_content("before\n"), 10)
        await asyncio.gather(h2.kill(), h3.kill())
        for pid in h2.pids() + h3.pids():
            await wait_pid_gone(pid)
        assert h1.daemon is not None
        lost = "lost the cluster's quorum: 1 of 3 members reachable; waiting for 2 to answer"
        await h1.daemon.wait_log(lost, timeout=30)
        local.unlink()  # the local graph is still enforced without a quorum
        await wait_path(local, has_content("mine\n"))
        h1.graph.write_text(exports_to_each(shared, "during the outage", local, ["h2", "h3"]))
        await h1.daemon.wait_log("exports not published yet", timeout=20)
        local.unlink()
        await wait_path(local, has_content("mine\n"))
        # The operator's view says so at once (before: 6 s, then `Deadline Exceeded`), with the
        # rows as h1's member last knew them, each agent's liveness unknown.
        prefix = ["--prefix", str(tmp_path / "h1" / "prefix")]
        code, text = await asyncio.to_thread(run_mgmt, ["status", "--cluster", *prefix], 30)
        assert code == 1, text
        assert "cluster: no quorum: 1 of 3 voting members reachable (unreachable: h2, h3)" in text
        assert "whether each agent is alive is unknown (?)" in text, text
        for name in ("h1", "h2", "h3"):
            assert re.search(rf"^{name} +\? ", text, re.M), text
        assert "Deadline" not in text, text
        # The agent's own view (`mgmt status`, the page's /api/status) says so too, its rows
        # marked stale (before: the killed hosts stayed `converged`, and exit 0).
        note = "cluster: no quorum: 1 of 3 voting members reachable (unreachable: h2, h3)"
        text = ""
        async with asyncio.timeout(60):
            while note not in text:  # the agent reads the rows again every few seconds
                code, text = await asyncio.to_thread(run_mgmt, ["status", *prefix], 30)
        assert code == 1 and re.search(r"\(since \d\d:\d\d:\d\d\)$", text, re.M), text
        code, text = await asyncio.to_thread(run_mgmt, ["status", "--json", *prefix], 30)
        snapshot = json.loads(text)
        assert snapshot["cluster_note"].startswith("no quorum: 1 of 3"), snapshot
        assert {h["host"]: h["state"] for h in snapshot["hosts"]} == dict.fromkeys(
            ("h1", "h2", "h3"), "unknown"
        ), snapshot["hosts"]
        await asyncio.gather(start(h2, seeds=[h1]), start(h3, seeds=[h1]))
        for peer in ("h2", "h3"):
            await wait_path(shared / f"for-{peer}", has_content("during the outage\n"), 30)
        await wait_voters(hosts, ["h1", "h2", "h3"], timeout=20)
        await h1.daemon.wait_log("the cluster has its quorum again: ", timeout=30)
        assert h1.daemon.log.count("lost the cluster's quorum") == 1, h1.daemon.log
        assert "cannot hold a lease" not in h1.daemon.log, h1.daemon.log


@pytest.mark.slow
async def test_the_only_etcd_killed_and_restarted(tmp_path: Path) -> None:
    """A one-member cluster whose etcd (not its agent) is killed: a client host keeps
    enforcing its local graph, and its export changed meanwhile is collected once the agent
    has restarted its etcd."""
    shared, local = tmp_path / "shared", tmp_path / "local"
    h1 = Host("h1", tmp_path)
    h2 = Host("h2", tmp_path, extra_args=["--no-server"])
    h1.graph.write_text(f"graph: h1\ncollect:\n  - {{kind: file, pattern: {shared}/}}\n")
    h2.graph.write_text(exports_to_each(shared, "before", local, ["h1"], host="h2"))
    async with fleet([h1, h2]):
        await start(h1)
        await start(h2, seeds=[h1])
        await wait_path(shared / "for-h1", has_content("before\n"), 10)
        await wait_path(local, has_content("mine\n"))  # h2 publishes before it applies
        (etcd,) = h1.pids()
        os.kill(etcd, signal.SIGKILL)
        await wait_pid_gone(etcd)
        assert h2.daemon is not None
        h2.graph.write_text(exports_to_each(shared, "meanwhile", local, ["h1"], host="h2"))
        local.unlink()
        await wait_path(local, has_content("mine\n"))
        await wait_path(shared / "for-h1", has_content("meanwhile\n"), 20)
        assert len(h1.pids()) == 2  # the agent restarted its etcd


@pytest.mark.slow
async def test_a_nominee_on_a_full_file_system(tmp_path: Path) -> None:
    """A joining host whose prefix is full when it is nominated: a clear error, its local graph
    converges; once there is room its member joins the cluster and votes (it must not start a
    cluster of its own from what the failed start left behind)."""
    shared, local = tmp_path / "shared", tmp_path / "local"
    h1, h2 = Host("h1", tmp_path), Host("h2", tmp_path)
    h1.graph.write_text(f"graph: h1\ncollect:\n  - {{kind: file, pattern: {shared}/}}\n")
    h2.graph.write_text(exports_to_each(shared, "from h2", local, ["h1"], host="h2"))
    with small_fs(tmp_path / "h2" / "prefix", "1m") as resize:
        async with fleet([h1, h2]):
            await start(h1)
            await start(h2, seeds=[h1])
            assert h2.daemon is not None
            await h2.daemon.wait_log("the file system is full", timeout=20)
            await wait_path(local, has_content("mine\n"))
            await wait_path(shared / "for-h1", has_content("from h2\n"))  # through h1's etcd
            resize("size=200m")
            # A bound on a hang: at load, the waits above outlasted h2's three tries (1 s, 2 s
            # apart), and it cooled down (10 s, then 20 s) before it volunteered again.
            await wait_voters([h1, h2], ["h1", "h2"], timeout=60)
            assert h1.daemon is not None
            assert "started a new cluster" not in h2.daemon.log
            if "it stays a client and volunteers again" not in h2.daemon.log:
                assert "did not start" not in h1.daemon.log  # the nominee's own retry did it


@pytest.mark.slow
async def test_a_host_removed_by_the_leader_as_it_leaves_remembers_the_others(
    tmp_path: Path,
) -> None:
    """Three voters; h3 stops cleanly while another host holds the turn to leave, so the
    leader removes its member first (the "left" path of a clean leave). Its leave saves the
    other members (cluster-peers.json) as a leave of its own does: restarted without
    --seeds, it joins them (before 2026-12-05 only through --seeds)."""
    hosts = [Host(f"h{i}", tmp_path) for i in (1, 2)]
    hosts.append(Host("h3", tmp_path, extra_args=["--verbose"]))
    for host in hosts:
        host.graph.write_text(f"graph: {host.name}\nresources: {{}}\n")
    h1, h2, h3 = hosts
    peers = h3.root / "h3" / "prefix" / "cluster-peers.json"
    async with fleet(hosts):
        await start_voters(hosts)
        assert h3.daemon is not None
        await wait_path(peers, remembers(sorted([h1.url, h2.url])))
        # What its member wrote while it ran goes (as a record gone stale would, the members
        # changed since): the leave must write it itself.
        peers.unlink()
        async with client_of(h1, h2) as client:
            await summary_written(client, "h3")
            await client.put(LEAVING.encode(), b"another host")
            h3.daemon.signal(signal.SIGTERM)
            await wait_any_log([h1, h2], "member h3: its host left the cluster; removing it")
            # That line comes before the removal: the turn handed back at it let h3 remove
            # itself first (CI of 2026-12-06). Its etcd's exit (said under --verbose) is the
            # removal applied.
            await h3.daemon.wait_log("etcd member h3 was removed from its cluster", timeout=30)
            await client.delete(LEAVING.encode())
        assert await h3.daemon.wait(30) == 0
        await h3.daemon.__aexit__(None, None, None)
        assert "this host's member left the cluster (removed by the leader)" in h3.daemon.log
        assert remembers(sorted([h1.url, h2.url]))(peers), peers.read_text()
        await wait_voters([h1, h2], ["h1", "h2"], timeout=10)
        await start(h3)  # no --seeds
        assert h3.daemon is not None
        await h3.daemon.wait_log("joining the members this host knew last", timeout=20)
        await wait_voters(hosts, ["h1", "h2", "h3"], timeout=30)


async def leader_of(client: EtcdClient) -> str:
    """The raft leader's name, as the connected member knows it ("" during an election)."""
    status, members = await client.status(), await client.members()
    return next((m.name for m in members if m.id == status.leader), "")


async def wait_leader(hosts: list[Host], wanted: Callable[[str], bool], timeout: float) -> str:
    """The raft leader's name, asked through `hosts`' members, once `wanted(name)`: asked
    again whenever their agents log a line, and at least every second (an election moves the
    leadership without any agent saying so)."""

    async def leading(client: EtcdClient) -> str | None:
        name = await leader_of(client)
        return name if wanted(name) else None

    return await asked_until(hosts, leading, timeout)


def headless(hung: str) -> str:
    """What an agent says once the raft leader `hung` has had no live agent for the grace."""
    return f"the cluster's leader {hung} has no live agent (its liveness key is gone)"


def said_once_per_outage(host: Host, hung: str) -> None:
    """`host`'s agent said that `hung` has no live agent at most once until it said that a
    leader with a live agent leads (an election may hand the leadership back to the hung
    agent's etcd: a new outage, said anew), and never that `hung` has a live agent again."""
    assert host.daemon is not None
    said = False
    for line in host.daemon.lines:
        if headless(hung) in line:
            assert not said, host.daemon.log
            said = True
        elif "the cluster's leader is now " in line or "moved the cluster's leadership" in line:
            said = False
        assert f"the cluster's leader {hung} has a live agent again" not in line, line


# The hung-leader tests' etcd timings: an election only where the test drives one. With the
# suite's (10 ms heartbeats, 100 ms election timeout), a follower that missed its heartbeats
# for 100 ms under load started one (CI of 2026-12-06, load 11-14: the leadership moved
# before the grace, and the takeover the test is about never came). The grace (10 s) and the
# lease (3 s) are what they are with the suite's timings, or nearly.
STEADY = ["--etcd-heartbeat-interval", "100", "--etcd-election-timeout", "1000"]


def empty_host(name: str, tmp_path: Path) -> Host:
    """A host with an empty graph and the STEADY timings."""
    host = Host(name, tmp_path, extra_args=STEADY)
    host.graph.write_text("graph: g\nresources: {}\n")
    return host


@contextlib.asynccontextmanager
async def leader_agent_hung(tmp_path: Path) -> AsyncIterator[tuple[Host, list[Host]]]:
    """Four voters, h1-h4, with empty graphs; the agent of the raft leader's host stopped
    (SIGSTOP) until the block ends: (that host, the three others)."""
    hosts = [empty_host(f"h{i}", tmp_path) for i in (1, 2, 3, 4)]
    async with fleet(hosts):
        await start_voters(hosts, timeout=60)
        async with client_of(*hosts) as client:
            leader = await leader_of(client)
        hung = next(h for h in hosts if h.name == leader)
        assert hung.daemon is not None and hung.daemon.proc is not None
        hung.daemon.proc.send_signal(signal.SIGSTOP)
        try:
            yield hung, [h for h in hosts if h is not hung]
        finally:
            hung.daemon.proc.send_signal(signal.SIGCONT)


async def kill_one_not_leading(others: list[Host], leader: str) -> list[Host]:
    """Kill the last of `others` that is not `leader` and wait until a live one says its
    member is removed: the live ones."""
    victim = next(h for h in reversed(others) if h.name != leader)
    live = [h for h in others if h is not victim]
    await victim.kill()  # the leader removes its member
    await wait_any_log(live, f"member {victim.name} is gone; removing it", timeout=60)
    return live


async def hand_back_until_taken(others: list[Host], hung: Host, moved: str) -> None:
    """Until the first of `others` (by name: the taker) says `moved` (it took the leadership
    over): whenever the raft leader is another member than `hung`'s and no transfer from
    `hung`'s etcd is under way (the taker's move: its etcd.log says "leadership transfer
    starting", not followed by "... failed"; no one else asks it), an election gave the
    leadership away before the grace ended: it is handed back to `hung`'s member (etcd's
    MoveLeader, asked of the leader), and the agents count the grace again. Driven so, the
    takeover is what the test sees, every time. (The taker's own line comes only once its
    move has returned: a hand-back told by it fought the move, seen in a trial run.)"""
    taker = others[0].daemon
    assert taker is not None
    etcd_log = hung.root / hung.name / "prefix" / "etcd.log"
    since = etcd_log.stat().st_size  # what the hung member's etcd logged before

    def moving() -> bool:
        with etcd_log.open("rb") as log:
            log.seek(since)
            text = log.read()
        return text.rfind(b"leadership transfer starting") > text.rfind(
            b"leadership transfer failed"
        )

    async def taken(client: EtcdClient) -> bool | None:
        nonlocal since
        if moved in taker.log:
            return True
        status, members = await client.status(), await client.members()
        leader = next((m for m in members if m.id == status.leader), None)
        target = next((m for m in members if m.name == hung.name), None)
        if leader is None or target is None or leader.id == target.id or moving():
            return None
        since = etcd_log.stat().st_size
        probe = client.probe(leader, timeout=5)
        try:
            await probe.move_leader(target.id)
        finally:
            await probe.close()
        return None

    # The lease (3 s), the grace (10 s), the move, again after each hand-back: a bound on a hang.
    await asked_until(others, taken, timeout=180)


@pytest.mark.slow
async def test_a_hung_leader_agent_hands_the_leadership_over(tmp_path: Path) -> None:
    """The agent of the raft leader's host hangs (SIGSTOP) while its etcd leads on (tester9):
    the first live voter by name says after the grace that the leader has no live agent and
    takes the leadership over (etcd's MoveLeader); its agent reconciles (a killed host's
    member is removed). The other agents say so at most once: each does if its check after
    the grace comes before the move (all in the same second when idle; under load, CI's run
    of 2026-12-05: h1 and h4 said so and h1 moved the leadership, h3's next check found the
    new leader alive, and its line never came); one that said so names the leader that took
    over at its next check. An election that moves the leadership to a live member before
    the grace ends (CI of 2026-12-06, load 11-14) is undone (hand_back_until_taken): what
    follows it is the next test's."""
    async with leader_agent_hung(tmp_path) as (hung, others):
        leader, taker = hung.name, others[0]
        assert taker.daemon is not None
        moved = f"moved the cluster's leadership from {leader} (no live agent) to this host"
        await hand_back_until_taken(others, hung, moved)
        assert f"{headless(leader)}: " in taker.daemon.log, taker.daemon.log
        assert f"{taker.name} takes the leadership over" in taker.daemon.log
        now = await wait_leader(others, lambda name: name not in ("", leader), timeout=60)
        for host in await kill_one_not_leading(others, now):
            # One that said so names the leader that took over at its next check (its next
            # event or tick), never as the hung one's return. A check during the move (no
            # leader known) forgets nothing (ci6 of 2026-12-05: h3's line never came).
            assert host.daemon is not None
            if headless(leader) in host.daemon.log:
                await wait_any_log([host], f"the cluster's leader is now |{re.escape(moved)}", 30)
            said_once_per_outage(host, leader)


async def wait_lease_gone(hosts: list[Host], hung: str) -> None:
    """Wait until `hung`'s liveness and volunteer keys are gone (its lease expired): from then
    on, the leader checks its member at each reconcile (a voter no live agent volunteers: kept
    only while it answers)."""

    async def gone(client: EtcdClient) -> bool | None:
        keys = [HOSTS + hung, VOLUNTEERS + hung]
        return all([await client.get(key.encode()) is None for key in keys]) or None

    await asked_until(hosts, gone, timeout=30)


@pytest.mark.slow
async def test_a_hung_agents_member_that_lost_the_leadership_stays(tmp_path: Path) -> None:
    """As above, but the hung agent's etcd loses the leadership in an election before the
    grace ends (what a loaded machine did in CI of 2026-12-06; forced here: its etcd is
    stopped too until the others have elected another leader, then continued). The new
    leader's agent is alive: nothing is stalled, nobody need say anything, and it
    reconciles: a killed host's member is removed, and the hung agent's member, whose etcd
    answers, stays a voter (it is not a dead host's). Stays: once its lease has expired
    (its volunteer key gone), a new host (h5) volunteers, and the leader's reconcile that
    adds it has first checked every voter no agent volunteers (it would have removed the
    hung agent's member there, and added nobody in that pass); h5 becomes a voter beside it."""
    async with leader_agent_hung(tmp_path) as (hung, others):
        leader = hung.name
        (etcd,) = hung.pids()
        os.kill(etcd, signal.SIGSTOP)
        try:
            now = await wait_leader(others, lambda name: name not in ("", leader), timeout=30)
        finally:
            os.kill(etcd, signal.SIGCONT)
        live = await kill_one_not_leading(others, now)
        await wait_lease_gone(live, leader)
        h5 = empty_host("h5", tmp_path)
        async with fleet([h5]):
            await start(h5, seeds=live)
            names = sorted([leader, *(h.name for h in live), h5.name])
            await wait_voters([*live, h5], names, timeout=90)
        for host in live:
            said_once_per_outage(host, leader)


@pytest.mark.slow
async def test_a_nominee_whose_port_is_taken_backs_off_and_says_so_once(tmp_path: Path) -> None:
    """h2's peer port is held by another program (tester9): its nominated member fails, it
    says why once (naming the fix), stops volunteering for a while instead of being nominated
    again every few seconds, and becomes a voter once the port is free."""
    h1, h2 = Host("h1", tmp_path), Host("h2", tmp_path)
    for host in (h1, h2):
        host.graph.write_text("graph: g\nresources: {}\n")
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", h2.peer_port))
    squatter.listen()
    async with fleet([h1, h2]):
        try:
            await start(h1)
            await start(h2, seeds=[h1])
            assert h2.daemon is not None
            said = "this host's etcd member cannot start ("
            await h2.daemon.wait_log(said, timeout=60)
            await h2.daemon.wait_log("free that port or give this host other --server-urls")
            await h2.daemon.wait_log("volunteers again in 10s (then less often)")
            # The status table says so in h2's row (before: `yes ... converged`, no error).
            prefix = ["--prefix", str(tmp_path / "h1" / "prefix")]
            text = ""
            async with asyncio.timeout(30):
                while not re.search(
                    r"^h2 .*etcd member cannot start: .*already in use", text, re.M
                ):
                    _, text = await asyncio.to_thread(run_mgmt, ["status", "--cluster", *prefix])
        finally:
            squatter.close()
        await wait_voters([h1, h2], ["h1", "h2"], timeout=60)
        assert h2.daemon.log.count("address already in use") <= 2, h2.daemon.log
        assert h2.daemon.log.count(said) == 1, h2.daemon.log


@pytest.mark.slow
async def test_a_voter_whose_etcd_cannot_start_while_its_agent_lives_is_replaced(
    tmp_path: Path,
) -> None:
    """h1's etcd is killed and its peer port taken by another program: its agent (no seeds)
    retries for ever, alive, and before 2026-12-05 its member stayed a voter for good (tester9).
    The leader removes it after the grace; once the port is free, h1 joins again."""
    hosts = [Host(f"h{i}", tmp_path) for i in (1, 2, 3)]
    h1, h2, h3 = hosts
    for host in hosts:
        host.graph.write_text("graph: g\nresources: {}\n")
    async with fleet(hosts):
        await start_voters(hosts)
        (pid,) = h1.pids()
        squatter = socket.socket()
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            os.kill(pid, signal.SIGKILL)
            await wait_pid_gone(pid)
            squatter.bind(("127.0.0.1", h1.peer_port))  # before the agent's restart (1 s)
            squatter.listen()
            assert h1.daemon is not None
            await h1.daemon.wait_log("address already in use", timeout=30)
            said = "member h1 has not served for "
            await wait_logs(
                [h2.daemon, h3.daemon],  # type: ignore[list-item]
                lambda: True if any(said in h.daemon.log for h in (h2, h3) if h.daemon) else None,
                timeout=90,
            )
            await wait_voters(hosts, ["h2", "h3"], timeout=30)
        finally:
            squatter.close()
        await wait_voters(hosts, ["h1", "h2", "h3"], timeout=120)


@pytest.mark.slow
async def test_two_hosts_fighting_over_a_key_say_so_and_back_off(tmp_path: Path) -> None:
    """h1 and h2 declare different values for one kv key (tester9: 254 writes a second, and
    nothing said): each says once that another writer keeps changing it, and backs off (its
    writes spaced out, doubling)."""
    hosts = [Host(f"h{i}", tmp_path) for i in (1, 2)]
    for host in hosts:
        host.graph.write_text(
            f"graph: g\nresources:\n  kv:\n    - name: fight\n      value: {host.name}\n"
        )
    async with fleet(hosts):
        await start_voters(hosts)
        said = "another writer keeps changing fight (9 writes of this host's undone within"
        for host in hosts:
            assert host.daemon is not None
            await host.daemon.wait_log(said, timeout=60)
        # Backed off: the next repairs wait 1 s, then 2 s, 4 s ...: a few more, not hundreds.
        async with client_of(*hosts) as client:
            first = await client.scan(b"/_mgmt/strings/fight")
            # 5 said, then summed up (engine.churn.Quieted) while they come within 10 s of
            # each other; the first after 10 s of quiet (the backoff's 16 s) said in full.
            await hosts[0].daemon.wait_log("fight changed", count=6, timeout=90)
            assert "kv[fight]: repaired " in hosts[0].daemon.log
            last = await client.scan(b"/_mgmt/strings/fight")
        writes = last.last - first.first
        assert writes < 200, writes  # before: ~250 a second
        for host in hosts:
            assert host.daemon is not None
            assert host.daemon.log.count(said) == 1, host.daemon.log
        # A stop ends the wait before the next repair (up to 30 s): no write after it.
        for host in hosts:
            assert await host.stop() == 0
            assert host.daemon is not None
            after = host.daemon.log.split("SIGTERM: stopping gracefully")[1]
            assert "fight changed" not in after, host.daemon.log
