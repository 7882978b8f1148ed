"""The status model on a real engine running a real file resource."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.engine import Engine
from engine.graph import Graph
from mgmt.status.model import StatusModel
from resources.file import FileRes
from tests.engine.conftest import settle


async def test_the_encoded_snapshot_is_shared_until_something_changes(tmp_path: Path) -> None:
    """Every client of /api/status and /api/events gets the same bytes, encoded once per change
    (encoding a large graph's snapshot per request let a local user stall drift repair)."""
    engine = Engine(hostname="h", prefix=tmp_path / "prefix")
    model = StatusModel(engine, "h")
    try:
        graph = Graph("g")
        graph.add(FileRes(name="f", path=f"{tmp_path}/f", content="x"))
        await engine.apply(graph)
        await settle(engine)
        first = model.snapshot_json()
        assert model.snapshot_json() is first
        assert json.loads(first) == json.loads(json.dumps(model.snapshot()))
        (tmp_path / "f").unlink()
        await settle(engine, (tmp_path / "f").exists)
        await settle(engine)
        after = model.snapshot_json()
        assert after is not first
        assert json.loads(after)["events"][-1]["what"] == "repaired"
    finally:
        model.close()
        await engine.stop(graceful=False)


async def test_a_refresh_driven_repair_is_timed_from_the_upstream_drift(tmp_path: Path) -> None:
    """file -notify-> exec: the exec's repair answers the file's drift. Its latency runs from
    that drift, not from the exec's own last event (its start, long before): measured so, it
    is at most the time since the file was deleted (both in the model and the metrics)."""
    from engine.graph import Edge
    from mgmt.metrics import Metrics
    from resources.exec import ExecRes

    engine = Engine(hostname="h", prefix=tmp_path / "prefix")
    model = StatusModel(engine, "h")
    metrics = Metrics(engine)
    metrics.start()
    try:
        graph = Graph("g")
        graph.add(FileRes(name="f", path=f"{tmp_path}/f", content="x"))
        graph.add(ExecRes(name="e", cmd="true", refreshonly=True))
        graph.connect(("file", "f"), ("exec", "e"), Edge(notify=True))
        await engine.apply(graph)
        await settle(engine)
        model.events.clear()
        before = metrics.latency.labels("exec")._sum.get()
        started = time.monotonic()  # the exec's own last event is before this
        (tmp_path / "f").unlink()
        await settle(engine, lambda: any(e["id"] == "exec[e]" for e in model.recent_events()))
        elapsed_ms = (time.monotonic() - started) * 1000
        latencies = {
            e["id"]: e["latency_ms"] for e in model.recent_events() if e["what"] == "repaired"
        }
        assert set(latencies) == {"file[f]", "exec[e]"}
        assert latencies["file[f]"] <= latencies["exec[e]"] <= elapsed_ms
        measured = metrics.latency.labels("exec")._sum.get() - before
        assert 0 < measured * 1000 <= elapsed_ms
    finally:
        metrics.stop()
        model.close()
        await engine.stop(graceful=False)


async def test_a_program_error_is_one_update_and_in_the_summary_and_the_row(
    tmp_path: Path,
) -> None:
    """Program-level: one update when it changes (none when set again), in the snapshot, the
    host's summary and its row (`failed`, exit 1); a summary without it (an older host's) is
    read as none."""
    from mgmt.config import ExitCode
    from mgmt.deploy.status import HostStatus, exit_code, table
    from mgmt.status.cluster import summary

    engine = Engine(hostname="h", prefix=tmp_path / "prefix")
    model = StatusModel(engine, "h")
    try:
        queue = model.subscribe()
        model.set_program_error("main.mcl:1:1: boom (no graph yet)")
        model.set_program_error("main.mcl:1:1: boom (no graph yet)")
        assert queue.get_nowait() == {
            "type": "program",
            "error": "main.mcl:1:1: boom (no graph yet)",
        }
        assert queue.empty()
        assert model.snapshot()["program_error"] == "main.mcl:1:1: boom (no graph yet)"
        row = HostStatus("h", alive=True)
        row.merge_summary(json.dumps(summary(model)).encode())
        assert (row.state, row.program_error) == ("failed", "main.mcl:1:1: boom (no graph yet)")
        assert exit_code([row]) == ExitCode.FAILED
        assert "program: main.mcl:1:1: boom (no graph yet)" in table([row])
        model.set_program_error("")
        old = {k: v for k, v in summary(model).items() if k != "program_error"}
        row = HostStatus("h", alive=True)
        row.merge_summary(json.dumps(old).encode())
        assert (row.state, row.program_error, row.last_error) == ("converging", "", "")
        row.merge_summary(json.dumps({**old, "program_error": 3}).encode())
        assert row.last_error == "unreadable summary"
    finally:
        model.close()
        await engine.stop(graceful=False)


@contextlib.asynccontextmanager
async def retrying_for_ever(tmp_path: Path) -> AsyncIterator[StatusModel]:
    """The model of an engine running file[f] and exec[e] (`false`, `retry: -1`, ten minutes
    apart), once exec[e] is retrying; the engine stopped after."""
    from engine.meta import Meta
    from resources.exec import ExecRes

    engine = Engine(hostname="h", prefix=tmp_path / "prefix")
    model = StatusModel(engine, "h")
    try:
        graph = Graph("g")
        graph.add(FileRes(name="f", path=f"{tmp_path}/f", content="x"))
        graph.add(ExecRes(name="e", cmd="false", meta=Meta(retry=-1, delay=600_000)))
        await engine.apply(graph)
        await settle(engine, lambda: model.info[("exec", "e")].state == "retrying")
        yield model
    finally:
        model.close()
        await engine.stop(graceful=False)


async def test_a_retrying_resource_is_a_failure_of_its_hosts_row(tmp_path: Path) -> None:
    """A resource retrying (its last attempt failed, `retry: -1`) counts as failed in the
    host's summary, as `mgmt status` counts it: its row in `mgmt status --cluster` reads
    `failed` with the error, exit 1 (it read `converging`, FAILED 0, no error, exit 0 for as
    long as the resource kept failing: user3)."""
    from mgmt.config import ExitCode
    from mgmt.deploy.status import HostStatus, exit_code, table
    from mgmt.status.cluster import summary

    async with retrying_for_ever(tmp_path) as model:
        assert summary(model)["failed"] == 1
        row = HostStatus("h", alive=True)
        row.merge_summary(json.dumps(summary(model)).encode())
        assert (row.state, row.failed) == ("failed", 1)
        assert row.last_error.startswith("exec[e]: cmd exited with code 1")
        assert exit_code([row]) == ExitCode.FAILED
        assert "exec[e]: cmd exited with code 1" in table([row])


async def test_a_retrying_resources_next_try_follows_the_wait_not_the_wall_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`next_try` is when the engine's wait (on the monotonic clock) ends: after a suspend of
    an hour (the wall clock jumped, the wait did not count it) it is still ahead, ~600 s from
    now. It was the failure's wall-clock time plus the delay: an hour in the past then, for a
    retry still ten minutes away (review_user3)."""
    async with retrying_for_ever(tmp_path) as model:
        woke = time.time() + 3600  # resumed from an hour's suspend
        monkeypatch.setattr("mgmt.status.model.time.time", lambda: woke)
        row = next(v for v in model.snapshot()["vertices"] if v["id"] == "exec[e]")
        assert row["state"] == "retrying"
        assert woke + 500 < row["next_try"] <= woke + 600, (row, woke)
        assert row["tries_left"] == -1


async def test_a_flood_of_requests_is_not_a_servers_last_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`mgmt status`' LAST CHANGE of an http:server under a flood of requests showed the last
    request (`GET /f`): each request's line counted as a change. It is what last changed in
    the resource's state (here: it started listening), the requests still logged
    (ResourceLogger.traffic)."""
    import asyncio
    import socket
    import urllib.request

    from resources.http_server import HTTPServerFileRes, HTTPServerRes

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])

    graph = Graph("g")
    graph.add(HTTPServerRes(name="web", address=f"127.0.0.1:{port}"))
    graph.add(HTTPServerFileRes(name="/f", data="one\n"))

    def get() -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/f", timeout=10) as reply:
            return bytes(reply.read())

    caplog.set_level(logging.INFO)  # the agent's level: its INFO lines reach the model
    engine = Engine(hostname="h", prefix=tmp_path / "prefix")
    model = StatusModel(engine, "h")
    try:
        await engine.apply(graph)
        await settle(engine)
        for _ in range(50):
            assert await asyncio.to_thread(get) == b"one\n"
        assert model.info[("http:server", "web")].last_change == f"listening on 127.0.0.1:{port}"
        assert caplog.text.count("http:server[web]: GET /f") == 50  # still logged
    finally:
        model.close()
        await engine.stop(graceful=False)


async def test_the_snapshot_is_encoded_in_slices(tmp_path: Path) -> None:
    """/api/status's JSON is made a slice of vertices at a time, the loop taking turns between
    (at 100,000 resources it held the loop ~1 s at once): the same snapshot, shared after."""
    import asyncio

    from engine.graph import Edge
    from engine.slices import SLICE
    from resources.noop import NoopRes

    engine = Engine(hostname="h", prefix=tmp_path / "prefix")
    model = StatusModel(engine, "h")
    loop = asyncio.get_running_loop()
    turns = 0

    def count() -> None:  # once a step of the loop
        nonlocal turns, ticking
        turns += 1
        ticking = loop.call_soon(count)

    try:
        graph = Graph("g")
        for i in range(4 * SLICE):
            graph.add(NoopRes(name=f"n{i}"))
        graph.connect(("noop", "n1"), ("noop", "n0"), Edge(notify=True))
        await engine.apply(graph)
        await settle(engine)
        ticking = loop.call_soon(count)
        encoded = await model.encoded()
        ticking.cancel()
        assert turns >= 4  # a turn after each slice of vertices, at least
        assert json.loads(encoded) == json.loads(json.dumps(model.snapshot()))
        assert json.loads(encoded)["edges"] == [
            {"from": "noop[n1]", "to": "noop[n0]", "notify": True}
        ]
        assert await model.encoded() is encoded and model.snapshot_json() is encoded
    finally:
        model.close()
        await engine.stop(graceful=False)


class _Iterated(dict):  # type: ignore[type-arg]
    """A dict that counts the walks over it."""

    walks = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        self.walks += 1
        return super().__iter__()


async def test_after_a_full_swap_the_model_and_metrics_follow_what_it_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full swap told its listeners only its counts: the status model walked its rows for
    those whose vertex left, and metrics counted the resources of every vertex and group
    (O(N) each, after the O(N) swap). Now the swap tells the keys that left (`gone`) and the
    count by kind it changed (`counted`); they follow that, and agree with a fresh count."""
    import mgmt.metrics
    from engine.engine import Engine
    from engine.meta import Meta
    from engine.resource import members
    from mgmt.metrics import Metrics
    from tests.engine.probe import GroupProbe, ProbeRes

    engine = Engine(hostname="h", prefix=tmp_path / "prefix")
    model = StatusModel(engine, "h")
    metrics = Metrics(engine)
    metrics.start(model)

    def graph(probes: range, grouped: range, tag: str) -> Graph:
        made = Graph("g")
        for i in probes:
            made.add(ProbeRes(name=f"p{i}", tag=tag))
        for i in grouped:  # the first leads a group of the others
            made.add(GroupProbe(name=f"g{i}", tag="t", meta=Meta(retry=i % 2)))
        return made

    def count(kind: str) -> float | None:
        return metrics.registry.get_sample_value("mgmt_resources", {"kind": kind})

    try:
        await engine.apply(graph(range(20), range(4), ""))
        await settle(engine)
        assert (count("probe"), count("gprobe")) == (20, 4)
        model.info = _Iterated(model.info)
        walked = []
        monkeypatch.setattr(mgmt.metrics, "members", lambda res: walked.append(res) or [])
        await engine.apply(graph(range(10, 40), range(2, 7), "x"))  # most replaced: full
        await settle(engine)
        assert model.info.walks == 0 and not walked
        assert set(model.info) == set(engine.vertices)
        fresh = {"probe": 0, "gprobe": 0}
        for vertex in engine.vertices.values():
            for res in [vertex.res, *members(vertex.res)]:
                fresh[res.kind] += 1
        assert fresh == {"probe": 30, "gprobe": 5}
        assert (count("probe"), count("gprobe")) == (30, 5)
    finally:
        metrics.stop()
        model.close()
        await engine.stop(graceful=False)
