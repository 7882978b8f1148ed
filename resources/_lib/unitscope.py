"""A transaction's own systemd scope: under a systemd unit, a command that must never be
stopped half-way (a package manager's: resources._lib.proc.run_to_end) runs in a transient
scope of its own, outside the agent's unit, so that the unit's stop does not end it.

Why: a unit's stop kills what is left in its cgroup. With the shipped unit's `KillMode=mixed`,
every process still there is SIGKILLed once the agent's main process has exited, and
`TimeoutStopSec` bounds the whole stop (a `systemctl stop`, and a SIGTERM from elsewhere too:
the agent's STOPPING=1 starts the same timer); an apt-get killed so leaves dpkg's database
"interrupted" (docs/resources/pkg.md, "A stop during a transaction"). mgmt (Go) does not meet
this: its PackageKit daemon runs transactions in its own unit, not the agent's.

How: `systemd-run --scope` (`--user` under a user manager) moves itself into a new scope unit
and then execs the command (the same pid: our child all the same, its output and exit status
reach us as before). The scope is named `mgmt-STEM-<12 hex digits>.scope` (nothing from a graph
goes into its argv), collected once it ends (`--collect`, failed or not), and a stop of it
(the host's shutdown) waits for the command before killing it, as the agent's unit did (_STOP).

When: the agent is part of a unit when systemd gave it $INVOCATION_ID (set for every process a
unit starts, system or user manager); $MANAGERPID is set by a user manager only (systemd.exec(5)),
hence `--user`. Both are inherited by whatever a unit's process starts (a shell in a terminal
that a unit runs, `su`, `sudo -E`, a container's command): they are believed only when the
manager they name runs here, PID 1 being systemd for the system manager (sd_booted(3):
/run/systemd/system), the process $MANAGERPID a systemd of the agent's own user for a user
manager; otherwise the agent is outside a unit. A first use asks systemd once whether it makes
scopes for us (an empty one: `systemd-run --scope ... true`); outside a unit, without
systemd-run, or when it refuses (no bus, not allowed), commands run as before, said once.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
from collections.abc import Awaitable
from typing import Protocol

from engine.errors import ResourceError

log = logging.getLogger("engine")


class Run(Protocol):
    """How a command is run to its end (resources._lib.proc.run_command's shape)."""

    def __call__(
        self, argv: list[str], *, timeout: float, label: str | None = None
    ) -> Awaitable[tuple[int, str, str]]: ...


PROBE_TIMEOUT = 30.0  # seconds the one probe may take
BOOTED = "/run/systemd/system"  # a directory when PID 1 is systemd (sd_booted(3))
_STEM = re.compile(r"[a-z][a-z0-9]*")
# A stop of the scope (the host's shutdown stops every unit; `systemctl stop` of it) lets the
# transaction end, for up to the manager's DefaultTimeoutStopSec, before its SIGKILL: a scope's
# stop otherwise SIGTERMs every process in it at once (KillMode=control-group), dpkg and its
# maintainer scripts too. SIGCONT is harmless to a running process (systemd sends it after
# the KillSignal= anyway); in the agent's unit, KillMode=mixed spared them the same way.
_STOP = ["--property=KillSignal=SIGCONT"]

# Per (manager, systemd-run's path): the argv prefix that makes a scope (without its --unit=),
# or None (refused), said once (the probe's verdict, for the agent's life).
_VERDICTS: dict[tuple[str, str], list[str] | None] = {}


def manager() -> str | None:
    """The manager of the unit the agent is part of, "system" or "user"; None outside one, and
    when the manager that $INVOCATION_ID and $MANAGERPID name does not run here (inherited:
    the module's docstring)."""
    if not os.environ.get("INVOCATION_ID"):
        return None
    managerpid = os.environ.get("MANAGERPID", "")
    if not managerpid:
        return "system" if os.path.isdir(BOOTED) else None
    return "user" if _own_systemd(managerpid) else None


def _own_systemd(pid: str) -> bool:
    """Whether process `pid` is a systemd (a user manager) whose real user is the agent's."""
    if not pid.isdecimal():
        return False
    try:
        with open(f"/proc/{int(pid)}/status", encoding="utf-8", errors="replace") as status:
            fields = dict(line.partition(":")[::2] for line in status)
    except OSError:
        return False
    uids = fields.get("Uid", "").split()
    return fields.get("Name", "").strip() == "systemd" and uids[:1] == [str(os.geteuid())]


def unit_of(pid: int | None = None) -> str:
    """The unit whose cgroup process `pid` (None: the agent) is in, from /proc/PID/cgroup
    (systemd's named hierarchy, else the unified one), e.g. "mgmt.service"; "" when gone or
    in none."""
    try:
        with open(f"/proc/{pid or 'self'}/cgroup", encoding="utf-8") as lines:
            for line in lines:
                hierarchy, _, path = line.rstrip("\n").partition(":")[2].partition(":")
                if hierarchy in ("name=systemd", ""):
                    return path.rpartition("/")[2]
    except OSError:
        pass
    return ""


def is_scope(unit: str, stem: str) -> bool:
    """Whether `unit` is one of our scopes of `stem` (scope_argv's names)."""
    return re.fullmatch(rf"mgmt-{re.escape(stem)}-[0-9a-f]{{12}}\.scope", unit) is not None


async def scope_argv(
    stem: str,
    what: str,
    run: Run,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
) -> tuple[list[str], str]:
    """(argv prefix, scope name) that runs a command `what` (e.g. "apt-get install") in a new
    scope `mgmt-STEM-<hex>.scope`; ([], "") outside a unit or when systemd refuses (said
    once, with why). `stem`: a lowercase word naming the kind ("pkg"). `run`: how the probe is
    run (resources._lib.proc.run_command, passed in by its module: no import cycle)."""
    if not _STEM.fullmatch(stem):
        raise ValueError(f"scope stem {stem!r}: a lowercase word")
    which = manager()
    if which is None:
        return [], ""
    systemd_run = shutil.which("systemd-run") or ""
    key = (which, systemd_run)
    if key not in _VERDICTS:
        _VERDICTS[key] = await _probe(which, systemd_run, what, run, logger)
    base = _VERDICTS[key]
    if base is None:
        return [], ""
    name = f"mgmt-{stem}-{secrets.token_hex(6)}.scope"
    unit = unit_of() or "the agent's unit"
    argv = [*base, f"--unit={name}", f"--description=mgmt: {what}, started by {unit}", "--"]
    return argv, name


async def _probe(
    which: str,
    systemd_run: str,
    what: str,
    run: Run,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> list[str] | None:
    """The argv prefix if systemd makes a scope for us (an empty one tried), else None, said."""
    unit = unit_of() or "the agent's unit"
    fallback = (
        f"{what} runs in {unit}, as the agent does: a stop of the unit can kill it half-way "
        "(docs/resources/pkg.md, 'A stop during a transaction')"
    )
    if not systemd_run:
        logger.warning("%s: systemd-run is missing: %s", what, fallback)
        return None
    # --no-ask-password: an agent started from a terminal never waits on a polkit prompt.
    base = [systemd_run, *(["--user"] if which == "user" else []), "--scope", "--quiet"]
    base += ["--no-ask-password"]
    base += ["--collect", *_STOP]
    name = f"--unit=mgmt-probe-{secrets.token_hex(6)}.scope"
    about = f"--description=mgmt: does systemd make a scope for {what}"
    probe = [*base, name, about, "--", "true"]
    try:
        await run(probe, timeout=PROBE_TIMEOUT, label="systemd-run --scope")
    except ResourceError as refused:
        logger.warning("%s: %s: %s", what, refused, fallback)
        return None
    logger.debug("%s: runs in a scope of its own under the %s manager", what, which)
    return base
