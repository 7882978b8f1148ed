"""Which builtins a template may call (registry.template_funcs): none that reads the agent's
files, environment or process (Builtin.host, derived where functions are registered), checked
here for every builtin by what its implementation calls, so that one kept out by hand is
never forgotten (until 2026-12-05 a hand-kept list missed golang/os.user_home_dir ($HOME),
temp_dir ($TMPDIR), exec.look_path ($PATH), os.home (/etc/passwd)...)."""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mgmt.lang.errors import FuncError
from mgmt.lang.funcs import registry

# What reads a file, the environment, the working directory or the command line.
HOST_NAMES = frozenset(
    {
        "environ",
        "getenv",
        "open",
        "read_text",
        "read_bytes",
        "readlink",
        "realpath",
        "expanduser",
        "getcwd",
        "listdir",
        "scandir",
        "iterdir",
        "lstat",
        "exists",
        "isfile",
        "isdir",
        "islink",
        "which",
        "glob",
        "getpwnam",
        "getpwuid",
        "getgrnam",
        "getgrgid",
        "gettempdir",
        "argv",
        "abspath",
        "resolve",
        "read_for_program",
        "read_regular",
        "if_nameindex",
    }
)


def _names(fn: Any, depth: int = 0, seen: set[int] | None = None) -> Iterator[str]:
    """The names `fn` uses, and those of the functions of ours it calls (a few levels)."""
    seen = set() if seen is None else seen
    if isinstance(fn, functools.partial):
        fn = fn.func
    if id(fn) in seen or depth > 4:
        return
    seen.add(id(fn))
    code = getattr(fn, "__code__", None)
    if code is None:  # a C function (os.readlink): its own name
        yield getattr(fn, "__name__", "")
        return
    codes = [code]
    while codes:
        c = codes.pop()
        codes += [k for k in c.co_consts if isinstance(k, types.CodeType)]
        for name in c.co_names:
            yield name
            called = fn.__globals__.get(name)
            if inspect.isfunction(called) and called.__module__.startswith("mgmt."):
                yield from _names(called, depth + 1, seen)


def _values() -> list[tuple[str, registry.Builtin]]:
    return [
        (registry.template_name(module, short), builtin)
        for module, table in registry.MODULES.items()
        for short, builtin in table.items()
        if builtin.impl is not None and not builtin.ctx and not builtin.typing
        and short != "template"
    ]  # fmt: skip


@pytest.mark.parametrize(("name", "builtin"), _values(), ids=[n for n, _ in _values()])
def test_a_builtin_that_reads_the_host_is_not_callable_from_a_template(
    name: str, builtin: registry.Builtin
) -> None:
    reads = sorted(set(_names(builtin.impl)) & HOST_NAMES)
    called = registry.template_funcs()[name]
    if reads:
        assert builtin.host, f"{builtin.name} uses {reads}: define it with host=True"
    if builtin.host:
        with pytest.raises(FuncError, match="not available in a template"):
            called()
    else:
        assert called is builtin.impl


def test_a_new_modules_function_is_kept_out_of_templates_by_default() -> None:
    """A function of a module not in PURE_MODULES reads the host unless it says otherwise."""
    impl: Callable[[], str] = lambda: "x"  # noqa: E731
    try:
        registry.define("newmod.f", "func() str", impl=impl)
        registry.define("newmod.g", "func() str", impl=impl, host=False)
        registry.define("strings.f_new", "func() str", impl=impl)
        assert registry.lookup("newmod", "f").host  # type: ignore[union-attr]
        assert not registry.lookup("newmod", "g").host  # type: ignore[union-attr]
        assert not registry.lookup("strings", "f_new").host  # type: ignore[union-attr]
    finally:
        del registry.MODULES["newmod"], registry.MODULES["strings"]["f_new"]
