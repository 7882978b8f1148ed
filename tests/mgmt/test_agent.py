"""The agent in-process: graph swaps keep unchanged vertices (and their watchers) running."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from engine import inotify
from engine.engine import Status
from mgmt import yamlreparse
from mgmt.agent import Agent, load
from mgmt.config import Config, ExitCode
from mgmt.yamlreparse import reparse

GRAPH = """
graph: swap
resources:
  noop:
    - name: keep
  print:
    - name: change
      msg: "{msg}"
{extra}
"""


async def test_edit_swaps_in_new_graph_without_restarting_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "graph.yaml"
    path.write_text(GRAPH.format(msg="one", extra=""))
    config = Config(file=path, prefix=tmp_path / "prefix", hostname="t")
    agent = Agent(config, config.prefix)
    runner = asyncio.create_task(agent.run(load(config)))
    async with asyncio.timeout(10):
        await agent.swapped.wait()
    engine = agent.engine
    keep = engine.vertices[("noop", "keep")]
    assert keep._watch_task is None and keep._unlisten is not None  # a noop watches nothing
    old_change = engine.vertices[("print", "change")]

    agent.swapped.clear()
    path.write_text(
        GRAPH.format(msg="two", extra="  timer:\n    - name: new\n      interval: 60\n")
    )
    async with asyncio.timeout(10):
        await agent.swapped.wait()

    assert engine.vertices[("noop", "keep")] is keep
    assert keep._unlisten is not None and keep.stats.watch_starts == 1  # not restarted
    assert keep.status is not Status.STOPPED and keep.stats.events == 1  # nor started again
    assert engine.vertices[("print", "change")] is not old_change
    assert not old_change._tasks  # the old vertex's watcher (and worker) were stopped
    assert ("timer", "new") in engine.vertices

    agent.stopping.set()
    async with asyncio.timeout(10):
        assert await runner == ExitCode.OK


async def test_converger_exits_after_timeout(tmp_path: Path) -> None:
    path = tmp_path / "graph.yaml"
    path.write_text(GRAPH.format(msg="x", extra=""))
    config = Config(file=path, prefix=tmp_path / "p", hostname="t", converged_timeout=0)
    agent = Agent(config, config.prefix)
    async with asyncio.timeout(10):
        assert await agent.run(load(config)) == ExitCode.OK


async def test_the_exit_of_an_agent_not_clustered_is_bounded_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Until 2026-12-07 (eleventh session) only a clustered agent's exit after its stop was
    bounded (EXIT_WAIT): another's joins of its I/O threads waited without bound for one
    held in a read that a hung file system never answers. (The timer is a stub.)"""
    from mgmt import stuck

    path = tmp_path / "graph.yaml"
    path.write_text(GRAPH.format(msg="x", extra=""))
    config = Config(file=path, prefix=tmp_path / "p", hostname="t", converged_timeout=0)
    agent = Agent(config, config.prefix)
    agent.config = replace(config, own_process=True)  # (after the log's set-up: pytest's kept)
    # Its stop tells inotify that the process ends (`leave_to_exit`): undone after the test,
    # or every instance this pytest worker closes later is handed to a holder process, whose
    # pipe then stays open (ci4: test_etcd_cancel saw that pipe as a descriptor left behind).
    monkeypatch.setattr(inotify._EXIT, "ending", False)
    armed: list[str] = []
    monkeypatch.setattr(stuck, "exit_within", lambda _w, what, *_: armed.append(what))
    held = threading.Event()  # a thread to join at the exit (an I/O thread's, say)
    thread = threading.Thread(target=held.wait, args=(30.0,))  # (a bound against a hang)
    thread.start()
    try:
        async with asyncio.timeout(10):
            assert await agent.run(load(config)) == ExitCode.OK
    finally:
        held.set()
        thread.join()
    assert agent.cluster is None
    assert armed == ["the exit after the stop"]


async def test_signal_handlers_are_restored(tmp_path: Path) -> None:
    import signal

    path = tmp_path / "graph.yaml"
    path.write_text(GRAPH.format(msg="x", extra=""))
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    config = Config(file=path, prefix=tmp_path / "p", hostname="t", converged_timeout=0)
    async with asyncio.timeout(10):
        await Agent(config, config.prefix).run(load(config))
    after = {s: signal.getsignal(s) for s in before}
    assert after == before


async def test_a_small_graph_file_is_parsed_on_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: the hop to a thread and back cost the exporter ~1 ms per edit under load; a
    small file without aliases is read and parsed on the loop. One with an alias (whose
    expansion is bounded, not linear in its size) or a large one still goes to a thread."""
    parsed_in: list[int] = []

    def spy(data: bytes, filename: str, previous: object) -> object:
        parsed_in.append(threading.get_ident())
        return reparse(data, filename, previous)  # type: ignore[arg-type]

    monkeypatch.setattr(yamlreparse, "reparse", spy)  # (the agent imports it at an edit)
    path = tmp_path / "graph.yaml"
    path.write_text(GRAPH.format(msg="one", extra=""))
    config = Config(file=path, prefix=tmp_path / "prefix", hostname="t")
    agent = Agent(config, config.prefix)
    runner = asyncio.create_task(agent.run(load(config)))
    edits = [
        GRAPH.format(msg="two", extra=""),
        GRAPH.format(msg="three", extra="  timer:\n    - &x {name: aliased, interval: 60}\n"),
        GRAPH.format(msg="four", extra="#" * 10_000),  # over INLINE_BYTES
    ]
    async with asyncio.timeout(10):
        await agent.swapped.wait()
        for edit in edits:
            agent.swapped.clear()
            path.write_text(edit)
            await agent.swapped.wait()
    assert agent.engine.vertices[("print", "change")].res.msg == "four"  # type: ignore[attr-defined]
    loop = threading.get_ident()
    assert [thread == loop for thread in parsed_in] == [True, False, False]
    agent.stopping.set()
    async with asyncio.timeout(10):
        assert await runner == ExitCode.OK


async def test_a_big_graph_file_is_read_again_in_one_thread_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: the rereads of a big graph file run in one thread, whichever I/O threads are
    busy (its buffer's memory is then reused: read in another thread, a 100,000-resource
    file's 8.7 MB came from fresh pages of that thread's malloc arena, ~3 ms per edit); the
    thread ends with the agent."""
    parsed_in: list[threading.Thread] = []

    def spy(data: bytes, filename: str, previous: object) -> object:
        parsed_in.append(threading.current_thread())
        return reparse(data, filename, previous)  # type: ignore[arg-type]

    monkeypatch.setattr(yamlreparse, "reparse", spy)  # (the agent imports it at an edit)
    path = tmp_path / "graph.yaml"
    big = "#" * 10_000  # over INLINE_BYTES
    path.write_text(GRAPH.format(msg="zero", extra=big))
    config = Config(file=path, prefix=tmp_path / "prefix", hostname="t")
    agent = Agent(config, config.prefix)
    runner = asyncio.create_task(agent.run(load(config)))
    held = threading.Event()
    busy: list[asyncio.Future[bool]] = []
    try:
        async with asyncio.timeout(10):
            await agent.swapped.wait()
            for i, msg in enumerate(["one", "two", "three"]):
                agent.swapped.clear()
                path.write_text(GRAPH.format(msg=msg, extra=big))
                await agent.swapped.wait()
                # The I/O threads that could take the next read are kept busy meanwhile.
                busy += [asyncio.ensure_future(asyncio.to_thread(held.wait)) for _ in range(i + 1)]
    finally:
        held.set()
        await asyncio.gather(*busy)
    assert agent.engine.vertices[("print", "change")].res.msg == "three"  # type: ignore[attr-defined]
    # (an edit may be read twice: its truncation and its write are two events)
    assert len(parsed_in) >= 3 and len(set(parsed_in)) == 1
    assert parsed_in[0] is not threading.current_thread()
    agent.stopping.set()
    async with asyncio.timeout(10):
        assert await runner == ExitCode.OK
    parsed_in[0].join(10)
    assert not parsed_in[0].is_alive()


def test_named_lists_at_most_named_resources() -> None:
    """The exit's and the converged line's lists of resources: 20,000 failing files made one
    line of 269 KB (and systemd's STATUS=)."""
    from mgmt.listing import NAMED, named

    assert named(["a", "b"]) == "a, b"
    many = [f"file[f{i}]" for i in range(NAMED + 5)]
    assert named(many) == ", ".join(many[:NAMED]) + " and 5 more"


def test_capped_lists_at_most_named_lines_and_is_the_same_capped_again() -> None:
    """A bad graph's or program's problems: 10,000 copies of one bad key made 10,000 lines."""
    from mgmt.listing import NAMED, capped

    lines = [f"g.yaml:{i}: x" for i in range(NAMED + 1)]
    assert capped(lines, "problems") == lines  # the last line would hide no fewer
    many = [f"g.yaml:{i}: x" for i in range(10_000)]
    shown = capped(many, "problems")
    assert shown == [*many[:NAMED], f"and {10_000 - NAMED} more problems"]
    assert capped(shown, "problems") == shown  # a CompileError's, made a GraphFileError


async def test_a_bounded_exit_kills_the_etcd_started_after_it_was_armed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second signal during the start-up (the program compiles, the cluster not made yet)
    arms the forced stop's exit (`_bound_exit`); the start goes on and starts this host's etcd.
    When the exit fires, that etcd is the one killed: before, the kill was the cluster's of
    when it was armed (none), and the process exited leaving its etcd running (unless
    setpriv's PDEATHSIG took it). The timer and the kill are stubs: nothing is signalled."""
    from mgmt import stuck

    config = Config(file=tmp_path / "g.yaml", prefix=tmp_path / "prefix", hostname="t")
    agent = Agent(config, config.prefix)
    agent.config = replace(config, own_process=True)  # (after the log's set-up: pytest's kept)
    armed: list[Callable[[], None]] = []
    monkeypatch.setattr(
        stuck, "exit_within", lambda _w, _what, _loop, before, _c: armed.append(before)
    )
    agent._bound_exit(15.0, "the forced stop")
    killed: list[str] = []

    class Started:  # the cluster made after the exit was armed (its kill: a stub)
        def kill_member(self) -> None:
            killed.append("etcd")

    agent.cluster = Started()  # type: ignore[assignment]
    (before,) = armed
    before()
    assert killed == ["etcd"]


async def test_a_sighup_during_a_stop_reloads_and_retries_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGHUP as the agent stops (a clustered host's leave takes seconds, after the engine's
    stop): nothing is revived nor retried. Before, a reload's retries ran: a failed reversal
    was retried by a task spawned after the reverser's close, applying a change once the
    engine had said it stopped (the exit then cancelled it mid-way); a DEAD vertex not yet
    stopped was started again. (The handlers are called: no signal is sent.)"""
    import signal

    path = tmp_path / "graph.yaml"
    path.write_text(GRAPH.format(msg="x", extra=""))
    config = Config(file=path, prefix=tmp_path / "p", hostname="t")
    agent = Agent(config, config.prefix)
    retried: list[bool] = []
    monkeypatch.setattr(agent.engine, "retry_failed", lambda: retried.append(True) or (0, 0))
    runner = asyncio.create_task(agent.run(load(config)))
    async with asyncio.timeout(10):
        await agent.swapped.wait()
        caplog.set_level(logging.INFO, "main")
        agent._on_stop_signal(signal.SIGTERM)
        agent._on_hup()  # as the stop runs
        assert await runner == ExitCode.OK
    assert retried == []
    assert not agent.reload.is_set()
    assert "SIGHUP: stopping: nothing reloaded" in caplog.text
