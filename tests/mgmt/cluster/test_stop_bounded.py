"""A stop ends in bounded time: the etcd client closed under a call in flight, a call made after
the close, a lease stream that ended between two renewals, a task that ignores its
cancellation, a graceful stop cancelled by a second signal. Real etcd on 127.0.0.1 (stopped with SIGSTOP, by the pid this test started)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from aetcd import rpc

from engine.engine import Engine
from engine.errors import WorldError
from mgmt import stuck
from mgmt.cluster.client import EtcdClient
from mgmt.status.cluster import ClusterStatus
from mgmt.status.model import StatusModel
from tests.mgmt.cluster.helpers import members
from tests.mgmt.test_log_wedge import WEDGE_STDERR
from tests.sigstop import stopped

BOUND = 30.0  # seconds: a generous bound against a hang, never a timing
ROOT = Path(__file__).resolve().parents[3]  # where `python -c` finds mgmt


async def test_a_call_in_flight_as_its_client_closes_fails_at_once(tmp_path: Path) -> None:
    """A call waits on a member that hangs when its client is closed (the agent stops): it
    fails at once. Before, its channel's closing looked like a failover's: it waited for a
    connection that a closed client never makes again, until `retry_for` ran out (here: an
    hour)."""
    async with members(tmp_path) as (node,):
        client = EtcdClient([node.client_url], call_timeout=3600, retry_for=3600)
        try:
            async with asyncio.timeout(BOUND):
                await client.put(b"k", b"v")  # connected
            async with stopped(node.pid):
                sent = asyncio.Event()

                async def get(conn: Any) -> Any:  # the client's get, telling when it is sent
                    answer = conn.kv.Range(rpc.RangeRequest(key=b"k"), **client._opts(conn))
                    sent.set()
                    return await answer

                call = asyncio.create_task(client.call("get k", get))
                async with asyncio.timeout(BOUND):
                    await sent.wait()  # the request sent, its answer awaited
                await client.close()
                async with asyncio.timeout(BOUND):
                    with pytest.raises(WorldError, match="the etcd client is closed"):
                        await call
        finally:
            await client.close()


async def test_a_closed_client_connects_no_more(tmp_path: Path) -> None:
    """A call or watch made after the close fails at once (WorldError), and nothing connects
    again. Before, a call started a new connection (and its maintainer task), which no one
    closed: a stop's leftover, running until the process ended."""
    async with members(tmp_path) as (node,):
        client = EtcdClient([node.client_url])
        async with asyncio.timeout(BOUND):
            await client.put(b"k", b"v")
        await client.close()
        async with asyncio.timeout(BOUND):
            with pytest.raises(WorldError, match="get k: the etcd client is closed"):
                await client.get(b"k")
            with pytest.raises(WorldError, match="the etcd client is closed"):
                await client.subscribe(b"k", lambda: None)
            assert not await client.reconnected(grace=BOUND)  # (not waited for)
            with pytest.raises(WorldError, match="the etcd client is closed"):
                await client.connection()
        assert client._maintainer is None
        assert client.endpoint is None


async def test_a_lease_stream_that_ended_between_renewals_is_opened_again(
    tmp_path: Path,
) -> None:
    """The LeaseKeepAlive stream, kept open between renewals, ended meanwhile (etcd ended it,
    or its call was cancelled): the next renewal opens a new one. Before, it wrote to the
    ended one: asyncio.InvalidStateError, which neither a renewal's caller (WorldError) nor
    the failover took: the agent's lease holder died, and its liveness key expired."""
    async with members(tmp_path) as (node,):
        client = EtcdClient([node.client_url])
        try:
            async with asyncio.timeout(BOUND):
                lease = await client.lease_grant(30)
                async with client.renewal(lease) as renew:
                    assert await renew() > 0
                    stream = renew.__self__  # type: ignore[attr-defined]
                    stream._call.cancel()  # the stream ends, its connection stays
                    assert await renew() > 0
        finally:
            await client.close()


async def test_a_task_that_ignores_its_cancellation_is_said_and_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`stuck.cancel_within` (every wait of the cluster's stop for a task it cancelled) waits
    its bound, no longer, and says which task did not end and where it waited."""
    release = asyncio.Event()

    started = asyncio.Event()

    async def stubborn() -> None:
        started.set()  # (then waits, in the same step)
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    task = asyncio.create_task(stubborn(), name="stubborn")
    async with asyncio.timeout(BOUND):
        await started.wait()
    caplog.set_level(logging.WARNING, "cluster")
    async with asyncio.timeout(BOUND):
        ended = await stuck.cancel_within([task], 0.1, "test", logging.getLogger("cluster"))
    assert not ended
    assert "test: 1 task(s) did not end within 0.1s of their cancellation" in caplog.text
    assert "stubborn @ test_stop_bounded.py:" in caplog.text
    assert "in stubborn" in caplog.text
    release.set()
    await task


async def test_a_status_stop_cancelled_as_its_put_waits_lets_the_forced_stop_run(
    tmp_path: Path,
) -> None:
    """The agent's stop of its cluster status waits for the summary's put in flight (its
    member hangs); a second signal cancels that stop and runs it again without grace (the
    agent's `_step`). The forced one ends, without raising: before, it awaited the put that
    the cancellation had cancelled, re-raised CancelledError, and the agent's stop ended
    there, before the cluster's (etcd left running)."""
    engine = Engine(hostname="h", prefix=tmp_path / "prefix")
    async with members(tmp_path) as (node,):
        client = EtcdClient([node.client_url], call_timeout=3600, retry_for=3600)
        status = ClusterStatus(StatusModel(engine, "h"), client, "h")
        try:
            async with asyncio.timeout(BOUND):
                await client.put(b"k", b"v")  # connected
            async with stopped(node.pid):
                status._putting = asyncio.ensure_future(client.put(status.key, b"{}"))
                closed, close = asyncio.Event(), status._tasks.close

                async def closing() -> None:  # the stop's step before its wait for the put
                    await close()
                    closed.set()

                status._tasks.close = closing  # type: ignore[method-assign]
                graceful = asyncio.create_task(status.stop(graceful=True))
                async with asyncio.timeout(BOUND):
                    await closed.wait()  # then, in the same step, it waits for the put
                graceful.cancel()
                async with asyncio.timeout(BOUND):
                    with pytest.raises(asyncio.CancelledError):
                        await graceful
                    await status.stop(graceful=False)
        finally:
            await client.close()


async def _child(program: str, stderr: int) -> tuple[int | None, bytes, bytes]:
    """Run `program` in a child Python (stderr to `stderr`: PIPE, or a descriptor closed
    here once the child has it), bounded (killed past BOUND): its exit code, stdout, stderr."""
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            program,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    finally:
        if stderr >= 0:
            os.close(stderr)
    try:
        async with asyncio.timeout(BOUND):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()  # (the child this test started)
            await proc.wait()
    return proc.returncode, out, err or b""


STUCK = """
import asyncio, logging, sys, threading
from mgmt import stuck

async def stubborn(started):
    started.set()
    while True:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass

async def main():
    logging.basicConfig(stream=sys.stderr, format="%(name)s: %(message)s")
    started = asyncio.Event()
    task = asyncio.create_task(stubborn(started), name="stubborn")  # (held: else collectable)
    await started.wait()
    stuck.exit_within(0.2, "the test's stop", asyncio.get_running_loop(),
                      lambda: print("before", flush=True), 1)
    threading.Event().wait()  # the loop blocked for good: the timer is a thread's

asyncio.run(main())
"""


async def test_a_stop_that_does_not_end_exits_anyway_saying_what_ran() -> None:
    """`stuck.exit_within` (a forced stop's bound, and a clustered agent's exit's): the
    process exits with its code whatever its loop does, having said what still ran and done
    what must precede the exit (the agent: SIGKILL to its etcd)."""
    code, out, err = await _child(STUCK, asyncio.subprocess.PIPE)
    assert code == 1, err
    assert out == b"before\n"
    line = err.decode()
    assert "main: the test's stop did not end within 0.2s: exiting now; still running: " in line
    assert "stubborn @ <string>:" in line, line


WEDGED = (
    """
import asyncio, logging, os, threading
from mgmt import stuck
from mgmt.log import setup
"""
    + WEDGE_STDERR
    + """
async def main():
    loop, handed = asyncio.get_running_loop(), asyncio.Event()
    logging.getLogger("t").warning("a line stderr never takes")  # handed over at the pass's end
    loop.call_soon(handed.set)  # (after the hand-over, scheduled by the line)
    await handed.wait()  # handed over to the writer, which blocks
    stuck.exit_within(0.2, "the exit after the stop", loop,
                      lambda: print("before", flush=True), 1)
    threading.Event().wait()  # the loop blocked for good: the timer is a thread's

asyncio.run(main())
"""
)


async def test_a_stuck_exit_with_a_wedged_stderr_exits_anyway() -> None:
    """No stop signal came (a converged run's exit, max-runtime's grace), stderr is a full pipe
    nobody reads, and the exit does not end: `exit_within` exits all the same. Before, its
    flush of the log (logging's `atexit` handler) waited for stderr without bound, the wait
    being bounded only after a stop signal (mgmt.log.stopping): the process never exited."""
    read, write = os.pipe()
    try:
        code, out, _ = await _child(WEDGED, write)  # (its end closed here once started)
    finally:
        os.close(read)
    assert code == 1
    assert out == b"before\n"
