"""The registry of builtins: what a builtin is (`Builtin`), where the modules of the standard
library put theirs (`define`), and how the checker and the runtime find them (`lookup`).

Each module of mgmt's function tree is a module of this package (`os.py` is `import "os"`,
`golang_strings.py` is `import "golang/strings"`); `mgmt.lang.funcs` imports them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.local import LocalValues
from mgmt.lang import ast, streams
from mgmt.lang.errors import Abort, FuncError, Pos
from mgmt.lang.template import BASE_FUNCS
from mgmt.lang.types import Type


@dataclass(frozen=True)
class Context:
    """What context-dependent builtins see: the agent's hostname, the cluster's World, the
    agent's local store (value.get_*, local.*)."""

    hostname: str
    # The World once the agent has started the cluster (world.* functions wait for it).
    world: streams.WorldRef = field(default_factory=streams.WorldRef, compare=False)
    # This agent's local store, shared with its engine's resources (the `value` kind).
    local: LocalValues | None = field(default=None, compare=False)
    # False where the program is only checked (`mgmt check`, `mgmt deploy`): a stream that
    # runs a command (os.system) is not ready instead, so no graph is known without it.
    commands: bool = True


class Typer(Protocol):
    """What a typing rule may ask of the checker's type inference (mgmt.lang.infer)."""

    def expect(self, actual: Type, expected: Type, pos: Pos, context: str) -> None:
        """Unify, or record `type error: {context}: expected ..., got ...` and raise Abort."""

    def has_field(self, pos: Pos, obj: Type, name: str) -> Type:
        """The type of `obj`'s field `name`, checked once `obj`'s type is known."""

    def problem(self, pos: Pos, message: str) -> None:
        """Record a problem and go on."""

    def abort(self, pos: Pos, message: str) -> Abort:
        """Record a problem; the rule raises what it returns."""


# A typing rule: the call's result type, from the call and the types of its arguments.
Rule = Callable[[Typer, ast.Call, list[Type]], Type]
# A check of a call typed by its signature: its constant arguments (regexp.match's pattern),
# each problem recorded through the Typer (problem, or abort).
Check = Callable[[Typer, ast.Call], None]


@dataclass(frozen=True)
class Builtin:
    # Full name: "datetime.now", or "len" for a core function.
    name: str
    # One mgmt type signature, or several for an overloaded function.
    sigs: tuple[str, ...]
    # A pure function of its arguments (with ctx: the Context first).
    impl: Callable[..., Any] | None = None
    # A function whose value changes over time.
    stream: type[streams.Stream] | None = None
    # A typing rule of its own (then `sigs` only documents it).
    typing: Rule | None = None
    ctx: bool = False
    doc: str = ""
    # It reads the agent's files, environment or process (a file's content or link, a
    # variable, the working directory, the command line), not only its arguments: not
    # callable from a template (template_funcs). define() derives it (PURE_MODULES).
    host: bool = True
    # Checks a call once typed by `sigs` (not with a typing rule of its own).
    check: Check | None = None


MODULES: dict[str, dict[str, Builtin]] = {}

# The modules whose functions compute from their arguments only. A function of any other
# module, a new one included, reads the host unless it says otherwise (`define(host=False)`:
# the agent's uid, the number of CPUs), and one of these that reads it says so (`host=True`):
# so a new function that reads the agent's files or environment is kept out of templates by
# default (tests/mgmt/lang/funcs/test_template_host.py checks every one by what it calls).
PURE_MODULES = frozenset(
    {
        "",
        "convert",
        "datetime",
        "encoding",
        "example",
        "fmt",
        "golang",
        "golang/html",
        "golang/math",
        "golang/path",
        "golang/path/filepath",
        "golang/strconv",
        "golang/strings",
        "iter",
        "list",
        "map",
        "math",
        "net",
        "regexp",
        "strings",
    }
)

# Names some of mgmt's own examples still call, with mgmt's name for the function: an unknown
# function's error names it (mgmt has no alias; its examples/lang/exec_func.mcl is stale).
RENAMED = {"os.exec": "os.system"}

# mgmt's functions and modules (at the commit docs/mgmt-examples.md follows) that are not
# implemented here: a call or an import says so (docs/language.md, "Not supported"), not a
# close-match hint as for a typo.
MGMT_ONLY = frozenset(
    {
        "os.readfilewait",
        "os.distro",
        "sys.smbios",
        "sys/fwupd",
        "golang/math/rand",
    }
)


def mgmt_only(name: str) -> str | None:
    """The error for a function or module of mgmt's that is missing here, else None."""
    if name in MGMT_ONLY or name.startswith("test.oneinstance_"):
        return f"mgmt has {name}; not implemented here (docs/language.md, Not supported)"
    return None


def define(
    name: str,
    *sigs: str,
    impl: Callable[..., Any] | None = None,
    stream: type[streams.Stream] | None = None,
    typing: Rule | None = None,
    ctx: bool = False,
    doc: str = "",
    host: bool | None = None,
    check: Check | None = None,
) -> None:
    """Register a builtin: "module.name" (the module's import path: "golang/strings.join"),
    or a bare name for a core function that needs no import. `host`: whether it reads the
    agent's files, environment or process (Builtin.host); by default, unless its module is
    one of PURE_MODULES. `check`: Builtin.check."""
    module, _, short = name.rpartition(".")
    table = MODULES.setdefault(module, {})
    if short in table:
        raise ValueError(f"builtin {name} is defined twice")
    reads = module not in PURE_MODULES if host is None else host
    table[short] = Builtin(name, sigs, impl, stream, typing, ctx, doc, reads, check)


def lookup(module: str, name: str) -> Builtin | None:
    return MODULES.get(module, {}).get(name)


def module_names() -> list[str]:
    return sorted(m for m in MODULES if m)


def fail(message: str) -> FuncError:
    """A run-time error of a function (the runtime adds its name and the call's position)."""
    return FuncError(message)


_TEMPLATE_FUNCS: dict[str, Callable[..., Any]] = {}


def template_name(module: str, short: str) -> str:
    """The name a template calls a builtin by, as mgmt's golang.template names it: the import
    path's `.` and `/` become `_` (`golang/strings.join` is `golang_strings_join`), and a
    function without a module gets a leading `_` (`len` is `_len`), so that no module's
    function can take a top-level function's name. Go's own (`printf`, `len`, ...) keep theirs."""
    return f"{module.replace('/', '_')}_{short}" if module else f"_{short}"


# A builtin that reads the agent's files or environment (Builtin.host) is not callable from a
# template. A template's text is often a file a user maintains (their motd, a vhost snippet):
# through these it read root's files and environment into the rendered file (tester13,
# 2026-12-05). mgmt gives a template every simple function; a program may still call them and
# pass the result in as the template's data.


def _not_in_templates(name: str) -> Callable[..., Any]:
    def refused(*_args: Any) -> Any:
        raise fail(
            f"{name} is not available in a template (it reads the agent's files, environment "
            "or process, and a template may be another user's text): call it in the program "
            "and pass the result as the template's data"
        )

    return refused


def template_funcs() -> dict[str, Callable[..., Any]]:
    """Functions a template may call: Go's, and every builtin of a value (not a stream) by
    mgmt's template name (`template_name`); one that reads the host (Builtin.host) is a
    function that says why it is refused."""
    if not _TEMPLATE_FUNCS:
        _TEMPLATE_FUNCS.update(BASE_FUNCS)
        for module, table in MODULES.items():
            for short, builtin in table.items():
                if short == "template" or builtin.ctx or builtin.typing:
                    continue
                name = template_name(module, short)
                if builtin.host:
                    _TEMPLATE_FUNCS[name] = _not_in_templates(name)
                elif builtin.impl is not None:
                    _TEMPLATE_FUNCS.setdefault(name, builtin.impl)
    return _TEMPLATE_FUNCS
