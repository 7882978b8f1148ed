"""`mgmt --version`: the bare version, as mgmt prints it, and the commit of a git checkout.

Its own module, imported alone by `mgmt.__main__` for `mgmt --version` (the CLI, its
config's dataclasses and logging are ~25 ms of imports that the answer does not need); the
CLI's `parse` answers with the same function. Git is started without `subprocess` (with the
`re`, `enum` and `locale` it imports: ~12 ms, more than git's own run): `os.posix_spawnp`,
its output read from a pipe within TIMEOUT."""

import os

VERSION = "0.1.0"
TIMEOUT = 5.0  # seconds for git to tell the commit; then the bare version


def version() -> str:
    """The bare version, with `+COMMIT` when this code is a git checkout whose commit git can
    tell (after `git pull`, which code a host runs)."""
    root = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    if not os.path.exists(os.path.join(root, ".git")):
        return VERSION
    try:
        commit = _git_output(["git", "-C", root, "rev-parse", "--short=12", "HEAD"])
    except OSError:  # no git, or it failed, or it took longer than TIMEOUT
        return VERSION
    return f"{VERSION}+{commit}" if commit else VERSION


def _git_output(argv: list[str]) -> str:
    """What `argv` writes to its stdout (stripped), as `subprocess.run(argv,
    capture_output=True, text=True, timeout=TIMEOUT, check=True)` would have it: its stdin
    and stderr /dev/null; OSError if it cannot start, exits other than 0, or outlasts TIMEOUT
    (then it is killed and reaped)."""
    import select
    import time

    read, write = os.pipe()  # neither inherited: the child's stdout is a copy (dup2)
    try:
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            pid = os.posix_spawnp(
                argv[0],
                argv,
                os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, null, 0),
                    (os.POSIX_SPAWN_DUP2, write, 1),
                    (os.POSIX_SPAWN_DUP2, null, 2),
                ],
            )
        finally:
            os.close(null)
    except BaseException:
        os.close(read)
        raise
    finally:
        os.close(write)
    chunks: list[bytes] = []
    try:
        deadline = time.monotonic() + TIMEOUT
        poller = select.poll()
        poller.register(read, select.POLLIN)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                os.kill(pid, 9)  # SIGKILL, as subprocess.run's timeout
                os.waitpid(pid, 0)
                raise TimeoutError(f"{argv[0]} did not answer within {TIMEOUT:g} s")
            chunk = os.read(read, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise ChildProcessError(f"{argv[0]} exited with {os.waitstatus_to_exitcode(status)}")
    return b"".join(chunks).decode(errors="replace").strip()
