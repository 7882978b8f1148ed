"""The Debian/Ubuntu backend: dpkg-query, apt-cache and apt-get, run from argv lists.

Every command runs non-interactively (DEBIAN_FRONTEND=noninteractive, stdin /dev/null, C
locale for parsing), in its own session so that a timeout or a cancellation stops its whole
process group, and bounded by a timeout. Transactions keep locally changed configuration files
(`--force-confdef --force-confold`) and wait for dpkg's lock instead of failing at once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
from collections.abc import Sequence

from engine.errors import ResourceError
from engine.tasks import first_done
from engine.watcher import PathWatcher
from resources._lib import unitscope
from resources._lib.proc import lock_holder, pid_exited, run_command, run_to_end
from resources.pkg.backend import Available, Backend, Change, Installed, which

# Seconds a query (dpkg-query, apt-cache) may take: apt-cache loads the whole package cache.
QUERY_TIMEOUT = 120
# Seconds a transaction (download + dpkg) may take.
TRANSACTION_TIMEOUT = 3600
# Seconds apt-get waits for another package manager to release dpkg's lock.
LOCK_WAIT = 300
# The lock a package manager holds for a whole transaction (apt-get, and dpkg run alone).
FRONTEND_LOCK = "/var/lib/dpkg/lock-frontend"
# dpkg's status database: rewritten at each step of a transaction, whoever runs it.
STATUS = "/var/lib/dpkg/status"
# Seconds a stopped query gets between SIGTERM and SIGKILL (a transaction is never stopped:
# resources._lib.proc.run_to_end).
GRACE = 10.0
# Lines of apt-get's output quoted in a failure.
TAIL = 8

ENV = {
    "DEBIAN_FRONTEND": "noninteractive",
    "LC_ALL": "C",
    "APT_LISTCHANGES_FRONTEND": "none",
    "APT_LISTBUGS_FRONTEND": "none",
}
TRANSACTION = [
    "apt-get",
    "install",
    "--yes",
    "--quiet",
    "-o",
    "Dpkg::Options::=--force-confdef",
    "-o",
    "Dpkg::Options::=--force-confold",
    "-o",
    f"DPkg::Lock::Timeout={LOCK_WAIT}",
]
# dpkg-query: one line per known package; Status-Abbrev is e.g. "ii " (installed), "rc ".
QUERY_FORMAT = "${Package}\t${db:Status-Abbrev}\t${Version}\n"
COMPLETE = frozenset("iWt")  # dpkg states that count as installed: installed, triggers pending
ABSENT = frozenset("nc")  # not installed, or only its configuration files remain

# apt-cache policy: " *** 2.10-3 500" (installed) or "     2.10-3 500" in the version table.
_VERSION_LINE = re.compile(r"^ (?:\*\*\*|   ) (\S+) -?\d+$")
_CANDIDATE = re.compile(r"^  Candidate: (\S+)$")
_REMOVED = re.compile(r"^Remv (\S+)")
_DEPENDENT = re.compile(r"^ (\S+) (?:pre-)?depends on ")
_PROGRESS = re.compile(r"^\(Reading database \.\.\. \d+%$")


# dpkg's list of each installed package's paths: NAME.list, or NAME:ARCH.list for a package
# of a multi-arch "same" library.
DPKG_INFO = "/var/lib/dpkg/info"
# dpkg's name of this machine's architecture (what `dpkg --print-architecture` says).
_DPKG_ARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "i686": "i386",
    "armv7l": "armhf",
    "ppc64le": "ppc64el",
}


class AptBackend(Backend):
    name = "apt"
    cache = "apt cache"
    # dpkg rewrites its status file on every change; apt-get update renames fresh lists in.
    watch_paths = (STATUS, "/var/lib/apt/lists")

    @classmethod
    def usable(cls) -> bool:
        return which("apt-get", "apt-cache", "dpkg-query", "dpkg")

    def files(self, name: str) -> frozenset[str]:
        arch = os.uname().machine
        for base in (name, f"{name}:{_DPKG_ARCH.get(arch, arch)}"):
            path = os.path.join(DPKG_INFO, base + ".list")
            try:
                changed = os.stat(path).st_mtime_ns
            except OSError:
                continue
            return _read_list(path, changed)
        return frozenset()

    async def installed(self, names: Sequence[str]) -> dict[str, Installed]:
        # Exit 1 only means that some name is unknown to dpkg: those are not installed.
        argv = ["dpkg-query", "--show", f"--showformat={QUERY_FORMAT}", *names]
        _code, out, _err = await run(argv, timeout=QUERY_TIMEOUT, ok=(0, 1))
        return parse_status(out)

    async def available(self, names: Sequence[str]) -> dict[str, Available]:
        _code, out, _err = await run(["apt-cache", "policy", *names], timeout=QUERY_TIMEOUT)
        found = parse_policy(out)
        return {name: found[name] for name in names if name in found}

    async def older(self, version: str, than: str) -> bool:
        argv = ["dpkg", "--compare-versions", version, "lt", than]
        code, _out, _err = await run(argv, timeout=QUERY_TIMEOUT, ok=(0, 1))
        return code == 0

    async def wait_idle(self, logger: logging.LoggerAdapter[logging.Logger]) -> bool:
        return await _wait_for_lock(logger)

    async def apply(
        self,
        changes: Sequence[Change],
        *,
        allow_downgrade: bool,
        allow_untrusted: bool,
        logger: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        argv = list(TRANSACTION)
        if allow_downgrade and any(c.action == "downgrade" for c in changes):
            argv.append("--allow-downgrades")
        if allow_untrusted:
            argv.append("--allow-unauthenticated")
        removals = {c.name for c in changes if c.action == "remove"}
        if not removals:
            # apt itself refuses to remove anything (a conflict, a broken dependency).
            argv.append("--no-remove")
        argv += [_argument(c) for c in changes]
        if len(removals) == len(changes):
            await _refuse_dependents(removals)  # dpkg's dry run: fast, no cache to load
        elif removals:
            await _refuse_extra_removals(argv, removals)
        code, out, err = await run_to_end(
            argv,
            timeout=TRANSACTION_TIMEOUT,
            env=ENV,
            label="apt-get install",
            logger=logger,
            ok=None,
            scope="pkg",
        )
        for line in out.splitlines():
            if not _PROGRESS.match(line):
                logger.debug("apt-get: %s", line)
        if code != 0:
            raise ResourceError(_failure(code, out, err))


async def _wait_for_lock(logger: logging.LoggerAdapter[logging.Logger]) -> bool:
    """Wait (up to LOCK_WAIT s) while a transaction holds dpkg's lock, saying whose (one of
    ours that a stop or timeout left running, in its scope, is named as such); whether one
    did. Woken when the holder exits or dpkg's status changes (the lock looked at again), no
    polling."""
    said: set[int] = set()
    changed = asyncio.Event()
    watcher = PathWatcher([STATUS], on_change=changed.set, on_error=lambda _err: changed.set())
    watcher.open()
    try:
        async with asyncio.timeout(LOCK_WAIT):
            while True:
                changed.clear()
                holder = await asyncio.to_thread(lock_holder, FRONTEND_LOCK)
                if holder is None:
                    break
                if holder[0] not in said:
                    said.add(holder[0])
                    _say_holder(*holder, logger)
                await first_done(pid_exited(holder[0]), changed.wait())
    except TimeoutError:
        logger.warning(
            "apt-get install: dpkg's lock is still held after %d s: trying all the same", LOCK_WAIT
        )
    finally:
        watcher.close()
    return bool(said)


def _say_holder(pid: int, program: str, logger: logging.LoggerAdapter[logging.Logger]) -> None:
    unit = unitscope.unit_of(pid)
    ours = (
        f" in {unit}, a transaction of the agent's that a stop or timeout left running"
        if unitscope.is_scope(unit, "pkg")
        else ""
    )
    logger.warning(
        "dpkg's lock is held by pid %d (%s)%s: waiting for it to end (up to %d s), then "
        "checking again",
        pid,
        program,
        ours,
        LOCK_WAIT,
    )


def _argument(change: Change) -> str:
    """apt-get install's syntax: `name`, `name=version`, `name-` (remove)."""
    if change.action == "remove":
        return f"{change.name}-"
    if change.pin and change.version:
        return f"{change.name}={change.version}"
    return change.name


async def _refuse_dependents(removals: set[str]) -> None:
    """Refuse removals that other installed packages depend on (apt would remove those too)."""
    argv = ["dpkg", "--no-act", "--remove", *sorted(removals)]
    code, out, err = await run(argv, timeout=QUERY_TIMEOUT, ok=None)
    if code == 0:
        return
    extra = {m[1].partition(":")[0] for line in err.splitlines() if (m := _DEPENDENT.match(line))}
    if extra:
        what = f"removing {', '.join(sorted(removals))}"
        raise ResourceError(_extra_message(what, extra, "which depend on it"))
    tail = " | ".join((err.strip() or out.strip()).splitlines()[-TAIL:]) or "no output"
    raise ResourceError(f"dpkg refuses to remove {', '.join(sorted(removals))}: {tail}")


async def _refuse_extra_removals(argv: list[str], removals: set[str]) -> None:
    """Simulate a mixed transaction; refuse it if apt would remove more than was asked for."""
    code, out, err = await run([*argv, "--simulate"], timeout=QUERY_TIMEOUT, ok=None)
    if code != 0:
        raise ResourceError(_failure(code, out, err))
    extra = {m[1] for line in out.splitlines() if (m := _REMOVED.match(line))} - removals
    if extra:
        raise ResourceError(_extra_message("this transaction", extra, "not declared uninstalled"))


def _extra_message(what: str, extra: set[str], why: str) -> str:
    return (
        f"{what} would also remove {', '.join(sorted(extra))} ({why}): refused; declare "
        "them as uninstalled too if that is what you want"
    )


def _failure(code: int, out: str, err: str) -> str:
    """apt-get's own explanation: its E: lines, or the tail of its output."""
    lines = [line for line in err.splitlines() if line.startswith("E:")]
    if "--no-remove" in err or "remove is disabled" in err:
        removed = _listed(out, "The following packages will be REMOVED:")
        if removed:
            return (
                f"apt would have to remove {', '.join(removed)} to do this: refused; declare "
                "them as uninstalled if that is what you want"
            )
    if not lines:
        lines = (err.strip() or out.strip()).splitlines()[-TAIL:]
    return f"apt-get exited with code {code}: " + (" | ".join(lines) or "no output")


def _listed(out: str, heading: str) -> list[str]:
    """The package names apt-get lists (indented) under `heading`."""
    names: list[str] = []
    lines = iter(out.splitlines())
    for line in lines:
        if line.strip() == heading:
            for item in lines:
                if not item.startswith(" "):
                    break
                names += item.split()
            break
    return names


def parse_status(out: str) -> dict[str, Installed]:
    """dpkg-query's lines -> the packages that are (at least partly) installed."""
    found: dict[str, Installed] = {}
    for line in out.splitlines():
        name, _, rest = line.partition("\t")
        status, _, version = rest.partition("\t")
        if len(status) < 2 or status[1] in ABSENT:
            continue
        complete = status[1] in COMPLETE
        old = found.get(name)
        if old is None or (complete and not old.complete):  # several architectures
            found[name] = Installed(version=version, complete=complete)
    return found


def parse_policy(out: str) -> dict[str, Available]:
    """`apt-cache policy`'s blocks -> candidate and known versions per package name."""
    found: dict[str, Available] = {}
    name: str | None = None
    candidate: str | None = None
    versions: list[str] = []

    def flush() -> None:
        if name is not None:
            found[name] = Available(candidate=candidate, versions=tuple(versions))

    for line in out.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            flush()
            name, candidate, versions = line[:-1], None, []
        elif name is not None and (match := _CANDIDATE.match(line)):
            candidate = None if match[1] == "(none)" else match[1]
        elif name is not None and (match := _VERSION_LINE.match(line)):
            versions.append(match[1])
    flush()
    return found


async def run(
    argv: list[str], *, timeout: float, ok: tuple[int, ...] | None = (0,)
) -> tuple[int, str, str]:
    """Run one apt/dpkg command to completion; (exit code, stdout, stderr) (see run_command)."""
    label = " ".join(argv[:2])
    return await run_command(argv, timeout=timeout, env=ENV, ok=ok, label=label, grace=GRACE)


@functools.lru_cache(maxsize=64)
def _read_list(path: str, _changed: int) -> frozenset[str]:
    """A dpkg .list file's paths (cached until the file changes: dpkg rewrites it on every
    install or upgrade of its package); the root `/.` is left out."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as lines:
            return frozenset(line.rstrip("\n") for line in lines) - {"/."}
    except OSError:
        return frozenset()
