"""`python -m mgmt` and the `mgmt` command: `mgmt deploy` tries its thin path first
(`mgmt.deploy.client`: through the local agent, without importing the CLI), else the CLI;
`mgmt --version` is answered by `mgmt.version` alone (the CLI's imports: ~20 ms of its ~30).

`scripts/install.sh`'s `mgmt` launcher starts Python without `site` (`-S`, ~5 ms of every
start: the venv's paths, its `.pth` files): the thin path needs the standard library and this
package only. Whatever needs the installed packages runs `site` first (`mgmt.full_site`).

A finished `mgmt run` exits without the interpreter's teardown (freeing each of its objects one
by one: ~5 ms of a cron run), once no other thread runs and the `atexit` handlers (logging's
flush...) have; the kernel's teardown of its inotify watches is handed to a process that ends
with it (`engine.inotify.leave_to_exit`: 10-17 ms its parent no longer waits for)."""

import os
import sys

from mgmt import full_site, hold_signals


def quiet_stderr() -> None:
    """Started with fd 2 closed (`2>&-`): sys.stderr is None, and print(..., file=sys.stderr)
    writes to stdout (a usage error amid `mgmt deploy --list`'s output), and the next file
    opened takes fd 2 (what a child writes to its stderr would land in it). /dev/null takes
    fd 2's place, and sys.stderr writes there: nothing is said, as `mgmt run` logs nothing."""
    if sys.stderr is not None:
        return
    null = os.open(os.devnull, os.O_WRONLY)
    if null != 2:
        os.dup2(null, 2)  # inheritable: a child's stderr too
        os.close(null)
    else:
        os.set_inheritable(2, True)
    sys.stderr = open(2, "w", errors="backslashreplace", closefd=False)  # noqa: SIM115 (for good)


def _exit_now(code: int) -> None:
    """Exit with `code` now, the output flushed, as the interpreter's exit would but without its
    teardown: first its wait for the other threads (executors told to end, every non-daemon
    thread joined: `threading._shutdown`), then the `atexit` handlers. Before, a thread still
    running made this return, and the interpreter's teardown crashed now and then (SIGSEGV
    after "exiting", no Python frame: seen in CI under load); returns only where that wait is
    not Python's to make (no `threading._shutdown`), leaving it to the interpreter."""
    import atexit
    import threading

    shutdown = getattr(threading, "_shutdown", None)
    if threading.current_thread() is not threading.main_thread() or shutdown is None:
        main = threading.main_thread()
        if any(t is not main and not t.daemon and t.is_alive() for t in threading.enumerate()):
            return
    else:
        shutdown()
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        return  # let the interpreter say it (or stay silent, as it would)
    os._exit(code)


def main() -> int:
    quiet_stderr()  # first: fd 2 is not free for the pipe of the signals held
    if sys.argv[1:2] == ["--version"]:  # as the CLI's parse answers it, without its imports
        from mgmt.version import version

        print(version())
        return 0
    if sys.argv[1:2] == ["run"]:
        hold_signals()  # a stop signal from now on is a clean stop (mgmt.hold_signals)
        # A crash of the interpreter itself (SIGSEGV, SIGBUS, SIGABRT...) prints every
        # thread's stack to stderr (the journal) before the process dies: a built-in module,
        # no thread, a few microseconds.
        import faulthandler

        faulthandler.enable(all_threads=True)
    if sys.argv[1:2] == ["deploy"]:
        from mgmt.deploy.client import main as thin

        code = thin(sys.argv[2:])
        if code is not None:  # done: exit without the interpreter's teardown
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except OSError:
                return code  # let the interpreter say it
            os._exit(code)
    try:
        from mgmt import quickimport

        quickimport.install()  # first: the imports from here on find and load for less
        full_site()
        from engine.collector import lasting

        with lasting():  # imports: objects that live as long as the process, and no garbage
            from mgmt import lazyimport

            lazyimport.install()  # ssl runs on first use: a graph file's run does no TLS
            from mgmt import quickclasses  # imports dataclasses: after lazyimport's install

            quickclasses.install()  # dataclasses' methods made without compiling source
            with lazyimport.patterns_on_use("logging", "string"):  # their unused styles'
                import logging  # noqa: F401
            from mgmt.cli import main as cli

        code = cli()
    except KeyboardInterrupt:  # a Ctrl-C before the agent's handlers: as mgmt.cli's own
        return 1
    if sys.argv[1:2] in (["run"], ["check"]):  # (a big program's check: a second of teardown)
        _exit_now(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
