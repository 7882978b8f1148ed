"""The supervised etcd process: readiness as an event, clean stop, no orphans, flags."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import textwrap
from pathlib import Path

import grpc
import pytest

from engine.errors import WorldError
from mgmt.cluster.etcdproc import EtcdProcess, EtcdSpec
from tests.mgmt.cluster.helpers import free_ports, members, options, pid_alive, wait_pid_gone

ROOT = Path(__file__).resolve().parents[3]


async def test_starts_ready_and_stops_cleanly(tmp_path: Path) -> None:
    async with members(tmp_path) as (node,):
        assert node.proc.ready.is_set() and node.proc.running
        assert pid_alive(node.pid)
        argv = node.proc.spec.argv()
        assert "--strict-reconfig-check=false" in argv
        assert argv[argv.index("--auto-compaction-retention") + 1] == "10m"
        assert argv[argv.index("--heartbeat-interval") + 1] == "10"
    assert not node.proc.running  # members() also checked that the pid is gone


async def test_exit_at_start_is_a_world_error_with_etcds_reason(tmp_path: Path) -> None:
    async with members(tmp_path) as (node,):
        port = int(node.client_url.rsplit(":", 1)[1])
        clash = options("clash", client_port=port, peer_port=free_ports(1)[0])
        initial = "clash=" + clash.server_urls[0]
        proc = EtcdProcess(EtcdSpec("clash", tmp_path / "clash", clash, initial))
        try:
            with pytest.raises(WorldError, match=r"etcd exited at start: .*address already in use"):
                await proc.start(timeout=30)
        finally:
            await proc.stop()
        assert proc.pid is not None and not pid_alive(proc.pid)


async def test_quota_and_compaction_flags(tmp_path: Path) -> None:
    spec = EtcdSpec("q", tmp_path / "q", options(quota_bytes=1 << 20, compaction_retention="1h"))
    argv = spec.argv()
    assert argv[argv.index("--quota-backend-bytes") + 1] == str(1 << 20)
    assert argv[argv.index("--auto-compaction-mode") + 1] == "periodic"
    assert "--initial-cluster" not in argv  # a data dir that holds a member needs none


async def test_missing_binary_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mgmt.cluster.etcdproc.ETCD", "etcd-that-does-not-exist")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("os.access", lambda *_: False)
    with pytest.raises(WorldError, match=r"no etcd binary found .*etcd-server"):
        EtcdSpec("x", tmp_path / "x", options()).argv()


async def test_etcd_dies_with_a_killed_agent(tmp_path: Path) -> None:
    """kill -9 of the process that started etcd kills etcd too (PR_SET_PDEATHSIG)."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.path.insert(0, {str(ROOT)!r})
        from mgmt.cluster.etcdproc import EtcdProcess, EtcdSpec
        from tests.mgmt.cluster.helpers import options

        async def main():
            opts = options("orphan")
            proc = EtcdProcess(EtcdSpec("orphan", __import__("pathlib").Path({str(tmp_path)!r}) / "d",
                               opts, "orphan=" + opts.server_urls[0]))
            await proc.start()
            print(proc.pid, flush=True)
            await asyncio.Event().wait()

        asyncio.run(main())
        """
    )
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE, cwd=ROOT
    )
    assert agent.stdout is not None
    async with asyncio.timeout(30):
        line = await agent.stdout.readline()
    etcd_pid = int(line)
    assert pid_alive(etcd_pid)
    os.kill(agent.pid, signal.SIGKILL)
    await agent.wait()
    await wait_pid_gone(etcd_pid, timeout=10)
    assert not pid_alive(etcd_pid)


async def test_a_member_started_after_the_cluster_changed_says_so_in_words(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A member nominated with the cluster's members at its addition, started after another
    member was removed (a whole-cluster restart, hosts leaving and joining): etcd exits with
    "discovery failed: error validating peerURLs {...}: member count is unequal". Said in
    words, one warning line (not an error: the host volunteers again); the raw error at debug."""
    from mgmt.cluster.client import EtcdClient
    from mgmt.cluster.etcdproc import IN_WORDS

    async with members(tmp_path, 2) as (node, gone):
        client = EtcdClient([node.client_url])
        try:
            late = options("late")
            _new, at_add = await client.member_add_learner(late.server_urls)
            removed = next(m for m in await client.members() if m.name == gone.name)
            await client.member_remove(removed.id)  # meanwhile
        finally:
            await client.close()
        initial = ",".join(f"{m.name or 'late'}={u}" for m in at_add for u in m.peer_urls)
        proc = EtcdProcess(EtcdSpec("late", tmp_path / "late", late, initial, "existing"))
        caplog.set_level("DEBUG", logger="cluster")
        try:
            with pytest.raises(WorldError) as raised:
                await proc.start(timeout=30)
        finally:
            await proc.stop()
    words = IN_WORDS["member count is unequal"]
    assert str(raised.value) == f"etcd exited at start: {words}"
    said = [r for r in caplog.records if "failed to start (code" in r.getMessage()]
    assert [r.levelname for r in said] == ["WARNING"]
    assert said[0].getMessage() == (
        f"etcd member late failed to start (code 1): {words}; the local graph keeps running "
        "without the cluster"
    )
    raw = [r.getMessage() for r in caplog.records if "member count is unequal" in r.getMessage()]
    assert raw and all(r.levelname == "DEBUG" for r in caplog.records if r.getMessage() in raw)


async def test_a_lease_renewed_as_its_etcd_dies_is_never_a_raw_grpc_error(tmp_path: Path) -> None:
    """Lease keepalives in flight when their etcd is killed: a keepalive's write on the broken
    stream failed with gRPC's own "Internal error from Core" (tester9 under load: `cannot hold
    a lease: lease keepalive: Internal error from Core`), not retried. Now it is a broken
    connection: retried, and said in words if it is the last error."""
    from mgmt.cluster.client import EtcdClient

    async with members(tmp_path) as (node,):
        client = EtcdClient([node.client_url], retry_for=1.0)
        errors: list[str] = []
        renewed = [0]
        streaming, failing, stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
        try:
            lease = await client.lease_grant(30)

            async def renew() -> None:
                while not stop.is_set():
                    try:
                        await client.lease_keepalive(lease)
                        renewed[0] += 1
                        if renewed[0] >= 3000:  # renewals stream in: writes are in flight
                            streaming.set()
                    except WorldError as err:
                        errors.append(str(err))
                        if len(errors) >= 300:  # as many failures as renewals in flight
                            failing.set()

            tasks = [asyncio.create_task(renew()) for _ in range(300)]
            async with asyncio.timeout(60):
                await streaming.wait()
            os.kill(node.pid, signal.SIGKILL)
            async with asyncio.timeout(60):
                await failing.wait()
            stop.set()
            await asyncio.gather(*tasks)
        finally:
            await client.close()
            await node.proc.stop()
    assert not [e for e in errors if "Internal error from Core" in e], errors[:3]
    assert all(e.startswith("lease keepalive: ") for e in errors)


async def _keepalive_streams(url: str) -> int:
    """How many LeaseKeepAlive streams the etcd member at `url` has seen opened (its own
    Prometheus counter, at /metrics on its client port)."""
    import urllib.request

    def read() -> str:
        with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
            return str(resp.read().decode())

    for line in (await asyncio.to_thread(read)).splitlines():
        if line.startswith("grpc_server_started_total{") and '"LeaseKeepAlive"' in line:
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


async def test_a_lease_renewed_again_and_again_keeps_one_stream(tmp_path: Path) -> None:
    """A held lease is renewed on one stream (etcd counts the streams opened), which is
    opened again after a failed renewal; a revoked lease's renewal says 0 (gone)."""
    from mgmt.cluster.client import EtcdClient

    async with members(tmp_path) as (node,):
        client = EtcdClient([node.client_url], retry_for=1.0)
        try:
            lease = await client.lease_grant(30)
            first = await _keepalive_streams(node.client_url)
            async with client.renewal(lease) as renew:
                assert [await renew() for _ in range(5)] == [30] * 5
                assert await _keepalive_streams(node.client_url) == first + 1
                begun = asyncio.Event()

                async def begin() -> int:
                    begun.set()  # seen once it waits (on its request or its answer)
                    return await renew()

                task = asyncio.create_task(begin())
                await begun.wait()
                task.cancel()  # its answer, if any, is left on the stream
                await asyncio.gather(task, return_exceptions=True)
                assert await renew() == 30  # on a new stream: no answer of before read
                assert await _keepalive_streams(node.client_url) == first + 2
                await client.lease_revoke(lease)
                assert await renew() == 0
            assert await client.lease_keepalive(lease) == 0  # one-shot: a stream of its own
            assert await _keepalive_streams(node.client_url) == first + 3
        finally:
            await client.close()


async def test_etcd_keeps_serving_while_its_agent_hangs(tmp_path: Path) -> None:
    """The agent that started etcd is stopped (SIGSTOP: it reads nothing) while etcd logs a
    flood (`--log-level debug`: a line per request, ~1.2 MB here): etcd keeps answering; it
    blocked in a log write once the 64 KiB of the pipe it used to log to were full, and every
    request with it. Continued, the agent reads what etcd wrote meanwhile and what follows,
    and frees what it read but the last KEEP bytes (64 KiB here): the file holds on disk a
    small part of what etcd wrote (mgmt/cluster/etcdlog.py)."""
    from mgmt.cluster.client import EtcdClient

    log_file = tmp_path / "d.log"
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.path.insert(0, {str(ROOT)!r})
        from mgmt.cluster import etcdlog
        from mgmt.cluster.etcdproc import EtcdProcess, EtcdSpec
        from tests.mgmt.cluster.helpers import options

        etcdlog.KEEP = etcdlog.STEP = 64 * 1024

        async def main():
            opts = options("hung")
            spec = EtcdSpec("hung", __import__("pathlib").Path({str(tmp_path)!r}) / "d",
                            opts, "hung=" + opts.server_urls[0], extra=["--log-level", "debug"])
            proc = EtcdProcess(spec)
            await proc.start()
            print(proc.pid, opts.advertise_client_urls[0], flush=True)
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader()
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
            while text := (await reader.readline()).decode().strip():
                seen = proc.log_event(text)  # a line etcd writes from now on
                print("armed", flush=True)
                await seen.wait()
                print("seen", flush=True)
            await proc.stop()

        asyncio.run(main())
        """
    )
    agent = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert agent.stdin is not None and agent.stdout is not None
    try:
        async with asyncio.timeout(30):
            pid, url = (await agent.stdout.readline()).decode().split()
        client = EtcdClient([url], call_timeout=10, retry_for=10)
        try:
            os.kill(agent.pid, signal.SIGSTOP)
            try:
                before = log_file.stat().st_size
                # A debug line per request, ~2.4 KB with this key; etcd's logger (zap) samples
                # them: ~100 a second. Until 8 pipes' worth are written (2-3 s here).
                key, written = b"k" * 2000, 0
                async with asyncio.timeout(120):  # a bound on a hang
                    while written <= 8 * 64 * 1024:
                        await asyncio.gather(*(client.put(key, b"%d" % i) for i in range(20)))
                        written = log_file.stat().st_size - before
                assert pid_alive(int(pid))
            finally:
                os.kill(agent.pid, signal.SIGCONT)
            agent.stdin.write(b"request stats\n")
            async with asyncio.timeout(60):
                assert await agent.stdout.readline() == b"armed\n"
                # etcd's logger keeps 100 lines of a message a second, then one in 100: a
                # put soon after the flood may not be logged; one in the next second is.
                seen = asyncio.ensure_future(agent.stdout.readline())
                while not seen.done():
                    await client.put(b"after", b"the stop")
                    await asyncio.wait([seen], timeout=0.2)
                assert seen.result() == b"seen\n"
            # "seen" may come from a line of the backlog (the agent arms as it reads on): what
            # it read is freed as it reads, not by then. Each put is a round trip, the pace.
            async with asyncio.timeout(60):  # a bound on a hang
                while log_file.stat().st_blocks * 512 >= 8 * 64 * 1024:
                    await client.put(b"after", b"the stop")
        finally:
            await client.close()
        assert log_file.stat().st_size > 8 * 64 * 1024  # what etcd wrote, most of it freed
        agent.stdin.close()
        async with asyncio.timeout(30):
            assert await agent.wait() == 0
        await wait_pid_gone(int(pid))
    finally:
        if agent.returncode is None:
            agent.kill()
            await agent.wait()


async def test_a_file_system_full_to_the_last_block_is_named(tmp_path: Path) -> None:
    """etcd's log is a file in the prefix (mgmt/cluster/etcdlog.py): on a file system full to
    the last block, etcd cannot write its error there either. The start failure says the
    file system is full (the agent's "the file system is full" line keys on it), not "no error
    logged"."""
    from tests.e2e.helpers import small_fs

    prefix = tmp_path / "prefix"
    with small_fs(prefix, "1m"):
        fd = os.open(prefix / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            with pytest.raises(OSError, match="No space left on device"):
                while True:
                    os.write(fd, b"x" * 4096)
        finally:
            os.close(fd)
        opts = options("full")
        proc = EtcdProcess(EtcdSpec("full", prefix / "etcd", opts, "full=" + opts.server_urls[0]))
        try:
            with pytest.raises(WorldError, match=r"exited at start: no space left on device \("):
                await proc.start(timeout=30)
        finally:
            await proc.stop()


async def test_a_log_that_cannot_be_read_is_said_and_stops_etcd(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The agent's reading of etcd's log fails (here its descriptor cannot be read: EBADF): the
    error is logged and etcd is stopped, so that the member is not taken for exited while it
    runs on."""
    async with members(tmp_path) as (node,):
        etcd_log = node.proc._log
        assert etcd_log is not None
        os.close(etcd_log.fd)
        etcd_log.fd = os.open(os.devnull, os.O_WRONLY)  # (closed by the reader's end)
        etcd_log._changed.set()  # as a write by etcd would
        await asyncio.wait_for(node.proc.exited.wait(), 30)
        await wait_pid_gone(node.pid)
        assert not pid_alive(node.pid)
        said = [r for r in caplog.records if "its log could not be read" in r.getMessage()]
        assert said and said[0].levelname == "ERROR" and said[0].exc_info
        assert etcd_log.fd == -1


@pytest.mark.parametrize(
    "line",
    [
        '{"level":"warn","msg":"the member has been permanently removed from the cluster"}',
        "panic: failed to find local ID in cluster members",  # etcd 3.4, a Status just after
    ],
)
async def test_what_etcd_says_as_its_member_is_removed_marks_it_removed(
    tmp_path: Path, line: str
) -> None:
    """The lines etcd writes when its member was removed, in JSON or as a Go panic (ci3,
    2026-12-07: the panic alone was written, the leave then said "stays in the cluster")."""
    proc = EtcdProcess(EtcdSpec("removed", tmp_path / "removed", options("removed")))
    proc._line('{"level":"info","msg":"ready to serve client requests"}')
    assert not proc.removed
    proc._line(line)
    assert proc.removed and proc.said_removed.is_set()


async def removed_under_requests(tmp_path: Path) -> str:
    """Two real members; the second removed while Status requests hammer it, until it exits:
    its panic line ("" if it did not panic)."""
    from aetcd import rpc

    from mgmt.cluster.client import EtcdClient

    async with members(tmp_path, 2) as (keeper, gone):
        keep = EtcdClient([keeper.client_url])
        asked = EtcdClient([gone.client_url], call_timeout=1, retry_for=1)
        try:
            conn = await asked.connection()

            async def hammer() -> None:  # requests until the removed member exits
                while not gone.proc.exited.is_set():
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        await conn.maintenance.Status(rpc.StatusRequest(), **asked._opts(conn))

            member = next(m for m in await keep.members() if m.name == gone.name)
            requests = asyncio.create_task(hammer())
            try:
                await keep.member_remove(member.id)
                async with asyncio.timeout(30):
                    await gone.proc.exited.wait()
            finally:
                requests.cancel()
                await asyncio.gather(requests, return_exceptions=True)
        finally:
            await keep.close()
            await asked.close()
        assert gone.proc.removed
        return gone.proc.panicked


async def test_a_removed_members_panic_is_not_said_as_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """etcd 3.4 panics ("failed to find local ID in cluster members") when a request reaches
    its member as it stops after its removal: a clean leave (the agent's own status probe is
    such a request) logged the panic and a Go stack at ERROR in about one stop of two under
    load (found by test_cluster's relay test, 2026-12-07). The removal is said in words; the
    panic's lines at debug only. Real etcd, until one such panic is seen (5 removals in 6 here;
    bounded)."""
    caplog.set_level(logging.DEBUG, logger="cluster")
    panicked = ""
    for attempt in range(10):
        panicked = await removed_under_requests(tmp_path / str(attempt))
        if "failed to find local ID" in panicked:
            break
    assert panicked, "etcd never panicked as its member was removed: nothing was tested"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors
    said = [r for r in caplog.records if "failed to find local ID" in r.getMessage()]
    assert said and all(r.levelno == logging.DEBUG for r in said)
    assert "was removed from its cluster" in caplog.text
