"""`mgmt check` builds an mcl program's first graph and refuses what every host would refuse
(tester6's finding 2), without running the program's commands. Through the real CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import run_mgmt

DUP = 'file "D/d1" {\n\tcontent => "a\\n",\n}\nfile "D/d1-dup" {\n\tpath => "D/d1",\n\tcontent => "b\\n",\n}\n'


def test_two_resources_managing_one_file_fail_the_check_at_their_statements(
    tmp_path: Path,
) -> None:
    dup = tmp_path / "dup.mcl"
    dup.write_text(DUP.replace("D", str(tmp_path)))
    expected = (
        f"{dup}:4:1: file[{tmp_path}/d1-dup] and file[{tmp_path}/d1] both manage file "
        f"{tmp_path}/d1: each would undo the other's changes (keep one of them) (also declared "
        f"at {dup}:1:1)"
    )
    for check in (["check"], ["check", "--graph"]):
        code, out = run_mgmt([*check, str(dup)])
        assert code == 2 and out.strip() == expected, out
    code, out = run_mgmt(["run", "--tmp-prefix", "--converged-timeout=0", "lang", str(dup)])
    assert code == 2 and expected in out, out
    assert not (tmp_path / "d1").exists()


def test_the_check_runs_no_command_and_passes_what_it_cannot_know(tmp_path: Path) -> None:
    """A graph that depends on os.system's output is not known without running it: the check
    does not run it (the command is the hosts'), and passes the program; --graph runs it."""
    ran = tmp_path / "ran"
    program = tmp_path / "sys.mcl"
    program.write_text(
        f'import "os"\n$x = os.system("touch {ran}; echo a")\nfile "{tmp_path}/s" {{\n'
        "\tcontent => $x,\n}\n"
    )
    code, out = run_mgmt(["check", str(program)])
    assert code == 0 and out.strip() == f"{program}: ok", out
    assert not ran.exists()
    code, out = run_mgmt(["check", "--graph", str(program)])
    assert code == 0 and f"Vertex: file[{tmp_path}/s]" in out, out
    assert ran.exists()


def test_a_run_time_error_of_this_machine_does_not_fail_the_check(tmp_path: Path) -> None:
    """os.readfile of a file the hosts have and this machine does not: `mgmt run` says so
    where it runs; the check (and so a deploy) passes it, as before."""
    program = tmp_path / "read.mcl"
    program.write_text(
        f'import "os"\nfile "{tmp_path}/r" {{\n\tcontent => os.readfile("{tmp_path}/no"),\n}}\n'
    )
    code, out = run_mgmt(["check", str(program)])
    assert code == 0 and out.strip() == f"{program}: ok", out


def _refused_by_both_checks(tmp_path: Path, programs: dict[str, str]) -> None:
    """Each program (text: its error, after `FILE:`) fails `check` and `check --graph` with
    that one line, exit 2."""
    for index, (text, error) in enumerate(programs.items()):
        program = tmp_path / f"refused{index}.mcl"
        program.write_text(text)
        for check in (["check"], ["check", "--graph"]):
            code, out = run_mgmt([*check, str(program)])
            assert code == 2 and out.strip().startswith(f"{program}:{error}"), out
            assert len(out.strip().splitlines()) == 1, out


def test_a_run_time_error_of_every_host_fails_the_check(tmp_path: Path) -> None:
    """An error no host escapes (a pure expression evaluated whatever the values: a constant
    panic, a missing key of a constant map, a division by zero, in a class included
    unconditionally too) fails `check` at its position as `check --graph` and `run`, exit 2;
    one that depends on the host or is reached only under a condition does not."""
    always = {
        'panic(true)\nprint "p" {}\n': "1:1: panic",
        '$m = {"a" => "1",}\n$v = $m["b"]\nprint "p" { msg => $v, }\n': "2:6: key 'b' not in the map",
        'import "fmt"\n$x = 42 / 0\nprint "p" { msg => fmt.printf("%f", $x), }\n': (
            "2:6: /: can't divide by zero"
        ),
        'class c($n) {\n\tprint "p" { msg => {"a" => "b",}[$n], }\n}\ninclude c("z")\n': (
            "2:21: key 'z' not in the map"
        ),
    }
    _refused_by_both_checks(tmp_path, always)
    maybe = [
        f'import "os"\nif os.readfile("{tmp_path}/no") == "" {{ panic(true) }}\nprint "p" {{}}\n',
        f'import "os"\npanic(os.readfile("{tmp_path}/no") == "")\n',
        'import "sys"\n$m = {"a" => "1",}\nprint "p" { msg => $m[sys.hostname()], }\n',
        '$m = {"a" => "1",}\n$v = $m["b"]\nprint "p" { msg => "x", }\n',  # unused: not run
    ]
    for index, text in enumerate(maybe):
        program = tmp_path / f"maybe{index}.mcl"
        program.write_text(text)
        code, out = run_mgmt(["check", str(program)])
        assert (code, out.strip()) == (0, f"{program}: ok")


def test_every_error_of_a_first_graph_no_host_can_change_fails_the_check(tmp_path: Path) -> None:
    """tester12's #2: a program that reads nothing of the host (no stream, no os/sys/world
    function, no `$hostname`) has one first graph everywhere: a param its kind refuses, a
    duplicate, an edge to nothing, in a loop or not, fail `check` (so `deploy`) as `run`, exit 2
    with FILE:LINE:COL; the same program reading the host's name passes (only a host can
    tell)."""
    d = tmp_path
    refused = {
        f'import "fmt"\nfile "{d}/m" {{ state => "exists", mode => fmt.printf("%s", "zzz"), }}\n': (
            f"2:1: file[{d}/m]: mode: expected octal like '0644' or symbolic like 'u=rw,go=r', "
            "got 'zzz'"
        ),
        'class c($m) { print "same" { msg => $m, } }\nfor $i, $x in ["a", "b"] { include c($x) }\n': (
            "1:15: incompatible duplicate resource print[same]: msg: differs: 'a' vs 'b'"
        ),
        f'exec "reload" {{ cmd => "/bin/true", }}\nfor $i, $n in ["a", "b"] {{ file "{d}/${{n}}" '
        f'{{ state => "exists", }} }}\nFile["{d}/c"] -> Exec["reload"]\n': (
            f"3:1: edge to file[{d}/c]: no such resource in the graph (nor collected)"
        ),
        f'import "iter"\nimport "fmt"\nfor $i, $n in iter.range(5000) {{ file fmt.printf("{d}/%d", $n) '
        '{ state => "exists", mode => "zzz", } }\n': (
            f"3:34: file[{d}/0]: mode: expected octal like '0644' or symbolic like 'u=rw,go=r', "
            "got 'zzz'"
        ),
    }
    _refused_by_both_checks(tmp_path, refused)
    host = [
        f'import "fmt"\nimport "sys"\nfile "{d}/m" {{ mode => fmt.printf("%s", sys.hostname()), }}\n',
        f'file "{d}/m" {{ mode => $hostname, }}\n',
    ]
    for index, text in enumerate(host):
        program = tmp_path / f"host{index}.mcl"
        program.write_text(text)
        code, out = run_mgmt(["check", str(program)])
        assert (code, out.strip()) == (0, f"{program}: ok")
        code, out = run_mgmt(["check", "--graph", "--hostname", "zzz", str(program)])
        assert code == 2 and "mode: expected octal" in out, out


def test_an_import_outside_the_program_directory_fails_the_check_at_the_import(
    tmp_path: Path,
) -> None:
    """tester6's finding 10: `mgmt check` passed it and `mgmt deploy` refused it (without the
    import's place). Both refuse it now at the import, as one line; `mgmt run` still reads it."""
    (tmp_path / "prog").mkdir()
    (tmp_path / "outside").mkdir()
    main = tmp_path / "prog" / "main.mcl"
    main.write_text('import "../outside/mod.mcl"\nprint "p" { msg => $mod.x, }\n')
    (tmp_path / "outside" / "mod.mcl").write_text('$x = "hi"\n')
    want = (
        f'{main}:1:1: import "../outside/mod.mcl": {tmp_path}/outside/mod.mcl is outside the '
        f"program's directory {tmp_path}/prog: a deploy carries only what is under it (to "
        f"deploy it: {tmp_path}/metadata.yaml with `main: prog/main.mcl`, and `mgmt deploy` the "
        f"directory {tmp_path}/)"
    )
    for target in (str(main), f"{tmp_path}/prog/"):
        code, out = run_mgmt(["check", target])
        assert code == 2 and out.strip() == want, out
    seeds = ["--insecure-cluster", "--seeds", "http://127.0.0.1:9", "--unsigned"]
    code, out = run_mgmt(["deploy", *seeds, "lang", str(main)])
    assert code == 2 and out.strip() == f"mgmt: {want} (nothing deployed)", out
    code, out = run_mgmt(["run", "--tmp-prefix", "--converged-timeout=0", "lang", str(main)])
    assert code == 0, out
    # The way the error names (tester12 #12): the directory above both, with its metadata.yaml.
    (tmp_path / "metadata.yaml").write_text("main: prog/main.mcl\n")
    code, out = run_mgmt(["check", f"{tmp_path}/"])
    assert (code, out.strip()) == (0, f"{tmp_path}: ok"), out


def test_check_graph_and_a_deploys_check_compile_a_program_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check --graph` (check, then the first graph) and deploy's read_checked (the bundle's
    imports, then the first graph) compiled the program twice: a 25,000-resource program's
    compile is ~1 s. Counted at the compiler's entry (mgmt.lang._compile), in this process.
    A program edited between the two is compiled again."""
    import mgmt.lang
    from mgmt.check import check_path, first_graph
    from mgmt.cli import check
    from mgmt.deploy.bundle import read_checked

    compiles: list[str] = []
    compile_ = mgmt.lang._compile

    def counted(*args: Any) -> Any:
        compiles.append(str(args[1]))
        return compile_(*args)

    monkeypatch.setattr(mgmt.lang, "_compile", counted)
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "names.mcl").write_text('$first = "one"\n')
    program = tmp_path / "p.mcl"
    program.write_text(
        f'import "lib/names.mcl"\nfile "{tmp_path}/a" {{\n\tcontent => $names.first,\n}}\n'
    )
    assert check(["--graph", str(program)]) == 0
    assert f"Vertex: file[{tmp_path}/a]" in capsys.readouterr().out
    assert compiles == [str(program)]
    compiles.clear()
    bundle, problems = read_checked("lang", program, 1 << 20)
    assert problems == [] and sorted(bundle.files) == ["lib/names.mcl", "p.mcl"]
    assert compiles == [str(program)]
    compiles.clear()
    assert check_path("lang", program, 1 << 20, "h") == []
    program.write_text(program.read_text().replace("/a", "/b"))
    loaded = first_graph("lang", program, "h", 1 << 20)
    assert [key[1] for key in loaded.graph.vertices] == [f"{tmp_path}/b"]
    assert compiles == [str(program), str(program)]
