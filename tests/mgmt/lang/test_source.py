"""The language in the agent: real files, inotify, graph swaps, errors that keep the last graph."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mgmt.agent import Agent, open_lang
from mgmt.config import Config, ExitCode
from mgmt.lang.source import LangSource
from tests.e2e.helpers import has_content, wait_path

PROGRAM = """
import "os"
import "strings"
$input = strings.trim_space(os.readfile("TMP/input"))
$shout = strings.to_upper($input)
file "TMP/out" {
    state => "exists",
    content => "${shout}\\n",
}
noop "steady" {}
"""


def write_program(tmp_path: Path, text: str = PROGRAM) -> Path:
    path = tmp_path / "main.mcl"
    path.write_text(textwrap.dedent(text).replace("TMP", str(tmp_path)))
    return path


class LogWaiter(logging.Handler):
    """Sets `seen` when a log line containing `text` is emitted."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


@contextlib.asynccontextmanager
async def logged(text: str) -> AsyncIterator[None]:
    """Wait, after the body, until the language logs a line containing `text`."""
    waiter = LogWaiter(text)
    logging.getLogger("lang").addHandler(waiter)
    try:
        yield
        async with asyncio.timeout(10):
            await waiter.seen.wait()
    finally:
        logging.getLogger("lang").removeHandler(waiter)


class Running:
    def __init__(self, agent: Agent, task: asyncio.Task[ExitCode], source: LangSource) -> None:
        self.agent = agent
        self.task = task
        self.source = source

    async def swapped(self) -> None:
        self.agent.swapped.clear()
        async with asyncio.timeout(10):
            await self.agent.swapped.wait()

    async def evaluated(self) -> None:
        self.source.evaluated.clear()
        async with asyncio.timeout(10):
            await self.source.evaluated.wait()


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Running]:
    (tmp_path / "input").write_text("hello\n")
    config = Config(
        frontend="lang", file=write_program(tmp_path), prefix=tmp_path / "prefix", hostname="t"
    )
    source, first = await open_lang(config)
    assert isinstance(source, LangSource) and first is not None
    agent = Agent(config, config.prefix, source)
    task = asyncio.create_task(agent.run(first))
    async with asyncio.timeout(10):
        await agent.swapped.wait()
    await wait_path(tmp_path / "out", has_content("HELLO\n"))
    yield Running(agent, task, source)
    agent.stopping.set()
    async with asyncio.timeout(10):
        assert await task == ExitCode.OK


async def test_input_change_swaps_graph_and_keeps_unchanged_vertices(
    agent: Running, tmp_path: Path
) -> None:
    steady = agent.agent.engine.vertices[("noop", "steady")]
    (tmp_path / "input").write_text("world\n")
    await wait_path(tmp_path / "out", has_content("WORLD\n"))
    assert agent.agent.engine.vertices[("noop", "steady")] is steady
    assert steady.stats.watch_starts == 1


async def test_identical_output_is_not_resent(agent: Running, tmp_path: Path) -> None:
    graphs = agent.source.graphs
    (tmp_path / "input").write_text("  hello  \n")  # trims to the same value
    await agent.evaluated()
    assert agent.source.graphs == graphs


async def test_runtime_error_keeps_the_last_good_graph(
    agent: Running, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "lang")
    (tmp_path / "input").unlink()
    await agent.evaluated()
    assert "cannot read" in caplog.text and "keeping the last good graph" in caplog.text
    (tmp_path / "out").write_text("drift\n")  # the old graph is still enforced
    await wait_path(tmp_path / "out", has_content("HELLO\n"))
    (tmp_path / "input").write_text("back\n")
    await wait_path(tmp_path / "out", has_content("BACK\n"))
    assert "produces a graph again" in caplog.text


async def test_program_edit_swaps_in_the_new_program_and_a_broken_one_is_refused(
    agent: Running, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    program = tmp_path / "main.mcl"
    program.write_text(program.read_text().replace("to_upper", "to_lower"))
    await wait_path(tmp_path / "out", has_content("hello\n"))
    async with logged("keeping the running program"):
        program.write_text(program.read_text() + '\n$broken = 1 + "x"\n')
    assert "main.mcl:12:11: type error: operator + cannot combine int and str" in caplog.text
    (tmp_path / "input").write_text("STILL\n")
    await wait_path(tmp_path / "out", has_content("still\n"))


async def test_compile_error_before_anything_runs(tmp_path: Path) -> None:
    config = Config(
        frontend="lang",
        file=write_program(tmp_path, 'file "TMP/x" { content => 1 }\n'),
        prefix=tmp_path / "p",
        hostname="t",
    )
    from mgmt.yamlgraph import GraphFileError

    with pytest.raises(GraphFileError) as info:
        await open_lang(config)
    assert info.value.problems == [
        f"{config.file}:1:{len(str(tmp_path)) + 24}: type error: file param content: "
        "expected str, got int"
    ]
    assert not (tmp_path / "x").exists()


async def test_sighup_reloads_an_unwatched_program(tmp_path: Path) -> None:
    (tmp_path / "input").write_text("hello\n")
    config = Config(
        frontend="lang",
        file=write_program(tmp_path),
        prefix=tmp_path / "prefix",
        hostname="t",
        no_watch=True,
    )
    source, first = await open_lang(config)
    assert first is not None
    agent = Agent(config, config.prefix, source)
    task = asyncio.create_task(agent.run(first))
    await wait_path(tmp_path / "out", has_content("HELLO\n"))
    program = tmp_path / "main.mcl"
    program.write_text(program.read_text().replace("to_upper", "to_lower"))
    agent.reload.set()  # what SIGHUP does
    await wait_path(tmp_path / "out", has_content("hello\n"))
    agent.stopping.set()
    async with asyncio.timeout(10):
        assert await task == ExitCode.OK


async def test_a_program_directory_reloads_when_one_of_its_modules_changes(
    tmp_path: Path,
) -> None:
    """`mgmt run lang DIR/`: metadata.yaml names the entry; an edit of an imported module (not
    only of the entry file) swaps in the new program; an unchanged touch does not."""
    (tmp_path / "metadata.yaml").write_text('main: "prog.mcl"\n')
    (tmp_path / "prog.mcl").write_text('import "lib/"\nnoop [$lib.name] {}\n')
    (tmp_path / "lib").mkdir()
    module = tmp_path / "lib" / "main.mcl"
    module.write_text('$name = "first"\n')
    source = await LangSource.open(tmp_path, hostname="t")
    try:
        assert source.first is not None and ("noop", "first") in source.first.graph
        graphs = aiter(source)
        module.write_text('$name = "second"\n')
        async with asyncio.timeout(10):
            loaded = await anext(graphs)
        assert ("noop", "second") in loaded.graph
        assert source.runtime is not None
        assert [p.name for p in source.runtime.checked.files] == [
            "metadata.yaml",
            "prog.mcl",
            "main.mcl",
        ]
    finally:
        await source.aclose()


async def test_an_input_written_in_place_is_read_once_its_writer_closes_it(
    agent: Running, tmp_path: Path
) -> None:
    """os.readfile of a file written in place (`cat > input`: truncated, then written piece
    by piece): read at each write, the program saw '' and then a first half, and swapped a
    graph in for each (a tester saw `mode: ... got ''`). It is read at the writer's close."""
    graphs = agent.source.graphs
    with (tmp_path / "input").open("w") as writer:
        writer.write("wor")
        writer.flush()
        # A barrier: drift of a managed file, queued after the writes' events on the same
        # inotify instance; once it is repaired those events were seen.
        (tmp_path / "out").write_text("drift\n")
        await wait_path(tmp_path / "out", has_content("HELLO\n"))
        assert agent.source.graphs == graphs
        writer.write("ld\n")
    await wait_path(tmp_path / "out", has_content("WORLD\n"))
    assert agent.source.graphs == graphs + 1


async def test_a_slow_read_of_an_input_holds_up_no_repair(
    agent: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """os.readfile reads in a thread of its own (streams.Readers): while a read is held
    (a slow disk, a 16 MiB file: here the real read waits for the test), the loop repairs the
    other resources. Until 2026-12-05 it read on the loop: the repair waited for the read."""
    import threading

    import mgmt.lang.streams

    real, release = mgmt.lang.streams.read_for_program, threading.Event()
    loop, reading, threads = asyncio.get_running_loop(), asyncio.Event(), []

    def held(path: str) -> str:
        if path.endswith("/input"):
            threads.append(threading.current_thread().name)
            loop.call_soon_threadsafe(reading.set)
            release.wait(30)  # a generous bound: a failed test does not hang
        return real(path)

    monkeypatch.setattr(mgmt.lang.streams, "read_for_program", held)
    try:
        (tmp_path / "input").write_text("world\n")
        async with asyncio.timeout(10):
            await reading.wait()
        (tmp_path / "out").unlink()  # drift while the read is held
        await wait_path(tmp_path / "out", has_content("HELLO\n"))  # repaired meanwhile
    finally:
        release.set()
    await wait_path(tmp_path / "out", has_content("WORLD\n"))  # then the value read
    assert threads and all(name.startswith("lang-read") for name in threads)


async def test_an_unexpected_error_of_a_recompile_keeps_the_program_and_the_watch(
    agent: Running,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A recompile that fails in a way the front-end did not foresee (a bug some input meets:
    here made to happen by a program that says BOOM) is one line, the running program stays,
    and the next edit is compiled as any (the loop was ended by it: never read again)."""
    import mgmt.lang.source

    real, bug = mgmt.lang.source.Runtime, [True]
    program = tmp_path / "main.mcl"

    def runtime(*args: Any, **kwargs: Any) -> object:
        if bug[0] and "BOOM" in program.read_text():
            raise RuntimeError("the runtime met a bug")
        return real(*args, **kwargs)

    # After the compile: the program compiled is not the running one (a re-read compiles it).
    monkeypatch.setattr(mgmt.lang.source, "Runtime", runtime)
    caplog.set_level(logging.INFO, "lang")
    async with logged("failed unexpectedly"):
        program.write_text(program.read_text() + "\n# BOOM\n")
    line = f"reading {program} again failed unexpectedly: RuntimeError: the runtime met a bug"
    assert line in caplog.text and "Traceback" not in caplog.text, caplog.text
    assert agent.source.problem == line
    (tmp_path / "out").write_text("drift\n")  # the running program is still enforced
    await wait_path(tmp_path / "out", has_content("HELLO\n"))
    # SIGHUP with the files unchanged compiles them again (they are not the running program's).
    bug[0] = False
    async with logged("the new program gives the running graph: nothing to swap"):
        agent.source.reload()
    async with asyncio.timeout(10):  # cleared after the new program's first evaluation
        while agent.source.problem:
            agent.source.evaluated.clear()
            await agent.source.evaluated.wait()
    program.write_text(program.read_text().replace("BOOM", "fixed").replace("to_upper", "to_lower"))
    await wait_path(tmp_path / "out", has_content("hello\n"))
    assert agent.source.problem == ""


async def test_a_fifo_at_the_programs_name_is_refused_not_waited_on(
    agent: Running, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before 2026-12-05 reading a FIFO waited for a writer forever: the program was never
    read again (and `mgmt check` of one never ended)."""
    import os

    program = tmp_path / "main.mcl"
    text = program.read_text()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    async with logged("keeping the running program"):
        fifo.rename(program)
    assert f"{program}: cannot read: not a regular file" in caplog.text
    new = tmp_path / "new.mcl"
    new.write_text(text.replace("to_upper", "to_lower"))
    new.rename(program)
    await wait_path(tmp_path / "out", has_content("hello\n"))


async def test_a_program_hard_linked_at_its_missing_name_is_read_at_once(
    agent: Running, tmp_path: Path
) -> None:
    """`ln new.mcl main.mcl` at the missing name: no open made it, no close follows; it was
    waited for as a writer's file (2 s). A file with another link is whole: read at once."""
    import os

    program = tmp_path / "main.mcl"
    new = tmp_path / "new.mcl"
    new.write_text(program.read_text().replace("to_upper", "to_lower"))
    program.unlink()
    os.link(new, program)
    await wait_path(tmp_path / "out", has_content("hello\n"))
    assert agent.source._watcher is not None and not agent.source._watcher.held
