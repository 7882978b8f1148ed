"""Autoedges, autogroup, send/recv, reversal, hidden and rewatch, with real resources."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.engine import Engine, Status
from engine.errors import GraphError
from engine.events import VertexChanged
from engine.graph import Edge, Graph, Key
from engine.handle import ResourceLogger
from engine.meta import Meta
from engine.params import redact_secrets
from engine.resource import UID, Listening, Resource
from resources.exec import ExecRes
from resources.file import FileRes
from resources.noop import NoopRes
from resources.password import PasswordRes
from tests.engine.conftest import settle
from tests.engine.probe import GroupProbe, ProbeRes, received_password, state


def graph_of(*resources: object) -> Graph:
    graph = Graph("t")
    for res in resources:
        graph.add(res)  # type: ignore[arg-type]
    return graph


# autoedges ------------------------------------------------------------------------------------


async def test_file_depends_on_its_nearest_managed_parent(tmp_path: Path, engine: Engine) -> None:
    top = FileRes(name="top", path=f"{tmp_path}/a/")
    mid = FileRes(name="mid", path=f"{tmp_path}/a/b/")
    leaf = FileRes(name="leaf", path=f"{tmp_path}/a/b/c/f", content="x")
    other = FileRes(name="other", path=f"{tmp_path}/a/x", content="y")
    graph = graph_of(leaf, other, mid, top)
    engine.prepare(graph)
    assert set(graph.pred[("file", "leaf")]) == {("file", "mid")}  # nearest, not top
    assert set(graph.pred[("file", "mid")]) == {("file", "top")}
    assert set(graph.pred[("file", "other")]) == {("file", "top")}
    await engine.apply(graph)
    await settle(engine)
    assert (tmp_path / "a/b/c/f").read_text() == "x"


def test_exec_depends_on_its_managed_binary_and_cwd(tmp_path: Path, engine: Engine) -> None:
    tool = FileRes(name="tool", path=f"{tmp_path}/bin/tool", content="#!/bin/sh\n", mode="0755")
    work = FileRes(name="work", path=f"{tmp_path}/work/")
    run = ExecRes(name="run", cmd=f"{tmp_path}/bin/tool --flag", cwd=f"{tmp_path}/work")
    graph = graph_of(run, tool, work)
    engine.prepare(graph)
    assert set(graph.pred[("exec", "run")]) == {("file", "tool"), ("file", "work")}


def test_autoedge_that_would_close_a_cycle_is_skipped(tmp_path: Path, engine: Engine) -> None:
    parent = FileRes(name="dir", path=f"{tmp_path}/d/")
    child = FileRes(name="child", path=f"{tmp_path}/d/f", content="x")
    graph = graph_of(parent, child)
    graph.connect(("file", "child"), ("file", "dir"), Edge("user edge"))
    engine.prepare(graph)  # no GraphError: the autoedge dir -> child was skipped
    assert ("file", "child") not in graph.succ[("file", "dir")]


def test_autoedges_can_be_turned_off(tmp_path: Path) -> None:
    graph = graph_of(
        FileRes(name="dir", path=f"{tmp_path}/d/"),
        FileRes(name="f", path=f"{tmp_path}/d/f", content="x", meta=Meta(autoedge=False)),
    )
    Engine(hostname="t", prefix=tmp_path).prepare(graph)
    assert not graph.pred[("file", "f")]
    graph = graph_of(
        FileRes(name="dir", path=f"{tmp_path}/d/"),
        FileRes(name="f", path=f"{tmp_path}/d/f", content="x"),
    )
    Engine(hostname="t", prefix=tmp_path, autoedges=False).prepare(graph)
    assert not graph.pred[("file", "f")]


def test_autoedges_scale_to_a_10000_file_tree(tmp_path: Path, engine: Engine) -> None:
    resources = [FileRes(name=f"d{i}", path=f"/srv/tree/d{i}/") for i in range(100)]
    resources += [
        FileRes(name=f"f{i}-{j}", path=f"/srv/tree/d{i}/f{j}", content="x")
        for i in range(100)
        for j in range(99)
    ]
    graph = graph_of(*resources)
    start = time.perf_counter()
    engine.prepare(graph)
    elapsed = time.perf_counter() - start
    assert sum(len(p) for p in graph.pred.values()) == 9900
    assert elapsed < 30  # a generous bound against quadratic blow-ups; bench/ has the figure


# autogroup ------------------------------------------------------------------------------------


async def test_groupable_resources_merge_unless_a_path_joins_them(engine: Engine) -> None:
    a, b, c = (GroupProbe(name=n) for n in "abc")
    d = GroupProbe(name="d", tag="other")
    graph = graph_of(a, b, c, d)
    graph.connect(("gprobe", "a"), ("gprobe", "c"))  # a path: never grouped together
    await engine.apply(graph)
    await settle(engine)
    assert set(engine.vertices) == {("gprobe", "a"), ("gprobe", "c"), ("gprobe", "d")}
    assert [r.name for r in a.grouped] == ["b"]
    assert state("b").calls == [(True, False)]  # applied by its group's vertex


async def test_a_member_joining_a_kept_group_restarts_its_vertex(engine: Engine) -> None:
    """The lang front-end hands back the very objects of unchanged resources: a group that
    gained a member must not be kept on that identity (the newcomer would never be applied)."""
    a, b = GroupProbe(name="a"), GroupProbe(name="b")
    await engine.apply(graph_of(a, b))
    await settle(engine)
    c = GroupProbe(name="c")
    await engine.apply(graph_of(a, b, c))
    await settle(engine)
    assert [r.name for r in engine.vertices[("gprobe", "a")].res.grouped] == ["b", "c"]
    assert state("c").calls == [(True, False)]


async def test_a_refused_graph_leaves_the_running_groups_as_they_were(engine: Engine) -> None:
    """Groups are formed before the graph's checks: one they refuse (a cycle) must not leave
    a running leader with the refused graph's members (before 2026-12-06 it did: a member
    never applied, or one applied that no graph holds)."""
    a, b = GroupProbe(name="a"), GroupProbe(name="b")
    await engine.apply(graph_of(a, b))
    await settle(engine)
    x, y = ProbeRes(name="x"), ProbeRes(name="y")
    refused = graph_of(a, b, GroupProbe(name="c"), x, y)
    refused.connect(("probe", "x"), ("probe", "y"))
    refused.connect(("probe", "y"), ("probe", "x"))
    with pytest.raises(GraphError, match="cycle"):
        await engine.apply(refused)
    assert [r.name for r in engine.vertices[("gprobe", "a")].res.grouped] == ["b"]
    assert a.grouped == [b]


def test_autogroup_can_be_turned_off(tmp_path: Path) -> None:
    graph = graph_of(GroupProbe(name="a"), GroupProbe(name="b", meta=Meta(autogroup=False)))
    Engine(hostname="t", prefix=tmp_path).prepare(graph)
    assert len(graph) == 2
    graph = graph_of(GroupProbe(name="a"), GroupProbe(name="b"))
    Engine(hostname="t", prefix=tmp_path, autogroup=False).prepare(graph)
    assert len(graph) == 2


# send/recv ------------------------------------------------------------------------------------


async def test_exec_stdout_flows_into_file_content(tmp_path: Path, engine: Engine) -> None:
    out = tmp_path / "out"
    gen = ExecRes(name="gen", cmd="echo generated")
    target = FileRes(name="out", path=str(out), content="placeholder\n")
    graph = graph_of(gen, target)
    graph.connect(("exec", "gen"), ("file", "out"), Edge("e", sendrecv=(("stdout", "content"),)))
    await engine.apply(graph)
    await settle(engine, lambda: out.exists() and out.read_text() == "generated\n")
    # The received value does not make the vertex "changed" for a swap of the same graph.
    kept = engine.vertices[("file", "out")]
    graph2 = graph_of(
        ExecRes(name="gen", cmd="echo generated"),
        FileRes(name="out", path=str(out), content="placeholder\n"),
    )
    graph2.connect(("exec", "gen"), ("file", "out"), Edge("e", sendrecv=(("stdout", "content"),)))
    await engine.apply(graph2)
    assert engine.vertices[("file", "out")] is kept


async def test_file_content_flows_to_another_file(tmp_path: Path, engine: Engine) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_text("one\n")
    graph = graph_of(
        FileRes(name="src", path=str(src), mode="0644"), FileRes(name="dst", path=str(dst))
    )
    graph.connect(("file", "src"), ("file", "dst"), Edge(sendrecv=(("content", "content"),)))
    await engine.apply(graph)
    await settle(engine, lambda: dst.exists() and dst.read_text() == "one\n")
    src.write_text("two\n")  # an event on src: it re-sends, dst receives a changed value
    await settle(engine, lambda: dst.exists() and dst.read_text() == "two\n")


async def refused(
    engine: Engine, graph: Graph, ends: tuple[Key, Key], pair: tuple[str, str]
) -> str:
    """Run `graph` with a send/recv edge between `ends` carrying `pair` (send, recv): the
    receiver's error once it has failed for good."""
    graph.connect(*ends, Edge(sendrecv=(pair,)))
    await engine.apply(graph)
    vertex = engine.vertices[ends[1]]
    await settle(engine, lambda: vertex.status is Status.FAILED)
    return str(vertex.error)


async def test_a_received_value_is_validated_as_the_graphs_own_and_retried(
    tmp_path: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative path received by file's path is refused (nothing written, not even under
    the working directory), the resource retried per its meta; a good value later is taken."""
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    src, good = tmp_path / "src", tmp_path / "good"
    src.write_text("relative/out")
    dst = FileRes(name="dst", path=f"{tmp_path}/placeholder", content="x", meta=Meta(retry=2))
    graph = graph_of(FileRes(name="src", path=str(src), mode="0644"), dst)
    error = await refused(engine, graph, (("file", "src"), ("file", "dst")), ("content", "path"))
    assert error == (
        "refused path 'relative/out' received from file[src].content: "
        "expected an absolute path, got 'relative/out'"
    )
    assert engine.retries[("file", "dst")] == 3  # the first try and its 2 retries
    assert list((tmp_path / "cwd").iterdir()) == []
    assert not (tmp_path / "placeholder").exists()
    assert dst.path == f"{tmp_path}/placeholder"  # the refused value is not kept
    src.write_text(str(good))  # a good value: received (on src's event), applied
    await settle(engine, lambda: good.exists() and good.read_text() == "x")


async def test_a_received_value_of_the_wrong_type_is_refused(
    tmp_path: Path, engine: Engine
) -> None:
    """exec's timeout (an integer) receiving a string: a clear error, the command not run."""
    marker = tmp_path / "ran"
    graph = graph_of(
        ExecRes(name="gen", cmd="echo 5"),
        ExecRes(name="use", cmd=f"touch {marker}"),
    )
    error = await refused(engine, graph, (("exec", "gen"), ("exec", "use")), ("stdout", "timeout"))
    assert error == (
        "refused timeout '5\\n' received from exec[gen].stdout: expected an integer, got '5\\n'"
    )
    assert not marker.exists()


async def test_a_refused_secret_is_not_shown(tmp_path: Path, engine: Engine) -> None:
    """password's value (marked secret in its SENDS), refused as a path: not in the error."""
    graph = graph_of(
        PasswordRes(name="pw", length=12), FileRes(name="f", path=f"{tmp_path}/f", content="x")
    )
    error = await refused(engine, graph, (("password", "pw"), ("file", "f")), ("password", "path"))
    secret = engine.vertices[("password", "pw")].sent["password"]
    assert error == (
        "refused path (a secret) received from password[pw].password: "
        "expected an absolute path, got '***'"
    )
    assert secret not in error


async def test_a_received_secret_is_hidden_in_a_traceback_too(
    tmp_path: Path, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """A receiver's failure logged with its traceback (a cleanup that fails: the engine's
    `exception()`): the error's text in the traceback is redacted as the line is. Before
    2026-12-05 only the line was: the traceback's last line named the password."""
    state("tb").cleanup_fails = True
    secret = await received_password(engine, ProbeRes(name="tb"))
    await engine.apply(Graph("empty"))  # the probe goes: its cleanup fails
    assert "probe[tb]: cleanup failed\nTraceback" in caplog.text
    assert "RuntimeError: cannot close ***" in caplog.text and secret not in caplog.text


def test_a_short_secret_is_redacted_only_as_a_whole_token(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A secret under SHORT_SECRET characters is "***" where it stands alone, not inside
    other words (which it garbled, and showed: "f***ed" is "ail"); a longer one everywhere."""
    import engine.params

    # (the process's registry as it was, after: "ab" hidden in every later test's lines else)
    monkeypatch.setattr(engine.params, "_known", dict(engine.params._known))
    monkeypatch.setattr(engine.params, "_known_pattern", engine.params._known_pattern)
    logger = ResourceLogger(logging.getLogger("engine"), {"res_kind": "k", "res_name": "n"})
    logger.hide("ab")
    logger.hide("long-secret")
    logger.warning("cabbage ab=ab (ab), ab_c; xlong-secrety %s", "ab")
    assert caplog.messages == ["k[n]: cabbage ***=*** (***), ab_c; x***y ***"]
    assert redact_secrets("ail in failed; ail", ["ail"]) == "*** in failed; ***"


# reversal -------------------------------------------------------------------------------------


async def test_reverse_removes_a_created_file_and_restores_an_overwritten_one(
    tmp_path: Path, engine: Engine
) -> None:
    created, overwritten = tmp_path / "created", tmp_path / "overwritten"
    overwritten.write_text("original\n")
    overwritten.chmod(0o600)
    rev = Meta(reverse=True)
    graph = graph_of(
        FileRes(name="c", path=str(created), content="new\n", meta=rev),
        FileRes(name="o", path=str(overwritten), content="managed\n", meta=rev),
    )
    await engine.apply(graph)
    await settle(engine, lambda: overwritten.read_text() == "managed\n" and created.exists())
    await settle(engine)
    await engine.apply(Graph("empty"))
    assert not created.exists()
    assert overwritten.read_text() == "original\n"
    assert overwritten.stat().st_mode & 0o777 == 0o600
    assert engine.reversals.stored() == []


async def test_reverse_survives_an_agent_restart(tmp_path: Path) -> None:
    created = tmp_path / "created"
    first = Engine(hostname="t", prefix=tmp_path / "prefix")
    await first.apply(
        graph_of(FileRes(name="c", path=str(created), content="x", meta=Meta(reverse=True)))
    )
    await settle(first, created.exists)
    await settle(first)
    await first.stop()
    assert created.exists()  # a normal stop does not reverse
    second = Engine(hostname="t", prefix=tmp_path / "prefix")
    await second.apply(Graph("without it"))  # the new run's graph no longer has it
    assert not created.exists()
    await second.stop()


# hidden, rewatch -------------------------------------------------------------------------------


async def test_hidden_vertex_orders_but_never_runs(engine: Engine) -> None:
    graph = graph_of(ProbeRes(name="h", meta=Meta(hidden=True)), ProbeRes(name="after"))
    graph.connect(("probe", "h"), ("probe", "after"))
    await engine.apply(graph)
    await settle(engine)
    assert state("h").calls == [] and state("h").watch_starts == 0
    assert len(state("after").calls) == 1


class FlakyWatch(ProbeRes):
    async def watch(self) -> None:
        st = state(self.name)
        st.watch_starts += 1
        if st.watch_starts == 1:
            raise RuntimeError("watch broke")
        await self.handle.event()
        await asyncio.Event().wait()


async def test_meta_retry_restarts_a_failed_watch(engine: Engine) -> None:
    """As mgmt's Worker: a failed watch starts again meta retry times, then the vertex is
    failed for good (DEAD)."""
    graph = graph_of(FlakyWatch(name="w", meta=Meta(retry=1)), FlakyWatch(name="x"))
    await engine.apply(graph)
    await settle(engine, lambda: len(state("w").calls) == 1)
    assert state("w").watch_starts == 2
    await settle(engine)
    assert engine.vertices[("probe", "x")].status is Status.DEAD  # retry 0: failed for good


async def test_rewatch_replaces_a_vertex_failed_for_good_at_the_next_swap(
    engine: Engine,
) -> None:
    """mgmt's rewatch: a swap replaces a vertex whose watch (or check) failed for good, even
    unchanged, and its watch runs again; without rewatch it stays failed."""
    graph = graph_of(FlakyWatch(name="w", meta=Meta(rewatch=True)), FlakyWatch(name="x"))
    await engine.apply(graph)
    await settle(engine)
    assert engine.vertices[("probe", "w")].status is Status.DEAD
    assert engine.vertices[("probe", "x")].status is Status.DEAD
    graph = graph_of(FlakyWatch(name="w", meta=Meta(rewatch=True)), FlakyWatch(name="x"))
    await engine.apply(graph)
    await settle(engine, lambda: len(state("w").calls) == 1)
    assert state("w").watch_starts == 2 and state("x").watch_starts == 1
    assert engine.vertices[("probe", "w")].status is Status.OK
    assert engine.vertices[("probe", "x")].status is Status.DEAD


LISTENING: dict[str, tuple[Callable[[], None], Callable[[Exception], None]]] = {}


class ListenProbe(Listening, ProbeRes):
    """Watches without a task: the test reports its changes and failures."""

    def listen(
        self, report: Callable[[], None], failed: Callable[[Exception], None]
    ) -> Callable[[], None] | None:
        LISTENING[self.name] = (report, failed)

        def stop() -> None:
            del LISTENING[self.name]

        return stop


async def test_a_watch_without_a_task_reports_restarts_and_fails(engine: Engine) -> None:
    graph = graph_of(
        ListenProbe(name="l", meta=Meta(retry=-1)),
        ListenProbe(name="m"),
    )
    await engine.apply(graph)
    await settle(engine)
    listening = engine.vertices[("probe", "l")]
    assert len(state("l").calls) == 1 and state("l").watch_starts == 0  # no watch() task
    assert listening._watch_task is None and listening.stats.watch_starts == 1
    LISTENING["l"][0]()  # a change: checked again
    await settle(engine, lambda: len(state("l").calls) == 2)
    LISTENING["l"][1](RuntimeError("watch broke"))  # retry: a watch() task takes over...
    assert "l" not in LISTENING  # ...once the failed one is stopped
    await settle(engine, lambda: len(state("l").calls) == 3)  # its startup event: a catch-up
    watch_task = listening._watch_task
    assert state("l").watch_starts == 1 and watch_task is not None and not watch_task.done()
    LISTENING["m"][1](RuntimeError("watch broke"))  # retry 0: failed for good
    await settle(engine)
    assert engine.vertices[("probe", "m")].status is Status.DEAD and "m" not in LISTENING
    await engine.stop()
    assert "l" not in LISTENING and listening.status is Status.STOPPED


class ListenOnlyProbe(ListenProbe):
    """A Listening kind that keeps the default watch() (its fallback, nothing to watch)."""

    watch = Resource.watch


async def test_a_listening_kind_with_the_default_watch_still_listens(engine: Engine) -> None:
    """The engine's shortcut for a kind with nothing to watch (the default watch(), no task)
    is not taken for a Listening kind: its listen() is its watch, the default its fallback."""
    await engine.apply(graph_of(ListenOnlyProbe(name="d")))
    await settle(engine, lambda: len(state("d").calls) == 1)
    assert "d" in LISTENING  # listened to
    LISTENING["d"][0]()  # a change: checked again
    await settle(engine, lambda: len(state("d").calls) == 2)
    await engine.stop()
    assert "d" not in LISTENING


@pytest.mark.parametrize("flag", ["no_autoedges", "no_autogroup"])
def test_agent_flags_reach_the_engine(tmp_path: Path, flag: str) -> None:
    from mgmt.agent import Agent
    from mgmt.config import Config

    agent = Agent(Config(prefix=tmp_path, hostname="t", **{flag: True}), tmp_path)
    assert getattr(agent.engine, flag.removeprefix("no_")) is False


def test_autoedges_of_a_path_with_two_leading_slashes_end_at_the_root() -> None:
    """normpath keeps "//" at the start of a path, and dirname("//") is "//": the walk up to
    the root never ended (the agent spun at 100% CPU before its first resource)."""
    res = FileRes(name="f", path="//srv/a/f")
    assert res.autoedges()[0] == [UID("file", "//srv/a/"), UID("file", "//srv/"), UID("file", "/")]


class PlainProbe(ProbeRes):
    """A probe with the default watch() (nothing to watch, as noop's), counting its checks."""

    watch = Resource.watch


async def test_a_kind_with_nothing_to_watch_runs_without_a_watch_task(engine: Engine) -> None:
    """noop's default watch() (the startup event, then a wait until cancelled) and `poll: -1`
    make no task: the engine sends the startup event itself, in the step a watch task's would
    (the order of a graph's first checks is its own, whatever its kinds watch with)."""
    graph = graph_of(
        ProbeRes(name="w"),  # its own watch(): a task
        PlainProbe(name="p"),
        ProbeRes(name="once", meta=Meta(poll=-1)),
        NoopRes(name="n"),
        ProbeRes(name="ticks", meta=Meta(poll=3600)),  # a poll: its task, as before
    )
    graph.connect(("probe", "p"), ("noop", "n"), Edge(notify=True))
    await engine.apply(graph)
    await settle(engine)
    # Settled: no worker task (one runs only while work is pending); a watch task for "w"
    # and the poll.
    tasks = {key[1]: len(v._tasks) for key, v in engine.vertices.items()}
    assert tasks == {"w": 1, "p": 0, "once": 0, "n": 0, "ticks": 1}
    for name in ("p", "once", "n"):
        vertex = next(v for k, v in engine.vertices.items() if k[1] == name)
        assert vertex.stats.watch_starts == 1 and vertex.ts > 0 and vertex.status is Status.OK
    assert state("w").watch_starts == 1 and state("once").watch_starts == 0
    assert [state(n).calls for n in ("w", "p", "once")] == [[(True, False)]] * 3
    # Checked again when poked, and refreshed along its notify edge as before.
    state("p").result = False
    engine.vertices[("probe", "p")]._on_event()
    await settle(engine, lambda: len(state("p").calls) == 2)
    await settle(engine)
    noop = engine.vertices[("noop", "n")]
    assert noop.stats.refreshes == noop.stats.refreshes_seen == 1
    await engine.stop()
    assert all(v.status is Status.STOPPED and not v._tasks for v in engine.vertices.values())


async def test_the_order_of_first_checks_is_the_graphs_whatever_the_kinds_watch_with(
    engine: Engine,
) -> None:
    order: list[str] = []
    unsubscribe = engine.listeners.subscribe(
        VertexChanged,
        lambda e: order.append(e.vertex.key[1]) if e.vertex.status is Status.RUNNING else None,
    )
    names = ["a", "b", "c", "d", "e", "f"]
    kinds = [ProbeRes, PlainProbe, ProbeRes, PlainProbe, PlainProbe, ProbeRes]
    await engine.apply(graph_of(*(kind(name=n) for kind, n in zip(kinds, names, strict=True))))
    await settle(engine)
    unsubscribe()
    assert order == names
