"""Run the real `mgmt` command as a subprocess and wait on real events (logs, inotify)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import pytest

from engine.watcher import PathWatcher

T = TypeVar("T")
_SIGTERM = signal.SIGTERM  # (Daemon.signal hides the module in its class body)

ROOT = Path(__file__).resolve().parents[2]
MGMT = [sys.executable, "-m", "mgmt"]
NOBODY = 65534  # another real local user, through setpriv
SETPRIV = shutil.which("setpriv")
needs_another_user = pytest.mark.skipif(
    os.geteuid() != 0 or SETPRIV is None, reason="needs root and setpriv (another real user)"
)


def as_nobody(cwd: Path, script: str) -> str:
    """Run `script` (sh) as uid/gid 65534 in cwd; its stdout. It needs no search permission
    above cwd (the directory is entered before the user changes)."""
    assert SETPRIV is not None
    argv = [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    proc = subprocess.run(
        [*argv, "sh", "-c", script], cwd=cwd, check=True, timeout=30, capture_output=True, text=True
    )
    return proc.stdout


@contextlib.contextmanager
def searchable_dir(prefix: str, mode: int = 0o755) -> Iterator[Path]:
    """A new directory of root's that every user may search (`mode`), removed afterwards: for
    what another user (a setpriv'd agent, sshd reading a user's keys as that user, a unit's
    User=) must reach. In /tmp, not $TMPDIR nor tmp_path: pytest's directories are root's
    alone (0700), and so is a private $TMPDIR (`mktemp -d`, a suite run with one of its own:
    four tests failed so, 2026-12-07, e.g. sshd's 'Permission denied (publickey)')."""
    with tempfile.TemporaryDirectory(prefix=prefix, dir="/tmp") as made:
        os.chmod(made, mode)
        yield Path(made)


@contextlib.contextmanager
def short_tmpdir() -> Iterator[Path]:
    """A new private directory (0700) of a short path, removed afterwards: for a status.sock
    bound below it (a --tmp-prefix agent's, given it as $TMPDIR, or the test's own). A Unix
    socket's path is at most 107 bytes; below tmp_path under a $TMPDIR longer than /tmp (a
    suite run with one of its own, 2026-12-07: /tmp/flake-tmp.XXXX) it passed that ('AF_UNIX
    path too long': three tests, every time); under /tmp they had 7 bytes to spare. The
    agent's own sockets reach any depth since (mgmt.sockaddr); a test's own raw bind does not."""
    with tempfile.TemporaryDirectory(prefix="mgmt-t-", dir="/tmp") as made:
        yield Path(made)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel's pick)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_mgmt(
    args: Sequence[str],
    timeout: float = 60,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> tuple[int, str]:
    """Run `mgmt ARGS` to completion (blocking), `stdin` its input (else none); returns
    (exit code, stderr+stdout)."""
    import subprocess

    proc = subprocess.run(
        [*MGMT, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        check=False,
    )
    return proc.returncode, proc.stderr + proc.stdout


def nice_levels(pid: int) -> set[int]:
    """The nice levels of every thread of process PID (/proc/PID/task/*/stat)."""
    levels = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        levels.add(int(stat[stat.rindex(")") + 2 :].split()[16]))  # field 19: nice
    return levels


def run_once(front_end: str, path: Path) -> tuple[int, str]:
    """A one-shot `mgmt run` of PATH through FRONT_END (yaml, lang, puppet) in a temporary
    prefix, exiting once converged: (exit code, stderr+stdout)."""
    return run_mgmt(["run", "--tmp-prefix", "--converged-timeout=0", front_end, str(path)])


def listing(top: Path) -> list[str]:
    """Every path below `top` (relative to it), sorted."""
    return sorted(str(path.relative_to(top)) for path in top.rglob("*"))


class Daemon:
    """A running `mgmt run ...` whose log lines are collected and awaitable.

    Its $TMPDIR is its own (`tmpdir`, made in the test's): one left running at the end of its
    block is SIGKILLed, and a killed `--tmp-prefix` run cannot remove its prefix (the next run
    of the user sweeps it: mgmt/tmpprefix.py). In the test's $TMPDIR (the real /tmp) the
    suite's last such runs left theirs for good (leaks, 2026-12-07: `mgmt-<12 hex>/` with its
    lock and status.sock, in two of five CI runs). A killed agent's is removed with the
    directory; one that exited of itself must have left it empty (`_left`)."""

    def __init__(self, args: Sequence[str], cwd: Path = ROOT) -> None:
        self.args = list(args)
        self.cwd = cwd  # where `python -m mgmt` finds mgmt (another checkout: a copy)
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self.tmpdir: Path | None = None
        self._new_line = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    @property
    def env(self) -> dict[str, str]:
        """Its environment's difference from the test's: another `mgmt` run (`mgmt status`)
        given it finds the agent's temporary prefix where the agent made it."""
        assert self.tmpdir is not None
        return {"TMPDIR": str(self.tmpdir)}

    async def __aenter__(self) -> Daemon:
        self.tmpdir = Path(tempfile.mkdtemp(prefix="daemon-tmp-"))
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *MGMT,
                *self.args,
                cwd=self.cwd,
                env={**os.environ, **self.env},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except BaseException:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            raise
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if exc[0] is not None:  # shown by pytest with the failure
            print(f"--- mgmt {' '.join(self.args)} logged:\n{self.log}")
        if self.proc and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader:
            await asyncio.gather(self._reader, return_exceptions=True)
        left = self._left()
        assert self.tmpdir is not None
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        if exc[0] is None:
            assert not left, f"mgmt {' '.join(self.args)} left in its $TMPDIR: {left}"

    def _left(self) -> list[str]:
        """What the agent left in its $TMPDIR: nothing if it exited of itself (one killed by a
        signal, SIGKILL by the test or at the end of the block, or a crash's SIGABRT, leaves
        what it held: not counted)."""
        assert self.tmpdir is not None and self.proc is not None
        if self.proc.returncode is None or self.proc.returncode < 0:
            return []
        return listing(self.tmpdir)

    async def _read(self) -> None:
        assert self.proc and self.proc.stderr
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))
            self._new_line.set()

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    async def wait_log(self, text: str, timeout: float = 15, count: int = 1) -> None:
        """Wait until `text` has appeared in `count` log lines."""
        async with asyncio.timeout(timeout):
            while sum(text in line for line in self.lines) < count:
                self._new_line.clear()
                await self._new_line.wait()

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = 30) -> int:
        assert self.proc
        async with asyncio.timeout(timeout):
            code = await self.proc.wait()
        if self._reader:
            await self._reader
        return code

    async def stop(self, sig: signal.Signals = _SIGTERM, timeout: float = 30) -> int:
        """Signal it and wait for its exit code. One that does not exit in time is killed (its
        log shown) before the TimeoutError goes on: never left running (a Popen collected
        while it runs fails whichever later test is running: "unraisable exception")."""
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_exit(self)
            self.signal(sig)
            return await self.wait(timeout)


async def wait_logs(
    daemons: Sequence[Daemon], found: Callable[[], T | None], timeout: float = 15
) -> T:
    """Re-evaluate `found` whenever any of the daemons logs a line, until it is not None."""
    async with asyncio.timeout(timeout):
        while True:
            for daemon in daemons:
                daemon._new_line.clear()
            result = found()
            if result is not None:
                return result
            waits = [asyncio.ensure_future(d._new_line.wait()) for d in daemons]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()


async def wait_path(path: Path, predicate: Callable[[Path], bool], timeout: float = 10) -> None:
    """Wait, on inotify events (no polling), until predicate(path) holds."""
    async with asyncio.timeout(timeout), PathWatcher([path]) as watcher:
        if predicate(path):
            return
        async for _ in watcher:
            if predicate(path):
                return


def has_content(content: str) -> Callable[[Path], bool]:
    def check(path: Path) -> bool:
        try:
            return path.read_text() == content
        except OSError:
            return False

    return check


def has_mode(mode: int) -> Callable[[Path], bool]:
    def check(path: Path) -> bool:
        try:
            return (path.stat().st_mode & 0o7777) == mode
        except OSError:
            return False

    return check


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def small_fs(path: Path, size: str) -> Iterator[Callable[[str], None]]:
    """A tmpfs of `size` mounted on `path` (skip the test where mounting is not allowed);
    yields a function that remounts it with other options ("size=200m", "ro")."""

    def mount(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["mount", "-t", "tmpfs", *args, "tmpfs", str(path)],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )

    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None or mount("-o", f"size={size},mode=0700").returncode:
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")

    def remount(options: str) -> None:
        done = mount("-o", f"remount,{options}")
        assert done.returncode == 0, done.stderr

    try:
        yield remount
    finally:
        subprocess.run(["umount", "-l", str(path)], timeout=10, check=False)


def fill(path: Path) -> None:
    """Write `path` until its file system is full (ENOSPC)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)


__all__ = [
    "ROOT",
    "Daemon",
    "fill",
    "has_content",
    "has_mode",
    "pid_alive",
    "run_mgmt",
    "signal",
    "small_fs",
    "wait_path",
]


class Notified:
    """systemd's notify socket for the agents started meanwhile ($NOTIFY_SOCKET, set with
    `monkeypatch.setenv`): what they said (READY=1, STATUS=...), line by line, in `said`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.said: list[str] = []
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(path))
        self._socket.setblocking(False)

    async def says(self, text: str, timeout: float = 15) -> None:
        """Wait until a line said contains `text`."""
        async with asyncio.timeout(timeout):
            while not any(text in line for line in self.said):
                data = await asyncio.get_running_loop().sock_recv(self._socket, 4096)
                self.said.extend(data.decode().splitlines())

    def close(self) -> None:
        self._socket.close()


def guarded_exec_graph(
    tmp_path: Path, guard: str, exits: int, notify: bool | None = None, name: str = "guards"
) -> Path:
    """A graph file: f0 (wanted `want`), then an exec whose guard `guard` (ifcmd or nifcmd)
    overwrites f0 with `bad` and exits `exits`; its `cmd` touches `ran`. The edge f0 -> exec
    says `notify: NOTIFY` unless `notify` is None."""
    f0 = tmp_path / "f0"
    path = tmp_path / "g.yaml"
    said = "" if notify is None else f"\n    notify: {str(notify).lower()}"
    path.write_text(
        textwrap.dedent(f"""\
            graph: {name}
            resources:
              file:
                - name: f0
                  path: {f0}
                  content: "want\\n"
              exec:
                - name: guarded
                  cmd: 'touch {tmp_path}/ran'
                  shell: /bin/sh
                  {guard}: 'printf bad > {f0}; exit {exits}'
                  {guard.removesuffix("cmd")}shell: /bin/sh
            edges:
              - from: {{kind: file, name: f0}}
                to: {{kind: exec, name: guarded}}""")
        + said
        + "\n"
    )
    return path
