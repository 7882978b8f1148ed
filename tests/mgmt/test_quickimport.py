"""mgmt.quickimport: the import system's helpers, made cheaper, and the index of a run's
modules answer as CPython's do."""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from importlib.machinery import FileFinder, ModuleSpec
from pathlib import Path
from typing import Any

import pytest

from mgmt import quickimport
from tests.mgmt.test_startup import _one_file_graph, _python, own_tmpdir  # noqa: F401

pytestmark = pytest.mark.skipif(not quickimport.applies(), reason="CPython 3.11 on POSIX only")

ORIGINAL_FIND_SPEC = quickimport._FIND_SPEC
ORIGINAL_CACHE_FROM_SOURCE = quickimport._CACHE_FROM_SOURCE


@pytest.fixture(autouse=True)
def _cpythons_own() -> Iterator[None]:
    """Each test compares against CPython's helpers: installed or not, they are put back."""
    source_loader = quickimport._external.SourceLoader
    before = (quickimport._external.cache_from_source, FileFinder.find_spec, source_loader.get_code)
    meta_path = sys.meta_path[:]
    quickimport.uninstall()
    yield
    quickimport._external.cache_from_source, FileFinder.find_spec, source_loader.get_code = before
    sys.meta_path[:] = meta_path


def _both(call: Any) -> tuple[Any, Any]:
    """`call()`'s result or exception type with CPython's helpers, then with quickimport's."""
    out = []
    for install in (quickimport.uninstall, quickimport.install):
        install()
        try:
            out.append(call())
        except Exception as err:  # compared: the same kind of failure
            out.append(type(err))
        finally:
            quickimport.uninstall()
    return out[0], out[1]


PATHS = [
    "/usr/lib/python3.11/os.py",
    "/a/b/c.py",
    "/a//b.py",
    "a/b.py",
    "a//b.py",
    "b.py",
    "/b.py",
    "/a/b.c.py",
    "/a/.hidden",
    "/a/noext",
    "/a/b.py/",
    "/a/b/",
    "",
    "/a/b.pyw",
    "/a/b.pyc",
]


@pytest.mark.parametrize("path", PATHS)
def test_a_source_files_bytecode_path_is_cpythons(path: str) -> None:
    def call() -> Any:
        return quickimport._external.cache_from_source(path)

    ours, theirs = _both(call)
    assert ours == theirs


def test_bytecode_paths_off_the_common_case_are_cpythons(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytes and path objects, an optimization level, debug_override and a pycache prefix
    go to CPython's function."""
    for path in (b"/a/b.py", Path("/a/b.py")):
        ours, theirs = _both(lambda p=path: quickimport._external.cache_from_source(p))
        assert ours == theirs
    assert ours == importlib.util.cache_from_source(Path("/a/b.py"))
    for optimization in ("", 1, 2, "x!"):
        ours, theirs = _both(
            lambda o=optimization: quickimport._external.cache_from_source(
                "/a/b.py", optimization=o
            )
        )
        assert ours == theirs
    monkeypatch.setattr(sys, "pycache_prefix", "/tmp/prefix")
    ours, theirs = _both(lambda: quickimport._external.cache_from_source("/a/b.py"))
    assert ours == theirs == "/tmp/prefix/a/b.cpython-311.pyc"


def _spec_fields(spec: ModuleSpec | None) -> Any:
    if spec is None:
        return None
    loader = spec.loader
    return (
        spec.name,
        spec.origin,
        type(loader),
        getattr(loader, "path", None),
        getattr(loader, "name", None),
        spec.submodule_search_locations,
        spec.cached,
        spec.has_location,
        spec.parent,
    )


def _found(directory: str, name: str) -> tuple[Any, Any]:
    """What a FileFinder of `directory` (as the import system makes one) finds for `name`,
    with CPython's find_spec and with quickimport's: a new finder each, its listing read."""
    hook = sys.path_hooks[-1]  # FileFinder.path_hook(...): the import system's own

    def call() -> Any:
        return _spec_fields(hook(directory).find_spec(name))

    return _both(call)


def _run_modules() -> list[tuple[str, str]]:
    """(directory searched, module name) of every module a cron run imports from a file."""
    script = (
        "import sys\n"
        "from mgmt import full_site\n"
        "full_site()\n"  # (started as the launcher starts it: -S)
        "from mgmt import agent, cli\n"
        "import resources.file\n"
        "for name, m in sorted(sys.modules.items()):\n"
        "    spec = getattr(m, '__spec__', None)\n"
        "    if spec is not None and spec.origin and spec.has_location:\n"
        "        print(name, spec.origin)\n"
    )
    found = []
    for line in _python(script).splitlines():
        name, origin = line.split(" ", 1)
        where = os.path.dirname(origin)
        if origin.endswith(f"{os.sep}__init__.py"):
            where = os.path.dirname(where)  # a package: found in the directory above
        found.append((where, name))
    return found


def test_every_module_a_run_imports_is_found_as_cpython_finds_it() -> None:
    modules = _run_modules()
    assert len(modules) > 100
    assert any(name == "yaml._yaml" for _, name in modules)  # an extension module among them
    for directory, name in modules:
        ours, theirs = _found(directory, name)
        assert ours == theirs, name
        assert ours is not None, name


def _code(loader: Any, name: str, get_code: Any) -> Any:
    """What `get_code` gives (its code object's fields and file name), or its exception's type."""
    try:
        code = get_code(loader, name)
    except Exception as err:  # compared: the same kind of failure
        return type(err)
    return code, code.co_filename, code.co_consts


def test_every_module_a_run_imports_has_cpythons_code_object() -> None:
    sources = [(d, n) for d, n in _run_modules() if _found(d, n)[1][1].endswith(".py")]
    assert len(sources) > 80
    for directory, name in sources:
        origin = _found(directory, name)[1][1]
        loader = quickimport._SOURCE_FILE_LOADER(name, origin)
        ours = _code(loader, name, quickimport.get_code)
        assert ours == _code(loader, name, quickimport._GET_CODE), name
        assert ours[1] == origin, name


def test_a_code_object_off_the_common_case_is_cpythons(tmp_path: Path) -> None:
    """No `.pyc`, a stale one, a hash-based one, a truncated one, another name, another kind
    of loader: each gives what CPython's `get_code` gives (and writes the `.pyc` it writes)."""
    import py_compile

    source = tmp_path / "mod.py"
    cached = Path(importlib.util.cache_from_source(str(source)))
    loader = quickimport._SOURCE_FILE_LOADER("mod", str(source))

    def both(name: str = "mod", of: Any = loader) -> tuple[Any, Any]:
        state = cached.read_bytes() if cached.exists() else None
        theirs = _code(of, name, quickimport._GET_CODE)
        written = cached.read_bytes() if cached.exists() else None
        if state is None:
            cached.unlink(missing_ok=True)
        else:
            cached.write_bytes(state)
        ours = _code(of, name, quickimport.get_code)
        assert (cached.read_bytes() if cached.exists() else None) == written
        return ours, theirs

    source.write_text("x = 1\n")
    ours, theirs = both()  # no .pyc: compiled, and written
    assert ours == theirs
    assert ours[0].co_consts == (1, None)
    assert both() == (theirs, theirs)  # the .pyc written: read
    source.write_text("x = 22\n")  # stale: another size (and mtime)
    os.utime(source, (1, 1))
    ours, theirs = both()
    assert ours == theirs
    assert ours[0].co_consts == (22, None)
    py_compile.compile(
        str(source), str(cached), invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH
    )
    assert both()[0] == both()[1]
    cached.write_bytes(cached.read_bytes()[:20])  # truncated: marshal's error, CPython's way
    ours, theirs = both()
    assert ours == theirs
    assert ours in (EOFError, ValueError)
    assert both("other") == (ImportError, ImportError)  # a name not the loader's

    class Loader(quickimport._SOURCE_FILE_LOADER):  # type: ignore[misc,name-defined]
        def get_data(self, path: str) -> bytes:
            if path.endswith(".pyc"):
                raise OSError  # its own way of reading: never bypassed
            return bytes(super().get_data(path))

    py_compile.compile(str(source), str(cached))
    ours, theirs = both(of=Loader("mod", str(source)))
    assert ours == theirs


def _pyc_edits() -> dict[str, Callable[[bytes], bytes]]:
    """A matching timestamp-based `.pyc` changed as an edit, a copy or a fault changes it."""
    import marshal

    return {
        "another Python's magic": lambda d: b"\x00\x00\r\n" + d[4:],
        "a check_source flag alone": lambda d: d[:4] + b"\x02\0\0\0" + d[8:],
        "an unknown flag": lambda d: d[:4] + b"\x04\0\0\0" + d[8:],
        "another mtime": lambda d: (
            d[:8] + (int.from_bytes(d[8:12], "little") + 1).to_bytes(4, "little") + d[12:]
        ),
        "another size": lambda d: (
            d[:12] + (int.from_bytes(d[12:16], "little") + 1).to_bytes(4, "little") + d[16:]
        ),
        "a header only": lambda d: d[:16],
        "a header cut": lambda d: d[:15],
        "a body cut": lambda d: d[:-3],
        "a corrupt body": lambda d: d[:16] + b"\xff\xff" + d[18:],
        "not a code object": lambda d: d[:16] + marshal.dumps(42),
        "bytes after the code": lambda d: d + b"junk",
        "empty": lambda d: b"",
    }


def _edited_after_its_pyc(tmp_path: Path) -> tuple[Path, Path, Any]:
    """mod.py compiled as `x = 1` (mtime 1000) into its .pyc, then written `x = 2` (the same
    size; its mtime the caller's): the source, the .pyc and a loader of ours for it."""
    import py_compile

    source = tmp_path / "mod.py"
    cached = Path(importlib.util.cache_from_source(str(source)))
    loader = quickimport._SOURCE_FILE_LOADER("mod", str(source))
    source.write_text("x = 1\n")
    os.utime(source, (1000, 1000))
    py_compile.compile(str(source), str(cached))
    source.write_text("x = 2\n")
    return source, cached, loader


@pytest.mark.parametrize("edit", sorted(_pyc_edits()))
def test_a_pyc_cpython_rejects_is_rejected_and_one_it_accepts_accepted(
    tmp_path: Path, edit: str
) -> None:
    """A `.pyc` whose header or body is not the matching one's: the same code object (the
    source's, compiled again, or the `.pyc`'s), or the same error, as CPython's `get_code`
    gives, and the same `.pyc` left behind."""
    source, cached, loader = _edited_after_its_pyc(tmp_path)
    os.utime(source, (1000, 1000))  # the header still matches: a code object read from the
    # .pyc (1) is told from the source's compiled again (2)
    changed = _pyc_edits()[edit](cached.read_bytes())
    results = []
    for get_code in (quickimport._GET_CODE, quickimport.get_code):
        cached.write_bytes(changed)
        results.append((_code(loader, "mod", get_code), cached.read_bytes()))
    assert results[0] == results[1]
    if edit in ("bytes after the code", "a check_source flag alone"):  # CPython reads both
        # (marshal reads one object; flag 2 without flag 1 is a timestamp-based .pyc)
        assert results[0][0][2] == (1, None)
    elif type(results[0][0]) is tuple:
        assert results[0][0][2] == (2, None)


def test_a_source_edited_in_its_pycs_second_is_read_from_the_pyc_as_cpython_does(
    tmp_path: Path,
) -> None:
    source, _cached, loader = _edited_after_its_pyc(tmp_path)
    os.utime(source, (1000.5, 1000.5))  # the same second, the same size
    ours = _code(loader, "mod", quickimport.get_code)
    assert ours == _code(loader, "mod", quickimport._GET_CODE)
    assert ours[0].co_consts == (1, None)  # (the stale one: timestamp pycs' known limit)


def test_packages_namespaces_bytecode_and_absent_names_are_found_as_cpython_finds_them(
    tmp_path: Path,
) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "ns").mkdir()  # no __init__: a namespace package's portion
    (tmp_path / "mod.py").write_text("")
    (tmp_path / "both").mkdir()  # a directory without __init__ and a module of that name
    (tmp_path / "both.py").write_text("")
    (tmp_path / "compiled.pyc").write_bytes(b"")
    (tmp_path / "ext.so").write_bytes(b"")
    (tmp_path / "ext.so.py").write_text("")  # odd: a name that ends in one suffix, then another
    (tmp_path / "Case.py").write_text("")
    for name in ("pkg", "ns", "mod", "both", "compiled", "ext", "absent", "case", "Case", "a.mod"):
        ours, theirs = _found(str(tmp_path), name)
        assert ours == theirs, name
    assert _found(str(tmp_path), "ns")[0][5] == [str(tmp_path / "ns")]
    assert _found(str(tmp_path), "both")[0][1] == str(tmp_path / "both.py")


def test_a_finder_sees_a_module_written_after_its_listing_was_read(tmp_path: Path) -> None:
    """The directory's mtime is still read at each lookup: a new file is found."""
    (tmp_path / "first.py").write_text("")
    quickimport.install()
    finder = sys.path_hooks[-1](str(tmp_path))
    assert finder.find_spec("first") is not None
    assert finder.find_spec("second") is None
    (tmp_path / "second.py").write_text("")
    os.utime(tmp_path, ns=(0, 0))  # (a listing read in the same mtime tick: made different)
    spec = finder.find_spec("second")
    assert spec is not None
    assert spec.origin == str(tmp_path / "second.py")


def test_the_command_installs_them_and_a_run_imports_as_before(tmp_path: Path) -> None:
    graph = _one_file_graph(tmp_path, "a")
    script = (
        "import atexit, sys, _frozen_importlib_external as e\n"
        "from mgmt.__main__ import main\n"
        "sys.argv[1:] = ['run', '--converged-timeout=0', '--tmp-prefix', 'yaml', sys.argv[1]]\n"
        "atexit.register(lambda: print(e.cache_from_source.__module__, "
        "e.FileFinder.find_spec.__module__))\n"
        "main()\n"
    )
    assert _python(script, str(graph)).split() == ["mgmt.quickimport", "mgmt.quickimport"]
    assert (tmp_path / "a").read_text() == "a\n"


def test_the_command_puts_the_index_first_when_there_is_one(tmp_path: Path) -> None:
    """scripts/install.sh records the index (this checkout's: the tests run from it)."""
    if quickimport.Index.load(quickimport.index_path()) is None:
        pytest.skip("no index here (scripts/install.sh records it)")
    graph = _one_file_graph(tmp_path, "a")
    script = (
        "import atexit, sys\n"
        "from mgmt.__main__ import main\n"
        "sys.argv[1:] = ['run', '--converged-timeout=0', '--tmp-prefix', 'yaml', sys.argv[1]]\n"
        "atexit.register(lambda: print([getattr(f, '__name__', type(f).__name__) for f in sys.meta_path]))\n"
        "main()\n"
    )
    finders = _python(script, str(graph))
    assert finders.index("'Index'") < finders.index("'PathFinder'"), finders
    assert (tmp_path / "a").read_text() == "a\n"


def test_the_index_comes_after_a_finder_put_first_before_the_command_started(
    tmp_path: Path,
) -> None:
    """A finder a `sitecustomize` put first is still asked first (tests/e2e/test_cli.py's
    stop signal during the imports relies on one); the index's, before CPython's own."""
    if quickimport.Index.load(quickimport.index_path()) is None:
        pytest.skip("no index here (scripts/install.sh records it)")
    script = (
        "import sys\n"
        "class Mine:\n"
        "    find_spec = staticmethod(lambda *args: None)\n"
        "sys.meta_path.insert(0, Mine)\n"
        "from mgmt import quickimport\n"
        "quickimport.install()\n"
        "print([getattr(f, '__name__', type(f).__name__) for f in sys.meta_path])\n"
    )
    assert _python(script) == str(
        ["Mine", "Index", "BuiltinImporter", "FrozenImporter", "PathFinder"]
    )


# The index: recorded from what a process imported, its answers PathFinder's while nothing changed

_RECORDED_AND_COMPARED = """
import sys
from importlib.machinery import PathFinder
from mgmt import full_site
full_site()  # (started as the launcher starts it: -S)
from mgmt import agent, cli, quickimport
import resources.file

def shown(spec):
    if spec is None:
        return None
    loader = spec.loader
    return (spec.name, spec.origin, type(loader), loader.name, loader.path,
            spec.submodule_search_locations, spec.cached, spec.has_location, spec.parent)

quickimport.record(sys.argv[1], settled=0)
index = quickimport.Index.load(sys.argv[1])
for name in sorted(index.modules):
    parent = name.rpartition(".")[0]
    path = sys.modules[parent].__path__ if parent else None
    ours = shown(index.find_spec(name, path))
    print(name, ours is not None, ours == shown(PathFinder.find_spec(name, path)))
"""


def test_the_index_of_a_runs_modules_answers_as_the_path_finder_does(tmp_path: Path) -> None:
    index = tmp_path / "index.txt"
    lines = _python(_RECORDED_AND_COMPARED, str(index)).splitlines()
    answers = {name: rest for name, rest in (line.split(" ", 1) for line in lines)}
    assert len(answers) > 100
    assert {"yaml._yaml", "mgmt", "asyncio", "mgmt.agent", "typing", "_asyncio"} <= set(answers)
    assert {rest for rest in answers.values()} == {"True True"}, answers
    for left_out in ("sys", "os", "posix", "codecs"):  # builtin or frozen: never in it
        assert left_out not in answers
    assert oct(index.stat().st_mode & 0o777) == oct(0o644)


_STALE = """
import os, sys
from mgmt import quickimport
early, lib, index = sys.argv[1:4]
sys.path[:0] = [early, lib]
for directory in (early, lib, lib + "/pkgq"):
    os.utime(directory, (1e9, 1e9))  # (old: a change now is another time, whatever the tick)
import alphaq, pkgq.sub
quickimport.record(index, settled=0)
found = quickimport.Index.load(index)

def answers():
    return [
        found.find_spec(name, path) is not None
        for name, path in (("alphaq", None), ("pkgq", None), ("pkgq.sub", pkgq.__path__))
    ]

print(answers())
change = sys.argv[4]
if change == "added":
    open(lib + "/other.py", "w").close()
elif change == "shadowed":
    open(early + "/alphaq.py", "w").close()
elif change == "package":
    open(lib + "/pkgq/more.py", "w").close()
elif change == "path":
    sys.path.remove(lib)
print(answers())
"""


@pytest.mark.parametrize(
    ("change", "after"),
    [
        ("nothing", [True, True, True]),
        ("added", [False, False, True]),  # a file beside the module: its directory changed
        ("shadowed", [False, False, True]),  # an entry before it on the path changed
        ("package", [True, False, False]),  # the package's own directory changed
        ("path", [False, False, True]),  # its path entry gone
    ],
)
def test_the_index_answers_nothing_that_depends_on_a_changed_directory(
    tmp_path: Path, change: str, after: list[bool]
) -> None:
    early, lib = tmp_path / "early", tmp_path / "lib"
    (lib / "pkgq").mkdir(parents=True)
    early.mkdir()
    (lib / "alphaq.py").write_text("")
    (lib / "pkgq" / "__init__.py").write_text("")
    (lib / "pkgq" / "sub.py").write_text("")
    index = tmp_path / "index.txt"
    out = _python(_STALE, str(early), str(lib), str(index), change).splitlines()
    assert out == [str([True, True, True]), str(after)]


def _recorded(tmp_path: Path) -> Path:
    """An index recorded by a process that imported a module of its own (tmp_path/lib)."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "alphaq.py").write_text("")
    os.utime(lib, (1e9, 1e9))
    index = tmp_path / "cache" / "index.txt"
    index.parent.mkdir(mode=0o755)
    script = (
        "import sys\n"
        "from mgmt import quickimport\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import alphaq\n"
        "quickimport.record(sys.argv[2], settled=0)\n"
    )
    _python(script, str(lib), str(index))
    return index


def test_the_index_leaves_asyncio_timeouts_to_the_finder_that_fixes_it(tmp_path: Path) -> None:
    """engine.timeoutfix's finder comes after the index (every other lookup is answered before
    it): the index never answers asyncio.timeouts, recorded or read, so that finder still
    finds it and fixes it."""
    path = tmp_path / "imports.txt"
    script = (
        "import sys\n"
        "from mgmt import quickimport\n"
        "quickimport.install()\n"
        "import engine\n"  # (timeoutfix's finder)
        "finders = [type(f).__name__ for f in sys.meta_path]\n"
        "import asyncio.timeouts\n"
        "print(finders.index('_OnImport') > finders.index('Index') if 'Index' in finders "
        "else True, sys.version_info >= (3, 11, 3) or "
        "asyncio.timeouts.Timeout.__aenter__.__module__ == 'engine.timeoutfix')\n"
        f"quickimport.record({str(path)!r}, settled=0)\n"
    )
    assert _python(script) == "True True"
    text = path.read_text()
    assert "\nasyncio.tasks\t" in text
    assert "\nasyncio.timeouts\t" not in text
    line = next(x for x in text.splitlines() if x.startswith("asyncio.tasks\t"))
    path.write_text(
        text
        + line.replace("asyncio.tasks", "asyncio.timeouts").replace("tasks.py", "timeouts.py")
        + "\n"
    )
    index = quickimport.Index.load(str(path))
    assert index is not None
    assert "asyncio.tasks" in index.modules
    assert "asyncio.timeouts" not in index.modules


def test_the_index_leaves_the_deferred_modules_to_lazyimports_finder() -> None:
    """mgmt.lazyimport's finder comes after the index (asked only for what the index does
    not answer), and the index leaves out every name that finder defers: one in the index
    (as if a run had imported it whole) is still deferred."""
    script = (
        "import sys, os\n"
        "from mgmt import quickimport\n"
        "quickimport.install()\n"
        "index = next(f for f in sys.meta_path if isinstance(f, quickimport.Index))\n"
        "where = os.path.dirname(os.__file__)\n"
        "index.modules['subprocess'] = ('s', False, where, 'subprocess.py')\n"
        "from mgmt import lazyimport\n"
        "lazyimport.install()\n"
        "finders = [type(f).__name__ for f in sys.meta_path]\n"
        "import subprocess\n"
        "print(finders.index('Index') < finders.index('_Finder'), 'subprocess' in index.modules,"
        " type(subprocess).__name__, 'asyncio.tasks' in index.modules)\n"
    )
    assert _python(script) == "True False _Lazy True"


def test_an_index_is_read_only_when_trusted(tmp_path: Path) -> None:
    index = _recorded(tmp_path)
    assert quickimport.Index.load(str(index)) is not None
    text = index.read_text()
    assert "alphaq\ts\tm\t" in text
    index.chmod(0o666)  # writable by others
    assert quickimport.Index.load(str(index)) is None
    index.chmod(0o644)
    index.parent.chmod(0o775)  # its directory writable by the group
    assert quickimport.Index.load(str(index)) is None
    index.parent.chmod(0o755)
    link = index.parent / "link.txt"
    link.symlink_to(index)  # no symlink followed
    assert quickimport.Index.load(str(link)) is None
    for bad in (
        text.replace("mgmt import index 1", "mgmt import index 0"),  # another version's
        text + "not\tan entry\n",
        text + "#" * (1 << 20),  # too big to be one
    ):
        index.write_text(bad)
        assert quickimport.Index.load(str(index)) is None
    index.write_text(text)
    assert quickimport.Index.load(str(index)) is not None
    if os.geteuid() == 0:  # another user's: not trusted (chown needs root)
        os.chown(index, 65534, 65534)
        assert quickimport.Index.load(str(index)) is None


_WHERE = ("_path", "path", "name")  # what a loader is made of


def _attrs_made(
    new_spec: Callable[[], ModuleSpec | None], make: Any = None, **preset: Any
) -> tuple[Any, Any]:
    """The dict of a new module after `_init_module_attrs(spec, module)`, CPython's and
    quickimport's, each with a spec `new_spec()` makes (CPython's gives a namespace package's
    spec its loader), and the spec (`make`: how the module is made; `preset`: attributes it
    has first)."""

    def call() -> Any:
        spec = new_spec()
        assert spec is not None
        module = (make or type(sys))(spec.name)
        for name, value in preset.items():
            setattr(module, name, value)
        quickimport._bootstrap._init_module_attrs(spec, module)
        made = dict(vars(module))
        assert made["__spec__"] is spec
        del made["__spec__"]
        loader = made.get("__loader__")  # (a namespace package's is made anew: compared by kind)
        if loader is not None:
            made["__loader__"] = (type(loader), *(getattr(loader, a, 0) for a in _WHERE))
        return made, type(spec.loader), getattr(spec.loader, "_path", None)

    return _both(call)


def test_a_new_modules_attributes_are_cpythons(tmp_path: Path) -> None:
    names = sorted({name for _, name in _run_modules()})
    (tmp_path / "ns").mkdir()
    (tmp_path / "plain.txt").write_text("")
    loader = quickimport._external.SourceFileLoader("nowhere", "/x.py")
    specs: list[Callable[[], ModuleSpec | None]] = [
        *(functools.partial(importlib.util.find_spec, name) for name in names),
        lambda: FileFinder(str(tmp_path)).find_spec("ns"),  # a namespace package: no loader
        lambda: importlib.util.spec_from_file_location("plain", tmp_path / "plain.txt"),
        lambda: ModuleSpec("nowhere", loader),
        lambda: ModuleSpec("origin", None, origin="somewhere"),
    ]
    for new_spec in specs:
        ours, theirs = _attrs_made(new_spec)
        assert ours == theirs, new_spec
    ns = _attrs_made(specs[-4])[0]
    assert ns[0]["__file__"] is None  # (and the loader CPython gives a namespace package)
    assert ns[1] is quickimport._external.NamespaceLoader
    assert ns[2] == [str(tmp_path / "ns")]

    def spec() -> ModuleSpec | None:
        return importlib.util.find_spec("mgmt.quickimport")

    for preset in ({"__file__": "/else"}, {"__loader__": None}, {"__getattr__": len}):
        ours, theirs = _attrs_made(spec, **preset)
        assert ours == theirs, preset

    class Module(type(sys)):  # type: ignore[misc]
        __file__ = property(lambda self: "/a/property")

    ours, theirs = _attrs_made(spec, Module)
    assert ours == theirs
    assert "__file__" not in ours[0]  # (CPython's own: a subclass's attributes are asked)
