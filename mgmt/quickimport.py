"""Three of CPython 3.11's import-system helpers made cheaper, for the `mgmt` command's start-up.

A cron run imports ~150 modules from source files; for each, the import system (its Python
code, `importlib._bootstrap` and `_bootstrap_external`) runs three helpers whose cost is in the
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
Together -9 M instructions (-3.5%) of a 100-file cron run (docs/benchmarks.md). The answers
are CPython's: tests/mgmt/test_quickimport.py compares all three with CPython's own for every
module a run imports, for packages, namespace packages, extension modules, and odd paths.

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
    """Replace the three helpers in the import system (where `applies()`)."""
    if applies():
        _external.cache_from_source = cache_from_source
        _external.FileFinder.find_spec = find_spec
        _bootstrap._init_module_attrs = init_module_attrs


def uninstall() -> None:
    """CPython's own helpers again (the tests)."""
    _external.cache_from_source = _CACHE_FROM_SOURCE
    _external.FileFinder.find_spec = _FIND_SPEC
    _bootstrap._init_module_attrs = _INIT_MODULE_ATTRS
