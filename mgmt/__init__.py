"""mgmt: the agent, its front-ends and its commands (`mgmt.__main__`)."""

import sys

_SITE: list[bool] = []  # [True] once `full_site` ran `site`


def full_site() -> None:
    """The installed packages' paths, if the interpreter started without `site` (-S):
    `scripts/install.sh`'s `mgmt` launcher does, for the thin `mgmt deploy` (`mgmt.__main__`),
    which needs the standard library and this package only."""
    if sys.flags.no_site and not _SITE:
        _SITE.append(True)
        import site

        site.main()


_HELD: list[int] = []  # the read and write ends of the pipe the held signals are written to
_STOPS: list[int] = []  # the stop signals received while held, before the agent runs


def _held(signum: int, frame: object) -> None:
    """The Python-level handler while the signals are held: the pipe keeps them for the
    agent's `mgmt.signals.Signals`. A second stop signal before the agent runs stops at once,
    as a second one does after (exit 1, in `mgmt.cli`)."""
    if signum == 1:  # SIGHUP: a reload, once the agent runs
        return
    if _STOPS:
        raise KeyboardInterrupt
    _STOPS.append(signum)


def hold_signals() -> None:
    """At the start of `mgmt run`: SIGINT, SIGTERM and SIGHUP are kept in a pipe until the agent
    handles them, rather than acted on at once (a SIGTERM in the first ~0.1 s killed the run,
    exit 143; a SIGINT raised KeyboardInterrupt among the imports, exit 1, silent). The agent
    then reads them in order: a stop signal received before it ran is a clean stop, before
    anything is applied. Built-in modules only (`_signal`, `os`): nothing read from disk."""
    import os
    from _signal import (  # type: ignore[import-not-found]  # mgmt.signals says why
        SIGHUP,
        SIGINT,
        SIGTERM,
        set_wakeup_fd,
        signal,
    )

    if _HELD:
        return
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)
    _HELD.extend((read, write))
    set_wakeup_fd(write, warn_on_full_buffer=False)
    for sig in (SIGINT, SIGTERM, SIGHUP):
        signal(sig, _held)


def held_signals() -> tuple[int, int] | None:
    """The pipe of `hold_signals` (read fd, write fd), if it was made; the stop signals seen
    before the agent are forgotten (it reads them from the pipe)."""
    _STOPS.clear()
    return (_HELD[0], _HELD[1]) if _HELD else None
