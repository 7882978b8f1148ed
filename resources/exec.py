"""exec: run a command when an event, the startup or a refresh asks for it (mgmt's exec).

The command runs at most once per event: the startup event, a line from `watchcmd`, a change to
one of `watchfiles` or `mtimes`, a poll tick (`meta.poll`) or a refresh along a `notify` edge. It
is skipped (state OK) when `creates` exists, `ifcmd` exits non-zero or `nifcmd` exits 0, unless
one of `mtimes` is newer than the last run (which forces it). After a successful run `donecmd`
runs. After a run, a second check_apply without a new event returns True (paired execution).

Every process runs from an argv list (a shell only when one is named), in its own session so
that a timeout or a cancellation kills its whole process group, and is always waited for; if
the agent dies meanwhile, the engine's guard stops that group (resources/_lib/reaper.py). Values
of `env` are replaced by "***" in everything logged or raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import shlex
import signal
import subprocess
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, MutableSequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from engine.churn import COMMANDS as COMMANDS_RUN
from engine.churn import Commands
from engine.errors import ResourceError, ValidationError
from engine.handle import Handle
from engine.params import EMPTY_IS_UNSET, parse_int, show
from engine.resource import UID, Edgeable, Refreshable, Resource, register
from engine.stopgate import Interrupted, begun, interrupted
from engine.watcher import PathWatcher
from resources._lib import ids, reaper
from resources._lib.events import Source, run_all
from resources._lib.ids import MAX_ID
from resources._lib.plan import Step, apply_steps, nothing_to_do
from resources._lib.proc import close_pipes, exited, signal_group, stop_group
from resources._lib.reaper import forget_group, record_group, stop_recorded_group

TAIL = 10  # stderr lines quoted in a failure
# A failure quotes at most FAILURE_STDERR characters of them (its last lines), each output line
# logged or quoted at most SHOWN_LINE: a command writing 300 KB of stderr per failure made
# 300 KB log lines, errors and status events (76 MB of log in 90 s, a 53 MB /api/status:
# tester15). The whole output is still kept for send/recv (KEEP_LIMIT).
FAILURE_STDERR = 4000
SHOWN_LINE = 1000
GRACE = 1.0  # seconds to wait for a killed command's pipes before closing them
# Seconds a command sent `sig` by the resource's stop (the agent's graceful stop) has to end
# before its group is killed (SIGKILL): well within systemd's TimeoutStopSec=90, so that a
# command ignoring SIGTERM no longer holds `systemctl stop` until systemd kills everything.
STOP_GRACE = 10.0
GUARD_WAIT = 5.0  # seconds an engine's stop waits for its commands' guard to end (reaper.py)
COMMANDS = ("cmd", "ifcmd", "nifcmd", "donecmd", "watchcmd")  # each one's group is recorded
MIN_SECRET = 3  # shorter env values are not redacted (they would mangle every line)

Line = tuple[str, str]  # ("out" | "err", text with its newline)
SHOWN_HEAD = 20  # a run's first output lines logged at INFO as they come
SHOWN_TAIL = 20  # and its last ones, at its end; those between at DEBUG (--verbose)
KEEP_LIMIT = 16 << 20  # a run's output kept (for send/recv), by _Kept's count: its last part
LINE_COST = 64  # what _Kept counts a line as beyond its characters (Python's own objects)


@register("exec")
@dataclass(kw_only=True, eq=False)
class ExecRes(Refreshable, Edgeable, Resource):
    SENDS: ClassVar[Mapping[str, Any]] = {"output": str, "stdout": str, "stderr": str}

    # The command (required): split into words like a shell would, but run without one.
    cmd: str | None = None
    # Arguments passed verbatim; `cmd` is then the program itself, never split. Default none.
    args: list[str] | None = None
    # Run `cmd` as [shell, "-c", cmd] with this shell, e.g. "/bin/sh". Default none: no shell.
    shell: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # Absolute working directory of every command. Default: the agent's.
    cwd: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # Variables set on top of the agent's environment for every command (redacted). Default {}.
    env: dict[str, str] = field(default_factory=dict)
    # Seconds `cmd` (and `ifcmd`) may run before its process group is killed; 0 = no limit.
    timeout: int = 0
    # Run `cmd` only when this command exits 0 (split like `cmd`). Default none.
    ifcmd: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # Run `ifcmd` with this shell instead of splitting it. Default none.
    ifshell: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # Absolute working directory of `ifcmd`. Default: `cwd`.
    ifcwd: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # Skip `cmd` while this absolute path exists. Default none.
    creates: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # A long-running command; each line it prints is an event. Default none.
    watchcmd: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # Run `watchcmd` with this shell instead of splitting it. Default none.
    watchshell: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # Absolute working directory of `watchcmd`. Default: `cwd`.
    watchcwd: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # Absolute paths whose every change is an event. Default none.
    watchfiles: list[str] = field(default_factory=list)
    # Run every command as this user (name or uid), with its groups and HOME. Default: ours.
    user: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # Run every command with this primary group (name or gid). Default: the user's, or ours.
    group: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # Run only on a refresh along a notify edge, never for other events (Puppet's refreshonly;
    # not in mgmt). Default false.
    refreshonly: bool = False
    # Skip `cmd` when this command exits 0 (ifcmd's opposite; split like `cmd`). Default none.
    nifcmd: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # Run `nifcmd` with this shell instead of splitting it. Default none.
    nifshell: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # Absolute working directory of `nifcmd`. Default: `cwd`.
    nifcwd: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # Absolute paths: one modified after the last run forces a run (whatever the guards say);
    # each change is an event; a missing one fails. Default none.
    mtimes: list[str] = field(default_factory=list)
    # Run after `cmd` succeeded; its failure is the run's failure. Default none.
    donecmd: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # Run `donecmd` with this shell instead of splitting it. Default none.
    doneshell: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # Absolute working directory of `donecmd`. Default: `cwd`.
    donecwd: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # The signal (a name such as "SIGINT") that stops a running command's process group on a
    # timeout or a cancellation, before SIGKILL a second later (on the resource's stop:
    # STOP_GRACE later). Default: SIGTERM.
    sig: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # Sent as `output` when no run has produced one (mgmt's send_output; "" is a value).
    send_output: str | None = None
    # Sent as `stdout` when no run has produced one. Default none.
    send_stdout: str | None = None
    # Sent as `stderr` when no run has produced one. Default none.
    send_stderr: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        # Events seen (startup, watchcmd lines, watchfiles) and how many a run has dealt with:
        # counting, not a flag, so that an event during a run is not swallowed by it.
        self._events = 0
        self._handled = 0
        # Under noop (nothing is marked handled), the events the last noop check looked at and
        # what it found: it is said again, not checked again, until a new event or refresh.
        self._checked = -1
        self._would = True
        # The last run's output, for send/recv: stdout, stderr and both interleaved.
        self.stdout: str | None = None
        self.stderr: str | None = None
        self.output: str | None = None

    def validate(self) -> None:
        super().validate()
        if not self.cmd:
            raise ValidationError("is required: the command to run", "cmd")
        if self.shell is not None and self.args is not None:
            raise ValidationError("cannot be used with args: give one or the other", "shell")
        if self.args is None:
            _check_command("cmd", self.cmd, self.shell)
        _check_command("ifcmd", self.ifcmd, self.ifshell)
        _check_command("watchcmd", self.watchcmd, self.watchshell)
        _check_command("nifcmd", self.nifcmd, self.nifshell)
        _check_command("donecmd", self.donecmd, self.doneshell)
        if self.sig is not None:
            _signal(self.sig)
        if self.timeout < 0:
            raise ValidationError(f"must be >= 0 (0 = no limit), got {self.timeout}", "timeout")
        paths = {"cwd": self.cwd, "ifcwd": self.ifcwd, "watchcwd": self.watchcwd}
        paths.update(creates=self.creates, nifcwd=self.nifcwd, donecwd=self.donecwd)
        paths.update({f"watchfiles[{i}]": p for i, p in enumerate(self.watchfiles)})
        paths.update({f"mtimes[{i}]": p for i, p in enumerate(self.mtimes)})
        _check_absolute(paths)
        for key, name in (("user", self.user), ("group", self.group)):
            if name is not None:
                _check_id(key, name)

    async def init(self, handle: Handle) -> None:
        await super().init(handle)
        self._events = self._handled = 0
        self._checked, self._would = -1, True
        self._var_dir: Path | None = None  # made at the first command's start
        self._groups = handle.shared.get(
            f"{__name__}:groups", lambda: _Groups(handle.var_path.parent)
        )
        self._commands = handle.shared.get(COMMANDS_RUN, Commands)  # (for engine.churn)
        for what, pid in await self._groups.stop_left(self._stop_left, handle.var_path.name):
            handle.logger.warning(
                "%s of an earlier agent (pid %d) still ran: stopped its process group", what, pid
            )

    async def watch(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            sources: list[Source] = []
            if self.watchfiles or self.mtimes:
                paths = list(dict.fromkeys([*self.watchfiles, *self.mtimes]))
                watcher = await stack.enter_async_context(PathWatcher(paths))
                sources.append(functools.partial(self._watch_files, watcher))
            if self.watchcmd is not None:
                argv = _argv(self.watchcmd, self.watchshell)
                cwd = self.watchcwd or self.cwd
                proc = await stack.enter_async_context(self._spawn(argv, cwd, "watchcmd"))
                sources.append(functools.partial(self._watch_cmd, proc))
            await self._event()
            await run_all(sources)

    async def check_apply(self, apply: bool) -> bool:
        seen = self._events
        refresh = self.handle.refresh()
        if self.refreshonly and not refresh:
            if apply:
                self._handled = seen
            return nothing_to_do(self.handle, "refreshonly, and no refresh since the last run")
        if not (seen > self._handled or refresh or self.meta.poll > 0):
            return nothing_to_do(self.handle, "no event or refresh since the last run")
        if not apply and self._checked_already(seen, refresh):
            return self._would_again()
        forced = await self._mtimes_newer()
        reason = None if forced else await self._skip_reason()
        if not apply:
            self._checked, self._would = seen, reason is None
        if reason is not None:
            if apply:
                self._handled = seen  # these events have been dealt with
            self._send_fallback()
            return nothing_to_do(self.handle, reason)
        if forced:
            self.handle.logger.info("%s: running whatever the guards say", forced)
        shown = self._shown()
        done = f"; then {self._redact(self.donecmd)}" if self.donecmd is not None else ""
        step = Step(f"run: {shown}{done}", f"ran: {shown}{done}", self._run)
        await apply_steps(self.handle, [step], apply)
        if not apply:
            return False
        self._handled = seen  # (a failure leaves them pending: a retry runs again)
        return False

    # check_apply's parts -----------------------------------------------------------------

    def _checked_already(self, seen: int, refresh: bool) -> bool:
        """Whether a noop check looked at these events already, with nothing new since (no
        refresh, no value received; a poll tick is new: each one checks). A noop check marks
        nothing handled, so each poke from upstream ran the guards again: an `ifcmd` that
        writes a file of the graph made its check again, which poked this one, for ever."""
        if seen != self._checked or refresh or self.meta.poll > 0:
            return False
        return not any(self.handle.received().values())

    def _would_again(self) -> bool:
        """The last noop check's answer, said at DEBUG only (its `would run` said once)."""
        if self._would:
            self.handle.logger.debug("no event or refresh since the last check: would run")
            return False
        return nothing_to_do(self.handle, "no event or refresh since the last check")

    async def _skip_reason(self) -> str | None:
        """Why `cmd` must not run now (creates exists, ifcmd failed), or None."""
        if self.creates is not None and await asyncio.to_thread(os.path.exists, self.creates):
            return f"{self.creates} exists (creates)"
        if self.ifcmd is not None or self.nifcmd is not None:
            # A guard is a command: it may change anything (a file of the graph checked good
            # before it). A one-shot run watches from now on, before it runs (Handle.changing).
            self.handle.changing()
        if self.ifcmd is not None:
            argv = _argv(self.ifcmd, self.ifshell)
            code, _ = await self._execute(argv, self.ifcwd or self.cwd, "ifcmd", logging.DEBUG)
            if code != 0:
                return f"ifcmd exited with code {code}"
        if self.nifcmd is not None:
            argv = _argv(self.nifcmd, self.nifshell)
            code, _ = await self._execute(argv, self.nifcwd or self.cwd, "nifcmd", logging.DEBUG)
            if code == 0:
                return "nifcmd exited with code 0"
        return None

    async def _mtimes_newer(self) -> str | None:
        """Which of `mtimes` was modified after the last run (a run is then forced), or None.

        The last run's time is the mtime of a stamp file in the resource's private state
        directory, written after each successful run; no stamp: every file is newer.
        """
        if not self.mtimes:
            return None
        stamp = self.handle.var_dir / "mtimes"
        return await asyncio.to_thread(_newer_than, self.mtimes, stamp)

    def _send_fallback(self) -> None:
        """mgmt's send_output/stdout/stderr: what a skipped run sends when no run produced one."""
        values = {
            "output": self.output if self.output is not None else self.send_output,
            "stdout": self.stdout if self.stdout is not None else self.send_stdout,
            "stderr": self.stderr if self.stderr is not None else self.send_stderr,
        }
        values = {k: v for k, v in values.items() if v is not None}
        if values:
            self.handle.send(**values)

    async def _run(self) -> None:
        """Run `cmd` (then `donecmd`), keep its output, raise ResourceError unless both exit 0;
        with `mtimes`, record the run."""
        self.handle.logger.info("running: %s", self._shown())
        started = time.time_ns()
        code, lines = await self._execute(self._main_argv(), self.cwd, "cmd", logging.INFO)
        self.stdout = "".join(text for name, text in lines if name == "out")
        self.stderr = "".join(text for name, text in lines if name == "err")
        self.output = "".join(text for _name, text in lines)
        self.handle.send(stdout=self.stdout, stderr=self.stderr, output=self.output)
        if code != 0:
            raise ResourceError(self._failure("cmd", code, lines))
        if self.donecmd is not None:
            argv = _argv(self.donecmd, self.doneshell)
            code, lines = await self._execute(
                argv, self.donecwd or self.cwd, "donecmd", logging.INFO
            )
            if code != 0:
                raise ResourceError(self._failure("donecmd", code, lines))
        if self.mtimes:
            await asyncio.to_thread(_stamp, self.handle.var_dir / "mtimes", started)

    # capabilities: autoedges -----------------------------------------------------------------

    def uids(self) -> list[UID]:
        return [UID("exec", self.name)]

    def autoedges(self) -> list[list[UID]]:
        """A managed binary (an absolute argv[0]), managed working directories, the package
        owning each program it runs (its shell, or argv[0], of each command: mgmt's cmdFiles),
        and the user and group it runs as (mgmt's UserUID and GroupUID: a name, or an id that
        a `user`/`group` resource sets as its `uid`/`gid`)."""
        wants: list[list[UID]] = []
        if self.user is not None:
            wants.append([UID("user", self.user)])
        if self.group is not None:
            wants.append([UID("group", self.group)])
        if self.shell is None and self.cmd:
            program = self.cmd if self.args is not None else (shlex.split(self.cmd) or [""])[0]
            if os.path.isabs(program):
                wants.append([UID("file", os.path.normpath(program))])
        for cwd in {self.cwd, self.ifcwd, self.watchcwd, self.nifcwd, self.donecwd} - {None}:
            wants.append([UID("file", os.path.normpath(str(cwd)).rstrip("/") + "/")])
        wants += [[UID("pkgfile", program)] for program in self._programs()]
        return wants

    def _programs(self) -> list[str]:
        """The absolute paths of the programs its commands start (a shell, or argv[0])."""
        found: list[str] = []
        for cmd, shell, whole in (
            (self.cmd, self.shell, self.args is not None),  # with args, cmd is the program
            (self.watchcmd, self.watchshell, False),
            (self.ifcmd, self.ifshell, False),
            (self.nifcmd, self.nifshell, False),
            (self.donecmd, self.doneshell, False),
        ):
            if cmd is None:
                continue
            program = shell or (cmd if whole else "")
            if not program:
                try:
                    program = (shlex.split(cmd) or [""])[0]
                except ValueError:
                    continue
            program = os.path.normpath(program)
            if os.path.isabs(program) and program not in found:
                found.append(program)
        return found

    def _main_argv(self) -> list[str]:
        cmd = self.cmd or ""
        if self.args is not None:
            return [cmd, *self.args]
        return _argv(cmd, self.shell)

    def _shown(self) -> str:
        """The command line as logged: secrets redacted."""
        cmd = self.cmd or ""
        return self._redact(cmd if self.args is None else shlex.join([cmd, *self.args]))

    def _failure(self, what: str, code: int, lines: Iterable[Line]) -> str:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        tail = [text.rstrip("\n") for name, text in lines if name == "err"][-TAIL:]
        # redacted before they are clipped: a clip must not leave a secret's first part
        stderr = f"; stderr: {_quoted([self._redact(t) for t in tail])}" if tail else "; no stderr"
        return self._redact(f"{what} {how}{stderr}")

    def _redact(self, text: str) -> str:
        """`text` with every value of `env` (MIN_SECRET chars or more) replaced by ***."""
        secrets = sorted((v for v in self.env.values() if len(v) >= MIN_SECRET), key=len)
        for secret in reversed(secrets):
            text = text.replace(secret, "***")
        return text

    # watch's parts -------------------------------------------------------------------------

    async def _event(self) -> None:
        self._events += 1
        await self.handle.event()

    async def _watch_files(self, watcher: PathWatcher) -> None:
        """One event per change to a watched path or in its own directory, as mgmt's recwatch
        (util/recwatch/recwatch.go), which sends one for the path's direct parent appearing
        but not for the directories above it, nor for the parent's removal with no file in
        it. So a change is not an event when, for every path, its directory is missing and
        the path itself was missing at the last look (only directories above it changed)."""
        paths = watcher.paths
        seen = await asyncio.to_thread(_look, paths)
        async for _ in watcher:
            before, seen = seen, await asyncio.to_thread(_look, paths)
            if any(now[0] or then[1] for now, then in zip(seen, before, strict=True)):
                await self._event()
            else:
                self.handle.logger.debug("watchfiles: a directory above changed: no event")

    async def _watch_cmd(self, proc: asyncio.subprocess.Process) -> None:
        """One event per line of `watchcmd`; its exit (any code) fails the watch."""
        stdout, stderr = _streams(proc)
        tail: deque[Line] = deque(maxlen=TAIL)
        # Its stdout (events) at DEBUG, every line; its stderr at INFO, capped as a run's
        # output is, the last lines logged when it ends (it exits, or the resource stops).
        events = _ShownOutput(self.handle.logger, logging.DEBUG, self._redact)
        errors = _ShownOutput(self.handle.logger, logging.INFO, self._redact)
        readers = [
            asyncio.create_task(
                self._pump(stdout, "out", "watchcmd", keep=None, shown=events, event=True)
            ),
            asyncio.create_task(self._pump(stderr, "err", "watchcmd", keep=tail, shown=errors)),
        ]
        try:
            code = await self._finish(proc, readers)
        finally:
            errors.end()
        raise ResourceError(self._failure("watchcmd", code, tail))

    # processes -----------------------------------------------------------------------------

    async def _execute(
        self, argv: list[str], cwd: str | None, what: str, level: int
    ) -> tuple[int, _Kept]:
        """Run one command to completion (bounded by `timeout`); its exit code and output.

        The resource's stop (a graceful stop of the agent, a swap that removes it) sends the
        command `sig` (SIGTERM by default) and lets it end as it will (a second signal to the
        agent kills it); none starts once it stops. A command so stopped did not do its
        work, whatever its exit code: Interrupted (not applied, no error; no donecmd), as
        mgmt's exec when its context is cancelled."""
        if self.handle.stopping:
            raise Interrupted
        lines = _Kept()
        signalled: list[signal.Signals] = []
        async with self._spawn(argv, cwd, what) as proc:
            stdout, stderr = _streams(proc)
            shown = _ShownOutput(self.handle.logger, level, self._redact)
            readers = [
                asyncio.create_task(self._pump(stdout, "out", what, keep=lines, shown=shown)),
                asyncio.create_task(self._pump(stderr, "err", what, keep=lines, shown=shown)),
            ]

            loop = asyncio.get_running_loop()
            bound: list[asyncio.TimerHandle] = []

            def kill() -> None:
                if proc.returncode is None:
                    self.handle.logger.warning(
                        "%s: did not end within %gs of %s: killed (SIGKILL)",
                        *(what, STOP_GRACE, signalled[0].name),
                    )
                    signal_group(proc, signal.SIGKILL)

            def stop() -> None:
                if proc.returncode is None:
                    signalled.append(self._stop_signal())
                    self.handle.logger.info("%s: stopping: sent %s", what, signalled[0].name)
                    signal_group(proc, signalled[0])
                    bound.append(loop.call_later(STOP_GRACE, kill))

            unregister = self.handle.on_stop(stop)
            try:
                async with asyncio.timeout(self.timeout or None):
                    code = await self._finish(proc, readers)
            except TimeoutError:
                raise ResourceError(f"{what} timed out after {self.timeout}s: killed") from None
            except asyncio.CancelledError:
                if self.handle.stopping:  # a forced stop: the stop's summary names it too
                    self.handle.logger.info("%s killed (a forced stop): not done", what)
                    interrupted()
                raise
            finally:
                unregister()
                for handle in bound:
                    handle.cancel()
                shown.end()
        if lines.cut:
            self.handle.logger.warning(
                "%s: its output came to more than %s characters: only its last part is kept "
                "for `output`, `stdout` and `stderr` (%d lines before it left out)",
                what,
                f"{KEEP_LIMIT:,}",
                lines.cut,
            )
        if signalled:
            how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            self.handle.logger.info("%s stopped (%s): not done, the next run runs it", what, how)
            raise Interrupted
        return code, lines

    @contextlib.asynccontextmanager
    async def _spawn(
        self, argv: list[str], cwd: str | None, what: str
    ) -> AsyncIterator[asyncio.subprocess.Process]:
        """Start a process in a new session; on the way out kill its group unless it exited."""
        # What may change files as it runs (engine.churn names it), from before its start (a
        # quick one has written before its start returns); not watchcmd, which runs on.
        token = None if what == "watchcmd" else self._commands.started(f"{self}'s {what}")
        self._groups.guard(self.handle.logger)  # (its first command: the guard starts)
        try:
            try:
                identity = self._identity()
                uid: int = identity.get("user", os.geteuid())  # its real uid: the record's
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    cwd=cwd,
                    start_new_session=True,
                    **identity,
                )
            except (OSError, ValueError) as err:
                raise ResourceError(self._redact(f"{what}: cannot start: {err}")) from err
            begun()  # its later jobs are not refused by a stop
            # Recorded beside the run, and forgotten once it ended, by the records' own thread.
            self._groups.write(lambda: record_group(self._group_file(what), proc.pid, uid))
            try:
                yield proc
            finally:
                await stop_group(proc, first=self._stop_signal())
                self._groups.write(lambda: forget_group(self._group_file(what)))
        finally:
            if token is not None:
                self._commands.ended(token)

    def _stop_left(self) -> list[tuple[str, int]]:
        """Stop the commands an agent that died (SIGKILL, a crash) left running (blocking)."""
        where = self.handle.var_path
        uid = os.geteuid()  # a record without its user (an older agent's): the command's
        if self.user is not None:
            with contextlib.suppress(ResourceError):
                uid = ids.passwd(self.user, "user").pw_uid
        stopped = (
            (what, stop_recorded_group(where / f"running.{what}", uid=uid)) for what in COMMANDS
        )
        return [(what, pid) for what, pid in stopped if pid is not None]

    def _group_file(self, what: str) -> Path:
        """Where the group of a running `what` is recorded (proc.record_group) (blocking: the
        first call makes the resource's private directory)."""
        if self._var_dir is None:
            self._var_dir = self.handle.var_dir
        return self._var_dir / f"running.{what}"

    def _stop_signal(self) -> signal.Signals:
        """The signal that stops a running command (`sig`): SIGTERM unless set."""
        return _signal(self.sig) if self.sig else signal.SIGTERM

    async def _finish(
        self, proc: asyncio.subprocess.Process, readers: list[asyncio.Task[None]]
    ) -> int:
        """Wait for the process to exit, then up to GRACE for its output to close; its exit code.

        A background child that keeps our pipes open does not hold the run beyond GRACE.
        """
        try:
            await exited(proc)
            _done, pending = await asyncio.wait(readers, timeout=GRACE)
            if pending:
                close_pipes(proc)  # a background child holds them: stop reading
            return await proc.wait()  # (asyncio's wait() also waits for the pipes to close)
        finally:
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)

    async def _pump(
        self,
        stream: asyncio.StreamReader,
        name: str,
        what: str,
        *,
        keep: MutableSequence[Line] | None,
        shown: _ShownOutput,
        event: bool = False,
    ) -> None:
        """Log (as `shown` says) and keep each line of `stream`; with `event`, each is an event."""
        label = name if what == "cmd" else f"{what} {name}"
        async for text in _lines(stream):
            if keep is not None:
                keep.append((name, text))
            shown.line(label, text)
            if event:
                await self._event()

    def _identity(self) -> dict[str, Any]:
        """Environment and credentials shared by every command: the agent's environment, or
        for `user` a fresh one (`ids.user_env`, as `runuser -l` gives); `env` on top."""
        env = dict(os.environ)
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            user = ids.passwd(self.user, "user")
            env = ids.user_env(user)
            kwargs.update(user=user.pw_uid, group=user.pw_gid)
            kwargs["extra_groups"] = os.getgrouplist(user.pw_name, user.pw_gid)
        if self.group is not None:
            kwargs["group"] = ids.resolve_gid(self.group, "group")
        env.update(self.env)
        return {"env": env, **kwargs}


def _argv(cmd: str, shell: str | None) -> list[str]:
    """[shell, "-c", cmd] with a shell, else cmd split into words (no shell involved)."""
    if shell is not None:
        return [shell, "-c", cmd]
    return shlex.split(cmd)


def _check_command(key: str, cmd: str | None, shell: str | None) -> None:
    """A command must split into at least one word; its shell must be a non-empty path."""
    if shell == "":
        raise ValidationError("must name a shell, e.g. /bin/sh", key.replace("cmd", "shell"))
    if cmd is None:
        if shell is not None:
            raise ValidationError(f"requires {key}", key.replace("cmd", "shell"))
        return
    try:
        words = _argv(cmd, shell)
    except ValueError as err:
        raise ValidationError(f"cannot be split into words: {err}", key) from err
    if not words or not words[0]:
        raise ValidationError("must name a program", key)


def _signal(name: str) -> signal.Signals:
    """The signal named `name` ("SIGINT"); ValidationError with a hint for "int" or "INT"."""
    if name.startswith("SIG") and name in signal.Signals.__members__:
        return signal.Signals[name]
    for guess in (name.upper(), "SIG" + name.upper()):
        if guess in signal.Signals.__members__ and not guess.startswith("SIG_"):
            raise ValidationError(f"unknown signal {name!r}: did you mean {guess!r}?", "sig")
    raise ValidationError(f"expected a signal name such as 'SIGINT', got {show(name)}", "sig")


def _newer_than(paths: list[str], stamp: Path) -> str | None:
    """The first of `paths` modified after `stamp` (any, if there is no stamp), or None;
    ResourceError if one of them cannot be read."""
    try:
        since = stamp.stat().st_mtime_ns
    except FileNotFoundError:
        since = -1
    for index, path in enumerate(paths):
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError as err:
            raise ResourceError(f"mtimes[{index}]: cannot stat {path}: {err.strerror}") from err
        if mtime > since:
            return f"{path} changed since the last run" if since >= 0 else "no run recorded yet"
    return None


def _look(paths: list[str]) -> list[tuple[bool, bool]]:
    """For each of `paths`: whether its directory exists, whether it exists (a link counts)."""
    return [(os.path.isdir(os.path.dirname(p)), os.path.lexists(p)) for p in paths]


def _stamp(stamp: Path, started: int) -> None:
    """Record a successful run that started at `started` (ns): the mtime of `stamp`, in our
    private var dir. The start, not the end: a file changed while the command ran is newer."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(stamp, flags, 0o600)
    try:
        os.write(fd, f"{started}\n".encode())
        os.utime(fd, ns=(started, started))
    finally:
        os.close(fd)


def _check_absolute(paths: dict[str, str | None]) -> None:
    for key, path in paths.items():
        if path is not None and not os.path.isabs(path):
            raise ValidationError(f"must be an absolute path, got {path!r}", key)


def _streams(
    proc: asyncio.subprocess.Process,
) -> tuple[asyncio.StreamReader, asyncio.StreamReader]:
    if proc.stdout is None or proc.stderr is None:
        raise RuntimeError("exec: process started without pipes")
    return proc.stdout, proc.stderr


class _Kept(deque[Line]):
    """A run's output kept for send/recv and its failure's message: its last KEEP_LIMIT, a line
    counted as its characters and LINE_COST (tiny lines cost Python objects, not bytes).
    Unbounded, a command printing 2 GB (a user's build, a `cat` of their file) took the
    agent's memory and then the agent (tester13); mgmt keeps it all. `cut`: lines left out."""

    def __init__(self) -> None:
        super().__init__()
        self.size = 0
        self.cut = 0

    def append(self, line: Line) -> None:
        super().append(line)
        self.size += len(line[1]) + LINE_COST
        while self.size > KEEP_LIMIT and len(self) > 1:
            self.size -= len(self.popleft()[1]) + LINE_COST
            self.cut += 1


async def _lines(stream: asyncio.StreamReader) -> AsyncIterator[str]:
    """Decoded lines (newline kept) until EOF; an over-long line comes in chunks."""
    while True:
        try:
            raw = await stream.readuntil(b"\n")
        except asyncio.IncompleteReadError as err:
            if err.partial:
                yield err.partial.decode(errors="replace")
            return
        except asyncio.LimitOverrunError as err:
            raw = await stream.read(err.consumed)
        yield raw.decode(errors="replace")


class _Groups:
    """The records of the running commands' process groups, per engine.

    Which exec resources an earlier agent on this prefix left a command's record of (their
    private directories holding a `running.*`) is looked up once, in one executor job, so
    that a resource without any costs its init no job of its own. This engine's records are
    written and removed by a thread of their own, in order (each record before its removal),
    no run waiting for either: two jobs of the loop's executor per run cost 0.65 M
    instructions, mostly their hand-offs back to the loop (docs/benchmarks.md). A record is
    written as soon as before (beside the run); one whose removal had not been done when the
    agent died is stale, and harmless: the next start signals nothing for it (`proc.
    stop_recorded_group`: the start time, the group). The engine's stop waits for the thread
    to finish what it was given."""

    def __init__(self, kind_dir: Path) -> None:
        self._kind_dir = kind_dir
        self._task = asyncio.ensure_future(asyncio.to_thread(_with_records, kind_dir))
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="exec-records")
        self._guard: subprocess.Popen[bytes] | None = None  # resources._lib.reaper, once begun
        self._guard_end: int | None = None  # our end of its pipe: closed, it stops the records

    def guard(self, logger: logging.LoggerAdapter[logging.Logger]) -> None:
        """Start the guard that stops the recorded commands when the agent dies (reaper.py),
        unless it runs: at the first command's start (a fork and exec of /bin/sh, its start
        beside). One that cannot start is said once; the commands run all the same."""
        if self._guard_end is not None:
            return
        read_end, self._guard_end = os.pipe()  # both close-on-exec: no command inherits ours
        argv = [*reaper.GUARD_ARGV, str(self._kind_dir.absolute())]
        try:
            # stderr is the agent's: what it stopped is said where the agent's lines go.
            self._guard = subprocess.Popen(
                argv,
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, reaper.GUARD_VARIABLE: reaper.GUARD},
            )
        except OSError as err:
            logger.warning(
                "exec: cannot start the guard of its commands (%s): a command "
                "outlives a killed agent until the next one starts",
                err,
            )
        finally:
            os.close(read_end)

    async def stop_left(
        self, stop_left: Callable[[], list[tuple[str, int]]], name: str
    ) -> list[tuple[str, int]]:
        """`stop_left()` in a worker thread if the resource whose directory is `name` has
        records; what it stopped."""
        if name not in await asyncio.shield(self._task):
            return []
        return await asyncio.to_thread(stop_left)

    def write(self, job: Callable[[], None]) -> None:
        """Run `job` (a record's write or removal: blocking) in the records' thread, after
        those given before it."""
        self._writer.submit(job)

    async def aclose(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.to_thread(self._writer.shutdown)  # what it was given is done
        if self._guard_end is not None:
            os.close(self._guard_end)  # EOF: the guard finds no record (all ended) and exits
        if self._guard is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self._guard.wait, GUARD_WAIT)


def _with_records(kind_dir: Path) -> set[str]:
    """The names of the directories under `kind_dir` that hold a `running.*` record."""
    found: set[str] = set()
    try:
        entries = list(os.scandir(kind_dir))
    except FileNotFoundError:
        return found
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            with contextlib.suppress(OSError):
                if any(n.startswith("running.") for n in os.listdir(entry.path)):
                    found.add(entry.name)
    return found


class _ShownOutput:
    """What a run logs of its output (stdout and stderr together), redacted: its first
    SHOWN_HEAD lines as they come, its last SHOWN_TAIL at its end (`end`), and how many were
    left out between, each of those logged at DEBUG as it is left out (--verbose shows every
    line, in order). A line of binary output is logged as such. A command at DEBUG (ifcmd,
    a watchcmd's stdout) logs every line at DEBUG."""

    def __init__(
        self,
        logger: logging.LoggerAdapter[logging.Logger],
        level: int,
        redact: Callable[[str], str],
    ) -> None:
        self._logger = logger
        self._level = level
        self._redact = redact
        self._head = SHOWN_HEAD if level > logging.DEBUG else None
        self._tail: deque[tuple[str, str]] = deque()
        self._left = 0

    def line(self, label: str, text: str) -> None:
        shown = (label, _clipped(self._redact(_printable(text.rstrip("\n")))))
        if self._head is None or self._head > 0:
            if self._head is not None:
                self._head -= 1
            self._logger.log(self._level, "%s: %s", *shown)
            return
        if len(self._tail) == SHOWN_TAIL:
            self._left += 1
            self._logger.debug("%s: %s", *self._tail.popleft())
        self._tail.append(shown)

    def end(self) -> None:
        """The run ended: the lines held back (its last ones)."""
        if self._left:
            self._logger.log(
                self._level,
                "... %d output lines left out here (--verbose logs every line)",
                self._left,
            )
        while self._tail:
            self._logger.log(self._level, "%s: %s", *self._tail.popleft())
        self._left = 0


# Bytes that were not UTF-8 (decoded as U+FFFD), control characters but tab, CR and ESC.
_BINARY = re.compile("[\x00-\x08\x0a-\x0c\x0e-\x1a\x1c-\x1f\x7f\ufffd]")


def _printable(text: str) -> str:
    """`text`, or what it is when it is binary (bytes not UTF-8, control characters)."""
    if _BINARY.search(text):
        return f"({len(text)} characters of binary output, not shown)"
    return text


def _clipped(text: str) -> str:
    """`text`, or its first SHOWN_LINE characters and how many more there were."""
    if len(text) <= SHOWN_LINE:
        return text
    return f"{text[:SHOWN_LINE]}... ({len(text) - SHOWN_LINE:,} more characters)"


def _quoted(lines: list[str]) -> str:
    """A failure's last stderr lines, each clipped, within FAILURE_STDERR characters (its
    last lines; how many earlier ones were left out)."""
    shown: list[str] = []
    size = 0
    for line in map(_clipped, reversed(lines)):
        size += len(line) + 3
        if shown and size > FAILURE_STDERR:
            break
        shown.append(line)
    left = len(lines) - len(shown)
    head = [f"({left} earlier lines left out)"] if left else []
    return " | ".join(head + shown[::-1])


def _check_id(key: str, name: str) -> None:
    """A user or group is a name (no whitespace, ':' or control characters) or an id."""
    if name.isdigit():  # Unicode digits too: an id is ASCII digits, and in range
        parse_int(name, key, low=0, high=MAX_ID)
    elif not name or not name.isprintable() or any(c in name for c in " :"):
        raise ValidationError(f"expected a name or a number, got {show(name)}", key)
