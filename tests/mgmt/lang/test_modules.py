"""Local modules: `import "file.mcl"`, `import "dir/"` (with metadata.yaml), remote modules from
a `path:` directory, `as` and `as *`, and the errors of each (mgmt.lang.modules)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mgmt.lang import compile_file
from mgmt.lang.errors import CompileError
from mgmt.lang.funcs import Context
from mgmt.lang.modules import parse_import, read_again
from mgmt.lang.runtime import ResSpec, Runtime
from tests.mgmt.lang.helpers import settled


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def names(target: Path) -> list[str]:
    """The names of the resources the program at `target` declares."""
    _changed, items, error = Runtime(compile_file(target), ctx=Context("h")).evaluate()
    assert error is None
    return sorted(i.name for i in items if isinstance(i, ResSpec))


def problems(target: Path) -> list[str]:
    with pytest.raises(CompileError) as info:
        compile_file(target)
    return info.value.problems


def test_files_directories_and_remote_modules(tmp_path: Path) -> None:
    """mgmt's examples/lang/modules/badexample1, with a remote module already in `path/`."""
    write(
        tmp_path,
        {
            "metadata.yaml": 'main: "main/hello.mcl"\npath: "path/"\n',
            "main/hello.mcl": """
                import "h2g2.mcl"
                import "mod1/"
                import "git://github.com/purpleidea/mgmt-example1/"
                import "lib.mcl" as *
                noop [fmt.printf("%d", $h2g2.answer), $mod1.name, $example1.name, double("x")] {}
                include mod1.site("www")
                import "fmt"
            """,
            "main/h2g2.mcl": 'import "third.mcl"\n$answer = 42 + $third.three\n',
            "main/third.mcl": "$three = 3\n",
            "main/lib.mcl": "func double($s) { $s + $s }\n",
            "main/mod1/metadata.yaml": "# empty metadata file (use defaults)\n",
            "main/mod1/main.mcl": """
                $name = "mod1"
                class site($n) {
                    noop ["site " + $n + " of " + $name] {}
                }
            """,
            "path/github.com/purpleidea/mgmt-example1/metadata.yaml": 'main: "main.mcl"\n',
            "path/github.com/purpleidea/mgmt-example1/main.mcl": '$name = "example1"\n',
        },
    )
    assert names(tmp_path) == ["45", "example1", "mod1", "site www of mod1", "xx"]
    checked = compile_file(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in checked.files] == [
        "metadata.yaml",
        "main/hello.mcl",
        "main/h2g2.mcl",
        "main/third.mcl",
        "main/mod1/metadata.yaml",
        "main/mod1/main.mcl",
        "path/github.com/purpleidea/mgmt-example1/metadata.yaml",
        "path/github.com/purpleidea/mgmt-example1/main.mcl",
        "main/lib.mcl",
    ]


def test_a_module_imported_twice_is_checked_once(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "main.mcl": 'import "a.mcl"\nimport "b.mcl"\nnoop [$a.x, $b.y] {}\n',
            "a.mcl": 'import "c.mcl"\n$x = $c.z + "a"\n',
            "b.mcl": 'import "c.mcl"\n$y = $c.z + "b"\n',
            "c.mcl": '$z = "c"\n',
        },
    )
    assert names(tmp_path / "main.mcl") == ["ca", "cb"]
    assert sum(b.name == "z" for b in compile_file(tmp_path / "main.mcl").bindings) == 1


def test_metadata_may_have_tabs_before_a_comment_as_mgmts_examples_do(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "metadata.yaml": 'main: "m/x.mcl"\t# not the default\nfiles: "files/"\t\t# extra\n',
            "m/x.mcl": 'import "y.mcl"\nnoop [$y.n] {}\n',  # y.mcl next to x.mcl, not main
            "m/y.mcl": '$n = "in m"\n',
        },
    )
    assert names(tmp_path) == ["in m"]


def _metadata(text: str) -> dict[str, str]:
    """A program importing the directory module d/ whose metadata.yaml is `text`."""
    return {"main.mcl": 'import "d/"\n', "d/metadata.yaml": text}


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"main.mcl": 'import "nope.mcl"\n'},
            'main.mcl:1:1: import "nope.mcl": no such file ',
        ),
        ({"main.mcl": 'import "d/"\n'}, 'main.mcl:1:1: import "d/": no such directory '),
        (
            {"main.mcl": 'import "./x.mcl"\n'},
            'main.mcl:1:1: import "./x.mcl": the path is not clean',
        ),
        (
            {"main.mcl": 'import "/etc/x.mcl"\n'},
            'main.mcl:1:1: import "/etc/x.mcl": absolute paths',
        ),
        (
            {
                "main.mcl": 'import "a.mcl"\n',
                "a.mcl": 'import "b.mcl"\n$x = 1\n',
                "b.mcl": 'import "a.mcl"\n$y = 1\n',
            },
            'b.mcl:1:1: import "a.mcl": an import cycle (a.mcl -> b.mcl -> a.mcl)',
        ),
        (  # tester12 #6: each directory module is named by its file, not all `main.mcl`
            {
                "main.mcl": 'import "a/"\n',
                "a/main.mcl": 'import "../b/"\n',
                "b/main.mcl": 'import "../a/"\n',
            },
            'b/main.mcl:1:1: import "../a/": an import cycle (a/main.mcl -> b/main.mcl -> a/main.mcl)',
        ),
        (
            {"main.mcl": 'import "a.mcl"\n', "a.mcl": 'noop "n" {}\n'},
            "a.mcl:1:1: a module holds only imports, bindings, funcs and classes",
        ),
        (
            {"main.mcl": 'import "a.mcl"\n', "a.mcl": "$x = \n"},
            "a.mcl:1:4: syntax error: unexpected end of file",
        ),
        (
            {"main.mcl": 'import "a.mcl"\nnoop [$a.nope] {}\n', "a.mcl": "$x = 1\n"},
            "main.mcl:2:7: undefined variable $a.nope: a has no $nope",
        ),
        (
            {"main.mcl": 'import "d/"\n', "d/metadata.yaml": "main: [1\n", "d/main.mcl": ""},
            "d/metadata.yaml:2:1: metadata: ",
        ),
        (  # a tab that is not between a value and its comment stays an error, at its place
            _metadata('main: "m.mcl"\t# c\n\tfiles: x\n'),
            "d/metadata.yaml:2:1: metadata: found character '\\t' that cannot start any token",
        ),
        (
            _metadata("mian: x.mcl\n"),
            "d/metadata.yaml:1:1: metadata: unknown key 'mian'; keys: main, path, files, license",
        ),
        (
            _metadata("main: /x.mcl\n"),
            "d/metadata.yaml:1:1: metadata: main must be a relative file path",
        ),
        (  # tester12 #8: at the key's own line (it said 1:1)
            _metadata("main: m.mcl\nbogus: 1\n"),
            "d/metadata.yaml:2:1: metadata: unknown key 'bogus'",
        ),
        (
            _metadata("# c\nmain: m.mcl\n  \nfiles: abs\n"),
            "d/metadata.yaml:4:1: metadata: files must be empty or a relative directory",
        ),
        (
            _metadata("main: m.mcl\t# c\npath: 3\n"),
            "d/metadata.yaml:2:1: metadata: path must be a str",
        ),
        (
            {"main.mcl": 'import "git://example.com/m/"\n'},
            'main.mcl:1:1: import "git://example.com/m/": remote module not found',
        ),
        (
            {"main.mcl": 'import "fmt"\nimport "x.mcl" as fmt\n', "x.mcl": "$a = 1\n"},
            'main.mcl:2:1: "fmt" is already imported',
        ),
    ],
)
def test_module_errors_name_the_file_line_and_column(
    tmp_path: Path, files: dict[str, str], expected: str
) -> None:
    write(tmp_path, files)
    found = problems(tmp_path / "main.mcl")
    shown = [p.replace(f"{tmp_path}/", "") for p in found]
    assert any(p.startswith(expected) for p in shown), shown
    assert all(len(p.splitlines()) == 1 for p in found)


def test_every_file_of_a_program_is_named_in_the_form_the_program_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module's problems used to name it in full while the main file's were as given
    (`main.mcl:2:6`, `/tmp/p/lib.mcl:1:9`: tester5's report, item 9a): each file is named as
    the main file was given, relative or not, a path to open from the same directory."""
    write(
        tmp_path / "p",
        {
            "main.mcl": 'import "lib.mcl"\nimport "m/"\n$y = $lib.x\n',
            "lib.mcl": '$x = 1 + "a"\n',
            "m/metadata.yaml": "main: main.mcl\n",
            "m/main.mcl": "$z = 2 +\n",
        },
    )
    monkeypatch.chdir(tmp_path)
    relative = problems(Path("p/main.mcl"))
    assert [p.split(": ")[0] for p in relative] == ["p/lib.mcl:1:6", "p/m/main.mcl:1:8"]
    assert problems(tmp_path / "p/main.mcl") == [f"{tmp_path}/{p}" for p in relative]
    monkeypatch.chdir(tmp_path / "p")
    assert problems(Path("main.mcl")) == [p.removeprefix("p/") for p in relative]
    (tmp_path / "p/m/main.mcl").unlink()
    (tmp_path / "p/lib.mcl").unlink()
    assert problems(Path("main.mcl")) == [
        'main.mcl:1:1: import "lib.mcl": no such file lib.mcl',
        "m/main.mcl: cannot read: No such file or directory",
    ]
    (tmp_path / "p/main.mcl").unlink()
    assert problems(Path("main.mcl")) == ["main.mcl: cannot read: No such file or directory"]
    # A link to nowhere is named as given, as yaml's is (not where it points: `/gone`).
    (tmp_path / "p/main.mcl").symlink_to(tmp_path / "gone")
    assert problems(Path("main.mcl")) == ["main.mcl: cannot read: No such file or directory"]


def test_a_failed_import_is_said_once_and_what_it_looked_for_is_known(tmp_path: Path) -> None:
    """The uses of a module whose import failed are not errors of their own; the error knows
    every file the program read or looked for (what a running agent watches to retry it)."""
    uses = 'import "m/"\nimport "fmt"\ninclude m.c\nnoop [fmt.printf("%s", $m.x, m.f())] {}\n'
    write(tmp_path, {"main.mcl": uses})
    with pytest.raises(CompileError) as info:
        compile_file(tmp_path / "main.mcl")
    assert info.value.problems == [
        f'{tmp_path}/main.mcl:1:1: import "m/": no such directory {tmp_path}/m'
    ]
    assert info.value.looked_at is not None
    files, digest = info.value.looked_at
    assert files == [tmp_path / "main.mcl", tmp_path / "m"]
    assert digest == read_again(files)
    (tmp_path / "m").mkdir()
    assert read_again(files) != digest  # the directory appearing is a change
    assert [p.replace(f"{tmp_path}/", "") for p in problems(tmp_path / "main.mcl")] == [
        "m/main.mcl: cannot read: No such file or directory"
    ]


def test_import_names_and_their_default_aliases() -> None:
    assert (
        parse_import("golang/strings").system and parse_import("golang/strings").alias == "strings"
    )
    assert parse_import("foo/server.mcl").alias == "server" and parse_import("foo/server.mcl").file
    assert parse_import("Mod-One/").alias == "mod_one"
    remote = parse_import("git://github.com/purpleidea/mgmt-example1")
    assert remote.remote and remote.alias == "example1"
    assert remote.path == "github.com/purpleidea/mgmt-example1/"
    for bad in ("", "/abs.mcl", "a//b.mcl", "a/../b/", "-x.mcl"):
        with pytest.raises(ValueError):
            parse_import(bad)


async def test_deploy_readfile_is_relative_to_the_calling_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As mgmt's deploy.readfile: a path starting with `/` is in the deploy of the module the
    call is in (a directory module's own directory; the program's for a plain file), a
    relative one is an error; os.readfile's relative path is the agent's working directory."""
    write(
        tmp_path,
        {
            "prog/main.mcl": """
                import "deploy"
                import "os"
                import "mod1/"
                import "lib.mcl"
                noop "top" { comment => deploy.readfile("/files/x") }
                noop "mod" { comment => $mod1.text }
                noop "lib" { comment => $lib.text }
                noop "cwd" { comment => os.readfile("here") }
            """,
            "prog/lib.mcl": 'import "deploy"\n$text = deploy.readfile("/files/x")\n',
            "prog/files/x": "program",
            "prog/mod1/metadata.yaml": "",
            "prog/mod1/main.mcl": 'import "deploy"\n$text = deploy.readfile("/files/x")\n',
            "prog/mod1/files/x": "module",
            "work/here": "cwd",
        },
    )
    monkeypatch.chdir(tmp_path / "work")
    prog = compile_file(tmp_path / "prog/main.mcl")
    rt = Runtime(prog, ctx=Context("h"), base_dir=tmp_path / "prog")  # as mgmt.lang.source
    try:
        _changed, items, error = (await settled(rt)).evaluate()
        assert error is None
        got = {i.name: dict(i.params)["comment"] for i in items if isinstance(i, ResSpec)}
        assert got == {"top": "program", "mod": "module", "lib": "program", "cwd": "cwd"}
    finally:
        await rt.close()
    write(tmp_path, {"rel.mcl": 'import "deploy"\nnoop "n" { comment => deploy.readfile("x") }\n'})
    rt = Runtime(compile_file(tmp_path / "rel.mcl"), ctx=Context("h"))
    try:
        _changed, _items, error = rt.evaluate()
        assert error is not None and "'x': not absolute" in str(error)
    finally:
        await rt.close()
