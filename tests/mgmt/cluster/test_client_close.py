"""A connection's close with a grace, cancelled mid-grace (the client closed as it leaves a
broken or switched connection: the agent stops), leaves no task behind (leaks, 2026-12-07):
grpc's `Channel.close(grace)` waits for the calls still open in tasks of its own, which its
cancellation left pending, with the calls open and the channel never destroyed.

A real etcd on 127.0.0.1, a real watch stream open on the connection the client leaves."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc.aio
from aetcd import rpc

from mgmt.cluster.client import EtcdClient, close_channel
from mgmt.cluster.etcdlog import FOLLOWING
from tests.mgmt.cluster.helpers import members

BOUND = 30.0  # seconds: a generous bound against a hang, never a timing


async def test_a_close_cancelled_mid_grace_leaves_no_task_and_no_call(tmp_path: Path) -> None:
    async with members(tmp_path, 1) as (node,):
        client = EtcdClient([node.client_url], call_timeout=30.0)  # a grace never over here
        before = asyncio.all_tasks()
        stream: grpc.aio.StreamStreamCall | None = None
        try:
            conn = await client.connection()
            stream = conn.watch.Watch(metadata=conn.metadata)  # open until cancelled
            create = rpc.WatchCreateRequest(key=b"k")
            await stream.write(rpc.WatchRequest(create_request=create))
            assert (await stream.read()).created
            client._drop(conn, "a test leaves it")  # its close waits for the stream
            # Connected again (round trips to etcd): the close is in its grace by then.
            assert await client.connection() is not conn
            await client.close()  # the close in its grace cancelled
            assert stream.done()  # cancelled by its channel's close (before: left open)
            # What is left ends of itself (grpc's own task of each call, once its status is
            # in: the next turn of the loop); before, grpc's waits of the grace never did.
            # (the etcd member's own log follower waits in a new task at each of its lines)
            left = [
                t
                for t in asyncio.all_tasks() - before
                if not t.done() and t.get_name() != FOLLOWING
            ]
            if left:
                await asyncio.wait(left, timeout=BOUND)
            assert [t for t in left if not t.done()] == []
        finally:
            await client.close()
            if stream is not None:
                stream.cancel()


async def test_a_close_gives_an_open_call_its_grace(tmp_path: Path) -> None:
    """close_channel's grace waits for the calls grpc lists as open (its private
    `_active_calls`, grpc >= 1.59; grpcio comes unpinned with aetcd): a grpc without that list
    would close at once, the calls of a connection left cut (leaks review, 2026-12-07: a guard
    against that upgrade, which nothing else would notice). The stream still answers during the
    grace, and the close ends once it has ended (here, cancelled)."""
    async with members(tmp_path, 1) as (node,):
        client = EtcdClient([node.client_url], call_timeout=30.0)
        try:
            conn = await client.connection()
            stream = conn.watch.Watch(metadata=conn.metadata)
            await stream.write(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(key=b"a")))
            assert (await stream.read()).created
            closing = asyncio.ensure_future(close_channel(conn.channel, BOUND))
            try:
                # Round trips to etcd on the channel in its grace: it is still open.
                create = rpc.WatchCreateRequest(key=b"b")
                await stream.write(rpc.WatchRequest(create_request=create))
                assert (await stream.read()).created
                assert not closing.done()
                stream.cancel()  # the call ends: the close with it, its grace not over
                async with asyncio.timeout(BOUND):
                    await closing
            finally:
                closing.cancel()
                stream.cancel()
        finally:
            await client.close()
