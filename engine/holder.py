"""A process that holds a descriptor of this one's until this one exits (engine.inotify's
`hold_until_exit`): `cat`, its input a pipe whose only writer is this process, so that it
reads until this process's exit closes that end, then exits, closing the descriptor it was
given.

It is started by glibc's posix_spawn through ctypes' CDLL, which releases the GIL around the
call: the calling thread waits there for the child's exec (a vfork), the others run Python
meanwhile. subprocess.Popen (`_posixsubprocess`) keeps the GIL through its fork and exec:
every thread of this process waited for the child's exec, 0.5-1.4 ms on a quiet machine, 10 ms
(p90) beside two busy loops on two cores, twice per cron run (issue 16). The child gets its
input at 0, /dev/null at 1 and 2, the held descriptors from 3 on, and nothing else
(`posix_spawn_file_actions_addclosefrom_np`, glibc 2.34): no other descriptor of this process
leaks into it. Its signal mask is empty and SIGPIPE and SIGXFSZ are back to their default
action (Python ignores them; Popen's `restore_signals` does the same); handled signals are
reset by glibc. Without those functions (another libc, an older glibc): Popen, as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import select
import signal
import subprocess
from collections.abc import Sequence

# posix_spawn through CDLL: the GIL released around the call (it waits for the child's exec);
# the quick calls that fill its arguments through PyDLL, the GIL held (through CDLL each would
# release it and take it back: a wait of up to a switch interval, 5 ms, while another thread
# runs Python).
_libc = ctypes.PyDLL(None)

# <spawn.h>
_SETSIGDEF = 0x04
_SETSIGMASK = 0x08
# Room for glibc's posix_spawn_file_actions_t (80 bytes on x86-64), posix_spawnattr_t (336)
# and sigset_t (128), with a margin for another architecture's.
_ACTIONS_SIZE = 256
_ATTR_SIZE = 1024
_SIGSET_SIZE = 256
_DEV_NULL = b"/dev/null"
# The child's descriptors: its input, its output and errors, then the ones it holds.
_STDIN, _STDOUT, _STDERR, _HELD = 0, 1, 2, 3


# None where the libc has no such function (a missing symbol is an AttributeError).
_CLOSEFROM = getattr(_libc, "posix_spawn_file_actions_addclosefrom_np", None)
_SPAWN = getattr(ctypes.CDLL(None), "posix_spawn", None) if _CLOSEFROM is not None else None


class Holder:
    """A started holder: its pid, and the writing end of its input (`release` closes it, as
    this process's exit does: the holder then exits)."""

    def __init__(self, pid: int, pipe: int, popen: subprocess.Popen[bytes] | None = None) -> None:
        self.pid = pid
        self._pipe: int | None = pipe
        self._popen = popen

    def release(self) -> None:
        """Close the holder's input here: it reads its end and exits."""
        pipe, self._pipe = self._pipe, None
        if self._popen is not None:
            assert self._popen.stdin is not None
            self._popen.stdin.close()
        elif pipe is not None:
            os.close(pipe)

    def wait(self, timeout: float) -> int:
        """Wait for the holder's exit (after `release`), at most `timeout` seconds
        (TimeoutError): its exit status, as Popen's."""
        if self._popen is not None:
            try:
                return self._popen.wait(timeout)
            except subprocess.TimeoutExpired as err:
                raise TimeoutError(f"holder {self.pid} still runs after {timeout} s") from err
        pidfd = os.pidfd_open(self.pid)
        try:
            if not select.select([pidfd], [], [], timeout)[0]:
                raise TimeoutError(f"holder {self.pid} still runs after {timeout} s")
        finally:
            os.close(pidfd)
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)


def start(program: str, fds: Sequence[int]) -> Holder:
    """Start `program` (an absolute path: `cat`) holding a copy of each of `fds`, reading a
    pipe of this process's until its exit (see the module doc). OSError if it could not
    start."""
    if _SPAWN is None:
        return _popen(program, fds)
    read, write = os.pipe2(os.O_CLOEXEC)
    try:
        pid = _spawn(program, read, fds)
    except BaseException:
        os.close(write)
        raise
    finally:
        os.close(read)
    return Holder(pid, write)


def _popen(program: str, fds: Sequence[int]) -> Holder:
    """`start` through subprocess.Popen: the GIL held while the child starts."""
    popen = subprocess.Popen(
        [program],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        pass_fds=fds,
    )
    assert popen.stdin is not None
    return Holder(popen.pid, popen.stdin.fileno(), popen)


def _spawn(program: str, read: int, held: Sequence[int]) -> int:
    """posix_spawn `program` with `read` at its 0, /dev/null at 1 and 2, `held` from 3 on and
    no other descriptor; its pid."""
    assert _SPAWN is not None and _CLOSEFROM is not None
    with contextlib.ExitStack() as undo:
        last = _HELD + len(held) - 1  # the child's highest descriptor
        sources = []
        for fd in (read, *held):
            source = fd
            if fd <= last:  # overwritten by a target before its own dup2 (a low descriptor
                # of this process was closed): a copy above them all, closed after
                source = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, last + 1)
                undo.callback(os.close, source)
            sources.append(source)
        actions = ctypes.create_string_buffer(_ACTIONS_SIZE)
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        _check(_libc.posix_spawn_file_actions_init(actions))
        undo.callback(_libc.posix_spawn_file_actions_destroy, actions)
        _check(_libc.posix_spawnattr_init(attr))
        undo.callback(_libc.posix_spawnattr_destroy, attr)
        _check(_libc.posix_spawn_file_actions_adddup2(actions, sources[0], _STDIN))
        flags = os.O_WRONLY
        _check(_libc.posix_spawn_file_actions_addopen(actions, _STDOUT, _DEV_NULL, flags, 0))
        _check(_libc.posix_spawn_file_actions_adddup2(actions, _STDOUT, _STDERR))
        for target, source in enumerate(sources[1:], _HELD):
            _check(_libc.posix_spawn_file_actions_adddup2(actions, source, target))
        _check(_CLOSEFROM(actions, last + 1))
        empty, default = _sigset(), _sigset(signal.SIGPIPE, signal.SIGXFSZ)
        _check(_libc.posix_spawnattr_setsigmask(attr, empty))
        _check(_libc.posix_spawnattr_setsigdefault(attr, default))
        _check(_libc.posix_spawnattr_setflags(attr, ctypes.c_short(_SETSIGMASK | _SETSIGDEF)))
        pid = ctypes.c_int()
        argv = (ctypes.c_char_p * 2)(os.fsencode(program), None)
        environ = ctypes.c_void_p.in_dll(_libc, "environ")
        _check(_SPAWN(ctypes.byref(pid), argv[0], actions, attr, argv, environ))
        return pid.value


def _sigset(*numbers: int) -> ctypes.Array[ctypes.c_char]:
    """A sigset_t holding `numbers`."""
    sigset = ctypes.create_string_buffer(_SIGSET_SIZE)
    _libc.sigemptyset(sigset)
    for number in numbers:
        _libc.sigaddset(sigset, number)
    return sigset


def _check(code: int) -> None:
    """posix_spawn's functions return an error number (0: done)."""
    if code:
        raise OSError(code, os.strerror(code))
