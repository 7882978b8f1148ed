"""A running program edited in place, as `open('w')`, `cat > FILE` and many editors do: the
file is truncated, then written, then closed; only the closed file is the program. A program
that does not run as asked (an edit refused, a function failing) fails `mgmt status`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.e2e.helpers import Daemon, Notified, has_content, run_mgmt, wait_path


def _program(out: Path, names: str) -> str:
    return "".join(f'file "{out}/{n}" {{ content => "{n}\\n", }}\n' for n in names)


def _yaml_daemon(tmp_path: Path) -> tuple[Path, Path, Path, str, list[str]]:
    """A graph file of one file resource (out/a, content a), written: its out directory,
    prefix, path and text, and the `mgmt status` arguments for that prefix."""
    out, prefix, graph = tmp_path / "out", tmp_path / "prefix", tmp_path / "g.yaml"
    out.mkdir()
    good = f"graph: g\nresources:\n  file:\n  - name: {out}/a\n    content: a\n"
    graph.write_text(good)
    return out, prefix, graph, good, ["status", "--prefix", str(prefix)]


async def _repaired(out: Path, name: str) -> None:
    """Delete a managed file and wait for its repair: the daemon has handled every inotify
    event before that one (one inotify queue, read in order)."""
    (out / name).unlink()
    await wait_path(out / name, has_content(f"{name}\n"))


async def _runs_clean(status: list[str]) -> None:
    """`mgmt status` (argv `status`) exits 0 and says no program error."""
    code, text = await asyncio.to_thread(run_mgmt, status)
    assert code == 0 and "program error" not in text, text


async def _program_error(status: list[str], *says: str) -> None:
    """`mgmt status` exits 1 with a program error, saying each of `says` too."""
    code, text = await asyncio.to_thread(run_mgmt, status)
    assert code == 1 and "program error: " in text and all(s in text for s in says), text


async def test_a_program_rewritten_in_place_swaps_once_closed_and_errors_keep_it(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    program = tmp_path / "main.mcl"
    program.write_text(_program(out, "abcde"))
    prefix = tmp_path / "prefix"
    args = ["run", "--prefix", str(prefix), "--verbose", "lang", str(program)]
    async with Daemon(args) as daemon:
        await daemon.wait_log("converged:")
        with program.open("w") as writer:  # truncated: empty until written
            writer.flush()
            await _repaired(out, "a")
            writer.write(_program(out, "abcd"))
            writer.flush()
            writer.write(_program(out, "f"))
            writer.flush()
            await _repaired(out, "b")
            assert "program file changed" not in daemon.log  # not while it is written
        await daemon.wait_log("swapping in the new program")
        await wait_path(out / "f", has_content("f\n"))
        await daemon.wait_log("graph swap: 4 kept, 1 stopped, 1 started")
        assert daemon.log.count("swapping in the new program") == 1

        # An error written in place: the running program (not an empty one) stays, said once.
        with program.open("w") as writer:
            writer.flush()
            writer.write("file {")
        await daemon.wait_log("keeping the running program")
        code, status = await asyncio.to_thread(run_mgmt, ["status", "--prefix", str(prefix)])
        assert code == 1, status  # it does not run what it was asked to
        assert "5 resources: 5 converged" in status, status
        assert "program error: " in status and "(keeping the running program)" in status
        (out / "f").unlink()
        await _repaired(out, "c")
        await wait_path(out / "f", has_content("f\n"))
        with program.open("a") as writer:  # `echo ... >> FILE`: one write, one close
            writer.write("still bad\n")
        await daemon.wait_log("keeping the running program", count=2)
        await _repaired(out, "d")
        assert daemon.log.count("keeping the running program") == 2
        assert daemon.log.count("swapping in the new program") == 1


async def test_mgmt_status_fails_while_the_program_has_no_graph_then_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A program whose function fails before its first graph (`os.readfile` of a missing
    file, no fallback): the host runs nothing it was asked to, `mgmt status` says why, exit 1,
    and so do systemd's STATUS= and the converged line (tester9: it said "all 0 resources in the
    desired state", nothing more); once the file is there the program runs and the status is
    clean again."""
    notify = Notified(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
    out, prefix, missing = tmp_path / "out", tmp_path / "prefix", tmp_path / "missing"
    out.mkdir()
    program = tmp_path / "main.mcl"
    program.write_text(f'import "os"\nfile "{out}/a" {{ content => os.readfile("{missing}"), }}\n')
    status = ["status", "--prefix", str(prefix)]
    args = ["run", "--prefix", str(prefix), "lang", str(program)]
    async with Daemon(args) as daemon:
        await daemon.wait_log("converged:")
        line = next(x for x in daemon.lines if "converged:" in x)
        assert "desired state; the program has an error (logged above; `mgmt" in line, line
        await notify.says("READY=1")
        assert any(line.startswith("STATUS=program error: ") for line in notify.said), notify.said
        code, text = await asyncio.to_thread(run_mgmt, status)
        assert code == 1, text
        assert f"cannot read {missing}" in text and "(no graph yet)" in text, text
        code, text = await asyncio.to_thread(run_mgmt, [*status, "--json"])
        assert code == 1 and '"program_error": "' in text, text
        missing.write_text("there\n")
        await wait_path(out / "a", has_content("there\n"))
        await _runs_clean(status)
        await notify.says("STATUS=converged: ")
    notify.close()


async def test_mgmt_status_fails_while_a_graph_file_edit_is_refused(tmp_path: Path) -> None:
    """The YAML front-end alike: a graph file edited into one that does not parse keeps the
    running graph, and `mgmt status` says so (exit 1) until a good edit."""
    out, prefix, graph, good, status = _yaml_daemon(tmp_path)
    async with Daemon(["run", "--prefix", str(prefix), "yaml", str(graph)]) as daemon:
        await daemon.wait_log("converged:")
        graph.write_text("graph: [")
        await daemon.wait_log("keeping the running graph")
        await _program_error(status, "1 converged")
        graph.write_text(good.replace("content: a", "content: b"))
        await wait_path(out / "a", has_content("b"))
        await _runs_clean(status)


async def test_an_edit_refused_for_a_module_not_written_yet_is_taken_once_it_is(
    tmp_path: Path,
) -> None:
    """An edit that imports a module not there yet (or not right yet) is refused; the files
    it read or looked for are watched from then on, so writing the module (its directory, its
    main.mcl, a fix of it) is what swaps the program in, with no edit of the main file. A
    refused edit reverted swaps nothing: the running program is the same."""
    out = tmp_path / "out"
    out.mkdir()
    program, mod = tmp_path / "main.mcl", tmp_path / "mod"
    program.write_text(f'file "{out}/a" {{ content => "one\\n", }}\n')
    args = ["run", "--tmp-prefix", "--verbose", "lang", str(program)]
    async with Daemon(args) as daemon:
        await daemon.wait_log("converged:")
        program.write_text(f'import "mod/"\nfile "{out}/a" {{ content => $mod.x, }}\n')
        await daemon.wait_log("keeping the running program")
        assert f'import "mod/": no such directory {mod}' in daemon.log
        assert "undefined variable" not in daemon.log  # the import's failure said once
        mod.mkdir()
        await daemon.wait_log("cannot read: No such file or directory")
        (mod / "main.mcl").write_text('$x = "two\\n" +\n')
        await daemon.wait_log("syntax error")
        (mod / "main.mcl").write_text('$x = "two\\n"\n')
        await wait_path(out / "a", has_content("two\n"))
        await daemon.wait_log("swapping in the new program")

        good = program.read_text()
        program.write_text(good + "file {\n")
        await daemon.wait_log("keeping the running program", count=4)
        program.write_text(good)
        await daemon.wait_log("back to the running program's: nothing to swap")
        assert daemon.log.count("swapping in the new program") == 1


async def test_a_refused_graph_file_edit_undone_or_refused_by_the_engine_shows_in_status(
    tmp_path: Path,
) -> None:
    """A bad edit undone (the file is the running graph's again) clears the program error; a
    graph the engine refuses (two resources own one file) is one too, until a good edit."""
    out, prefix, graph, good, status = _yaml_daemon(tmp_path)
    async with Daemon(["run", "--prefix", str(prefix), "yaml", str(graph)]) as daemon:
        await daemon.wait_log("converged:")
        with graph.open("a") as writer:
            writer.write("x: [\n")
        await daemon.wait_log("keeping the running graph")
        await _program_error(status)
        graph.write_text(good)
        await daemon.wait_log("back to the running graph: nothing to swap")
        await _runs_clean(status)

        both = good + f"  - name: b\n    path: {out}/a\n    content: b\n"
        graph.write_text(both)
        await daemon.wait_log("both manage file")
        await _program_error(status, "both manage file")
        graph.write_text(good.replace("content: a", "content: c"))
        await wait_path(out / "a", has_content("c"))
        await _runs_clean(status)


async def test_a_program_graph_the_engine_refuses_shows_in_status_until_a_good_one(
    tmp_path: Path,
) -> None:
    """The language alike: an edit whose graph has two resources owning one file compiles, but
    the engine refuses the graph; the last good graph stays and `mgmt status` says why."""
    out, prefix, program = tmp_path / "out", tmp_path / "prefix", tmp_path / "main.mcl"
    out.mkdir()
    one = f'file "a" {{ path => "{out}/x", content => "a", }}\n'
    program.write_text(one)
    status = ["status", "--prefix", str(prefix)]
    async with Daemon(["run", "--prefix", str(prefix), "lang", str(program)]) as daemon:
        await daemon.wait_log("converged:")
        program.write_text(one + f'file "b" {{ path => "{out}/x", content => "b", }}\n')
        await daemon.wait_log("both manage file")
        code, text = await asyncio.to_thread(run_mgmt, status)
        assert code == 1 and "both manage file" in text, text
        program.write_text(one.replace('"a", }', '"c", }'))
        await wait_path(out / "x", has_content("c"))
        await _runs_clean(status)


async def test_a_program_deleted_then_written_again_is_read_once_its_writer_closes_it(
    tmp_path: Path,
) -> None:
    """`rm main.mcl`, then `cp main.bak main.mcl` (or a writer that opens, waits, writes): the
    missing file is a program error (the running program stays), and the file created by the
    open is empty until written: it is read at its writer's close, as a write in place is.
    Read at its creation, the empty program was swapped in: every resource left the graph and
    a reversible file was removed until the next read (tester5's report, item 1)."""
    out, prefix = tmp_path / "out", tmp_path / "prefix"
    out.mkdir()
    program = tmp_path / "main.mcl"
    kept = f'file "{out}/kept" {{ content => "k\\n", Meta:reverse => true, }}\n'
    text = _program(out, "ab") + kept
    program.write_text(text)
    status = ["status", "--prefix", str(prefix)]
    async with Daemon(["run", "--prefix", str(prefix), "lang", str(program)]) as daemon:
        await daemon.wait_log("converged:")
        program.unlink()
        await daemon.wait_log("main.mcl: cannot read: No such file or directory")
        await daemon.wait_log("keeping the running program")
        await _program_error(status, "3 converged")

        async def write_slowly(text: str) -> None:
            with program.open("w") as writer:  # created: empty until written
                await _repaired(out, "a")  # the daemon has seen the creation
                await _repaired(out, "b")
                writer.write(text)
                writer.flush()
                await _repaired(out, "a")

        await write_slowly(text)  # the same program again
        await daemon.wait_log("back to the running program's: nothing to swap")
        await _runs_clean(status)
        program.unlink()
        await daemon.wait_log("keeping the running program", count=2)
        await write_slowly(text + _program(out, "c"))  # with one resource more
        await daemon.wait_log("graph swap: 3 kept, 0 stopped, 1 started")
        await wait_path(out / "c", has_content("c\n"))
        assert "reversed" not in daemon.log and "stopped, 0 started" not in daemon.log
        assert daemon.log.count("swapping in the new program") == 1
        assert (out / "kept").read_text() == "k\n"


async def test_a_graph_file_deleted_then_written_again_is_read_once_its_writer_closes_it(
    tmp_path: Path,
) -> None:
    """The YAML front-end alike: a missing graph file is a program error, the file created
    again is read at its writer's close (read at its creation, it was refused as empty: a
    spurious `the graph file must be a mapping`), and the status is clean again."""
    out, prefix, graph, good, status = _yaml_daemon(tmp_path)
    async with Daemon(["run", "--prefix", str(prefix), "yaml", str(graph)]) as daemon:
        await daemon.wait_log("converged:")
        graph.unlink()
        await daemon.wait_log("keeping the running graph")
        code, said = await asyncio.to_thread(run_mgmt, status)
        assert code == 1 and "cannot read" in said, said
        with graph.open("w") as writer:
            (out / "a").unlink()  # the daemon has seen the creation once this is repaired
            await wait_path(out / "a", has_content("a"))
            writer.write(good)
        await daemon.wait_log("back to the running graph: nothing to swap")
        await _runs_clean(status)
        assert "must be a mapping" not in daemon.log and "file is empty" not in daemon.log
        assert "graph swap" not in daemon.log


async def test_a_module_edited_while_the_main_file_is_compiled_again_is_not_lost(
    tmp_path: Path,
) -> None:
    """`rm main.mcl; cp main.bak main.mcl; sed -i s/vN/vM/ mymod/main.mcl`, in a loop: the
    missing main file's refusal watched main.mcl only; the compile that followed read the
    module before sed's rename and the module's watch came back after it, so the edit was
    unseen (`back to the running program's: nothing to swap`, the old module kept running
    until SIGHUP: tester5's report, item 2). A file watched again is read again once watched.
    A big module read after mymod makes the compile long enough for sed to run during it."""
    out, mod = tmp_path / "out", tmp_path / "mymod"
    out.mkdir()
    mod.mkdir()
    (mod / "metadata.yaml").write_text("main: main.mcl\n")
    (mod / "main.mcl").write_text('$x = "v0"\n')
    (tmp_path / "big").mkdir()  # read after mymod, and long to parse and check
    (tmp_path / "big" / "main.mcl").write_text(
        "".join(f'$v{i} = "{i}" + "{i}"\n' for i in range(3000))
    )
    program = tmp_path / "main.mcl"
    text = f'import "mymod/"\nimport "big/"\nfile "{out}/m" {{ content => $mymod.x, }}\n'
    text += f'file "{out}/big" {{ content => $big.v1, }}\n'
    program.write_text(text)
    args = ["run", "--tmp-prefix", "--verbose", "lang", str(program)]
    async with Daemon(args) as daemon:
        await wait_path(out / "m", has_content("v0"))
        for round in range(1, 6):
            program.unlink()
            await daemon.wait_log("cannot read: No such file or directory", count=round)
            program.write_text(text)
            await daemon.wait_log("checking it", count=2 * round)
            sed = await asyncio.create_subprocess_exec(
                "sed", "-i", f"s/v{round - 1}/v{round}/", str(mod / "main.mcl")
            )
            assert await sed.wait() == 0
            await wait_path(out / "m", has_content(f"v{round}"))


async def test_a_module_written_again_file_by_file_is_compiled_once_done(
    tmp_path: Path,
) -> None:
    """A module's files written again one after the other (a module directory re-created):
    the program is compiled once they are all written, not once per file with an error for
    each state in between (`mymod/main.mcl: cannot read`, tester5's report, item 9c). A file
    being written holds the read back until its writer closes it, whatever is written beside
    it meanwhile; a burst of changes is read once (engine.watcher.ReadTimer)."""
    out, mod = tmp_path / "out", tmp_path / "mymod"
    out.mkdir()
    mod.mkdir()
    (mod / "metadata.yaml").write_text("main: main.mcl\n")
    (mod / "main.mcl").write_text('$x = "v0\\n"\n')
    program = tmp_path / "main.mcl"
    program.write_text(
        f'import "mymod/"\nfile "{out}/m" {{ content => $mymod.x, }}\n' + _program(out, "a")
    )
    async with Daemon(["run", "--tmp-prefix", "lang", str(program)]) as daemon:
        await wait_path(out / "m", has_content("v0\n"))
        (mod / "main.mcl").unlink()
        await daemon.wait_log("mymod/main.mcl: cannot read: No such file or directory")
        with (mod / "main.mcl").open("w") as writer:  # created: empty until written
            await _repaired(out, "a")
            (mod / "metadata.yaml").write_text("# again\nmain: main.mcl\n")
            await _repaired(out, "a")
            writer.write('$x = "v1\\n"\n')
        await wait_path(out / "m", has_content("v1\n"))
        await daemon.wait_log("graph swap: 1 kept, 1 stopped, 1 started")
        assert daemon.log.count("keeping the running program") == 1, daemon.log
        assert daemon.log.count("swapping in the new program") == 1, daemon.log


async def test_an_edit_that_swaps_nothing_in_says_so(tmp_path: Path) -> None:
    """tester12 #13: "swapping in the new program" was logged before a run-time error (the
    last good graph kept), a cycle, and an edit back to the running graph, none of which
    swaps anything in; each says what happened now, and a real swap still says it."""
    out = tmp_path / "out"
    out.mkdir()
    program = tmp_path / "main.mcl"
    program.write_text(_program(out, "a"))
    async with Daemon(["run", "--tmp-prefix", "lang", str(program)]) as daemon:
        await daemon.wait_log("converged:")
        program.write_text(
            '$l = ["x",]\n$v = $l[7]\n' + _program(out, "a") + 'print "b" { msg => $v, }\n'
        )
        await daemon.wait_log("the new program fails at run time: nothing swapped")
        assert "index 7 out of range" in daemon.log
        program.write_text(_program(out, "a"))
        await daemon.wait_log("the new program gives the running graph: nothing to swap")
        program.write_text(
            _program(out, "ab")
            + f'File["{out}/a"] -> File["{out}/b"]\nFile["{out}/b"] -> File["{out}/a"]\n'
        )
        await daemon.wait_log("nothing swapped", count=2)
        assert "cycle: file[" in daemon.log
        program.write_text(_program(out, "ab"))
        await daemon.wait_log("swapping in the new program")
        await wait_path(out / "b", has_content("b\n"))
        assert daemon.log.count("swapping in the new program") == 1, daemon.log
