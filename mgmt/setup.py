"""`mgmt setup --install-service`: run the agent as a systemd service, installed by the agent.

    mgmt setup --install-service [--start] [--unit NAME] [--watchdog-sec N] [--dry-run]
               [run flags] yaml FILE | lang FILE.mcl | puppet FILE.pp | empty

The run flags and front-end are those of `mgmt run`; they are checked (flags, and the graph,
program or manifest itself) before anything is written: a unit that would only crash-loop is
refused with exit 2. The unit (Type=notify, the watchdog, reload by SIGHUP, hardening that
leaves the agent able to manage the host: docs/operations.md) is then applied by the agent
itself, as a two-resource graph: a `file` for the unit and a `svc` that enables it (and starts
it with --start; a running agent whose unit changed is restarted). Running it again with other
flags changes the unit.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Callable
from pathlib import Path

from engine.errors import MgmtError, ValidationError, path_error
from mgmt.config import Config, ExitCode
from mgmt.usage import Parser, errors_of

UNIT = "mgmt"
WATCHDOG_SEC = 30


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mgmt setup",
        description="Install the agent as a systemd service (the rest of the command line is "
        "what `mgmt run` gets).",
    )
    parser.add_argument(
        "--install-service", action="store_true", required=True, help="write and enable the unit"
    )
    parser.add_argument("--start", action="store_true", help="also start (or restart) it now")
    parser.add_argument("--unit", default=UNIT, help=f"the unit's name (default: {UNIT})")
    parser.add_argument(
        "--watchdog-sec",
        type=int,
        default=WATCHDOG_SEC,
        metavar="N",
        help=f"restart the agent if its event loop stops for N s (0: off; default {WATCHDOG_SEC})",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the unit, change nothing")
    return parser


def main(
    argv: list[str],
    parse: Callable[[list[str]], Config],
    check: Callable[[Config], list[str]],
) -> int:
    """`parse`: the CLI's `mgmt run` parser (exits 2 on a usage error); `check`: the CLI's
    checks of a graph, program or manifest (one-line problems)."""
    own, rest = build_parser().parse_known_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9_-]+(@[A-Za-z0-9_-]+)?", own.unit):
        print(
            f"mgmt setup: --unit {own.unit!r}: ASCII letters, digits, '-' and '_' only "
            "(and NAME@INSTANCE)",
            file=sys.stderr,
        )
        return int(ExitCode.USAGE)
    if own.watchdog_sec < 0:
        print("mgmt setup: --watchdog-sec: 0 or more seconds", file=sys.stderr)
        return int(ExitCode.USAGE)
    with errors_of("mgmt setup"):  # its usage errors are setup's (the run flags it was given)
        config = parse(["run", *rest])
    if config.tmp_prefix or config.converged_timeout >= 0 or config.exit_after >= 0:
        print(
            "mgmt setup: a service runs until stopped: no --tmp-prefix, --converged-timeout",
            file=sys.stderr,
        )
        return int(ExitCode.USAGE)
    problems = check(config) or _start_problems(config) or _code_problems()
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return int(ExitCode.USAGE)
    if config.file is not None:  # warned, as `mgmt run` warns at each start (docs/security.md)
        from engine.safefs import others_control

        if why := others_control(str(config.file)):
            print(
                f"mgmt setup: warning: {config.file}: {why}: the service runs it", file=sys.stderr
            )
    text = unit_text(_run_args(rest, config), own.watchdog_sec)
    if own.dry_run:
        print(text, end="")
        return int(ExitCode.OK)
    return install(own.unit, text, start=own.start)


def _start_problems(config: Config) -> list[str]:
    """What the agent would refuse at its start (exit 2, then a restart every RestartSec=, for
    ever), found without running it: the prefix, the cluster's flags and files, the deploy
    flags and the listen address. Reads files only; binds and writes nothing."""
    from engine.safefs import check_private
    from mgmt.cluster import flags_given

    try:
        try:
            check_private(config.prefix, parent=config.prefix_parent_required)
        except (OSError, MgmtError) as err:
            raise ValidationError(path_error(err, config.prefix), "--prefix") from None
        if config.status or config.prometheus:
            from mgmt.metrics import parse_listen

            parse_listen(config.prometheus_listen)
        deploys = config.frontend == "empty" or config.deploy
        if deploys or flags_given(config):
            from mgmt.cluster.options import from_config

            from_config(config, config.prefix)
        if deploys:
            from mgmt.deploy.source import open_source

            open_source(config, config.prefix)
    except MgmtError as err:  # ValidationError, DeployError: each says what is wrong
        return [f"mgmt setup: {err}"]
    return []


def _code_problems() -> list[str]:
    """What the unit would have root run at every boot that another local user could change:
    the interpreter (sys.executable, its links followed only under the safe-path rule), the
    virtualenv (sys.prefix, walked: its site-packages are code), the directory the code is
    imported from (mgmt's parent: the checkout of an editable install, on sys.path, so
    nobody else may add a module there) and its packages (walked). Refused, not warned (as
    the graph file of `mgmt run` is): the service is not watched by the one who started it,
    and it runs whatever is there at each start. ~60 ms for a 9,000-file virtualenv, once."""
    from engine.safefs import others_control, others_control_tree

    code = Path(__file__).resolve().parent.parent
    named = [
        ("the interpreter", sys.executable, others_control),
        ("the virtualenv", sys.prefix, others_control_tree),
        ("the code's directory", str(code), others_control),
    ]
    named += [
        ("the code", str(code / package), others_control_tree)
        for package in ("mgmt", "engine", "resources")
    ]
    for what, path, check in named:
        if why := check(path):
            return [
                f"mgmt setup: {what}: {why}: refusing to install a service that runs it as "
                "root at every start: install mgmt where only root can write (a checkout "
                "and its .venv owned by root: scripts/install.sh)"
            ]
    return []


def _run_args(rest: list[str], config: Config) -> list[str]:
    """`mgmt run`'s arguments, with the graph file's path, the prefix and every other path
    option (--trusted-keys, --cluster-ca-dir, --tls-*...) made absolute: the service runs in
    `/`. Every option set in the environment (MGMT_<FLAG>) and not on the command line is
    written out as its flag, since the unit does not carry the environment (MGMT_NICE=5:
    `--nice 5`). The file is matched as a path: `./g.yaml` is `g.yaml`; a flag by its whole
    name (the parsers take no abbreviation: mgmt.usage.Parser)."""
    from dataclasses import MISSING

    from mgmt.config import option_fields

    args = list(rest)
    if config.file is not None:
        index = max(i for i, arg in enumerate(args) if Path(arg) == config.file)
        args[index] = str(config.file.absolute())

    def flag_of(arg: str) -> str:
        return arg.split("=", 1)[0]

    missing: list[str] = []
    for option in option_fields():
        value = getattr(config, option.name)
        flag = "--" + option.name.replace("_", "-")
        default = option.default if option.default is not MISSING else option.default_factory()
        given = False
        for index, arg in enumerate(args):
            if flag_of(arg) != flag:
                continue
            given = True
            if not isinstance(value, Path):
                continue
            absolute = str(value.absolute())
            if "=" in arg:
                args[index] = f"{flag}={absolute}"
            elif index + 1 < len(args):
                args[index], args[index + 1] = flag, absolute
        if given or (value == default and option.name != "prefix"):
            continue
        if value is True:  # a switch (each is off by default: set, it is its flag)
            missing.append(flag)
        else:
            word = str(value.absolute()) if isinstance(value, Path) else str(value)
            missing += [f"{flag}={word}"] if word.startswith("-") else [flag, word]
    return [*missing, *args]


def unit_text(run_args: list[str], watchdog_sec: int) -> str:
    exec_start = " ".join(quote(a) for a in [sys.executable, "-m", "mgmt", "run", *run_args])
    watchdog = f"WatchdogSec={watchdog_sec}\n" if watchdog_sec else ""
    return (
        "# Written by `mgmt setup --install-service`: run it again to change this unit.\n"
        "[Unit]\n"
        "Description=mgmt: event-driven configuration management\n"
        f"{documentation()}"
        "Wants=network-online.target\n"
        "After=network-online.target\n"
        "\n"
        "[Service]\n"
        # READY=1 once the first graph runs; STATUS= as it converges (systemctl status).
        "Type=notify\n"
        "NotifyAccess=main\n"
        f"ExecStart={exec_start}\n"
        "ExecReload=/bin/kill -HUP $MAINPID\n"
        f"{watchdog}"
        "TimeoutAbortSec=15\n"
        "TimeoutStopSec=90\n"
        # SIGTERM to the agent only; what it started gets its own stop, then SIGKILL (not a
        # package transaction: it runs in a scope of its own, resources._lib.unitscope).
        "KillMode=mixed\n"
        "Restart=on-failure\n"
        # Exit 2 is bad input (the graph, program, flags, prefix): a restart cannot mend it.
        # The unit fails at once and says so, rather than restarting every 2 s for ever.
        "RestartPreventExitStatus=2\n"
        "RestartSec=2\n"
        # Hardening that does not take away what the agent manages (docs/operations.md).
        "UMask=0022\n"
        "LimitNOFILE=1048576\n"
        "OOMScoreAdjust=-500\n"
        # Past half the RAM the agent is throttled (reclaimed), the workloads are left alone
        # (docs/operations.md#graph-limits; --max-resources bounds the graph first).
        "MemoryHigh=50%\n"
        "LockPersonality=yes\n"
        "RestrictRealtime=yes\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def documentation() -> str:
    """`Documentation=` naming the running unit's chapter of this installation's docs (the
    checkout `scripts/install.sh` installs from: `systemctl help mgmt` opens it); none if
    the docs are not there (no man page is shipped)."""
    chapter = Path(__file__).resolve().parent.parent / "docs" / "operations.md"
    if not chapter.is_file():
        return ""
    return f"Documentation={chapter.as_uri().replace('%', '%%')}\n"  # '%': a specifier


def quote(arg: str) -> str:
    """One ExecStart= word: systemd's quoting ('%' and '$' are specifiers and variables)."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if escaped and all(c.isalnum() or c in "-_./=:,+@" for c in escaped):
        return escaped
    escaped = escaped.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n") + '"'


def install(unit: str, text: str, *, start: bool) -> int:
    """Apply the unit with the engine: a file and a svc (see the module docstring)."""
    from engine.graph import Edge, Graph
    from mgmt import agent
    from mgmt.lang.kinds import build_resource
    from mgmt.yamlgraph import Loaded
    from resources._lib.systemd import unit_dir
    from resources.file import FileRes
    from resources.svc import SvcRes

    path = Path(unit_dir(False)) / f"{unit}.service"
    graph = Graph("mgmt setup --install-service")
    try:
        graph.add(build_resource(FileRes, str(path), {"content": text, "mode": "0644"}, {}))
        params = {"startup": "enabled", **({"state": "running"} if start else {})}
        graph.add(build_resource(SvcRes, unit, params, {}))
    except MgmtError as err:
        print(f"mgmt setup: {err}", file=sys.stderr)
        return int(ExitCode.USAGE)
    graph.connect(("file", str(path)), ("svc", unit), Edge("", notify=start))
    config = Config(frontend="yaml", tmp_prefix=True, converged_timeout=0, no_watch=True)
    return int(asyncio.run(agent.run(config, Loaded(graph))))
