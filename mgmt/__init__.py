"""mgmt: the agent, its front-ends and its commands (`mgmt.__main__`).

Here, what a command does at its start before its own imports (the thin `mgmt deploy` imports
nothing of the CLI, and a module more costs it ~0.6 M instructions, 1.4%): `full_site`,
`hold_signals`, and `warn_misspelled_env`, which every subcommand that reads MGMT_ variables
calls first (`mgmt run`, `check`, `setup`, `status`, `deploy`, its thin path too). The names of
the flags' variables are listed here, not made from `mgmt.config` (~20 ms of imports);
tests/e2e/test_cli.py keeps the two lists whole.
"""

import os
import sys

_SITE: list[bool] = []  # [True] once `full_site` ran `site`


def full_site() -> None:
    """The installed packages' paths, if the interpreter started without `site` (-S):
    `scripts/install.sh`'s `mgmt` launcher does, for the thin `mgmt deploy` (`mgmt.__main__`),
    which needs the standard library and this package only.

    setuptools' `distutils-precedence.pth` (in the venvs pip makes) imports its
    `_distutils_hack` and puts its finder first on sys.meta_path, asked at every import after,
    for an `import distutils` that mgmt never does: ~2.2 M instructions of a cron run (0.7%).
    `site` reads it with a stand-in in that module's place, whose `add_shim` does nothing; the
    stand-in is then removed, and the module imports as usual if anything asks for it."""
    if sys.flags.no_site and not _SITE:
        _SITE.append(True)
        import site

        stand_in = type(sys)(_DISTUTILS_HACK)
        stand_in.add_shim = lambda: None  # type: ignore[attr-defined]
        given = sys.modules.setdefault(_DISTUTILS_HACK, stand_in)
        try:
            site.main()
        finally:
            if given is stand_in and sys.modules.get(_DISTUTILS_HACK) is stand_in:
                del sys.modules[_DISTUTILS_HACK]


_DISTUTILS_HACK = "_distutils_hack"


def default_prefix() -> str:
    """The prefix when neither --prefix nor MGMT_PREFIX gives one, as mgmt's: systemd's
    $STATE_DIRECTORY (its first, if several), else for a user other than root
    $XDG_CACHE_HOME/mgmt or ~/.cache/mgmt, else /var/lib/mgmt."""
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return state
    if os.geteuid() != 0:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
        if cache.startswith("/"):
            return os.path.join(cache, "mgmt")
    return "/var/lib/mgmt"


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


# MGMT_<FLAG> of every option of `mgmt run` (mgmt.config.option_fields).
FLAG_ENV = frozenset(
    {
        "MGMT_HOSTNAME",
        "MGMT_PREFIX",
        "MGMT_TMP_PREFIX",
        "MGMT_CONVERGED_TIMEOUT",
        "MGMT_CONVERGER_TIMEOUT",
        "MGMT_CONVERGED_EXIT",
        "MGMT_MAX_RUNTIME",
        "MGMT_NOOP",
        "MGMT_DETAILED_EXITCODES",
        "MGMT_SEMA",
        "MGMT_NO_WATCH",
        "MGMT_NICE",
        "MGMT_GRAPHVIZ",
        "MGMT_NO_AUTOEDGES",
        "MGMT_PUPPET_FALLBACK",
        "MGMT_MODULEPATH",
        "MGMT_HIERA_CONFIG",
        "MGMT_PUPPET_ENVIRONMENT",
        "MGMT_NO_AUTOGROUP",
        "MGMT_PROMETHEUS",
        "MGMT_STATUS",
        "MGMT_PROMETHEUS_LISTEN",
        "MGMT_MAX_GRAPH_SIZE",
        "MGMT_MAX_RESOURCES",
        "MGMT_MAX_STEPS",
        "MGMT_SEEDS",
        "MGMT_CLIENT_URLS",
        "MGMT_SERVER_URLS",
        "MGMT_ADVERTISE_CLIENT_URLS",
        "MGMT_ADVERTISE_SERVER_URLS",
        "MGMT_IDEAL_CLUSTER_SIZE",
        "MGMT_NO_SERVER",
        "MGMT_EXPORT_GRACE",
        "MGMT_TLS_CA",
        "MGMT_TLS_CERT",
        "MGMT_TLS_KEY",
        "MGMT_PEER_TLS_CA",
        "MGMT_PEER_TLS_CERT",
        "MGMT_PEER_TLS_KEY",
        "MGMT_CLUSTER_USER",
        "MGMT_CLUSTER_PASSWORD_FILE",
        "MGMT_CLUSTER_CA_DIR",
        "MGMT_CLUSTER_CERT_DIR",
        "MGMT_INSECURE_CLUSTER",
        "MGMT_ETCD_HEARTBEAT_INTERVAL",
        "MGMT_ETCD_ELECTION_TIMEOUT",
        "MGMT_ETCD_QUOTA_BACKEND_BYTES",
        "MGMT_ETCD_COMPACTION_RETENTION",
        "MGMT_DEPLOY",
        "MGMT_TRUSTED_KEYS",
        "MGMT_ALLOW_UNSIGNED_DEPLOYS",
        "MGMT_DEPLOY_SWITCH",
        "MGMT_SIGN_KEY",
        "MGMT_LOG_FORMAT",
        "MGMT_VERBOSE",
        "MGMT_QUIET",
    }
)

# The MGMT_ variables read besides the flags': where resources find the host's files (tests
# and containers point them elsewhere), and the test suite's and benchmarks' own.
OTHER_ENV = frozenset(
    {
        "MGMT_FSTAB",
        "MGMT_HOSTNAME_FILE",
        "MGMT_HOSTS_FILE",
        "MGMT_JOURNAL_SOCKET",
        "MGMT_MACHINE_INFO_FILE",
        "MGMT_NETWORKD_DIR",
        "MGMT_PROC_SYS",
        "MGMT_SYSTEMD_UNIT_DIR",
        "MGMT_BENCH_PROFILE",
        "MGMT_BENCH_STAGES",
        "MGMT_TEST_NS",
    }
)

# mgmt's variables whose flags this project does not take (go-arg's `env:` names): `mgmt run`
# given one refuses it as it refuses its flag (mgmt.cli), rather than run as if it were unset.
MGMT_ENV_FLAGS = {"MGMT_NO_NETWORK": "--no-network", "MGMT_MODULE_PATH": "--module-path"}

_WARNED: list[bool] = []  # [True] once it ran: the thin deploy's fallback to the CLI says it once


def warn_misspelled_env(log_format: str = "text") -> None:
    """One line per MGMT_ variable of the environment that mgmt does not read but that is close
    to one it reads (`MGMT_CONVERGED_TIMOUT`): a typo would otherwise be ignored silently. Any
    other MGMT_ name is left alone: a program may read it (`sys.getenv`). Once per process.
    Said before logging is set up: with `log_format` "json", as a JSON line like the log's."""
    if _WARNED:
        return
    _WARNED.append(True)
    known = FLAG_ENV | OTHER_ENV | MGMT_ENV_FLAGS.keys()
    unknown = sorted(name for name in os.environ if name.startswith("MGMT_") and name not in known)
    if not unknown:
        return  # the common case: nothing imported
    import difflib  # only for a name mgmt does not read (~2.5 ms)

    names = sorted(known)
    for name in unknown:
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.85)
        if not close:
            continue
        early_warning(
            f"{name} is not a variable mgmt reads (ignored): did you mean {close[0]}?", log_format
        )


def early_warning(text: str, log_format: str = "text") -> None:
    """A warning said before logging is set up: one line on stderr, a JSON line like the
    log's with `log_format` "json"."""
    if log_format == "json":
        import logging

        from mgmt.log import JsonFormatter

        print(JsonFormatter().plain_line(logging.WARNING, "main", text), file=sys.stderr)
    else:
        print(f"mgmt: warning: {text}", file=sys.stderr)
