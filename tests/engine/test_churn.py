"""Churn (engine.churn) in a real engine on a real file: drift repaired again and again is told
once, then counted; a resource's first application, and a kind of actions, are not drift."""

from __future__ import annotations

import re
from collections import deque
from pathlib import Path
from typing import Any

import pytest

from engine import churn
from engine.engine import Engine
from engine.graph import Graph
from resources.exec import ExecRes
from resources.file import FileRes
from tests.engine.conftest import settle


def _files(*paths: Path) -> Graph:
    """A graph of one file resource per path, named by its file name, content `ours`."""
    graph = Graph("g")
    for path in paths:
        graph.add(FileRes(name=path.name, path=str(path), content="ours\n"))
    return graph


async def _fight(engine: Engine, rounds: int, *paths: Path) -> None:
    """Another writer changes every one of `paths`, `rounds` times, each time repaired."""
    for n in range(rounds):
        for path in paths:
            path.write_text(f"theirs {n}\n")
        await settle(engine, lambda: all(p.read_text() == "ours\n" for p in paths))
        await settle(engine)


def _summed_json(lines: list[str]) -> tuple[dict[str, Any], int]:
    """The JSON line summing up several resources among `lines`, and its total of repairs."""
    import json

    (summed,) = [
        line for line in map(json.loads, lines) if "their lines summed up" in line["message"]
    ]
    total = re.search(r"repaired (\d+) times", summed["message"])
    assert total is not None, summed
    return summed, int(total.group(1))


async def _summed_after_a_fight(
    tmp_path: Path, engine: Engine, paths: list[Path]
) -> tuple[dict[str, Any], int]:
    """A fight over `paths` (one file resource each) long enough to be summed up, in
    --log-format json: the line summing them up at its interval's end, and its total."""
    from tests.mgmt.test_log_lines import ours_only

    with ours_only(tmp_path, "json") as (read, _model):
        await engine.apply(_files(*paths))
        await settle(engine, lambda: all(p.exists() for p in paths))
        read()
        await _fight(engine, churn.QUIET_AFTER + 2, *paths)
        churn.MUTED[("file", paths[0].name)].quieting.tick()
        return _summed_json(read())


async def test_repairs_of_drift_are_told_once_a_burst_then_counted(
    tmp_path: Path,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(churn, "REPAIRS", 3)
    path = tmp_path / "f"
    graph = _files(path)
    graph.add(ExecRes(name="e", cmd="true", watchcmd="echo a; echo b; echo c; echo d"))
    await engine.apply(graph)
    await settle(engine, path.exists)
    vertex = engine.vertices[("file", "f")]
    assert vertex.stats.churn == 0  # its first application is not a repair
    for n in range(4):  # drift by another process, repaired each time
        path.write_text(f"theirs {n}\n")
        await settle(engine, lambda: path.read_text() == "ours\n")
        await settle(engine)
    told = [r.getMessage() for r in caplog.records if "behind our back" in r.getMessage()]
    assert told == [told[0]] and told[0].startswith("file[f]: changed behind our back 3 times")
    assert vertex.stats.churn == 4  # the 3 told, then one more
    assert engine.vertices[("exec", "e")].stats.churn == 0  # its runs are actions
    # After WINDOW seconds of quiet, a new burst is told again.
    later = vertex.stats.repairs[-1] + churn.WINDOW + 1  # type: ignore[index]
    for n in range(3):
        churn._repaired(vertex, later + n, deque(), None, True)
    told = [r.getMessage() for r in caplog.records if "behind our back" in r.getMessage()]
    assert len(told) == 2 and vertex.stats.churn == 7


async def test_a_fights_repairs_are_summed_up_in_the_log_and_counted_exactly(
    tmp_path: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """leads, 2026-12-06: a process rewriting a managed file in a loop made ~300-1,000
    "content updated" lines a second. The first QUIET_AFTER repairs are said in full, then one
    line per interval sums them up (the tick is called here, not waited for); the warning is
    said; the status model and the counts see every repair; the first repair after quiet is
    said in full again. Real handlers of ours (stderr's), a real file, a real engine."""
    from tests.mgmt.test_log_lines import ours_only

    monkeypatch.setattr(churn, "REPAIRS", 3)  # told at the 3rd: stats.churn counts them all
    path = tmp_path / "f"
    graph = _files(path)
    with ours_only(tmp_path, "text") as (read, model):
        await engine.apply(graph)
        await settle(engine, path.exists)
        vertex = engine.vertices[("file", "f")]
        read()
        await _fight(engine, 30, path)
        quieted = churn.MUTED[("file", "f")]
        quieted.quieting.tick()  # the interval's end
        lines = read()
        repairs = vertex.stats.churn
        assert repairs >= 30
        full = [line for line in lines if line == "engine: file[f]: content updated"]
        assert len(full) == churn.QUIET_AFTER, lines
        assert "file[f]: repaired 5 times in " in "\n".join(lines)
        assert any("changed behind our back 3 times" in line for line in lines), lines
        summed = [
            line
            for line in lines
            if re.match(r"engine: file\[f\]: repaired \d+ times in the last", line)
        ]
        assert len(summed) == 1, lines
        assert f"file[f]: repaired {repairs - churn.QUIET_AFTER} times in the last " in summed[0]
        assert model.info[("file", "f")].last_change == "content updated"  # every line seen
        # Quiet for an interval: the next repair is said in full, and the summing up ends.
        quieted.last -= churn.SUMMARY_EVERY
        assert vertex.stats.repairs is not None
        vertex.stats.repairs = deque(
            (t - churn.SUMMARY_EVERY for t in vertex.stats.repairs), vertex.stats.repairs.maxlen
        )
        path.write_text("theirs again\n")
        await settle(engine, lambda: path.read_text() == "ours\n")
        await settle(engine)
        assert "engine: file[f]: content updated" in read()
        assert ("file", "f") not in churn.MUTED


async def test_a_fights_last_repairs_are_said_at_stop(
    tmp_path: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """review4, 2026-12-06: the repairs of the interval a stop cut short were never said (the
    tick never came, its loop gone): a run stopped during a fight left its last repairs out of
    the log, counted only by metrics. The engine's stop says them (its Shared's aclose), and
    the resource's lines are no longer left out."""
    from tests.mgmt.test_log_lines import ours_only

    path = tmp_path / "f"
    graph = _files(path)
    with ours_only(tmp_path, "text") as (read, _model):
        await engine.apply(graph)
        await settle(engine, path.exists)
        read()
        await _fight(engine, churn.QUIET_AFTER + 4, path)
        assert ("file", "f") in churn.MUTED
        await engine.stop()
        lines = read()
        assert ("file", "f") not in churn.MUTED
        summed = [line for line in lines if "file[f]: repaired 4 times in the last " in line]
        assert len(summed) == 1, lines


async def test_many_resources_fought_at_once_are_summed_up_in_one_line(
    tmp_path: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """review4, 2026-12-06: a fight over 1,000 files made one summary line per file every
    10 s (100 lines a second; 9,318 lines in a 25 s fight, BASE 21,918). The resources summed
    up together are said in one line per interval, the most repaired named, their total
    exact; the second one's start of summing up is told in that line, not in one of its own."""
    from tests.mgmt.test_log_lines import ours_only

    monkeypatch.setattr(churn, "REPAIRS", 1)  # stats.churn counts every repair
    paths = [tmp_path / f"f{n}" for n in range(4)]
    graph = _files(*paths)
    with ours_only(tmp_path, "text") as (read, _model):
        await engine.apply(graph)
        await settle(engine, lambda: all(p.exists() for p in paths))
        read()
        await _fight(engine, churn.QUIET_AFTER + 3, *paths)
        quieting = churn.MUTED[("file", "f0")].quieting
        assert all(churn.MUTED.get(("file", p.name)) for p in paths)
        quieting.tick()
        lines = read()
        repairs = [engine.vertices[("file", p.name)].stats.churn for p in paths]
        summed = [line for line in lines if "their lines summed up" in line]
        assert len(summed) == 1, lines
        total = sum(repairs) - len(paths) * churn.QUIET_AFTER
        assert summed[0].startswith(f"engine: 4 resources repaired {total} times in the last ")
        assert ", 4 of them since the last such line: file[" in summed[0]
        assert summed[0].endswith(" and 1 more (mgmt status counts each; --verbose says each)")
        told = [line for line in lines if "its next repairs are summed up" in line]
        assert len(told) == 1, lines
        await engine.stop()
        assert not [p for p in paths if ("file", p.name) in churn.MUTED]


async def test_the_line_summing_up_several_names_each_by_its_fields_in_json(
    tmp_path: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ops lead 2: with --log-format json, the line summing up several resources had no kind
    nor name (a line of the engine's): a reader of the log could not tell whose repairs it
    counted past the three it names in its text. It carries `resources`: each one's kind,
    name and count, all of them, their counts adding up to the line's total."""
    monkeypatch.setattr(churn, "REPAIRS", 1)
    paths = [tmp_path / f"f{n}" for n in range(churn.NAMED + 1)]
    summed, total = await _summed_after_a_fight(tmp_path, engine, paths)
    names = sorted(one["name"] for one in summed["resources"])
    assert names == sorted(p.name for p in paths)
    assert {one["kind"] for one in summed["resources"]} == {"file"}
    assert sum(one["count"] for one in summed["resources"]) == total > 0
    assert "kind" not in summed  # (the engine's line: no one resource's)
    await engine.stop()


async def test_a_summed_up_resources_lines_outside_its_checks_are_said(
    tmp_path: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ops lead 2: while a fight's repairs were summed up, every INFO line of the resource was
    left out of the log, its repairs' and any other (its watch's, said between checks). Only
    the lines of its checks (RUNNING: the repairs) are left out; another is said at once."""
    from tests.mgmt.test_log_lines import ours_only

    monkeypatch.setattr(churn, "REPAIRS", 3)
    path = tmp_path / "f"
    graph = _files(path)
    with ours_only(tmp_path, "text") as (read, _model):
        await engine.apply(graph)
        await settle(engine, path.exists)
        vertex = engine.vertices[("file", "f")]
        await _fight(engine, churn.QUIET_AFTER + 3, path)
        assert ("file", "f") in churn.MUTED
        read()
        path.write_text("theirs again\n")
        await settle(engine, lambda: path.read_text() == "ours\n")
        await settle(engine)
        vertex.handle.logger.info("a line of its watch")  # between its checks
        lines = read()
        assert "engine: file[f]: a line of its watch" in lines, lines
        assert "engine: file[f]: content updated" not in lines, lines  # its repair's: summed
        await engine.stop()


async def test_the_line_summing_up_many_lists_a_bounded_number_in_json(
    tmp_path: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """review_ops: `resources` listed every resource summed up: 10,000 fighting at once made a
    line of ~700 KB every 10 s, which journald's LineMax (48 KB) cuts into pieces that are no
    JSON. It lists the LISTED most repaired; `more` counts the others and their repairs."""
    monkeypatch.setattr(churn, "REPAIRS", 1)
    monkeypatch.setattr(churn, "LISTED", 2, raising=False)
    paths = [tmp_path / f"f{n}" for n in range(5)]
    summed, total = await _summed_after_a_fight(tmp_path, engine, paths)
    assert len(summed["resources"]) == 2
    assert summed["more"]["resources"] == 3
    listed = sum(one["count"] for one in summed["resources"])
    assert listed + summed["more"]["count"] == total > 0
    await engine.stop()
