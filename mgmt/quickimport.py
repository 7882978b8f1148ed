"""Four of CPython 3.11's import-system helpers made cheaper, and an index of where a run's
modules are, for the `mgmt` command's start-up.

A cron run imports ~150 modules from source files; for each, the import system (its Python
code, `importlib._bootstrap` and `_bootstrap_external`) runs four helpers whose cost is in the
way they are written, not in what they do:
- `FileFinder.find_spec` joins a directory and a file name for each of the five file suffixes
  (extension modules, `.py`, `.pyc`), and for a package's five `__init__` names, before it
  looks whether that name is in the directory's listing: ~10 joins a module, ~2 of them used.
  Here the same steps in the same order, each name joined once it is in the listing.
- `cache_from_source` (a source file's `__pycache__/NAME.cpython-311.pyc`, twice a module:
  the spec's `cached`, then the loader's) splits and joins its path through the generic
  helpers and looks up its options each call: ~12 K instructions a call. Here the common case
  (a `str` path with a directory, no optimization level, no `sys.pycache_prefix`) is one
  `rpartition` and one f-string; any other goes to CPython's function.
- `_init_module_attrs` (a new module's `__name__`, `__loader__`, `__file__`...) asks
  `getattr(module, name, None)` for six names, three of them missing from a new module
  (`__path__`, `__file__`, `__cached__`): a module's missing attribute is an AttributeError
  whose message is formatted twice in C (the object's, then the module's) before `getattr`
  drops it, ~6 K instructions a miss. For a plain module (`types.ModuleType` itself, no
  module-level `__getattr__`, not a reload) the same answers are its dict's: `dict.get`.
  Any other module goes to CPython's function.
- `SourceLoader.get_code` reads a module's `.pyc` through a file object, a dict of the
  source's stat and four helpers that check its header field by field (~30 K instructions a
  module beyond the unmarshalling). `get_code` here reads a matching timestamp-based `.pyc`
  with one `read` and checks its header in one expression; anything else is CPython's.
Together -11.6 M instructions of a 100-file cron run (docs/benchmarks.md; get_code's -2.6 M:
"startown"). The answers are CPython's: tests/mgmt/test_quickimport.py compares all four
with CPython's own for every module a run imports, for packages, namespace packages,
extension modules, and odd paths.

And `Index`, a finder put before CPython's own on `sys.meta_path`: the spec of each module a run imports,
from an index of where each is (`scripts/install.sh` records it at the end of a small run),
without the search of the path entries (-4.5 M instructions, docs/benchmarks.md, "Start-up,
2026-12-05, night"). Read only when trusted; an answer given only while the directories it
depends on are unchanged (`Index`; tests compare its answers with `PathFinder`'s for every
module a run imports).

`install()` replaces them in `importlib._bootstrap(_external)` on CPython 3.11 only (the code
they follow is 3.11's), on POSIX paths, and not under `python -vv` (whose "trying ..." line
for each suffix the replacement does not print). Installed by
`mgmt.__main__` before the command's imports; the library API (`mgmt.agent.run`) leaves the
import system as it is.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing is not imported yet, nor needed: mypy reads the name
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

# `importlib._bootstrap_external`, as the interpreter made it at its start (frozen): the
# `importlib` package is not imported for it.
_external: Any = sys.modules["_frozen_importlib_external"]
_bootstrap: Any = sys.modules["_frozen_importlib"]  # `importlib._bootstrap`, the same way
_CACHE_FROM_SOURCE = _external.cache_from_source
_FIND_SPEC = _external.FileFinder.find_spec
_INIT_MODULE_ATTRS = _bootstrap._init_module_attrs
_MODULE: Any = type(sys)  # types.ModuleType (`types` is not imported yet)
_TAG = sys.implementation.cache_tag


def cache_from_source(path: Any, debug_override: Any = None, *, optimization: Any = None) -> str:
    """CPython's `cache_from_source`, its common case first (the result is the same)."""
    if (
        type(path) is str
        and debug_override is None
        and optimization is None
        and not sys.flags.optimize
        and sys.pycache_prefix is None
    ):
        head, _, tail = path.rpartition("/")
        head = head.rstrip("/")
        if head:  # (a path in the working directory, or at the root: CPython's own joins)
            base, dot, rest = tail.rpartition(".")
            return f"{head}/__pycache__/{base or rest}{dot}{_TAG}.pyc"
    result: str = _CACHE_FROM_SOURCE(path, debug_override, optimization=optimization)
    return result


def find_spec(self: Any, fullname: str, target: Any = None) -> Any:
    """CPython 3.11's `FileFinder.find_spec`, a name joined only once it is in the listing."""
    tail = fullname.rpartition(".")[2]
    try:
        mtime = _external._path_stat(self.path or _external._os.getcwd()).st_mtime
    except OSError:
        mtime = -1
    if mtime != self._path_mtime:  # the directory changed: its listing is read again
        self._fill_cache()
        self._path_mtime = mtime
    if _external._relax_case():
        listing, key = self._relaxed_path_cache, tail.lower()
    else:
        listing, key = self._path_cache, tail
    package = None  # a directory of that name without an __init__: a namespace package
    if key in listing:
        base = _external._path_join(self.path, tail)
        for suffix, loader in self._loaders:
            init = _external._path_join(base, "__init__" + suffix)
            if _external._path_isfile(init):
                return self._get_spec(loader, fullname, init, [base], target)
        if _external._path_isdir(base):
            package = base
    for suffix, loader in self._loaders:
        if key + suffix in listing:
            path = _external._path_join(self.path, tail + suffix)
            if _external._path_isfile(path):
                return self._get_spec(loader, fullname, path, None, target)
    if package is not None:
        _bootstrap._verbose_message("possible namespace for {}", package)
        spec = _bootstrap.ModuleSpec(fullname, None)
        spec.submodule_search_locations = [package]
        return spec
    return None


_GET_CODE = _external.SourceLoader.get_code
_SOURCE_FILE_LOADER = _external.SourceFileLoader
_MAGIC = _external.MAGIC_NUMBER
_loads = _external.marshal.loads
_fix_co_filename = _external._imp._fix_co_filename
_CODE = type(_GET_CODE.__code__)


def get_code(self: Any, fullname: str) -> Any:
    """CPython 3.11's `SourceLoader.get_code`, its common case first: a `SourceFileLoader`'s
    module whose timestamp-based `.pyc` matches its source (this magic number, no flags, the
    source's modification time and size) is read with one `read` and unmarshalled, without
    the file object, the stat's dict and the helpers that check the header field by field
    (~30 K instructions a module). Anything else (no `.pyc`, a stale or hash-based one, a
    loader of another kind, `python -v`'s messages) is CPython's function, which also
    writes a new `.pyc`. The code object is the same: `marshal.loads` of the same bytes."""
    if type(self) is _SOURCE_FILE_LOADER and fullname == self.name and not sys.flags.verbose:
        source = self.path
        os = _external._os
        try:
            st = os.stat(source)
            fd = os.open(cache_from_source(source), os.O_RDONLY | os.O_CLOEXEC)
        except (OSError, NotImplementedError, ValueError):
            fd = -1
        if fd >= 0:
            try:
                data = os.read(fd, os.fstat(fd).st_size)
            except OSError:
                data = b""
            finally:
                os.close(fd)
            if (
                len(data) > 16
                and data[:4] == _MAGIC
                and data[4:8] == b"\0\0\0\0"
                and int.from_bytes(data[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF
                and int.from_bytes(data[12:16], "little") == st.st_size & 0xFFFFFFFF
            ):
                try:
                    code = _loads(memoryview(data)[16:])
                except (EOFError, ValueError, TypeError):
                    code = None
                if type(code) is _CODE:
                    _fix_co_filename(code, source)
                    return code
    return _GET_CODE(self, fullname)


def init_module_attrs(spec: Any, module: Any, *, override: bool = False) -> Any:
    """CPython 3.11's `_init_module_attrs`, a plain module's attributes read from its dict."""
    if override or type(module) is not _MODULE:
        return _INIT_MODULE_ATTRS(spec, module, override=override)
    attrs = module.__dict__
    if "__getattr__" in attrs or spec.loader is None:  # (a namespace package's loader is made)
        return _INIT_MODULE_ATTRS(spec, module, override=override)
    if attrs.get("__name__") is None:
        module.__name__ = spec.name
    if attrs.get("__loader__") is None:
        module.__loader__ = spec.loader
    if attrs.get("__package__") is None:
        module.__package__ = spec.parent
    module.__spec__ = spec
    if attrs.get("__path__") is None and spec.submodule_search_locations is not None:
        module.__path__ = spec.submodule_search_locations
    if spec.has_location:
        if attrs.get("__file__") is None:
            module.__file__ = spec.origin
        if attrs.get("__cached__") is None and spec.cached is not None:
            module.__cached__ = spec.cached
    return module


def applies() -> bool:
    """Whether `install` replaces anything in this interpreter."""
    return (
        sys.implementation.name == "cpython"
        and sys.version_info[:2] == (3, 11)
        and _external.path_sep == "/"
        and sys.flags.verbose < 2
    )


def install() -> None:
    """Replace the four helpers in the import system, and put the index's finder before
    CPython's own finders (where `applies()`; the finder only with a trusted index:
    `Index.load`)."""
    if applies():
        _external.cache_from_source = cache_from_source
        _external.FileFinder.find_spec = find_spec
        _external.SourceLoader.get_code = get_code
        _bootstrap._init_module_attrs = init_module_attrs
        at = _index_place()
        index = None if at is None else Index.load(index_path())
        if at is not None and index is not None:
            sys.meta_path.insert(at, index)


def _index_place() -> int | None:
    """Where the index's finder goes on `sys.meta_path`: right before CPython's own finders
    that come before its `PathFinder` (builtin, frozen: never asked for a name in the index),
    after every other (one that a `sitecustomize` or a `.pth` file put first is still asked
    first); None without a `PathFinder` there."""
    finders = sys.meta_path
    path_finder = _external.PathFinder
    if path_finder not in finders:
        return None
    at = finders.index(path_finder)
    while at and finders[at - 1] in (_bootstrap.BuiltinImporter, _bootstrap.FrozenImporter):
        at -= 1
    return at


def uninstall() -> None:
    """CPython's own helpers again, no index (the tests)."""
    _external.cache_from_source = _CACHE_FROM_SOURCE
    _external.FileFinder.find_spec = _FIND_SPEC
    _external.SourceLoader.get_code = _GET_CODE
    _bootstrap._init_module_attrs = _INIT_MODULE_ATTRS
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, Index)]


# The index of the modules a run imports -------------------------------------------------------

_HEADER = f"mgmt import index 1 {_TAG}"
# Names the index never answers: engine.timeoutfix's finder, after it on `sys.meta_path`, fixes
# asyncio.timeouts as PathFinder finds it (so that no other module's lookup asks that finder).
UNINDEXED = frozenset({"asyncio.timeouts"})
_EXTENSION, _SOURCE = "e", "s"
_LOADERS = {_EXTENSION: _external.ExtensionFileLoader, _SOURCE: _external.SourceFileLoader}
_MOST = 1 << 20  # bytes of an index read: a bigger file is not one
_stat = _external._os.stat


def index_path() -> str:
    """Where scripts/install.sh writes the index: beside this package's bytecode, named for
    the interpreter that reads it (`imports.cpython-311.txt`)."""
    return f"{__file__.rpartition('/')[0]}/__pycache__/imports.{_TAG}.txt"


def _mtime(directory: str) -> float:
    """A directory's modification time as FileFinder reads it (-1 when it cannot be read)."""
    try:
        return float(_stat(directory).st_mtime)
    except OSError:
        return -1.0


class Index:
    """A meta path finder that answers from an index of where the modules a run imports are
    (their directory, file name, loader): for each, the spec `PathFinder` would give, without
    searching the path entries (the import system's Python for each, and a `stat` of the file).

    Never stale: an answer is given only while every directory it depends on has the
    modification time recorded with it (the one its FileFinder's listing had when the module
    was found): the module's directory, a package's own, and for a top-level module every
    entry of `sys.path` before its own. A file added, removed or renamed there changes that
    time, and the name is left to the finders after this one (as for every name not in the
    index). One `stat` a directory a lookup, as FileFinder's own check of its listing.
    Builtin and frozen names are never in it (`record` leaves them out): this finder may
    come before theirs."""

    def __init__(self, modules: dict[str, tuple[str, bool, str, str]], times: dict[str, float]):
        self.modules = modules  # name: (loader's letter, package?, directory, file name)
        self.times = times  # directory: its modification time when recorded

    @classmethod
    def load(cls, path: str) -> Index | None:
        """The index in the file `path`, if it is one and trusted; else None (the import
        system as it is). Trusted: a regular file (no symlink followed), in a directory (no
        symlink), both owned by this user or root and writable by no other."""
        text = _read_trusted(path)
        if text is None:
            return None
        lines = text.split("\n")
        if lines[0] != _HEADER:
            return None  # another version's, or another interpreter's
        modules: dict[str, tuple[str, bool, str, str]] = {}
        times: dict[str, float] = {}
        for line in lines[1:]:
            fields = line.split("\t")
            if len(fields) == 2 and fields[0].lstrip("-").replace(".", "", 1).isdigit():
                times[fields[1]] = float(fields[0])
            elif len(fields) == 5 and fields[1] in _LOADERS:
                if fields[0] not in UNINDEXED:  # (an index recorded before it was left out)
                    modules[fields[0]] = (fields[1], fields[2] == "p", fields[3], fields[4])
            elif line:
                return None  # not written by `record`
        return cls(modules, times)

    def leave_out(self, names: Iterable[str]) -> None:
        """Answer none of `names`: another finder's, put after this one (mgmt.lazyimport's
        deferred modules: the index is then asked first for every other name)."""
        for name in names:
            self.modules.pop(name, None)

    def _unchanged(self, directory: str) -> bool:
        recorded = self.times.get(directory)
        return recorded is not None and _mtime(directory) == recorded

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        module = self.modules.get(fullname)
        if module is None:
            return None
        letter, package, where, file = module
        if path is None:  # top-level: no entry before its own may have it now
            for entry in sys.path:
                if entry == where:
                    break
                if not self._unchanged(entry):
                    return None
            else:
                return None
        elif type(path) is not list or path != [where]:
            return None  # (a package's __path__ changed, or a namespace package's)
        if not self._unchanged(where):
            return None
        locations = None
        if package:
            where = f"{where}/{fullname.rpartition('.')[2]}"
            if not self._unchanged(where):
                return None
            locations = [where]
        origin = f"{where}/{file}"
        # spec_from_file_location's, for an absolute path, a loader and the locations given
        spec = _bootstrap.ModuleSpec(fullname, _LOADERS[letter](fullname, origin), origin=origin)
        spec._set_fileattr = True
        spec.submodule_search_locations = locations
        return spec


def _read_trusted(path: str) -> str | None:
    """The text of the file `path` if it is trusted (see `Index.load`), else None."""
    os = _external._os  # posix (`os` is not imported yet)
    mine = (os.geteuid(), 0)
    try:
        parent = os.lstat(path.rpartition("/")[0])
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not all(
            ok
            for st, kind in ((parent, 0o040000), (info, 0o100000))
            for ok in (st.st_mode & 0o170000 == kind, st.st_uid in mine, not st.st_mode & 0o022)
        ):
            return None
        data = os.read(fd, _MOST + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(data) > _MOST:
        return None
    text: str = data.decode("utf-8", "surrogateescape")
    return text


def record(path: str, settled: float = 2.0) -> None:
    """Write the index of the modules this process imported from files, as the path entries'
    finders found them, to `path` (atomically and durably: a new file, fsynced, renamed over
    it). Called at a run's end by scripts/install.sh (`record_at_exit`). What cannot be told
    for sure is left out (its lookups then go to the usual finders): a builtin or frozen
    module's name, a loader of another kind, a path with a tab or a line break, and a module
    whose directories changed in the last `settled` seconds (a change in the same tick of the
    file system's clock as the time recorded would not change that time)."""
    import _imp
    import os
    import time

    frozen = getattr(_imp, "_frozen_module_names", lambda: None)() or ()
    left_out = set(sys.builtin_module_names) | set(frozen) | UNINDEXED
    recent = time.time() - settled
    lines = [_HEADER]
    times: dict[str, float] = {}

    def settled_time(directory: str) -> bool:
        if directory not in times:
            finder = sys.path_importer_cache.get(directory)
            mtime = getattr(finder, "_path_mtime", None)  # as its listing had it
            times[directory] = mtime if isinstance(mtime, float) else _mtime(directory)
        return times[directory] < recent

    for name, module in sorted(sys.modules.items()):
        entry = _entry(name, module, left_out)
        if entry is None:
            continue
        letter, package, where, file = entry
        dirs = [where, f"{where}/{name.rpartition('.')[2]}"] if package else [where]
        if "." not in name:
            dirs += sys.path[: sys.path.index(where)]
        if any(type(d) is not str or not d.startswith("/") or "\t" in d or "\n" in d for d in dirs):
            continue
        if all([settled_time(directory) for directory in dirs]):  # (each one's time kept)
            lines.append("\t".join((name, letter, "p" if package else "m", where, file)))
    lines[1:1] = [f"{mtime!r}\t{directory}" for directory, mtime in times.items()]
    temporary = f"{path}.{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        os.fchmod(fd, 0o644)  # (whatever the umask)
        os.write(fd, ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
        os.fsync(fd)
    except BaseException:
        os.unlink(temporary)
        raise
    finally:
        os.close(fd)
    os.replace(temporary, path)


def _entry(name: str, module: Any, left_out: set[str]) -> tuple[str, bool, str, str] | None:
    """`name`'s (loader's letter, package?, directory searched, file name), if the index can
    say it: loaded from a file by a path entry's finder, from a directory its lookup searches."""
    spec = getattr(module, "__spec__", None)
    if name in left_out or spec is None or spec.name != name or not spec.has_location:
        return None
    letter = next((k for k, v in _LOADERS.items() if type(spec.loader) is v), None)
    origin = spec.origin
    if letter is None or type(origin) is not str:
        return None
    head, _, file = origin.rpartition("/")
    tail = name.rpartition(".")[2]
    package = spec.submodule_search_locations is not None
    if package:
        if spec.submodule_search_locations != [head] or not file.startswith("__init__."):
            return None
        head, _, base = head.rpartition("/")
        if base != tail:
            return None
    suffixes = _external.EXTENSION_SUFFIXES if letter == _EXTENSION else _external.SOURCE_SUFFIXES
    if file not in [("__init__" if package else tail) + suffix for suffix in suffixes]:
        return None  # (a file name FileFinder would not give this name)
    parent = name.rpartition(".")[0]
    if parent:
        locations = getattr(sys.modules.get(parent), "__path__", None)
        if type(locations) is not list or locations != [head]:
            return None
    elif head not in sys.path:
        return None
    return letter, package, head, file


def record_at_exit() -> None:
    """`record` the index (`index_path()`) when this process exits (scripts/install.sh: a
    first run of a small graph, whose exit runs the `atexit` handlers: mgmt.__main__)."""
    import atexit

    atexit.register(record, index_path())
