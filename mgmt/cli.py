"""The `mgmt` command: parses flags into a Config and calls `agent.run(config)`.

mgmt run [flags] yaml FILE      (also: mgmt run [flags] FILE)
mgmt run [flags] lang FILE.mcl  (also: mgmt run [flags] FILE.mcl; or a program DIRECTORY)
mgmt run [flags] puppet FILE.pp (also: mgmt run [flags] FILE.pp; or puppet -e CODE)
mgmt run [flags] empty
mgmt check FILE...              check programs, graph files, manifests: exit 0, or 2
mgmt check --graph FILE...      also print the graph each gives first (Vertex:/Edge: lines)
                                (a manifest's: its catalog, translated)
mgmt check -e CODE              check inline Puppet code
mgmt check [--hostname NAME] [--puppet-fallback] [--no-autoedges] [--max-graph-size BYTES] ...
                                run's front-end options, with their meaning (nothing is applied)
mgmt setup --install-service [--start] [run flags] FRONTEND...   a systemd service (mgmt/setup.py)
mgmt status [--prefix DIR] [--json]   the running agent's resources and states (exit 1: failures)
mgmt status --cluster [--seeds URLS]   every host: alive, deploy, converged, failures (exit 1: any)
mgmt cluster mint-cert HOST|--operator NAME --ca-dir DIR --out DIR [--core] [--san NAME]...
mgmt cluster admit HOST|--operator NAME --cert-dir DIR [--core] [--endpoints URLS]
                                per-host etcd identities (docs/security.md): exit 0, 1, or 2
mgmt deploy [flags] yaml FILE | lang FILE.mcl | lang DIR/ | --list | --status | --rollback N
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import sys
from collections.abc import Callable, Coroutine, Iterator, Set
from dataclasses import MISSING, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from engine.errors import ValidationError
from engine.limits import DEFAULT_MAX_RESOURCES, set_max_resources
from engine.params import parse_int
from mgmt import default_prefix, early_warning, priority, warn_misspelled_env
from mgmt.config import (
    DEFAULT_MAX_GRAPH_SIZE,
    DEFAULT_MAX_STEPS,
    Config,
    ExitCode,
    option_fields,
    set_max_program_size,
    set_max_steps,
)

if TYPE_CHECKING:
    import argparse

    from mgmt.cluster.pki import TLSFiles
    from mgmt.yamlgraph import Loaded

T = TypeVar("T")


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main), with asyncio imported only here: `mgmt --version` and `--help` do
    not pay its import (~50 ms of CPU, half of theirs).

    At its end, once every task is done, the loop's executor (the engine's I/O threads, idle)
    is joined in place: asyncio.run starts a thread to join it, and waits for that thread to
    start and to hand back (0.3-1.5 ms of a cron run, more on a busy machine)."""
    import asyncio

    from engine.tasks import quick_call_soon

    with asyncio.Runner() as runner:
        loop = runner.get_loop()
        quick_call_soon(loop)
        loop.shutdown_default_executor = functools.partial(  # type: ignore[method-assign]
            _join_executor, loop
        )
        return runner.run(main)


async def _join_executor(loop: Any) -> None:
    """The loop's `shutdown_default_executor`, as asyncio.Runner's close calls it (every task
    done, the loop running nothing else): its executor's threads joined here."""
    executor = getattr(loop, "_default_executor", None)
    if executor is not None:
        executor.shutdown(wait=True)


# A boolean MGMT_<FLAG>'s spellings: Go's strconv.ParseBool's (mgmt's go-arg parses its
# variables with it), and yes/no/on/off in any case; anything else is refused (exit 2): a typo
# must not turn a dry run (MGMT_NOOP) into a real one. Empty is "not set" (the default).
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True", "yes", "on"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False", "no", "off", ""})


def env_bool(variable: str, value: str) -> bool:
    """A boolean MGMT_ variable's value (_TRUE, _FALSE); exit 2 naming it otherwise."""
    text = value.strip()
    word = text.lower() if text.lower() in ("yes", "no", "on", "off") else text
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    _env_error(
        variable,
        f"expected a boolean (1, t, true, yes, on / 0, f, false, no, off), got {value!r}",
    )


def _env_error(variable: str, message: str) -> NoReturn:
    print(f"mgmt: {variable}: {message}", file=sys.stderr)
    raise SystemExit(int(ExitCode.USAGE))


def _env_default(name: str, kind: Any, default: Any, present: Set[str] | None = None) -> Any:
    """MGMT_<NAME>'s value as an option of `kind`, else `default`. `present`: the MGMT_ names
    of the environment (`_mgmt_names`), if the caller read them: a name not there is not looked
    up (os.environ's miss raises and catches a KeyError in two Python frames: ~9 K instructions
    each, for the ~60 options of `mgmt run` that a cron run's environment does not set)."""
    variable = "MGMT_" + name.upper()
    if present is not None and variable not in present:
        return default
    value = os.environ.get(variable)
    if value is None:
        return default
    if kind == "bool":
        return env_bool(variable, value) if value.strip() else default
    if kind == "int":
        try:
            return parse_int(value.strip())
        except ValidationError as err:
            _env_error(variable, str(err))
    if kind in {"Path", "Path | None"}:
        return Path(value)
    return value


def _hostname(given: str) -> str:
    """The host name `given` (--hostname, MGMT_HOSTNAME), or the system's if it is empty, as
    mgmt's (lib/main.go): `mgmt run` and `mgmt check` alike."""
    return given or socket.gethostname()


def _int(text: str) -> int:
    """An integer flag's value: what parse_int accepts (a 64-bit integer); ValidationError."""
    return parse_int(text.strip())


def _int_arg(text: str) -> int:
    """argparse's type for integer flags: _int, its error argparse's."""
    import argparse

    try:
        return _int(text)
    except ValidationError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


_CONVERTERS: dict[str, Callable[[str], Any]] = {"int": _int_arg, "Path": Path, "Path | None": Path}


def _default(f: Any, present: Set[str] | None = None) -> Any:
    """An option's default: its MGMT_<FLAG> from the environment, else the field's
    (`present`: as _env_default's)."""
    default = f.default if f.default is not MISSING else f.default_factory()
    return _env_default(f.name, f.type, default, present)


def _mgmt_names() -> set[str]:
    """The names of the environment's MGMT_ variables (each name decoded once)."""
    return {name for name in os.environ if name.startswith("MGMT_")}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: `mgmt --version`, `mgmt run ...`."""
    from mgmt.usage import Parser

    parser = Parser(prog="mgmt", description="Event-driven, parallel configuration management.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument(
        "command",
        choices=["run", "check", "setup", "status", "cluster", "deploy"],
        help="run: run a graph (see mgmt run --help); check FILE...: check programs, exit 0/2; "
        "setup --install-service: install the agent as a systemd service; status: the running "
        "agent's resources; cluster mint-cert|admit: per-host identities (mgmt cluster --help); "
        "deploy: push a program to the cluster (mgmt deploy --help)",
    )
    return parser


def build_run_parser() -> argparse.ArgumentParser:
    """`mgmt run`: one option per Config field, then the front-end and its file."""
    from mgmt.usage import Parser

    run = Parser(
        prog="mgmt run",
        description="Run a graph: `mgmt run [flags] yaml FILE`, `mgmt run FILE`, "
        "`mgmt run empty`. Every flag also reads MGMT_<FLAG> from the environment.",
    )
    for f in option_fields():
        default = _default(f)
        flag = "--" + f.name.replace("_", "-")
        extra = {k: v for k, v in f.metadata.items() if k != "help"}
        if f.type == "bool":
            run.add_argument(flag, action="store_true", default=default, help=f.metadata["help"])
            continue
        conv = _CONVERTERS.get(str(f.type), str)
        shown = "" if default in (None, "") else " (default: %(default)s)"  # argparse's
        run.add_argument(flag, type=conv, default=default, help=f.metadata["help"] + shown, **extra)
    run.add_argument(
        "target",
        nargs="+",
        metavar="FRONTEND",
        help="`yaml FILE`, `lang FILE.mcl|DIR`, `puppet FILE.pp`, `puppet -e CODE`, `FILE` "
        "(.mcl or a directory: lang, .pp: puppet), or `empty`",
    )
    run.add_argument(
        "-e", "--execute", metavar="CODE", help="with `puppet`: inline Puppet code to run"
    )
    return run


def _refuse_mgmt_flags(make: Callable[[], argparse.ArgumentParser], words: list[str]) -> None:
    """A usage error naming the first of mgmt's flags this parser does not take, with what to
    do instead, before argparse says something else of it (`--yaml=FILE`: "the following
    arguments are required: FRONTEND"; `--license`: "required: command")."""
    from mgmt.usage import MGMT_FLAGS, mgmt_flag_hint

    parser = make()
    for word in words:
        flag = word.partition("=")[0]
        if flag in MGMT_FLAGS and flag not in parser._option_string_actions:
            parser.error(f"unrecognized arguments: {word}{mgmt_flag_hint(flag)}")


def _refuse_mgmt_env(frontend: str) -> None:
    """Exit 2 if the environment gives one of mgmt's variables whose flag `mgmt run` refuses
    (MGMT_NO_NETWORK true, MGMT_MODULE_PATH to a lang run, as mgmt reads it): as its flag."""
    from mgmt import MGMT_ENV_FLAGS

    for variable, flag in MGMT_ENV_FLAGS.items():
        value = os.environ.get(variable, "")
        if flag == "--no-network" and not (value.strip() and env_bool(variable, value)):
            continue
        if flag == "--module-path" and not (value and frontend == "lang"):
            continue
        from mgmt.usage import MGMT_FLAGS

        _env_error(variable, f"{value!r}: refused, as mgmt's {flag} is: {MGMT_FLAGS[flag]}")


FRONTENDS = ("yaml", "lang", "puppet")
SUFFIXES = {".mcl": "lang", ".pp": "puppet"}


def _frontend_of(path: Path) -> str:
    """The front-end of a file by its suffix; a directory is a program (mcl modules)."""
    if path.is_dir() or _is_code("lang", path):  # a program module, or mcl code inline
        return "lang"
    return SUFFIXES.get(path.suffix, "yaml")


def _usage_error(message: str) -> NoReturn:
    """`mgmt run`'s usage error: one line, exit 2 (mgmt.usage)."""
    build_run_parser().error(message)


_PLAIN_TYPES = frozenset({"bool", "int", "str", "str | None", "Path", "Path | None"})
_PLAIN_KEYS = frozenset({"help", "metavar", "choices"})


def _plain_run_args(argv: list[str]) -> tuple[dict[str, Any], list[str], str | None] | None:
    """`mgmt run`'s argv (without "run") as argparse parses it: (option values, front-end
    words, -e CODE), for a plain argv: whole flag names, `--flag=VALUE` or `--flag VALUE`
    (a VALUE not starting with "-"), good values, a front-end. argparse's import and parser
    cost ~10 ms of every run's start; None for anything else (--help, an abbreviation, a bad
    value...): argparse parses that, and says what is wrong."""
    options = {"--" + f.name.replace("_", "-"): f for f in option_fields()}
    present = _mgmt_names()
    values = {f.name: _default(f, present) for f in options.values()}
    target: list[str] = []
    code: str | None = None
    words = iter(argv)
    for word in words:
        if not word.startswith("-"):
            target.append(word)
            continue
        flag, given, value = word.partition("=")
        f = options.get(flag)
        if f is not None and (f.type not in _PLAIN_TYPES or not _PLAIN_KEYS.issuperset(f.metadata)):
            return None  # an option this parser does not know how argparse would take
        if f is not None and f.type == "bool":
            if given:
                return None  # argparse: "ignored explicit argument"
            values[f.name] = True
            continue
        if f is None and (flag not in ("-e", "--execute") or (given and flag == "-e")):
            return None
        if not given:
            value = next(words, "-")
            if value.startswith("-"):
                return None  # a negative number, a missing value: argparse's call
        if f is None:
            code = value
            continue
        choices = f.metadata.get("choices")
        try:
            values[f.name] = _int(value) if f.type == "int" else _CONVERTERS.get(f.type, str)(value)
        except ValidationError:
            return None
        if choices is not None and values[f.name] not in choices:
            return None
    return (values, target, code) if target else None


# mgmt's flags that ask for what this project does anyway: taken, and said once to change
# nothing (mgmt's own test command lines give --no-pgp).
NOOP_FLAGS = {
    "--no-pgp": "--no-pgp changes nothing here: no PGP keys are made or read (deploys are "
    "signed with SSH keys: docs/deploys.md)"
}


def parse(argv: list[str]) -> Config:
    """argv (without the program name) -> Config; exits 2 on a usage error."""
    if argv[:1] == ["--version"]:  # (`mgmt --version` is answered before: mgmt.__main__)
        from mgmt.version import version

        print(version())
        raise SystemExit(0)
    if not argv or argv[0] != "run":
        _refuse_mgmt_flags(build_parser, argv[:1])
        build_parser().parse_args(argv[:1])  # --help, --version, or a usage error (exit 2)
    noops = [word for word in argv[1:] if word in NOOP_FLAGS]
    if noops:
        argv = [word for word in argv if word not in NOOP_FLAGS]
    plain = _plain_run_args(argv[1:])
    if plain is None:
        _refuse_mgmt_flags(build_run_parser, argv[1:])
        args = build_run_parser().parse_intermixed_args(argv[1:])
        plain = {f.name: getattr(args, f.name) for f in option_fields()}, args.target, args.execute
    values, target, code = plain
    warn_misspelled_env(values["log_format"])  # a line of the format the log will have
    for flag in dict.fromkeys(noops):
        early_warning(NOOP_FLAGS[flag], values["log_format"])
    file: Path | None = None
    if code is not None and target != ["puppet"]:
        _usage_error("-e CODE is for Puppet code: `mgmt run [flags] puppet -e CODE`")
    if target == ["empty"] or (target == ["puppet"] and code is not None):
        frontend = target[0]
    elif len(target) == 2 and target[0] in FRONTENDS:
        frontend, file = target[0], Path(target[1])
    elif len(target) == 1 and target[0] not in (*FRONTENDS, "empty"):
        frontend = _frontend_of(Path(target[0]))
        file = Path(target[0])
    else:
        _usage_error(
            "expected `yaml FILE`, `lang FILE`, `puppet FILE`, `puppet -e CODE`, `FILE` or "
            f"`empty`, got {' '.join(target)!r}"
        )
    if values["tmp_prefix"] and values["prefix"] != Path(default_prefix()):
        _usage_error("--prefix and --tmp-prefix exclude each other (as in mgmt): choose one")
    _refuse_mgmt_env(frontend)
    if values["no_server"] and not values["seeds"].strip():  # as mgmt's etcd Validate
        _usage_error(
            "--no-server (MGMT_NO_SERVER) needs --seeds (MGMT_SEEDS), as in mgmt: a client of "
            "the cluster runs no etcd member, so it must be told where the cluster is"
        )
    if why := limit_error(values):
        _usage_error(why)
    if values["max_runtime"] < 0:  # mgmt's is unsigned: -1 is no "no limit" there either
        _usage_error(
            f"--max-runtime: expected seconds >= 0 (0: no limit), got {values['max_runtime']}"
        )
    if values["quiet"] and values["verbose"]:
        _usage_error("--quiet and --verbose exclude each other (or MGMT_QUIET, MGMT_VERBOSE)")
    why = priority.check(values["nice"])
    if why is not None:
        _usage_error(why)
    values["hostname"] = _hostname(values["hostname"])
    return Config(frontend=frontend, file=file, code=code, **values)


# The size limits, each with what it counts: a negative one is refused (as --max-runtime's;
# mgmt's own are unsigned), naming what it takes, not taken as a limit nothing is within.
_LIMITS = {
    "max_graph_size": ("--max-graph-size", "MGMT_MAX_GRAPH_SIZE", "bytes"),
    "max_resources": ("--max-resources", "MGMT_MAX_RESOURCES", "resources"),
    "max_steps": ("--max-steps", "MGMT_MAX_STEPS", "steps"),
}


def limit_error(values: dict[str, Any]) -> str | None:
    """The line refusing a negative size limit among `values` (a flag's or its variable's),
    naming what it takes: `--max-graph-size (or MGMT_MAX_GRAPH_SIZE): expected a number of
    bytes >= 0, got -1`; None if they are all fine."""
    for key, (flag, variable, unit) in _LIMITS.items():
        value = values.get(key)
        if isinstance(value, int) and value < 0:
            return f"{flag} (or {variable}): expected a number of {unit} >= 0, got {value}"
    return None


# `mgmt check`'s options: the front-ends' options of `mgmt run` (each also read from its
# MGMT_<FLAG>, as run reads it), so what run takes is checked as run would take it.
_CHECK_FLAGS = ("--puppet-fallback", "--no-autoedges")
_CHECK_VALUES = (
    "--hostname",
    "--max-graph-size",
    "--max-resources",
    "--max-steps",
    "--modulepath",
)
_CHECK_NUMBERS = ("--max-graph-size", "--max-resources", "--max-steps")  # (`-1` is one)
_CHECK_PATHS = ("--hiera-config", "--puppet-environment")
_CHECK_USAGE = (
    "usage: mgmt check [--graph] [--hostname NAME] [--puppet-fallback] [--modulepath DIRS] "
    "[--hiera-config FILE] [--puppet-environment DIR] "
    "[--no-autoedges] [--max-graph-size BYTES] [--max-resources N] [--max-steps N] [lang|yaml|puppet] FILE.mcl|DIR|FILE.yaml|FILE.pp... | "
    "mgmt check [...] [puppet] -e CODE"
)
_CHECK_HELP = """
Check programs and graph files without applying anything: compile and type-check mcl,
validate YAML, compile and translate Puppet (-e CODE: a Puppet manifest given inline).
Each file's front-end is told by its suffix (a directory is an mcl program), or by the word
before the files, as in `mgmt run lang FILE`: `mgmt check lang main.mcl`.
Exit 0 if all check, 2 if not (each problem: file, line and key, one line).

options:
  --graph              also print the graph each gives first: a program run to its
                       first graph, a graph file's, a manifest's translated catalog
  --hostname NAME      the host name the program sees (as mgmt run's)
  --puppet-fallback    as mgmt run's: a Puppet type not translated runs through
                       `puppet resource`
  --modulepath DIRS    as mgmt run's: Puppet modules' directories (DIR:DIR...)
  --hiera-config FILE  as mgmt run's: Hiera's global hiera.yaml
  --puppet-environment DIR  as mgmt run's: the environment directory (hiera.yaml, data/)
  --no-autoedges       as mgmt run's: --graph without automatic edges
  --max-graph-size B   as mgmt run's: the largest graph (or mcl program) file read
  --max-resources N    as mgmt run's: the most resources (and edges) a graph may have
  --max-steps N        as mgmt run's: the most steps an mcl evaluation may take"""


def _check_args(args: list[str]) -> tuple[dict[str, Any], list[str], str | None] | str:
    """`mgmt check`'s argv: (options, files, -e CODE), or what is wrong with it."""
    options: dict[str, Any] = {
        "graph": False,
        "hostname": _env_default("hostname", "str", socket.gethostname()),
        "puppet_fallback": _env_default("puppet_fallback", "bool", False),
        "max_graph_size": _env_default("max_graph_size", "int", DEFAULT_MAX_GRAPH_SIZE),
        "max_resources": _env_default("max_resources", "int", DEFAULT_MAX_RESOURCES),
        "max_steps": _env_default("max_steps", "int", DEFAULT_MAX_STEPS),
        "no_autoedges": _env_default("no_autoedges", "bool", False),
        "modulepath": _env_default("modulepath", "str", ""),
        "hiera_config": _env_default("hiera_config", "Path | None", None),
        "puppet_environment": _env_default("puppet_environment", "Path | None", None),
    }
    files: list[str] = []
    code: str | None = None
    words = iter(args)
    for word in words:
        flag, given, value = word.partition("=")
        if not word.startswith("-") or word == "-":  # "-": stdin
            files.append(word)
        elif word in ("--graph", *_CHECK_FLAGS):
            options[word[2:].replace("-", "_")] = True
        elif flag in ("-e", *_CHECK_VALUES, *_CHECK_PATHS):
            got = value if given else next(words, None)  # None: no word left
            if got == "" and flag == "--hostname":  # the system's (below), as mgmt run's
                options["hostname"] = ""
                continue
            value = got or ""
            number = flag in _CHECK_NUMBERS and value.lstrip("-")[:1].isdigit()
            if not value or (flag != "-e" and value.startswith("-") and not number):
                what = "a whole number" if flag in _CHECK_NUMBERS else "a value"
                return f"{flag} needs {what}"
            if flag == "-e":
                code = value
            elif flag in ("--hostname", "--modulepath"):
                options[flag[2:]] = value
            elif flag in _CHECK_PATHS:
                options[flag[2:].replace("-", "_")] = Path(value)
            else:
                try:
                    options[flag[2:].replace("-", "_")] = _int(value)
                except ValidationError as err:
                    return f"{flag}: {err}"
        else:
            from engine.params import close_match
            from mgmt.usage import mgmt_flag_hint  # argparse's import: only on this error

            known = ["--graph", "-e", *_CHECK_FLAGS, *_CHECK_VALUES, *_CHECK_PATHS]
            hint = mgmt_flag_hint(flag) or close_match(flag, known)
            return f"unknown option {word!r}{hint} (options: {', '.join(known)})"
    if files and files[0] in FRONTENDS and not os.path.lexists(files[0]):
        options["frontend"] = files.pop(0)  # as `mgmt run lang FILE`: the files' front-end
        if code is not None and options["frontend"] != "puppet":
            return "-e CODE is Puppet code: `mgmt check puppet -e CODE`"
    if code is not None and files:
        return "-e CODE is instead of files"
    if code is None and not files:
        return "expected FILE... or -e CODE"
    if why := limit_error(options):
        return why
    options["hostname"] = _hostname(options["hostname"])  # MGMT_HOSTNAME="" too
    return options, files, code


def check(args: list[str]) -> int:
    """`mgmt check FILE...`: compile and type-check (.mcl), validate (YAML), or compile and
    translate (.pp, or `-e CODE`: Puppet); nothing is applied. With `--graph`, a program (or
    graph file) that checks is also run to its first graph, printed (mgmt.check.graph_lines).
    The front-ends' options of `mgmt run` mean the same here (`--puppet-fallback`...)."""
    if "-h" in args or "--help" in args:  # as run's, status's and deploy's --help: usage, 0
        print(_CHECK_USAGE)
        print(_CHECK_HELP)
        return int(ExitCode.OK)
    parsed = _check_args(args)
    if isinstance(parsed, str):
        print(f"mgmt check: {parsed}", file=sys.stderr)
        print(_CHECK_USAGE, file=sys.stderr)
        return int(ExitCode.USAGE)
    warn_misspelled_env()
    options, files, inline = parsed
    set_max_resources(options["max_resources"])
    set_max_program_size(options["max_graph_size"])
    set_max_steps(options["max_steps"])
    graph = options.pop("graph")
    frontend = options.pop("frontend", None)
    code = ExitCode.OK
    configs = (
        [Config(frontend="puppet", code=inline, **options)]
        if inline is not None
        else [
            Config(frontend=frontend or _frontend_of(Path(f)), file=Path(f), **options)
            for f in files
        ]
    )
    for given in configs:
        with _given_once(given) as config:
            problems = _print_graph(config) if graph else check_config(config)
        config = given
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            code = ExitCode.USAGE
        else:
            print(f"{config.file or '<puppet -e>'}: ok", file=sys.stderr)
    return int(code)


def _print_graph(config: Config) -> list[str]:
    """`mgmt check --graph`: check a program, graph file or manifest (check_config), then print
    the first graph it gives (a manifest's: its translated catalog, compiled once)."""
    from engine.engine import verify
    from engine.errors import GraphError
    from mgmt.check import ReadsCluster, first_graph, graph_lines
    from mgmt.lang.errors import CompileError
    from mgmt.yamlgraph import GraphFileError

    if config.frontend != "puppet":
        problems = check_config(config)
        if problems:
            return problems
    try:
        if config.frontend == "puppet":
            import resources  # noqa: F401  # kinds load on first use

            loaded = _check_puppet(config)
        else:
            assert config.file is not None  # check() gives -e CODE to Puppet only
            loaded = first_graph(
                config.frontend, config.file, config.hostname, config.max_graph_size
            )
        verify(loaded.graph.copy())  # what `mgmt run` refuses too
    except ReadsCluster as note:  # checked, a valid program: exit 0, as mgmt's --only-unify
        print(note, file=sys.stderr)
        return []
    except (CompileError, GraphFileError) as err:
        return list(err.problems)
    except GraphError as err:
        return [f"{config.file}: {err}"]
    for line in graph_lines(loaded, autoedges=not config.no_autoedges):
        print(line)
    return []


def check_config(config: Config) -> list[str]:
    """What is wrong with the graph, program or manifest `config` runs (nothing runs): the
    problems as one-line messages (warnings printed), or []."""
    if config.frontend in ("lang", "yaml") and config.file is not None:
        from mgmt.check import check_path  # what `mgmt deploy` checks too

        return check_path(config.frontend, config.file, config.max_graph_size, config.hostname)
    from mgmt.lang.errors import CompileError
    from mgmt.yamlgraph import GraphFileError

    try:
        if config.frontend == "puppet":
            import resources  # noqa: F401  # kinds load on first use

            _check_puppet(config)
    except (CompileError, GraphFileError) as err:
        return list(err.problems)
    return []


def _check_puppet(config: Config) -> Loaded:
    """Compile a manifest (or inline code) with Puppet and translate its catalog."""
    from mgmt.puppet.compile import Manifest
    from mgmt.puppet.source import load

    manifest = Manifest.of(config)
    fallback = config.prefix / "puppet" if config.puppet_fallback else None  # as run's
    loaded, _ = run_loop(load(manifest, config.hostname, fallback=fallback))
    from mgmt.check import warn

    warn(loaded.warnings)
    return loaded


def build_cluster_parser() -> argparse.ArgumentParser:
    """`mgmt cluster mint-cert` and `mgmt cluster admit` (docs/security.md, attribution)."""
    from mgmt.usage import Parser

    parser = Parser(prog="mgmt cluster", description="Per-host etcd identities (docs/security.md).")
    sub = parser.add_subparsers(dest="action", required=True)
    mint = sub.add_parser(
        "mint-cert",
        help="mint HOST's certificate from the operator's CA (created if missing)",
        description="Mint HOST's certificate (CN HOST) from the CA in --ca-dir (created there "
        "if missing; keep it with the operator) into --out: ca.pem, host.pem, host.key. Copy "
        "--out to HOST and start it with --cluster-cert-dir.",
    )
    mint.add_argument("host", metavar="HOST", nargs="?")
    mint.add_argument(
        "--operator",
        metavar="NAME",
        help="instead of a host's: operator NAME's certificate (etcd user operator:NAME), "
        "which may read the cluster and push deploys, nothing else (admit it with "
        "`mgmt cluster admit --operator NAME`)",
    )
    mint.add_argument("--ca-dir", type=Path, required=True, metavar="DIR")
    mint.add_argument("--out", type=Path, required=True, metavar="DIR")
    mint.add_argument(
        "--core", action="store_true", help="a core host: may run an etcd member (root)"
    )
    mint.add_argument(
        "--san",
        action="append",
        default=[],
        metavar="NAME",
        help="an address or DNS name HOST's etcd is reached at (repeat; loopback is added)",
    )
    admit = sub.add_parser(
        "admit",
        help="create HOST's etcd user, before HOST first starts (run on a core member)",
        description="Create HOST's etcd user: core (--core: root) or confined to its own keys.",
    )
    admit.add_argument("host", metavar="HOST", nargs="?")
    admit.add_argument(
        "--operator", metavar="NAME", help="instead of a host: the operator NAME (mint-cert)"
    )
    admit.add_argument(
        "--cert-dir",
        type=Path,
        required=True,
        metavar="DIR",
        help="a core member's credentials (its --cluster-cert-dir)",
    )
    admit.add_argument("--core", action="store_true", help="HOST is a core host (etcd root)")
    admit.add_argument(
        "--endpoints",
        default="https://127.0.0.1:2379",
        metavar="URLS",
        help="client URLs of the cluster (comma-separated; default https://127.0.0.1:2379)",
    )
    return parser


def _admit_inputs(args: argparse.Namespace) -> tuple[list[str], TLSFiles]:
    """`mgmt cluster admit`'s endpoints and --cert-dir files, checked (ValidationError): the
    CA it trusts and the key it signs in with as root must be nobody else's to swap
    (pki.check_credentials; before 2026-12-06, ninth session, they were read unchecked)."""
    from engine.errors import WorldError
    from mgmt.cluster import pki
    from mgmt.cluster.options import check_url, split_urls

    endpoints = split_urls(args.endpoints)
    for url in endpoints:
        check_url(url, "--endpoints", insecure=False)
    files = pki.host_files(args.cert_dir)
    for path in (files.ca, files.cert, files.key):
        assert path is not None
        if not path.is_file():
            raise ValidationError(f"no {path.name} in {args.cert_dir}", "--cert-dir")
    try:
        pki.check_credentials(files)
    except (OSError, WorldError) as err:
        raise ValidationError(str(err), "--cert-dir") from None
    return endpoints, files


def cluster(argv: list[str]) -> int:
    """`mgmt cluster ...`: 0 done, 1 the cluster refused or could not be reached, 2 usage."""
    args = build_cluster_parser().parse_args(argv)
    from engine.errors import WorldError
    from mgmt.cluster import check_host, pki
    from mgmt.cluster.identity import operator_user

    try:
        if (args.host is None) == (args.operator is None):
            raise ValidationError("give HOST or --operator NAME", "HOST")
        if args.operator is not None:
            if args.core:
                raise ValidationError("an operator is never a core host", "--core")
            args.host = operator_user(args.operator)  # its etcd user: the certificate's CN
        else:
            check_host(args.host)
        if args.action == "mint-cert":
            for flag, name in (("HOST", args.host), *(("--san", n) for n in args.san)):
                if pki.names_core(name) and not args.core:  # etcd's peer port would take it
                    raise ValidationError(
                        f"{name!r} is the core hosts' name (a certificate naming it may run "
                        "an etcd member): give --core for a core host",
                        flag,
                    )
            for flag, directory in (("--ca-dir", args.ca_dir), ("--out", args.out)):
                try:  # before anything is made: never chmod a directory like /tmp
                    pki.check_new_or_private(directory)
                except (OSError, WorldError) as err:
                    raise ValidationError(str(err), flag) from None
            if pki.create_ca(args.ca_dir):
                print(f"created the cluster CA in {args.ca_dir}", file=sys.stderr)
            names = pki.san_names(args.host, [])
            try:
                files = pki.mint(args.ca_dir, args.out, args.host, [*names, *args.san], args.core)
            except WorldError as err:  # the CA directory: bad input
                raise ValidationError(str(err), "--ca-dir") from None
            kind = "core" if args.core else "operator" if args.operator else "confined"
            print(f"minted {args.host}'s certificate ({kind}) in {files.cert}", file=sys.stderr)
            return int(ExitCode.OK)
        from mgmt.cluster.identity import admit_remote

        endpoints, files = _admit_inputs(args)
        name = args.operator or args.host
        # The command says itself what went wrong with the cluster, once (as mgmt deploy does).
        logging.getLogger("cluster").setLevel(logging.ERROR)
        run_loop(admit_remote(endpoints, files, name, args.core, operator=bool(args.operator)))
    except ValidationError as err:
        print(f"mgmt cluster {args.action}: {err}", file=sys.stderr)
        return int(ExitCode.USAGE)
    except (OSError, WorldError) as err:
        print(f"mgmt cluster {args.action}: {err}", file=sys.stderr)
        return int(ExitCode.FAILED)
    role = "core (etcd root)" if args.core else "confined to its own keys"
    if args.operator:
        role = "may read the cluster and push deploys"
    print(f"admitted {args.host}: {role}", file=sys.stderr)
    return int(ExitCode.OK)


# A `lang` argument that names no file but holds one of these is mcl code given inline, as
# mgmt's lang input takes it (a `yaml` one: a newline); a file that is missing may appear
# (exit 75, retried), code never will.
_CODE_CHARS = frozenset('\n{}"')


def _is_code(frontend: str, file: Path) -> bool:
    text = str(file)
    if os.path.lexists(text):
        return False
    return "\n" in text or (frontend == "lang" and not _CODE_CHARS.isdisjoint(text))


@contextlib.contextmanager
def _given_once(config: Config) -> Iterator[Config]:
    """`config`, its graph from stdin (`-`) or given inline (code) read once into a private
    temporary file, never watched (as mgmt reads them); a graph file as it is. Larger than
    --max-graph-size: exit 2, as a file's."""
    file = config.file
    if file is None or config.frontend not in ("lang", "yaml"):
        yield config
        return
    if str(file) == "-":
        data = sys.stdin.buffer.read(config.max_graph_size + 1)
        what = "stdin"
    elif _is_code(config.frontend, file):
        data, what = str(file).encode(), "inline code"
    else:
        yield config
        return
    if len(data) > config.max_graph_size:
        print(
            f"mgmt: {file if what == 'stdin' else what}: larger than --max-graph-size "
            f"({config.max_graph_size:,} bytes)",
            file=sys.stderr,
        )
        raise SystemExit(int(ExitCode.USAGE))
    import shutil
    import tempfile

    # 0700, this user's; its name says where the graph came from, in messages naming it
    folder = Path(tempfile.mkdtemp(prefix=f"mgmt-{what.replace(' ', '-')}-"))
    try:
        path = folder / ("main.mcl" if config.frontend == "lang" else "graph.yaml")
        path.write_bytes(data)
        yield replace(config, file=path, no_watch=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "check":
        return check(args[1:])
    if args and args[0] == "status":
        from mgmt.status import command

        return command.main(args[1:])
    if args and args[0] == "setup":
        from mgmt import setup

        return setup.main(args[1:], parse, check_config)
    if args and args[0] == "cluster":
        return cluster(args[1:])
    if args and args[0] == "deploy":
        from mgmt.deploy.cli import deploy_main

        return deploy_main(args[1:], exit_now=argv is None)
    config = replace(parse(args), own_process=True)
    from engine import collector
    from mgmt.lazyimport import patterns_on_use

    # Its imports: ~40 collections walked their objects, for nothing; ~0.7 ms of patterns
    # compiled for options a graph rarely uses (modes, SELinux contexts, user names...).
    with collector.lasting(), patterns_on_use("engine", "mgmt", "resources"):
        from mgmt import agent

    try:
        with _given_once(config) as given:
            code = int(run_loop(agent.run(given)))
    except KeyboardInterrupt:  # a signal before the agent installed its handlers
        return int(ExitCode.FAILED)
    # The run's last lines are written before it returns (the exit's flush would wait for them
    # anyway): a caller in this process then writes after them.
    for handler in logging.getLogger().handlers:
        handler.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
