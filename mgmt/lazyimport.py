"""Modules whose code runs on first use instead of at import, for the `mgmt` command's start-up.

asyncio imports `ssl` (and `asyncio.sslproto`, which reads two of ssl's classes at import) for
the TLS it may be asked to do: ~10 ms of every `mgmt run`, most of it loading OpenSSL, which a
cron run of a graph file never uses. `install()` (the command does it before anything imports
asyncio) makes `import ssl` and `import asyncio.sslproto` give a module whose code runs at the
first read of one of its attributes (`ssl.create_default_context`, `isinstance(s, ssl.SSLSocket)`
in asyncio's socket calls...): TLS users, ours and asyncio's, get the real module at that moment,
whichever thread reads first (the others wait for it). Nothing else changes: the library API
(`mgmt.agent.run`) imports as usual.

`datetime` is Python 3.12's: the names of the `_datetime` extension, without the pure-Python
implementation 3.11's `datetime.py` defines first and then replaces by them (PyYAML imports it
for its timestamps: ~4 M instructions of every start, for ~2,500 lines that end up unused).

PyYAML's package code (its `__init__`: the dumpers, emitter, representer, serializer and the
pure-Python loaders, scanner and parser, ~5 M instructions) runs at the first read of one of
its names (`yaml.safe_load`, `yaml.dump`...): a graph file's parse imports the parts it uses
from their own modules (mgmt.yamlgraph), and libyaml's extension, which imports the error
classes of six of those modules at its import, gets them made beforehand (`ERRORS`), the
modules' code deferred.

asyncio's package code, which imports all of asyncio to give every name, runs at the first
read of a name of its streams, subprocess, taskgroups, timeouts or queues (or of `asyncio.__all__`):
the names of its other parts are given beforehand (`PARTS`), the same objects.

`patterns_on_use(*packages)` defers the regular expressions packages compile at import
(PyYAML's reader and resolver: ~7 ms of every start, for patterns a graph file mostly never
uses; logging's str.format and string.Template styles, which the agent's lines do not use) to
their first use.
"""

from __future__ import annotations

import re
import sys
import types
from _thread import RLock
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from importlib.machinery import ModuleSpec, PathFinder, SourceFileLoader, SourcelessFileLoader
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from importlib.abc import Loader as _LoaderBase
else:
    _LoaderBase = object  # importlib.abc costs more to import than this module saves

# What runs on first use: ssl (OpenSSL) and asyncio's module that reads ssl's classes at import;
# then modules of the standard library that a cron run of a graph file imports and never uses
# (measured: each stays deferred through a first run and a no-op run of bench/peers.py's graph):
# traceback (logging's and asyncio's, for an exception's or a debug-mode task's stack), what it
# needs to print one (linecache, tokenize, textwrap), what shutil and urllib.parse import for their rare paths
# (bz2, lzma, fnmatch, ipaddress), subprocess's locale (text mode), copy and base64; hashlib
# (OpenSSL: the graph file's digest uses the interpreter's own sha256); inspect, which asyncio
# and dataclasses import for their rare paths (a task's repr, a class without a docstring), with
# the ast, dis and opcode it imports (~140 classes made at import); asyncio's debug reprs
# (format_helpers), happy eyeballs (staggered) and its transports' socket wrapper (trsock, a
# status socket's first client), pathlib's Windows paths (ntpath), urllib.parse (pathlib's
# as_uri, the cluster's and the status page's URLs, reversal records' names); shutil (with the
# zlib extension it loads: a tree's removal; a temporary prefix holding files only is removed
# without it, mgmt.tmpprefix._remove_tree); queue (its Queue classes: the thread pool takes
# the `_queue` extension's, TAKEN); subprocess (a child's start: asyncio reads its
# constants at import, PRESET; the holders start theirs by posix_spawn). Source modules only,
# and no packages: a thread importing a package's submodule (`import json.decoder`) while
# another's first use runs the package took the import system's lock for the submodule and
# this module's lock in the opposite order (a deadlock, seen by a tester in 8 of 12 runs).
LAZY = frozenset(
    {
        "ssl",
        "asyncio.sslproto",
        "asyncio.format_helpers",
        "asyncio.staggered",
        "asyncio.trsock",
        "ast",
        "base64",
        "bz2",
        "copy",
        "dis",
        "fnmatch",
        "hashlib",
        "inspect",
        "ipaddress",
        "linecache",
        "locale",
        "lzma",
        "ntpath",
        "opcode",
        "queue",
        "shutil",
        "subprocess",
        "textwrap",
        "tokenize",
        "traceback",
        "urllib.parse",
        "yaml.composer",
        "yaml.emitter",
        "yaml.parser",
        "yaml.representer",
        "yaml.scanner",
        "yaml.serializer",
    }
)
# Packages whose own code (their __init__) runs on first use, their submodules imported as
# usual meanwhile: PyYAML's, whose __init__ makes its dumpers and pure-Python loaders (~6 M
# instructions) for `yaml.dump`, `yaml.safe_load`...; a graph file's parse imports the
# modules it uses itself (mgmt.yamlgraph). None of its submodules reads the package's names
# at import (a thread importing one while another runs the package would wait on both locks).
LAZY_PACKAGES = frozenset({"yaml", "asyncio"})
# The parts a deferred package gives the names of beforehand (their `__all__`, in its own
# code's order), as its code would: asyncio's, but for streams, subprocess, taskgroups and
# timeouts (~2.5 M instructions), and queues (~0.8 M; the status page's stream, puppet's
# source, dhcp and tftp use asyncio.Queue: its first read runs the package), which a graph
# file's run does not use.
PARTS: dict[str, tuple[str, ...]] = {
    "asyncio": (
        "base_events",
        "coroutines",
        "events",
        "exceptions",
        "futures",
        "locks",
        "protocols",
        "runners",
        "tasks",
        "threads",
        "transports",
        "unix_events",
    ),
}
# Functions that a module imports by name from a deferred one at its own import (`from M import
# f`, which reads the attribute and would run M): M gets a stand-in for each, which runs M at
# its first call, then calls M's own. pathlib reads urllib.parse's quote_from_bytes (its as_uri);
# the `_asyncio` extension traceback's extract_stack (a task's stack in asyncio's debug mode).
CALLED_LATER: dict[str, tuple[str, ...]] = {
    "urllib.parse": ("quote_from_bytes",),
    "traceback": ("extract_stack",),
}
# Constants a module's importers read at their own import, set in the deferred module as its
# code sets them (the same values, checked by a test): reading one does not run the module.
# asyncio reads subprocess's in its methods' defaults and asyncio.subprocess's names.
PRESET: dict[str, dict[str, Any]] = {
    "subprocess": {"PIPE": -1, "STDOUT": -2, "DEVNULL": -3},
}
# Names a deferred module takes from an extension module at its import (`from _queue import
# SimpleQueue`), given beforehand from there: the same objects, so reading one does not run
# the module. concurrent.futures' thread pool reads only queue.SimpleQueue and queue.Empty;
# queue's own Queue classes (~0.8 M instructions) are other users'. Without the extension,
# none is given (the module's code makes its own at its first use).
TAKEN: dict[str, dict[str, tuple[str, str]]] = {
    "queue": {"SimpleQueue": ("_queue", "SimpleQueue"), "Empty": ("_queue", "Empty")},
}
# Error classes made beforehand, as their module's `class E(Base): pass` makes them, and kept
# once its code has run (the class it made replaced by this one): PyYAML's `_yaml` extension
# imports these at its own import, and raises them; `except yaml.scanner.ScannerError` must
# name the same class. module: (class, the base's module, the base).
ERRORS: dict[str, tuple[str, str, str]] = {
    "yaml.composer": ("ComposerError", "yaml.error", "MarkedYAMLError"),
    "yaml.emitter": ("EmitterError", "yaml.error", "YAMLError"),
    "yaml.parser": ("ParserError", "yaml.error", "MarkedYAMLError"),
    "yaml.representer": ("RepresenterError", "yaml.error", "YAMLError"),
    "yaml.scanner": ("ScannerError", "yaml.error", "MarkedYAMLError"),
    "yaml.serializer": ("SerializerError", "yaml.error", "YAMLError"),
}
# One lock per deferred module: one thread runs its code, a read from another waits for it.
# Not one lock for all: a thread running PyYAML's package code waits for yaml.dumper's import
# lock while the thread importing yaml.dumper reads yaml.emitter (deferred) and would wait for
# the first's (a deadlock, found by the review, 2026-12-06, third session). Each is held only
# while that module's code runs, as the import system's own lock of a module is.
_LOCKS: dict[str, RLock] = {}
_RUNNING: set[str] = set()  # modules whose code runs now (a read from their own code: missing)


class _Lazy(types.ModuleType):
    """A module whose code has not run yet: reading an attribute it lacks runs it."""

    def __getattr__(self, name: str) -> Any:
        if name == "__path__":  # what `from M import f` asks first: a module (not a package)
            raise AttributeError(name)  # has none, whether its code ran or not
        _run(self)
        return types.ModuleType.__getattribute__(self, name)


class _LazyPackage(_Lazy):
    """A package whose own code has not run yet: reading one of its submodules imports that
    submodule alone (as the package's code would have imported it; libyaml's extension reads
    `yaml.composer`... at its import), reading any other name it lacks runs its code."""

    def __getattr__(self, name: str) -> Any:
        if type(self) is _LazyPackage and not name.startswith("__"):
            fullname = f"{self.__name__}.{name}"
            found = sys.modules.get(fullname)
            if found is None and PathFinder.find_spec(fullname, self.__path__) is not None:
                __import__(fullname)
                found = sys.modules[fullname]
            if found is not None:
                return found
        return _Lazy.__getattr__(self, name)  # (not super(): its class may change meanwhile)


class _Loader(_LoaderBase):
    """Creates the module as the import system does, and defers its code (`_run`)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.preset: dict[str, Any] = {}  # set in the module now, and again after its code

    def create_module(self, spec: ModuleSpec) -> types.ModuleType | None:
        return None  # the import system's default module

    def exec_module(self, module: types.ModuleType) -> None:
        _become(module, _Lazy if module.__name__ not in LAZY_PACKAGES else _LazyPackage)
        self.preset = dict(PRESET.get(module.__name__, {}))
        taken = TAKEN.get(module.__name__, {})
        with suppress(ImportError, AttributeError):  # else the module's own, at its first use
            self.preset.update({n: getattr(_imported(w), a) for n, (w, a) in taken.items()})
        if module.__name__ in ERRORS:
            name, where, base = ERRORS[module.__name__]
            bases = (getattr(_imported(where), base),)
            self.preset[name] = type(name, bases, {"__module__": module.__name__})
        for name, value in self.preset.items():
            setattr(module, name, value)
        for name in CALLED_LATER.get(module.__name__, ()):
            setattr(module, name, _stand_in(module, name))
        for part in PARTS.get(module.__name__, ()):
            given = _imported(f"{module.__name__}.{part}")
            for name in given.__all__:
                setattr(module, name, getattr(given, name))


def _stand_in(module: types.ModuleType, name: str) -> Any:
    """A function that runs `module`'s code at its first call, then calls its `name` (which
    the module's code puts in place of this one)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        _run(module)
        return getattr(module, name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def _run(module: types.ModuleType) -> None:
    """Run the real module's code in `module` (once; a concurrent reader waits for it)."""
    name = module.__name__
    lock = _LOCKS.get(name) or _LOCKS.setdefault(name, RLock())  # (setdefault: one wins)
    with lock:
        if type(module) not in (_Lazy, _LazyPackage) or name in _RUNNING:
            return  # ran already, or its own code reads a name it has not set yet
        spec = module.__spec__
        assert spec is not None and isinstance(spec.loader, _Loader)
        real, preset = spec.loader.real, spec.loader.preset
        _RUNNING.add(name)
        try:
            spec.loader = module.__loader__ = real
            real.exec_module(module)
            for key, value in preset.items():
                setattr(module, key, value)
        except BaseException:
            spec.loader = module.__loader__ = _Loader(real)  # the next read tries again
            spec.loader.preset = preset
            raise
        finally:
            _RUNNING.discard(name)
        _become(module, types.ModuleType)


def _become(module: types.ModuleType, cls: type[types.ModuleType]) -> None:
    module.__class__ = cls


def _imported(name: str) -> types.ModuleType:
    __import__(name)
    return sys.modules[name]


_DATETIME = (
    "date",
    "datetime",
    "time",
    "timedelta",
    "timezone",
    "tzinfo",
    "MINYEAR",
    "MAXYEAR",
    "UTC",
)


class _CDatetime(_LoaderBase):
    """`datetime` as Python 3.12 makes it where `_datetime` exists: its names, its doc."""

    def create_module(self, spec: ModuleSpec) -> types.ModuleType | None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        extension = __import__("_datetime")
        for name in (*_DATETIME, "datetime_CAPI"):
            setattr(module, name, getattr(extension, name))
        module.__all__ = _DATETIME  # type: ignore[attr-defined]  # as datetime.py's
        module.__doc__ = extension.__doc__


def _c_datetime(path: Sequence[str] | None) -> ModuleSpec | None:
    """The spec of `datetime` with `_CDatetime` as its loader (the real file's origin), if the
    `_datetime` extension has every name `datetime` gives; else None (imported as usual)."""
    try:
        extension = __import__("_datetime")
    except ImportError:
        return None
    if not all(hasattr(extension, name) for name in _DATETIME):  # UTC: 3.11's
        return None
    spec = PathFinder.find_spec("datetime", path)
    if spec is None or not isinstance(spec.loader, SourceFileLoader | SourcelessFileLoader):
        return spec
    spec.loader = _CDatetime()
    return spec


class _Finder:
    """A meta path finder for the LAZY modules: the real spec, with a deferring loader."""

    @staticmethod
    def find_spec(
        fullname: str, path: Sequence[str] | None = None, target: types.ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname == "datetime":
            return _c_datetime(path)
        if fullname not in LAZY and fullname not in LAZY_PACKAGES:
            return None
        spec = PathFinder.find_spec(fullname, path)
        if spec is None or not isinstance(spec.loader, SourceFileLoader | SourcelessFileLoader):
            return spec  # an extension module's code cannot run in a module made beforehand
        if (spec.submodule_search_locations is not None) != (fullname in LAZY_PACKAGES):
            return spec  # a package not in LAZY_PACKAGES: imported as usual (see LAZY)
        spec.loader = _Loader(spec.loader)
        return spec


def install() -> None:
    """Defer the LAZY modules not imported yet (those imported already stay as they are).
    Without OpenSSL's extension nothing is deferred: `import ssl` fails at import, as asyncio
    expects."""
    if any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    if "_ssl" not in sys.modules and PathFinder.find_spec("_ssl") is None:
        return
    from mgmt.quickimport import Index  # (the command's index of a run's modules, if any)

    finders = sys.meta_path
    index = next((f for f in finders if isinstance(f, Index)), None)
    at = 0
    if index is not None:  # this finder after it: asked only for the names it does not answer
        index.leave_out(["datetime", *LAZY, *LAZY_PACKAGES])  # (every other lookup: ~7 K
        at = finders.index(index) + 1  # instructions less, -0.8 M of a cron run's)
    finders.insert(at, _Finder())


_compile = re.compile  # the real one (patterns_on_use replaces re.compile while it runs)
_DEFERRING: list[str] = []  # the packages of the patterns_on_use running now (they may nest)


class _Pattern:
    """A regular expression compiled at its first use. Its methods are then the compiled
    pattern's own, kept in this object: a call costs no more than the pattern's."""

    def __init__(self, pattern: str, flags: int) -> None:
        self._source = (pattern, flags)

    def __getattr__(self, name: str) -> Any:
        value = getattr(_compile(*self._source), name)
        if callable(value):
            self.__dict__[name] = value
        return value


def pattern_source(pattern: Any) -> tuple[str, int]:
    """A pattern's text and flags, whether compiled or deferred (without compiling it)."""
    if isinstance(pattern, _Pattern):
        return pattern._source
    return pattern.pattern, pattern.flags


def _compile_on_use(pattern: Any, flags: Any = 0) -> Any:
    caller = sys._getframe(1).f_globals.get("__name__", "")
    if isinstance(pattern, str) and caller.partition(".")[0] in _DEFERRING:
        return _Pattern(pattern, int(flags))
    return _compile(pattern, flags)


@contextmanager
def patterns_on_use(*packages: str) -> Iterator[None]:
    """While importing `packages`: the patterns their modules compile (`re.compile(TEXT)`) are
    compiled at their first use instead (their modules use them through their methods only:
    `P.fullmatch(s)`, never `re.fullmatch(P, s)`). Calls from any other module (any thread)
    are as usual."""
    _DEFERRING.extend(packages)
    re.compile = _compile_on_use
    try:
        yield
    finally:
        for package in packages:
            _DEFERRING.remove(package)
        if not _DEFERRING:
            re.compile = _compile
