"""The `mgmt` command's start-up: what a cron run of a graph file imports (and what it defers)."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from importlib.machinery import ExtensionFileLoader, PathFinder
from pathlib import Path

import pytest

from mgmt import cli, lazyimport
from mgmt.config import option_fields
from tests.child import python
from tests.e2e.helpers import short_tmpdir

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def own_tmpdir(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The runs' $TMPDIR of their own: a --tmp-prefix run removes the prefixes that killed
    runs left in it (tmpprefix.sweep, which imports shutil): in the shared /tmp, what other
    tests' killed agents left made a no-op run import a module it defers (seen by perfstart5).
    Short: an agent's status.sock is bound below it."""
    with short_tmpdir() as tmp:
        monkeypatch.setenv("TMPDIR", str(tmp))
        yield


def _started(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `script` in a new interpreter started as the `mgmt` launcher starts it (-S)."""
    return python(script, *args, flags=["-S"], timeout=60)


def _python(script: str, *args: str) -> str:
    """`_started`, which must succeed: what it printed."""
    out = _started(script, *args)
    assert out.returncode == 0, out
    return out.stdout.strip()


def _one_file_graph(tmp_path: Path, path: str) -> Path:
    """A graph file (tmp_path/g.yaml) of one file resource: tmp_path/`path`, "a\\n"."""
    graph = tmp_path / "g.yaml"
    graph.write_text(
        f"graph: g\nresources:\n  file:\n    - name: a\n      path: {tmp_path}/{path}\n"
        '      content: "a\\n"\n'
    )
    return graph


CRON_RUN = "['run', '--converged-timeout=0', '--tmp-prefix', 'yaml', sys.argv[1]]"


def _ran(argv: str, names: Sequence[str], end: str = "main()\n") -> str:
    """A script that runs the `mgmt` command with sys.argv[1:] = `argv` (Python source: the
    script's own arguments are sys.argv[1:]) and prints at its exit which of `names` ran
    (imported and not left deferred)."""
    return (
        "import atexit, sys\n"
        "from mgmt.__main__ import main\n"
        f"sys.argv[1:] = {argv}\n"
        f"names = {tuple(names)!r}\n"
        "atexit.register(lambda: print(sorted(m for m in names if "
        "m in sys.modules and type(sys.modules[m]).__name__ == 'module')))\n"
    ) + end


def test_a_cron_run_of_a_graph_file_loads_no_tls_nor_http(tmp_path: Path) -> None:
    """asyncio's ssl (OpenSSL) is imported, not run: nothing in a file graph's run reads it;
    the status socket's HTTP code is imported at its first request, argparse not at all."""
    graph = _one_file_graph(tmp_path, "a")
    names = ("_ssl", "ssl", "asyncio.sslproto", "resources._lib.httpd", "http", "argparse")
    script = _ran(CRON_RUN, names, "main()\nprint('main returned')\n")
    assert _python(script, str(graph)) == "[]"
    assert (tmp_path / "a").read_text() == "a\n"


# What a cron run imports and never uses (mgmt.lazyimport.LAZY beyond ssl), and secrets and
# json (not imported: the atomic writes' temp names come from os.urandom; json is imported
# where it is used).
UNUSED = ("base64", "bz2", "copy", "fnmatch", "ipaddress", "linecache", "locale", "lzma")
UNUSED += (
    "textwrap",
    "tokenize",
    "traceback",
    "secrets",
    "hashlib",
    "_hashlib",
    "inspect",
    "ast",
    "dis",
    "opcode",
)
UNUSED += ("asyncio.format_helpers", "asyncio.staggered", "asyncio.trsock", "ntpath", "json")
UNUSED += ("urllib.parse", "mgmt.metrics", "mgmt.address")  # the last two: --prometheus's
UNUSED += ("mgmt.collectscope", "bisect")  # a graph's collect: and an edit's re-parse
# A file's owner or group (with grp and the tools' runner), mode, fragments, purge or selinux,
# and a repair's spare inode: none of plain files' first or no-op run.
UNUSED += ("resources._lib.ids", "resources._lib.proc", "grp", "resources.file.modes")
UNUSED += ("resources.file.extras", "resources._lib.spare")
# A tree's removal (with the zlib extension it loads): a temporary prefix holding files only is
# removed without it (mgmt.tmpprefix._remove_tree).
UNUSED += ("shutil", "zlib")
# Processes: asyncio reads only subprocess's constants at import (lazyimport.PRESET); the
# temporary prefix's and inotify's holders start by posix_spawn (engine.holder).
UNUSED += ("subprocess", "_posixsubprocess")
# The status socket's server (its HTTP, the page): imported at the socket's first client.
UNUSED += ("mgmt.status.server",)
# The journal's encoding: for a run whose stderr is the journal (under systemd).
UNUSED += ("resources._lib.journal",)
# systemd's notifications (a Type=notify unit's variables) and an edit's re-parse.
UNUSED += ("mgmt.sdnotify", "mgmt.spans")
# An edit's re-parse in O(change) and what the last parse keeps for it (a daemon's watched file).
UNUSED += ("mgmt.yamlreparse",)
# A later graph swapped in O(change): a run that ends at its first convergence has one graph.
UNUSED += ("engine.smallswap", "engine.derive")  # (and a front-end's next graph: derive)
# A failure's heal (checks again on its own what may pass: a run whose resources pass has none).
UNUSED += ("engine.heal",)
# asyncio's package code (its streams, subprocess, taskgroups, timeouts and queues:
# lazyimport.PARTS gives the names of its other parts beforehand).
UNUSED += ("asyncio", "asyncio.streams", "asyncio.subprocess", "asyncio.taskgroups")
UNUSED += ("asyncio.timeouts", "asyncio.queues")
# queue's own Queue classes: the thread pools take the `_queue` extension's (lazyimport.TAKEN).
UNUSED += ("queue",)
# PyYAML's own code (its package's __init__) and its modules a parse with libyaml never runs:
# a graph file's parse imports its parts (mgmt.yamlgraph), the rest waits for `yaml.X`.
UNUSED += ("yaml", "yaml.composer", "yaml.cyaml", "yaml.dumper", "yaml.emitter", "yaml.loader")
UNUSED += ("yaml.parser",)
UNUSED += ("yaml.representer", "yaml.scanner", "yaml.serializer")


def test_a_cron_runs_first_and_no_op_runs_leave_the_unused_modules_deferred(
    tmp_path: Path,
) -> None:
    """The modules deferred for a cron run stay so through a run that writes the file and a run
    that finds it in place: none of their code runs."""
    graph = _one_file_graph(tmp_path, "d/a")
    script = _ran(CRON_RUN, UNUSED)
    assert _python(script, str(graph)) == "[]"  # the first run: the directory, the file
    assert (tmp_path / "d" / "a").read_text() == "a\n"
    assert _python(script, str(graph)) == "[]"  # the no-op run


# libyaml's parser and PyYAML's constructor (with what they import: the reader, the events, the
# tokens): a file in the block style is read by lines (mgmt.yamlgraph._block_doc), needing
# only the resolver's table; they are imported by the first parse that composes its text.
LIBYAML = ("yaml._yaml", "yaml.constructor", "yaml.reader", "yaml.events", "yaml.tokens")


@pytest.mark.parametrize("watch", [[], ["--no-watch"]])
def test_a_run_that_outlives_its_first_convergence_loads_its_edits_code_at_its_start(
    tmp_path: Path, watch: list[str]
) -> None:
    """The code a later graph runs (engine.smallswap's swap, mgmt.yamlreparse's re-parse, its
    spans, a `collect` an edit adds: deferred for a cron run) is a daemon's from its start, as when it was engine.engine's and
    mgmt.yamlgraph's: not read from the checkout at its first edit or SIGHUP, hours later,
    when an upgrade may have put a newer version there (docs/operations.md, Installing)."""
    graph = _one_file_graph(tmp_path, "a")
    argv = ["run", "--converged-timeout=1", *watch, "--tmp-prefix", "yaml"]
    later = ("engine.smallswap", "mgmt.collectscope", "mgmt.spans", "mgmt.yamlreparse")
    script = _ran(f"{argv!r} + [sys.argv[1]]", later)
    assert _python(script, str(graph)) == repr(list(later))


@pytest.mark.parametrize("watch", [[], ["--no-watch"]])
def test_a_cron_run_of_a_block_style_file_imports_no_libyaml(
    tmp_path: Path, watch: list[str]
) -> None:
    """A cron run of a block-style graph file (an empty one's `{}` too), first and no-op,
    watched or not, imports none of LIBYAML (watched, it ends at its first convergence: its parse keeps nothing for an edit's,
    mgmt.agent.load); a file libyaml must compose (a flow mapping) imports them, and is
    applied."""
    graph = _one_file_graph(tmp_path, "a")
    argv = f"['run', '--converged-timeout=0', '--tmp-prefix', *{watch}, 'yaml', sys.argv[1]]"
    script = _ran(argv, LIBYAML)
    assert _python(script, str(graph)) == "[]"  # the first run
    assert (tmp_path / "a").read_text() == "a\n"
    assert _python(script, str(graph)) == "[]"  # the no-op run
    graph.write_text("graph: g\nresources: {}\n")  # an empty graph's flow mapping
    assert _python(script, str(graph)) == "[]"
    graph.write_text(
        f"graph: g\nresources: {{file: [{{name: b, path: {tmp_path}/b, content: b}}]}}\n"
    )
    assert _python(script, str(graph)) == repr(sorted(LIBYAML))
    assert (tmp_path / "b").read_text() == "b"


def test_a_cron_run_with_its_prefix_leaves_the_unused_modules_deferred(tmp_path: Path) -> None:
    """With a prefix of its own (not --tmp-prefix, removed at the end), the modules of UNUSED
    stay deferred too."""
    graph = _one_file_graph(tmp_path, "a")
    argv = "['run', '--converged-timeout=0', '--prefix', sys.argv[2], 'yaml', sys.argv[1]]"
    script = _ran(argv, UNUSED)
    assert _python(script, str(graph), str(tmp_path / "prefix")) == "[]"  # the first run
    assert (tmp_path / "a").read_text() == "a\n"
    assert _python(script, str(graph), str(tmp_path / "prefix")) == "[]"  # the no-op run


def test_the_status_sockets_server_is_imported_at_its_first_client(tmp_path: Path) -> None:
    """A --tmp-prefix agent listens on its status socket from the start without its server's
    code (mgmt.status.server); `mgmt status --prefix P`, its first client, is answered (the
    server imported then, the client waiting in the backlog meanwhile), and so is a second."""
    graph = _one_file_graph(tmp_path, "a")
    script = (
        "import sys\n"
        "import mgmt; mgmt.full_site()\n"
        "from mgmt import agent\n"
        "from mgmt.__main__ import main\n"
        "first = agent.Agent._serve_status\n"
        "def serve(self, sock):\n"
        "    print('at the first client:', 'mgmt.status.server' in sys.modules, flush=True)\n"
        "    first(self, sock)\n"
        "agent.Agent._serve_status = serve\n"
        "sys.argv[1:] = ['run', '--tmp-prefix', 'yaml', sys.argv[1]]\n"
        "main()\n"
    )
    daemon = subprocess.Popen(
        [sys.executable, "-S", "-c", script, str(graph)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert daemon.stderr is not None
        prefix = ""
        for line in daemon.stderr:  # the agent's log: the prefix, then its convergence
            if found := re.search(r"mgmt status --prefix (\S+)", line):
                prefix = found[1]
            if "converged:" in line:
                break
        assert prefix, "no temporary prefix said"
        for _ in range(2):
            status = subprocess.run(
                [sys.executable, "-m", "mgmt", "status", "--prefix", prefix],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=ROOT,
                check=False,
            )
            assert status.returncode == 0 and "file[a]" in status.stdout, status
    finally:
        daemon.terminate()
        out, _ = daemon.communicate(timeout=60)
    assert out.splitlines() == ["at the first client: False"]
    assert daemon.returncode == 0
    assert not Path(prefix).exists()


def test_a_graph_files_check_imports_no_language_nor_unused_modules(tmp_path: Path) -> None:
    """`mgmt check G.yaml` (a graph file's check) imports none of the language's modules and
    leaves the modules a cron run leaves deferred so; a program's check still says its
    problems (file, line), and a graph file's too."""
    graph = _one_file_graph(tmp_path, "a")
    bad = tmp_path / "bad.mcl"
    bad.write_text('file "/tmp/x" {\n\tnope => 1,\n}\n')
    bad_graph = tmp_path / "bad.yaml"
    bad_graph.write_text("graph: g\nresources:\n  file:\n    - name: a\n      nope: 1\n")
    names = (*UNUSED, "mgmt.lang", "mgmt.lang.errors")
    script = _ran("['check', *sys.argv[1:]]", names, "sys.exit(main())\n")
    assert _python(script, str(graph)) == "[]"
    out = _started(script, str(bad), str(bad_graph))
    assert out.returncode == 2, out
    assert f"{bad}:2:" in out.stderr and f"{bad_graph}:5:" in out.stderr, out.stderr


def test_a_cron_runs_hops_to_threads_share_the_engines_pool(tmp_path: Path) -> None:
    """The hops of a cron run to threads (a killed run's prefix removed, the status socket's
    checks, the engine's writes) run in one pool (the loop's default executor, set before the
    first hop): no pool of asyncio's is started for the first hops, to wait idle beside the
    engine's and end; nor, at the end, asyncio's thread that joins the pool (mgmt.cli.run_loop
    joins it). This run writes nothing and finds no killed run's prefix: it starts no thread
    at all (until 2026-12-06 the look for killed runs' prefixes was a hop, in every run: its
    thread was the pool's first). (The log writer is a thread of `_thread`'s, started without
    waiting for it: not a threading.Thread.)"""
    graph = tmp_path / "g.yaml"
    graph.write_text(f"graph: g\nresources:\n  file:\n    - name: a\n      path: {tmp_path}/a\n")
    script = (
        "import sys, threading\n"
        "names = []\n"
        "start = threading.Thread.start\n"
        "def started(thread):\n"
        "    names.append(thread.name.rstrip('0123456789'))\n"
        "    start(thread)\n"
        "threading.Thread.start = started\n"
        "import atexit\n"
        "atexit.register(lambda: print(sorted(set(names))))\n"
        "from mgmt.__main__ import main\n"
        "sys.argv[1:] = ['run', '--converged-timeout=0', '--tmp-prefix', 'yaml', sys.argv[1]]\n"
        "main()\n"
    )
    assert _python(script, str(graph)) == "[]"


def test_site_runs_without_setuptools_distutils_shim_and_it_still_imports() -> None:
    """`mgmt.full_site` runs `site` as the interpreter would (the venv's prefix and packages
    on the path), but setuptools' distutils-precedence.pth puts no finder on sys.meta_path
    (asked at every import after) and imports nothing; `_distutils_hack` itself, when the venv
    has it, still imports as usual when asked for."""
    script = """
import sys
import mgmt; mgmt.full_site()
import site, yaml
assert sys.prefix != sys.base_prefix, (sys.prefix, sys.base_prefix)  # the venv's, as site sets
assert any(p in sys.path for p in site.getsitepackages()), sys.path
assert [type(f).__name__ for f in sys.meta_path if type(f).__module__ == "_distutils_hack"] == []
assert "_distutils_hack" not in sys.modules
try:
    import _distutils_hack
except ImportError:
    print("absent")
else:
    print(type(_distutils_hack).__name__, hasattr(_distutils_hack, "DistutilsMetaFinder"))
"""
    assert _python(script) in ("absent", "module True")


def test_deferred_modules_work_at_first_use() -> None:
    """Each deferred module, at its first use, is the real one: a traceback printed with its
    source line (linecache, tokenize), urllib.parse's check of an IPv6 host (ipaddress),
    shutil's archive formats (bz2, lzma), copy, base64, fnmatch, textwrap, locale, inspect,
    pathlib's Windows paths (ntpath), asyncio's trsock and staggered; pathlib's as_uri, through
    the stand-in of urllib.parse's quote_from_bytes that pathlib imported (CALLED_LATER)."""
    script = """
import sys
import mgmt; mgmt.full_site()
from mgmt import lazyimport
lazyimport.install()
import base64, copy, fnmatch, inspect, locale, shutil, textwrap, traceback, urllib.parse
import asyncio, pathlib
assert type(copy).__name__ == "_Lazy" and type(base64).__name__ == "_Lazy", (copy, base64)
assert type(urllib.parse).__name__ == "_Lazy", urllib.parse  # pathlib's import left it so
uri = pathlib.PurePosixPath("/a b/%").as_uri()
try:
    base64.b64decode(b"=", validate=True)
except ValueError:
    text = traceback.format_exc()
print("return binascii.a2b_base64(s, strict_mode=validate)" in text,
      urllib.parse.urlsplit("http://[::1]:80/").port, "bztar" in dict(shutil.get_archive_formats()),
      copy.copy([1]) == [1], base64.b64encode(b"a"), fnmatch.fnmatch("a.py", "*.py"),
      textwrap.dedent("  x"), isinstance(locale.getpreferredencoding(False), str),
      type(base64).__name__, inspect.signature(lambda a, b=1: 0),
      type(inspect).__name__, str(pathlib.PureWindowsPath("c:/a")),
      asyncio.trsock.TransportSocket.__name__, asyncio.staggered.__name__, uri,
      pathlib.PurePosixPath("/c").as_uri(), type(urllib.parse).__name__)
"""
    out = "True 80 True True b'YQ==' True x True module (a, b=1) module c:\\a"
    out += " TransportSocket asyncio.staggered file:///a%20b/%25 file:///c module"
    assert _python(script) == out


def test_subprocess_deferred_past_asyncios_import_runs_at_first_use() -> None:
    """asyncio's import reads subprocess's PIPE, STDOUT and DEVNULL only (its methods'
    defaults, asyncio.subprocess's names): set beforehand with the real module's values
    (lazyimport.PRESET), they leave it deferred; a child started by asyncio, or by
    subprocess.run from another thread, runs it then, and it is the real module."""
    script = """
import sys
import mgmt; mgmt.full_site()
from mgmt import lazyimport
lazyimport.install()
import asyncio, subprocess, threading
before = type(subprocess).__name__
async def main():
    child = await asyncio.create_subprocess_exec(
        "echo", "a", stdout=asyncio.subprocess.PIPE, stderr=subprocess.DEVNULL)
    out, _ = await child.communicate()
    return out.decode().strip(), child.returncode
got = asyncio.run(main())
done = []
thread = threading.Thread(target=lambda: done.append(subprocess.run(["true"]).returncode))
thread.start()
thread.join()
preset = {name: getattr(subprocess, name) for name in lazyimport.PRESET["subprocess"]}
print(before, got, done, type(subprocess).__name__, preset == lazyimport.PRESET["subprocess"],
      subprocess.Popen.__module__, asyncio.subprocess.PIPE is subprocess.PIPE)
"""
    out = "_Lazy ('a', 0) [0] module True subprocess True"
    assert _python(script) == out
    # The real module's values, imported as usual (no install)
    real = _python(
        "import subprocess; from mgmt import lazyimport\n"
        "print(all(getattr(subprocess, n) == v for n, v in lazyimport.PRESET['subprocess'].items()))"
    )
    assert real == "True"


def test_pyyamls_error_classes_made_beforehand_are_as_its_own() -> None:
    """Each error class lazyimport makes for a deferred PyYAML module (ERRORS) has the name,
    qualified name, module, bases, doc and attributes of the one the module's code makes."""
    show = (
        "print([(c.__name__, c.__qualname__, c.__module__, [b.__module__ + '.' + b.__name__ "
        "for b in c.__bases__], c.__doc__, sorted(vars(c))) for c in classes])"
    )
    names = [(module, name) for module, (name, _, _) in sorted(lazyimport.ERRORS.items())]
    real = _python(
        f"import mgmt; mgmt.full_site()\nimport yaml, importlib\n"
        f"classes = [getattr(importlib.import_module(m), n) for m, n in {names!r}]\n{show}"
    )
    made = _python(
        "import mgmt; mgmt.full_site()\nfrom mgmt import lazyimport\nlazyimport.install()\n"
        f"import yaml, importlib\nclasses = [getattr(importlib.import_module(m), n) for m, n "
        f"in {names!r}]\nassert all(type(importlib.import_module(m)).__name__ == '_Lazy' for "
        f"m, _ in {names!r})\n{show}"
    )
    assert made == real
    assert "ScannerError" in real and "SerializerError" in real


def test_pyyaml_deferred_parses_graphs_and_runs_at_first_use() -> None:
    """With PyYAML's package code deferred, mgmt.yamlgraph parses through libyaml and says
    each kind of YAML error as it does with PyYAML imported as usual, the classes raised being
    those `yaml.scanner...` name; the first read of a package name (`yaml.safe_load`, from two
    threads at once) runs it: load, dump, the C loaders and dumpers, YAMLObject, and the same
    error classes."""
    said = r"""
said = []
for text in (b"a: 'x\n", b"a: [\n", b"a: b\n- c\n", b"a: \x01\n", b"a: *b\n"):
    try:
        yamlgraph._compose(text)
    except yaml.YAMLError as err:
        said.append((type(err).__name__, yamlgraph._yaml_problem(err, text)))
print(said)
"""
    script = r"""
import sys, threading
import mgmt; mgmt.full_site()
from mgmt import lazyimport
lazyimport.install()
from mgmt import yamlgraph
import yaml
import yaml.error
yaml.YAMLError = yaml.error.YAMLError  # read without running the package code
def deferred():
    print(sorted(m for m in sys.modules if type(sys.modules[m]).__name__ != "module"
                 and m.startswith("yaml")))
deferred()
SAID
deferred()
del yaml.YAMLError
scanner, parser = yaml.scanner.ScannerError, yaml.parser.ParserError
got = []
def load():
    got.append(yaml.safe_load("a: [1, 2]"))
threads = [threading.Thread(target=load) for _ in range(2)]
for t in threads: t.start()
for t in threads: t.join()
try:
    yaml.load("a: 'x", Loader=yaml.CSafeLoader)
except yaml.scanner.ScannerError as err:
    same = type(err) is scanner and yaml.scanner.ScannerError is scanner
print(got, same, yaml.parser.ParserError is parser, type(yaml).__name__,
      repr(yaml.dump({"b": [1]}, Dumper=yaml.CSafeDumper)), repr(yaml.safe_dump("x")),
      issubclass(yaml.YAMLObject.yaml_dumper, yaml.emitter.Emitter), yaml.__with_libyaml__)
""".replace("SAID", said)
    out = _python(script).splitlines()
    assert out[0] == "['yaml']"  # libyaml's parts: imported by the first parse that uses them
    lazy = ["yaml", "yaml.composer", "yaml.emitter", "yaml.parser", "yaml.representer"]
    assert out[2] == repr([*lazy, "yaml.scanner", "yaml.serializer"])
    real = _python(
        "import mgmt; mgmt.full_site()\nimport yaml\nfrom mgmt import yamlgraph\n" + said
    )
    assert out[1] == real and "ScannerError" in real and "ParserError" in real
    dumped = repr("b:\n- 1\n") + " " + repr("x\n...\n")
    assert out[3] == f"[{{'a': [1, 2]}}, {{'a': [1, 2]}}] True True module {dumped} True True"


def test_asyncio_deferred_gives_the_same_names_and_runs_at_first_use() -> None:
    """Before asyncio's package code runs, it gives the names of its parts in PARTS, each the
    object its code gives; the first read of another name (`timeout`, a stream's, a
    subprocess's, TaskGroup, Queue, `__all__`) runs it: then every name and `__all__` are as asyncio
    imported as usual gives them, and asyncio.timeouts has engine.timeoutfix's fix."""
    show = "print(sorted(asyncio.__all__), sorted(n for n in vars(asyncio) if n[0] != '_'))"
    real = _python(f"import asyncio\n{show}")
    script = f"""
import sys
from mgmt import quickimport
quickimport.install()  # as the command: the index first (it never answers asyncio.timeouts)
import mgmt; mgmt.full_site()
import engine  # as the command: its fix of asyncio.timeouts on 3.11.0-3.11.2 (engine.timeoutfix)
from mgmt import lazyimport
lazyimport.install()
import asyncio
before = dict(vars(asyncio))
deferred = [m for m in ("asyncio.streams", "asyncio.subprocess", "asyncio.taskgroups",
                        "asyncio.timeouts", "asyncio.queues") if m in sys.modules]
async def ran():
    return "slept"
async def main():
    async with asyncio.timeout(60), asyncio.TaskGroup() as group:
        task = group.create_task(ran())
    return task.result()
print(type(asyncio).__name__, deferred, asyncio.run(main()), type(asyncio).__name__,
      all(getattr(asyncio, n) is v for n, v in before.items() if n[0] != "_"),
      asyncio.StreamReader.__module__, asyncio.create_subprocess_exec.__module__,
      sys.version_info >= (3, 11, 3) or
      asyncio.timeouts.Timeout.__aenter__.__module__ == "engine.timeoutfix")
{show}
"""
    out = _python(script).splitlines()
    out0 = "_LazyPackage [] slept module True asyncio.streams asyncio.subprocess True"
    assert out[0] == out0
    assert out[1] == real


def test_asyncio_queue_deferred_runs_asyncio_at_its_first_read() -> None:
    """asyncio.queues is not among the parts given beforehand (a graph file's run uses no
    queue): the first read of asyncio.Queue (the status page's stream, dhcp, tftp, puppet's
    source) runs asyncio's package code, and the queue and its errors are asyncio's own."""
    script = """
import sys
import mgmt; mgmt.full_site()
import engine
from mgmt import lazyimport
lazyimport.install()
import asyncio
before = type(asyncio).__name__, "asyncio.queues" in sys.modules
async def main():
    queue = asyncio.Queue(1)
    queue.put_nowait("a")
    try:
        queue.put_nowait("b")
    except asyncio.QueueFull:
        return await queue.get(), queue.__module__
print(before, asyncio.run(main()), type(asyncio).__name__, asyncio.Queue.__module__)
"""
    assert (
        _python(script) == "('_LazyPackage', False) ('a', 'asyncio.queues') module asyncio.queues"
    )


def test_queue_deferred_gives_the_extensions_names_and_runs_at_another() -> None:
    """`queue` deferred gives `_queue`'s SimpleQueue and Empty beforehand (lazyimport.TAKEN):
    a thread pool runs (its work queue, its shutdown's `except queue.Empty`) without running
    queue's code; the first read of another name (Queue) runs it, and then every name is the
    one queue imported as usual gives (SimpleQueue and Empty still `_queue`'s)."""
    show = "print(sorted(vars(queue)), queue.SimpleQueue is _queue.SimpleQueue is not None)"
    real = _python(f"import queue, _queue\n{show}")
    script = f"""
from mgmt import lazyimport
lazyimport.install()
import queue, _queue
from concurrent.futures import ThreadPoolExecutor
taken = queue.SimpleQueue is _queue.SimpleQueue, queue.Empty is _queue.Empty
with ThreadPoolExecutor(2) as pool:
    done = sorted(pool.map(abs, [-2, 1]))
ran = type(queue).__name__
made = queue.Queue(1)
made.put(1)
print(taken, done, ran, type(queue).__name__, made.get(), queue.Empty is _queue.Empty)
{show}
"""
    out = _python(script).splitlines()
    assert out[0] == "(True, True) [1, 2] _Lazy module 1 True"
    assert out[1] == real


def test_the_agent_knows_every_variable_of_systemds_notifier() -> None:
    """The agent imports mgmt.sdnotify when one of its variables is set (agent._SYSTEMD):
    the same names (a watchdog's alone is taken from the environment too)."""
    from mgmt import agent, sdnotify

    assert frozenset(sdnotify.VARIABLES) == agent._SYSTEMD


def test_traceback_deferred_runs_for_asyncios_debug_stacks_and_loggings_exceptions() -> None:
    """`traceback` stays deferred through asyncio's and logging's imports (the `_asyncio`
    extension took the stand-in of its extract_stack, CALLED_LATER); a task made in asyncio's
    debug mode gets its stack through it, and a logged exception is printed with its own."""
    script = """
import io, sys
import mgmt; mgmt.full_site()
from mgmt import lazyimport
lazyimport.install()
import asyncio, logging, threading
import traceback
before = type(traceback).__name__
async def main():
    return asyncio.current_task()._source_traceback
stack = asyncio.run(main(), debug=True)
stream = io.StringIO()
logger = logging.getLogger("t")
logger.addHandler(logging.StreamHandler(stream))
try:
    1 / 0
except ZeroDivisionError:
    logger.exception("failed")
print(before, type(stack).__name__, stack[0].name, type(traceback).__name__,
      stream.getvalue().splitlines()[-1], asyncio.base_events.traceback is traceback)
"""
    out = "_Lazy StackSummary <module> module ZeroDivisionError: division by zero True"
    assert _python(script) == out


def test_datetime_is_the_extensions_with_the_same_names() -> None:
    """After install(), `datetime` is `_datetime`'s classes (3.12's datetime.py): the same
    public names, values and doc as 3.11's module gives, its pure-Python classes never made;
    PyYAML reads and writes timestamps through it."""
    names = (
        "sorted((n, repr(getattr(m, n)).split(' at ')[0]) for n in dir(m) "
        "if not n.startswith('__') and n != 'sys'), m.__doc__, m.__all__"
    )
    real = _python(f"import datetime as m\nprint({names})")
    script = f"""
import mgmt; mgmt.full_site()
from mgmt import lazyimport
lazyimport.install()
import datetime as m, _datetime, pickle, yaml
print({names})
print(m.datetime is _datetime.datetime, "_ymd2ord" in vars(m),
      pickle.loads(pickle.dumps(m.datetime(2001, 12, 14, tzinfo=m.UTC))),
      yaml.safe_load("a: 2001-12-14 21:59:43.10-05:00")["a"].utcoffset(),
      yaml.safe_dump(m.date(2001, 1, 2)).split()[0])
"""
    out = _python(script).splitlines()
    assert out == [real, "True False 2001-12-14 00:00:00+00:00 -1 day, 19:00:00 2001-01-02"]


def test_an_extension_module_or_a_package_is_never_deferred(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An extension's code cannot run in a module made beforehand; a package's submodules
    imported from another thread would deadlock with its first use: both are imported as
    usual."""
    # An extension module of this interpreter (Debian's builds zlib into the interpreter itself:
    # no file to find, imported as usual too; pyenv's has it as an extension)
    extension = next(
        name
        for name in ("zlib", "_json", "_ssl")
        if isinstance(getattr(PathFinder.find_spec(name), "loader", None), ExtensionFileLoader)
    )
    monkeypatch.setattr(lazyimport, "LAZY", frozenset({extension, "json", "base64"}))
    for name in (extension, "json"):
        spec = lazyimport._Finder.find_spec(name)
        assert spec is not None and not isinstance(spec.loader, lazyimport._Loader), name
    base64 = lazyimport._Finder.find_spec("base64")
    assert base64 is not None and isinstance(base64.loader, lazyimport._Loader)


def test_a_finished_run_exits_without_the_interpreters_teardown(tmp_path: Path) -> None:
    """Its atexit handlers run and its output is flushed, then the process ends (no teardown:
    what a `__del__` would print at it does not show); its exit code is the run's."""
    graph = tmp_path / "g.yaml"
    graph.write_text("graph: g\nresources:\n  exec:\n    - name: x\n      cmd: exit 3\n")
    script = (
        "import atexit, sys\n"
        "from mgmt.__main__ import main\n"
        "class Late:\n"
        "    def __del__(self):\n"
        "        print('torn down')\n"
        "late = Late()\n"
        "atexit.register(print, 'atexit ran')\n"
        "sys.argv[1:] = ['run', '--converged-timeout=0', '--tmp-prefix', 'yaml', sys.argv[1]]\n"
        "sys.stdout.write('buffered, ')\n"
        "main()\n"
        "print('main returned')\n"
    )
    out = _started(script, str(graph))
    assert out.returncode == 1 and out.stdout == "buffered, atexit ran\n", out
    assert "failed" in out.stderr


def test_a_deferred_ssl_runs_at_first_use_in_every_thread(tmp_path: Path) -> None:
    """The first read of an attribute runs the module's code once; readers in other threads
    wait for it and see the whole module; asyncio's TLS then works: a real handshake."""
    script = """
import sys, threading
from pathlib import Path
from mgmt import lazyimport
lazyimport.install()
import asyncio
import ssl
from asyncio import sslproto
assert "_ssl" not in sys.modules and type(ssl).__name__ == "_Lazy", type(ssl)
got = []
start = threading.Barrier(8)
def read():
    start.wait()
    got.append(ssl.PROTOCOL_TLS_CLIENT)
threads = [threading.Thread(target=read) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert got == [ssl.PROTOCOL_TLS_CLIENT] * 8, got
assert type(ssl) is type(sys) and ssl.__loader__.__class__.__name__ != "_Loader"
assert type(sslproto).__name__ == "_Lazy"  # read by asyncio's TLS transport only

import mgmt; mgmt.full_site()
from mgmt.cluster import pki
work = Path(sys.argv[1])
pki.create_ca(work / "ca")
files = pki.mint(work / "ca", work / "host", "h1", ["127.0.0.1"])

async def handshake() -> bytes:
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(files.cert, files.key)
    client = ssl.create_default_context(cafile=files.ca)
    async def answer(reader, writer):
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=served)
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client, server_hostname="127.0.0.1"
        )
        writer.write(b"over tls\\n")
        line = await asyncio.wait_for(reader.readline(), 30)
        writer.close()
        return line

print(asyncio.run(handshake()).decode().strip(), type(sslproto).__name__)
"""
    assert _python(script, str(tmp_path)) == "over tls module"


PLAIN = [
    ["yaml", "g.yaml"],
    ["g.yaml"],
    ["empty"],
    ["--converged-timeout=0", "--tmp-prefix", "--no-watch", "yaml", "g.yaml"],
    ["--converged-timeout", "5", "yaml", "--noop", "g.yaml", "--sema=3"],
    ["--prefix", "/x/y", "--log-format", "json", "--verbose", "p.mcl"],
    ["--hostname=h1", "--graphviz=", "--prefix=", "--nice", "7", "lang", "dir/"],
    ["--deploy-switch=together", "--max-graph-size", "1024", "--cluster-user", "u", "empty"],
    ["puppet", "-e", "notify { 'hi': }"],
    ["--execute=file { '/x': }", "puppet", "--execute", "notify {}"],
    ["", "x"],
    ["--sema= 5", "--max-runtime", "+3", "yaml", "g"],
    ["--noop", "--noop", "--sema=1", "--sema=2", "yaml", "g"],
]
ARGPARSE = [  # what the plain parser leaves to argparse (it parses, or says what is wrong)
    ["--conv=0", "yaml", "g.yaml"],  # an abbreviation
    ["--nice", "-5", "yaml", "g.yaml"],  # a negative number
    ["--noop=1", "yaml", "g.yaml"],
    ["--sema=x", "yaml", "g.yaml"],
    ["--max-graph-size", "0x10", "yaml", "g.yaml"],
    ["--log-format=xml", "yaml", "g.yaml"],
    ["--prefix"],
    ["--noop"],
    ["-h"],
    ["--", "yaml", "g.yaml"],
    ["-e=x", "puppet"],
    ["-ex", "puppet"],
]


@pytest.mark.parametrize("argv", PLAIN)
def test_the_plain_run_parser_gives_what_argparse_gives(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mgmt run`'s usual argv skips argparse (~10 ms of a run): the same values, env
    defaults included."""
    monkeypatch.setenv("MGMT_SEMA", "4")
    monkeypatch.setenv("MGMT_PREFIX", "/from/env")
    monkeypatch.setenv("MGMT_NO_AUTOEDGES", "yes")
    plain = cli._plain_run_args(argv)
    assert plain is not None
    args = cli.build_run_parser().parse_intermixed_args(argv)
    wanted = {f.name: getattr(args, f.name) for f in option_fields()}
    assert plain == (wanted, args.target, args.execute)


def test_the_plain_run_parser_reads_every_options_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The plain parser looks up only the MGMT_ names the environment has (cli._mgmt_names):
    each option's variable, set, is still its default, and a bad value still exits 2
    naming it."""
    fields = {f.name: f for f in option_fields()}
    samples = {"bool": "yes", "int": "3", "str": "x", "str | None": "x"}
    for name, f in fields.items():
        if f.type in samples and "choices" not in f.metadata:
            monkeypatch.setenv(f"MGMT_{name.upper()}", samples[f.type])
    plain = cli._plain_run_args(["yaml", "g.yaml"])
    assert plain is not None
    args = cli.build_run_parser().parse_intermixed_args(["yaml", "g.yaml"])
    assert plain[0] == {name: getattr(args, name) for name in fields}
    assert sum(f.type in samples and "choices" not in f.metadata for f in fields.values()) > 20
    monkeypatch.setenv("MGMT_SEMA", "many")
    with pytest.raises(SystemExit) as exited:
        cli._plain_run_args(["yaml", "g.yaml"])
    assert exited.value.code == 2
    assert "MGMT_SEMA" in capsys.readouterr().err


@pytest.mark.parametrize("argv", ARGPARSE)
def test_the_plain_run_parser_leaves_the_rest_to_argparse(argv: list[str]) -> None:
    assert cli._plain_run_args(argv) is None


def test_a_run_imports_no_argparse(tmp_path: Path) -> None:
    """Its parser, its translations (gettext, locale): what a cron run does not need."""
    script = (
        "import sys\n"
        "from mgmt import cli\n"
        "config = cli.parse(['run', '--converged-timeout=0', '--noop', 'yaml', 'g.yaml'])\n"
        "assert config.noop and config.exit_after == 0 and config.file.name == 'g.yaml'\n"
        "print(sorted({'argparse', 'gettext', 'locale'} & set(sys.modules)))\n"
    )
    assert _python(script) == "[]"


# The regular expressions a cron run compiles: dataclasses' (at its import) and logging's check
# of a %-style format (its default formatter, made at its import). A graph file's keys and a
# file's SELinux context are checked without compiling one at every start (docs/benchmarks.md,
# "tenth session": ~0.5 M and ~0.9 M instructions).
COMPILED = [
    r"%\(\w+\)[#0+ -]*(\*|\d+)?(\.(\*|\d+))?[diouxefgcrsa%]",
    r"^(?:\s*(\w+)\s*\.)?\s*(\w+)",
]


def test_a_cron_run_compiles_no_pattern_of_its_own(tmp_path: Path) -> None:
    """A first run and a no-op run of a file graph compile only the standard library's
    patterns (COMPILED), none of this project's."""
    graph = _one_file_graph(tmp_path, "a")
    script = _ran(
        CRON_RUN,
        (),
        "import re._compiler\n"
        "compiled = []\n"
        "real = re._compiler.compile\n"
        "re._compiler.compile = lambda p, flags=0: compiled.append(p) or real(p, flags)\n"
        "atexit.register(lambda: print(sorted(compiled)))\n"
        "main()\n",
    )
    for _ in range(2):  # the first run, then the no-op run
        assert _python(script, str(graph)).splitlines()[0] == repr(sorted(COMPILED))
    assert (tmp_path / "a").read_text() == "a\n"


def test_yamls_patterns_compile_at_first_use_and_resolve_as_before() -> None:
    """PyYAML's reader and resolver patterns (~7 ms at import) compile when first used; the
    values they resolve, and the reader's refusal of a control character, are unchanged."""
    script = """
import re, sys
import mgmt; mgmt.full_site()
import mgmt.yamlgraph
import yaml
lazy = type(yaml.reader.Reader.NON_PRINTABLE).__name__
text = "a: yes\\nb: 2001-12-14\\nc: 0x1F\\nd: 1.5e+3\\ne: ~\\ng: plain\\n"
got = yaml.load(text, Loader=yaml.SafeLoader)
try:
    yaml.load("a: \\x07", Loader=yaml.SafeLoader)
except yaml.reader.ReaderError as err:
    refused = "special characters are not allowed" in str(err)
print(lazy, sorted(got.items()) == sorted({
    "a": True, "b": __import__("datetime").date(2001, 12, 14), "c": 31, "d": 1500.0,
    "e": None, "g": "plain"}.items()), refused, re.compile("x").__class__.__name__)
"""
    assert _python(script) == "_Pattern True True Pattern"


def test_word_list_resolvers_answer_as_their_patterns_without_compiling(tmp_path: Path) -> None:
    """PyYAML's bool and null resolvers are told by a set lookup: the same answer as their
    patterns' match() for their words, near misses, other cases, a last line break, and what
    another resolver takes; a graph's load compiles neither. Any other pattern keeps match()."""
    script = """
import re, sys
import mgmt; mgmt.full_site()
from pathlib import Path
import resources
from mgmt import lazyimport, yamlgraph
import yaml
pairs = {tag: p for ps in yaml.SafeLoader.yaml_implicit_resolvers.values() for tag, p in ps}
bool_, null = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null"
words = "yes Yes YES no No NO true True TRUE false False FALSE on On ON off Off OFF"
tries = words.split() + ["~", "null", "Null", "NULL", "", "nul", "nulll", "yES", "tRue", "Off "]
tries += [" ~", "~~", "no\\n", "no\\n\\n", "\\n", "~\\n", "null\\n", "y", "n", "o", "onn"]
tries += ["1", "0x1F", "1.5", "<<", "=", "name", "files", "f0", "N/A", "yes!", "ye|s"]
same = []
for tag in (bool_, null):
    text, flags = lazyimport.pattern_source(pairs[tag])
    real = re.compile(text, flags)
    told = yamlgraph._words_in(pairs[tag])
    same.append(all(bool(told(t)) == bool(real.match(t)) for t in tries))
others = [t for t, p in pairs.items() if t not in (bool_, null) and yamlgraph._words_in(p)]
path = Path(sys.argv[1])
path.write_text("graph: g\\nresources:\\n  noop:\\n    - name: n1\\n    - name: f1\\n")
loaded = yamlgraph.load_file(path)
compiled = [t for t in (bool_, null) if "match" in vars(pairs[t])]
print(same, others, sorted(k[1] for k in loaded.graph.vertices), compiled)
"""
    got = _python(script, str(tmp_path / "g.yaml"))
    assert got == "[True, True] [] ['f1', 'n1'] []"


def test_a_runs_imports_are_frozen_not_collected(tmp_path: Path) -> None:
    """The imports make ~40,000 objects that live as long as the process and no garbage: the
    collector walked them ~45 times (4 of them older generations) before the graph was read.
    Now it is paused for them and they are frozen: a handful of young collections in all."""
    graph = tmp_path / "g.yaml"
    graph.write_text(f"graph: g\nresources:\n  file:\n    - name: a\n      path: {tmp_path}/a\n")
    script = (
        "import atexit, gc, sys\n"
        "runs = []\n"
        "gc.callbacks.append(lambda phase, info: phase == 'stop' and runs.append(1))\n"
        "from mgmt.__main__ import main\n"
        "sys.argv[1:] = ['run', '--converged-timeout=0', '--tmp-prefix', 'yaml', sys.argv[1]]\n"
        "atexit.register(lambda: print(len(runs) < 15, gc.get_freeze_count() > 20_000))\n"
        "main()\n"
    )
    assert _python(script, str(graph)) == "True True"


def test_a_run_stops_its_engine_with_the_collector_off(tmp_path: Path) -> None:
    """The process ends with the agent: the collector goes off before the engine stops, not
    after (re-enabled at the end of the stop, it collected what the stop had made: ~50 ms of
    a 10,000-file no-op run's exit, more after a first run)."""
    lines = ["graph: g\nresources:\n  file:"]
    for i in range(300):  # a stop that makes more than a young collection's threshold
        lines.append(f"    - name: f{i}\n      path: {tmp_path}/f{i}\n      content: x")
    graph = tmp_path / "g.yaml"
    graph.write_text("\n".join(lines) + "\n")
    script = (
        "import atexit, gc, sys\n"
        "after = []\n"
        "from engine import engine\n"
        "stop = engine.Engine.stop\n"
        "async def traced(self, *args, **kwargs):\n"
        "    gc.callbacks.append(lambda phase, info: phase == 'stop' and after.append(1))\n"
        "    await stop(self, *args, **kwargs)\n"
        "engine.Engine.stop = traced\n"
        "from mgmt.__main__ import main\n"
        "sys.argv[1:] = ['run', '--converged-timeout=0', '--tmp-prefix', 'yaml', sys.argv[1]]\n"
        "atexit.register(lambda: print(len(after)))\n"
        "main()\n"
    )
    assert _python(script, str(graph)) == "0"  # a first run
    assert _python(script, str(graph)) == "0"  # a no-op run


def test_the_thin_deploy_path_imports_nothing_of_the_cli(tmp_path: Path) -> None:
    """`mgmt deploy` through the local agent (mgmt.deploy.client) starts as before: the
    command's start-up work (lazy imports, the paused collector) is the CLI's only."""
    script = (
        "import sys\n"
        f"sys.argv[1:] = ['deploy', '--prefix', {str(tmp_path)!r}, '--unsigned', 'lang', 'x/']\n"
        "import mgmt.__main__\n"
        "heavy = {'typing', 're', 'contextlib', 'mgmt.lazyimport', 'engine.collector', 'gc'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    assert _python(script) == "[]"


def test_dataclasses_made_without_compiling_source_behave_as_dataclasses_own() -> None:
    """The same classes made before and after `quickclasses.install()`: their signatures,
    `__init__`'s annotations and errors, reprs (a recursive one too), comparisons, hashes,
    orderings and the frozen ones' errors are the same; the methods but `__init__` are
    quickclasses' closures (`__init__` is compiled, from a shorter text)."""
    script = """
import dataclasses, sys
from dataclasses import dataclass, field

def made():
    @dataclass
    class Plain:
        a: int
        b: str = "x"
        c: list = field(default_factory=list)

    @dataclass(frozen=True)
    class Frozen:
        a: int
        b: float = 0.0
        h: int = field(default=0, hash=False)
        r: int = field(default=0, repr=False, compare=False)

    @dataclass(frozen=True, slots=True)
    class Slotted:
        x: object

    @dataclass(order=True)
    class Ordered:
        a: int
        b: int = 0

    @dataclass(unsafe_hash=True)
    class Hashed:
        a: float

    @dataclass
    class Empty:
        pass

    @dataclass(frozen=True)
    class EmptyFrozen:
        pass

    @dataclass(frozen=True)
    class Child(Frozen):
        d: int = 1

    @dataclass(kw_only=True, eq=False)
    class NoEq:
        a: int = 0

    @dataclass
    class Post:
        a: int
        b: dataclasses.InitVar[int] = 2
        c: list = field(default_factory=list, init=False)
        d: int = field(default=4, kw_only=True)

        def __post_init__(self, b):
            self.c.append(b)

    return Plain, Frozen, Slotted, Ordered, Hashed, Empty, EmptyFrozen, Child, NoEq, Post

def said(f):
    try:
        return repr(f())
    except Exception as e:
        return f"{type(e).__name__}: {e}"

def behaviour(classes):
    Plain, Frozen, Slotted, Ordered, Hashed, Empty, EmptyFrozen, Child, NoEq, Post = classes
    import inspect
    out = [str(inspect.signature(c)) for c in classes]
    out += [repr(c.__init__.__annotations__) for c in classes]
    out += [said(lambda: Plain()), said(lambda: Plain(1, "y", [], 4)), said(lambda: NoEq(1))]
    out += [said(lambda: NoEq(b=1)), said(lambda: Frozen()), repr(Post(1, 3, d=5))]
    out += [said(lambda: Post(1, 3, 5)), Plain(1).c is not Plain(1).c, repr(Slotted(x=3))]
    out += [said(lambda: dataclass(type("Bad", (), {"__annotations__": {"a": int, "b": int},
                                                     "a": 0})))]
    p = Plain(1)
    p.c.append(p)
    nan = float("nan")
    out += [repr(p), p == Plain(1), Plain(1) == Plain(1), Plain(1) != Plain(2), Plain(1) == 1]
    out += [repr(Frozen(1, r=5)), Frozen(1, r=5) == Frozen(1, r=6), hash(Frozen(1, h=2))]
    out += [hash(Frozen(1)) == hash((1, 0.0)), said(lambda: setattr(Frozen(1), "a", 2))]
    out += [said(lambda: delattr(Frozen(1), "b")), said(lambda: setattr(Frozen(1), "z", 2))]
    out += [repr(Slotted(nan)), Slotted(nan) == Slotted(nan), hash(Slotted("s"))]
    out += [said(lambda: setattr(Slotted(1), "x", 2)), Ordered(1) < Ordered(1, 1)]
    out += [Ordered(2) >= Ordered(1, 5), said(lambda: Ordered(1) < 1), hash(Hashed(1.5)) == hash((1.5,))]
    out += [repr(Empty()), Empty() == Empty(), hash(EmptyFrozen()), repr(Child(1, d=3))]
    out += [Child(1) == Frozen(1), said(lambda: setattr(Child(1), "d", 0)), NoEq() == NoEq()]
    out += [repr(NoEq(a=2)), Plain.__eq__.__qualname__, Frozen.__setattr__.__qualname__]
    out += [Slotted.__hash__.__qualname__, Ordered.__lt__.__name__, Plain.__repr__.__name__]
    return out

before = behaviour(made())
from mgmt import quickclasses
quickclasses.install()
after_classes = made()
after = behaviour(after_classes)
assert before == after, [(b, a) for b, a in zip(before, after) if b != a]
methods = [c.__eq__ for c in after_classes[:5]] + [after_classes[1].__setattr__]
methods += [c.__init__ for c in after_classes]
print(sorted({m.__code__.co_filename.rsplit("/", 1)[-1] for m in methods}))
"""
    assert _python(script) == "['<string>', 'quickclasses.py']"


_INT_ENUMS_SCRIPT = """
import sys, enum, importlib.util

def fresh(name):
    spec = importlib.util.find_spec(name)
    module = importlib.util.module_from_spec(spec)
    real = sys.modules[name]
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules[name] = real
    return module

import socket, signal
NAMES = {'socket': ['AddressFamily', 'SocketKind', 'MsgFlag', 'AddressInfo'], 'signal': ['Signals', 'Handlers', 'Sigmasks']}
before = {m: fresh(m) for m in NAMES}
from mgmt import quickclasses
quickclasses.install()
assert enum.EnumType._convert_ is quickclasses._convert_
after = {m: fresh(m) for m in NAMES}

def same(a, b, ma, mb):
    # a from before, b from after: equal, with the classes mapped
    if isinstance(a, enum.Enum) and type(a) is not ma:
        return a is b
    if isinstance(a, enum.Enum):
        return type(a) is ma and type(b) is mb and int(a) == int(b) and a._name_ == b._name_
    if isinstance(a, enum.property):
        return type(b) is enum.property and vars(a) == vars(b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y, ma, mb) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k], ma, mb) for k in a)
    if a is ma:
        return b is mb
    return a == b

out = []
for m, names in NAMES.items():
    for n in names:
        A, B = getattr(before[m], n), getattr(after[m], n)
        assert A is not B and type(A) is type(B) and A.__bases__ == B.__bases__ and A.__mro__[1:] == B.__mro__[1:]
        assert list(vars(A)) == list(vars(B)), (n, list(vars(A)), list(vars(B)))
        for k in vars(A):
            assert same(vars(A)[k], vars(B)[k], A, B), (n, k, vars(A)[k], vars(B)[k])
        for k, ma in A._member_map_.items():
            mb = B._member_map_[k]
            assert list(vars(ma)) == list(vars(mb)), (n, k)
            assert all(same(vars(ma)[x], vars(mb)[x], A, B) for x in vars(ma)), (n, k, vars(ma), vars(mb))
            assert (repr(ma), str(ma), format(ma), f'{ma:x}', hash(ma)) == (repr(mb), str(mb), format(mb), f'{mb:x}', hash(mb))
            assert same(list(ma.__reduce_ex__(2)), list(mb.__reduce_ex__(2)), A, B)
            assert getattr(before[m], k) is ma and getattr(after[m], k) is mb
        assert [x.name for x in A] == [x.name for x in B] and [x.name for x in reversed(A)] == [x.name for x in reversed(B)]
        assert [repr(A(int(v))) for v in A] == [repr(B(int(v))) for v in B]
        if issubclass(A, enum.Flag):
            vs = [int(v) for v in A]
            combos = [repr(A(x | y)) for x in vs for y in vs] + [repr(~v) for v in A]
            combosb = [repr(B(x | y)) for x in vs for y in vs] + [repr(~v) for v in B]
            assert combos == combosb
        assert repr(A(99999)) == repr(B(99999)) if issubclass(A, enum.Flag) else True
        assert dir(A) == dir(B) and repr(A) == repr(B)
        out.append((n, len(A._member_map_)))
print(out)

class Source:
    A_X, A_Y, A_Z, B_X, B_Y, B_Z = 1, "two", 3, 3, True, 1
E = enum.Enum._convert_("E", "socket", lambda n: n.startswith("A_"), source=Source)
I = enum.IntEnum._convert_("I", "socket", lambda n: n.startswith("B_"), source=Source)
print([(m.name, m.value) for m in E], [(m.name, m.value) for m in I], list(I.__members__))
"""


def test_int_enums_converted_by_quickclasses_are_enums_own() -> None:
    """socket's and signal's seven int enums and flags made by `quickclasses._convert_` (their
    modules run again after `install()`) are the classes enum's own `_convert_` makes: the
    same attributes in the same order, the same members (attributes, order, repr, str,
    format, hash, pickling), aliases, iteration, lookups and flag combinations; another kind
    of `_convert_` (values not all ints, an Enum) is enum's own."""
    script = _INT_ENUMS_SCRIPT
    assert _python(script).splitlines() == [
        "[('AddressFamily', 33), ('SocketKind', 7), ('MsgFlag', 14), ('AddressInfo', 7), "
        "('Signals', 36), ('Handlers', 2), ('Sigmasks', 3)]",
        "[('A_X', 1), ('A_Y', 'two'), ('A_Z', 3)] [('B_Y', True), ('B_X', 3)] "
        "['B_Y', 'B_Z', 'B_X']",
    ]


def _other_pythons_311() -> list[str]:
    """The other CPython 3.11 interpreters of this machine (pyenv's, the system's): their enum
    may be another 3.11 release's."""
    ours = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    found = {
        os.path.realpath(path)
        for path in [
            *glob.glob(os.path.expanduser("~/.pyenv/versions/3.11*/bin/python3.11")),
            "/usr/bin/python3.11",
            "/usr/local/bin/python3.11",
        ]
        if os.access(path, os.X_OK)
    }
    return sorted(found - {ours})


def test_int_enums_are_enums_own_on_every_311_release_there_is() -> None:
    """On another 3.11 release than the one quickclasses' `_convert_` follows (3.11.7: its
    `_convert_` sets no `__reduce_ex__`, its flags have a `_singles_mask_`), the classes are
    enum's own too: `install()` leaves enum's `_convert_` where its code is another."""
    pythons = _other_pythons_311()
    if not pythons:
        pytest.skip("no other Python 3.11 on this machine")
    script = _INT_ENUMS_SCRIPT.replace(
        "assert enum.EnumType._convert_ is quickclasses._convert_\n", ""
    )
    for interpreter in pythons:
        out = subprocess.run(
            [interpreter, "-S", "-c", script],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert out.returncode == 0, (interpreter, out.stderr[-2000:])


_OTHER_CODE_SCRIPT = """
import collections, dataclasses, typing
from mgmt import quickclasses
own = {name: getattr(dataclasses, name) for name in ("_cmp_fn", "_repr_fn", "_init_fn", "_get_field")}
def _repr_fn(fields, globals):  # as another 3.11 release's could be: other code
    return own["_repr_fn"](fields, globals)
dataclasses._repr_fn = _repr_fn
own_new = typing.NamedTupleMeta.__new__
quickclasses.install()
print(dataclasses._repr_fn is _repr_fn, all(getattr(dataclasses, n) is f for n, f in own.items() if n != "_repr_fn"))
print(typing.NamedTupleMeta.__new__ is quickclasses._named_tuple_new, own_new is not quickclasses._named_tuple_new)
@dataclasses.dataclass
class Point:
    x: int
    y: int = 2
print(Point(1), Point(1) == Point(1, 2))
"""


def test_a_standard_builder_of_other_code_is_left_as_it_is() -> None:
    """Where a 3.11 release's code of a builder quickclasses replaces (or of its caller) is not
    the code ours follows, `install()` leaves that group as it is (dataclasses' builders all
    together: they are called by one caller) and replaces the others; dataclasses still work."""
    assert _python(_OTHER_CODE_SCRIPT).splitlines() == [
        "True True",
        "True True",
        "Point(x=1, y=2) True",
    ]


def test_dataclass_fields_got_by_quickclasses_are_dataclasses_own() -> None:
    """`quickclasses._get_field` gives the field dataclasses' own `_get_field` gives (every
    attribute, or the same error) for string annotations that name a ClassVar or an InitVar
    (plainly, subscripted, through an alias or a module), that name neither, or none, for
    types, and for every kind of default (none, a value, a field, a factory, a mutable one, a
    slot, kw_only either way); a class whose module is gone fails as before."""
    script = """
import dataclasses, sys, typing
import typing as t
from typing import ClassVar
from dataclasses import InitVar, field
CV, IV = ClassVar, InitVar[int]
from mgmt import quickclasses
own = dataclasses._get_field
quickclasses.install()
ours = dataclasses._get_field
assert ours is quickclasses._get_field and own is not ours
ANNOTATIONS = ["int", "int | None", "ClassVar", "ClassVar[int]", "t.ClassVar[int]", "typing.ClassVar",
    "InitVar[int]", "dataclasses.InitVar[int]", "IV", "CV[int]", "'quoted'", " ClassVar", "Missing",
    "", "list[int]", int, ClassVar[int], InitVar[int]]
DEFAULTS = [lambda: None, lambda: 1, lambda: field(default=2), lambda: field(default_factory=list),
    lambda: [], lambda: field(kw_only=True), lambda: field(default_factory=list, kw_only=True),
    lambda: field(default=3, kw_only=False), "slots"]

def made(default):
    if default == "slots":
        return type("C", (), {"__slots__": ("a",), "__module__": __name__})
    value = default()
    return type("C", (), {"__module__": __name__} if value is None else {"a": value, "__module__": __name__})

def said(get, annotation, default, kw_only):
    try:
        f = get(made(default), "a", annotation, kw_only)
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return repr((f.name, f.type, f._field_type, f.default, f.default_factory, f.kw_only, f.init, f.repr,
                 f.hash, f.compare, dict(f.metadata)))

count = 0
for annotation in ANNOTATIONS:
    for default in DEFAULTS:
        for kw_only in (False, True):
            a, b = said(own, annotation, default, kw_only), said(ours, annotation, default, kw_only)
            assert a == b, (annotation, a, b)
            count += 1
gone = [type("G", (), {"a": 1, "__module__": "no.such.module"}) for _ in range(2)]
try:
    own(gone[0], "a", "int", False)
except AttributeError as e:
    said_own = str(e)
try:
    ours(gone[1], "a", "int", False)
except AttributeError as e:
    assert str(e) == said_own, e
print(count)
"""
    assert _python(script) == "324"


def test_named_tuples_made_by_quickclasses_are_typings_own() -> None:
    """typing's NamedTuple classes made after `quickclasses.install()` (which does not set a
    class's `__bases__` again to the `(tuple,)` it has) are those typing makes: bases, MRO,
    fields, defaults, annotations, doc, names, attributes in order, methods, properties, a
    generic one's subscription, the place among tuple's subclasses, and the same errors."""
    script = """
from __future__ import annotations
import typing
from typing import Generic, NamedTuple, TypeVar
T = TypeVar("T")

def made():
    class Plain(NamedTuple):
        __doc__ = "A plain one."
        a: int
        b: str = "x"
        c: list[int] | None = None
        def total(self) -> int:
            return self.a + 1
        @property
        def twice(self) -> int:
            return self.a * 2
    class Bare(NamedTuple):
        a: bytes | None
    class Gen(NamedTuple, Generic[T]):
        value: T
        n: int = 0
    last = tuple.__subclasses__()[-1] is Gen
    return Plain, Bare, Gen, last

def said(f):
    try:
        return repr(f())
    except Exception as e:
        return f"{type(e).__name__}: {e}"

def shape(classes):
    Plain, Bare, Gen, last = classes
    out = [last]
    for c in (Plain, Bare, Gen):
        out += [c.__bases__, [k.__name__ for k in c.__mro__], c._fields, c._field_defaults,
                c.__annotations__, c.__new__.__annotations__, c.__doc__, c.__module__,
                c.__qualname__, getattr(c, "__orig_bases__", None), list(vars(c)),
                c.__new__.__defaults__, type(c).__name__]
    p = Plain(1)
    out += [repr(p), p.total(), p.twice, p._replace(a=3), p._asdict(), p.__reduce__(),
            Plain._make([4, "y", [1]]), repr(Bare(b"z")), repr(Gen("v")), repr(Gen[int]),
            Gen[int](3, 4), hash(Plain(1)) == hash((1, "x", None))]
    out += [said(lambda: type("Bad", (NamedTuple,), {"__annotations__": {"a": "int", "b": "int"},
                                                     "a": 1, "__module__": "m"}))]
    out += [said(lambda: typing.NamedTupleMeta("Bad", (typing._NamedTuple,),
                                               {"__module__": "m", "_make": 1}))]
    out += [said(lambda: typing.NamedTupleMeta("Bad", (typing._NamedTuple, int),
                                               {"__module__": "m"}))]
    return [repr(x) for x in out]

before = shape(made())
from mgmt import quickclasses
quickclasses.install()
after = shape(made())
assert before == after, [(b, a) for b, a in zip(before, after) if b != a]
print(len(after), typing.NamedTupleMeta.__new__ is quickclasses._named_tuple_new)
"""
    assert _python(script) == "55 True"


def test_dataclass_init_written_as_bytecode_does_what_the_compiled_one_does() -> None:
    """`__init__` written as bytecode (quickclasses._init_code) against dataclasses' compiled
    one: default factories (frozen or not, in __init__ or not), InitVars and __post_init__, a
    slotted class's field not in __init__, keyword-only fields; the same results, errors and
    line numbers in a traceback through it, names and signatures. Over 255 fields (an argument
    beyond a byte) or an InitVar outside `__init__` (the text's name is a global then), it is
    compiled as before. The opcodes written are 3.11's."""
    script = """
import dataclasses, opcode, traceback
from dataclasses import InitVar, dataclass, field

def made():
    def boom():
        raise ValueError("boom")

    @dataclass(frozen=True)
    class Frozen:
        a: int
        b: list = field(default_factory=list)
        c: InitVar[int] = 3
        d: list = field(default_factory=list, init=False)

        def __post_init__(self, c):
            object.__setattr__(self, "e", c)

    @dataclass(slots=True)
    class Slotted:
        a: int
        b: int = field(default=7, init=False)
        c: list = field(default_factory=list, init=False)
        d: int = field(default=8, init=False, repr=False)

    @dataclass
    class Boom:
        a: int
        b: list = field(default_factory=boom)

    @dataclass
    class PostBoom:
        a: int

        def __post_init__(self):
            raise KeyError(self.a)

    @dataclass
    class Vars:
        x: InitVar[list] = None
        y: int = 0
        z: InitVar[int] = 1

        def __post_init__(self, x, z):
            self.w = (x, z)

    @dataclass(kw_only=True, frozen=True)
    class Keywords:
        a: int
        b: int = 2

    @dataclass
    class Nothing:
        a: int = field(default=1, init=False)

    @dataclass
    class Hidden:  # an InitVar not in __init__: the text's __post_init__ call reads a global
        a: int
        x: InitVar[int] = field(default=1, init=False)

        def __post_init__(self, x):
            self.x = x

    fields = [(f"f{i}", int, field(default=i)) for i in range(300)]
    Big = dataclasses.make_dataclass("Big", fields)
    return Frozen, Slotted, Boom, PostBoom, Vars, Keywords, Nothing, Hidden, Big

def said(f):
    try:
        return repr(f())
    except Exception as e:
        frames = traceback.extract_tb(e.__traceback__)[1:]
        return [(t.name, t.lineno, t.filename) for t in frames], repr(e)

def behaviour(classes):
    Frozen, Slotted, Boom, PostBoom, Vars, Keywords, Nothing, Hidden, Big = classes
    out = [repr(Frozen(1)), Frozen(1).e, repr(Frozen(1, [2], 5)), Frozen(1).b is not Frozen(1).b]
    out += [repr(Slotted(1)), Slotted(1).d, Slotted(1).c is not Slotted(1).c, said(lambda: Boom(1))]
    out += [repr(Boom(1, [])), said(lambda: PostBoom(2)), repr(Vars()), Vars([1], z=2).w]
    out += [Big(f5=-1).f5, Big().f299, repr(Keywords(a=1)), said(lambda: Keywords(1))]
    out += [said(lambda: Frozen()), said(lambda: Frozen(1, 2, 3, 4)), repr(Nothing()), Nothing().a]
    out += [said(lambda: Hidden(1))]
    for c in classes:
        code = c.__init__.__code__
        lines = sorted({line for *_, line in code.co_lines() if line is not None})
        out.append((lines, code.co_varnames, code.co_argcount, code.co_kwonlyargcount))
        out.append((c.__init__.__doc__, c.__init__.__qualname__, code.co_filename, code.co_name))
    return out

before = behaviour(made())
from mgmt import quickclasses
quickclasses.install()
after_classes = made()
after = behaviour(after_classes)
assert before == after, [(b, a) for b, a in zip(before, after) if b != a]
names = [n for n in dir(quickclasses) if n.isupper() and n.startswith("_") and n != "_CACHES"]
ops = {n: getattr(quickclasses, n) for n in names if n[1:] in opcode.opmap}
assert ops and all(opcode.opmap[n[1:]] == v for n, v in ops.items()), ops
caches = {n: opcode._inline_cache_entries[opcode.opmap[n[1:]]] for n in ops}
assert all(quickclasses._CACHES.get(ops[n], 0) == c for n, c in caches.items()), caches
print(len(ops), [bool(c.__init__.__code__.co_flags & 16) for c in after_classes])
"""
    out = "15 [False, False, False, False, False, False, False, True, True]"
    assert _python(script) == out


def test_string_annotations_are_told_apart_as_dataclasses_tells_them() -> None:
    """With string annotations (`from __future__ import annotations`), quickclasses'
    `_is_type` finds the same ClassVars, InitVars and KW_ONLY markers as dataclasses' own:
    by name, through the module (`typing.ClassVar`, `dc.InitVar`), an alias made in the
    module (found) or in the class (not found, as dataclasses says), a text seen twice."""
    script = """
from __future__ import annotations
import dataclasses, typing
import dataclasses as dc
from dataclasses import KW_ONLY, InitVar, dataclass
from typing import ClassVar

CV = ClassVar

def made():
    @dataclass
    class Marked:
        a: int
        b: ClassVar[int] = 1
        c: typing.ClassVar[str] = "c"
        d: InitVar[int] = 2
        e: dc.InitVar[str] = "e"
        f: CV[int] = 3
        _: KW_ONLY
        g: int = 4
        h: ClassVar[int] = 5

        def __post_init__(self, d, e):
            self.seen = (d, e)

    @dataclass
    class Local:
        LCV = ClassVar
        x: LCV[int] = 1
        y: int = 2

    return Marked, Local

def behaviour(classes):
    out = []
    for c in classes:
        out += [[(f.name, f._field_type.name, f.kw_only is True) for f in c.__dataclass_fields__.values()]]
        out += [sorted(c.__dataclass_fields__), str(__import__("inspect").signature(c))]
    out += [repr(classes[0](1, g=7)), classes[0](1).seen, repr(classes[1]())]
    return out

before = behaviour(made())
from mgmt import quickclasses
quickclasses.install()
after = behaviour(made())
assert before == after, [(b, a) for b, a in zip(before, after) if b != a]
print(before[0])
"""
    out = "[('a', '_FIELD', False), ('b', '_FIELD_CLASSVAR', False), "
    out += "('c', '_FIELD_CLASSVAR', False), ('d', '_FIELD_INITVAR', False), "
    out += "('e', '_FIELD_INITVAR', False), ('f', '_FIELD_CLASSVAR', False), "
    out += "('g', '_FIELD', True), ('h', '_FIELD_CLASSVAR', False)]"
    assert _python(script) == out


def test_namedtuple_new_written_as_bytecode_does_what_the_evaluated_one_does() -> None:
    """A namedtuple's `__new__` written as bytecode (quickclasses._namedtuple_eval) against the
    one `collections.namedtuple` evaluates: the same results, errors, signatures, docs, names
    and defaults; no fields, or over 254, are evaluated as before."""
    script = """
import collections, inspect, typing

def made():
    P = collections.namedtuple("P", "x y", defaults=[3])
    One = collections.namedtuple("One", "a")
    Zero = collections.namedtuple("Zero", "")
    Renamed = collections.namedtuple("Renamed", "a def a", rename=True)

    class Typed(typing.NamedTuple):
        a: int
        b: str = "s"

    Big = collections.namedtuple("Big", [f"f{i}" for i in range(300)])
    return P, One, Zero, Renamed, Typed, Big

def said(f):
    try:
        return repr(f())
    except Exception as e:
        return f"{type(e).__name__}: {e}"

def behaviour(classes):
    P, One, Zero, Renamed, Typed, Big = classes
    out = [repr(P(1)), repr(P(1, 2)), said(lambda: P()), said(lambda: P(1, 2, 3))]
    out += [said(lambda: P(x=1, z=2)), repr(One(1)), repr(Zero()), repr(Renamed(1, 2, 3))]
    out += [repr(Typed(1)), said(lambda: Typed()), repr(P._make([1, 2])), P(1) == (1, 3)]
    out += [repr(P(1)._replace(y=5)), Big(*range(300))[299], said(lambda: Big())[:60]]
    for c in classes:
        new = c.__new__
        out += [new.__doc__, new.__qualname__, new.__name__, new.__defaults__]
        out += [new.__code__.co_varnames[:4], new.__globals__["__name__"]]
        out += [str(inspect.signature(c))[:40]]
    return out

before = behaviour(made())
from mgmt import quickclasses
quickclasses.install()
after_classes = made()
after = behaviour(after_classes)
assert before == after, [(b, a) for b, a in zip(before, after) if b != a]
print([c.__new__.__code__.co_linetable[0] == 0x80 for c in after_classes])
"""
    assert _python(script) == "[False, False, True, False, False, True]"


def test_patterns_on_use_nest_and_end_with_the_last() -> None:
    """Nested, the outer context's packages stay deferred after the inner one ends; a deferred
    pattern's methods are the compiled one's; another package's compile is as usual; re.compile
    is the real one again once the last context ends."""
    real = re.compile
    with lazyimport.patterns_on_use("yaml"):
        usual = re.compile("x+")  # this module is not yaml's
        with lazyimport.patterns_on_use("tests"):
            inner = re.compile("a+")
        after = re.compile("c+")
        assert re.compile is not real
    assert re.compile is real
    assert [type(p).__name__ for p in (usual, inner, after)] == ["Pattern", "_Pattern", "Pattern"]
    match = inner.fullmatch("aa")
    assert match is not None and match.group() == "aa" and inner.pattern == "a+"


def test_forward_references_keep_their_text_and_resolve_as_before() -> None:
    """After `quickclasses.install()`, a forward reference keeps its text (evaluated when
    resolved) instead of a code object of `compile`'s; a NamedTuple's string annotations and
    typing.get_type_hints (a name of the class's module, a class-level name) resolve as
    before; a bad annotation still raises typing's SyntaxError, when it is made, every time
    (a keyword too, though a name is not parsed; a text once good is not parsed again)."""
    script = """
from __future__ import annotations
import typing
from typing import NamedTuple
from mgmt import quickclasses
quickclasses.install()
ref = typing.ForwardRef("int | None")
class Pair(NamedTuple):
    a: int
    b: str | None = None
class Box:
    Inner = bytes
    pair: Pair
    inner: Inner
    many: list[Pair] | None
bad = []
for text in ("int |", "int |", "class", "await", "lambda"):
    try:
        typing.ForwardRef(text)
    except SyntaxError as err:
        bad.append("Forward reference must be an expression" in str(err))
typing.ForwardRef("None"), typing.ForwardRef("int | None")
print(ref.__forward_code__, Pair(1), typing.get_type_hints(Pair), bad)
print(typing.get_type_hints(Box))
"""
    out = "int | None Pair(a=1, b=None) {'a': <class 'int'>, 'b': str | None} "
    out += "[True, True, True, True, True]\n"
    out += "{'pair': <class '__main__.Pair'>, 'inner': <class 'bytes'>, "
    out += "'many': list[__main__.Pair] | None}"
    assert _python(script) == out


def test_a_deferred_package_run_beside_an_import_of_its_submodule_does_not_deadlock() -> None:
    """One thread's first `yaml.safe_load` runs PyYAML's package code, which imports
    yaml.dumper, while another thread imports yaml.dumper, whose code reads yaml.emitter (a
    deferred module): with one lock for every deferred module's run, the first held it and
    waited for yaml.dumper's import lock, the second held that and waited for it (the review's
    probe: 6 of 6 runs hung). Each module's run has its own lock now."""
    script = r"""
import os, sys, threading
import mgmt; mgmt.full_site()
from mgmt import lazyimport
lazyimport.install()
import yaml
start = threading.Barrier(2)
def load():
    start.wait()
    yaml.safe_load("a: 1")
def dumper():
    start.wait()
    import yaml.dumper
threads = [threading.Thread(target=load, daemon=True), threading.Thread(target=dumper, daemon=True)]
for t in threads: t.start()
for t in threads: t.join(20)
print([t.is_alive() for t in threads], yaml.safe_load("a: 1"))
sys.stdout.flush()
os._exit(0)
"""
    for _ in range(3):
        assert _python(script) == "[False, False] {'a': 1}"
