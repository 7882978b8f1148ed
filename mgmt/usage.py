"""The command line's parsers: a usage error is one line (exit 2), not the whole synopsis."""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

# mgmt's flags that this project does not take, with what to do instead, or why none is needed
# (README, CLI): a usage error naming one of them says so.
_ONE_CHECKER = "not needed: one type checker, nothing to choose (docs/language.md)"
_NO_DOWNLOAD = (
    "remote modules are not downloaded here: put them in the `path:` of the program's "
    "metadata.yaml (docs/language.md, Modules)"
)
_NO_PGP = (
    "not needed: no PGP keys here; deploys are signed with SSH keys (`mgmt deploy "
    "--sign-key`) and hosts trust them with --trusted-keys (docs/deploys.md)"
)
MGMT_FLAGS = {
    "--only-unify": "`mgmt check FILE.mcl` is that: it type-checks and runs nothing",
    "--skip-unify": "not offered: a program is always type-checked before it runs",
    "--unify-name": _ONE_CHECKER,
    "--unify-optimizations": _ONE_CHECKER,
    "--download": _NO_DOWNLOAD,
    "--only-download": _NO_DOWNLOAD,
    "--update": _NO_DOWNLOAD,
    "--module-path": _NO_DOWNLOAD,
    "--no-git": "not needed: deploys are chained by id and content hash, not by git commits "
    "(docs/deploys.md)",
    "--no-network": "not needed: a run whose graph needs no cluster starts no etcd and opens "
    "no port (docs/clustering.md, When the cluster starts); one whose graph does (exports, "
    "collect, kv) cannot run without it",
    "--pgp-key-path": _NO_PGP,
    "--pgp-identity": _NO_PGP,
}


def mgmt_flag_hint(flag: str) -> str:
    """' (mgmt's --x: what to do here)' for one of mgmt's flags this project does not take,
    else ''."""
    hint = MGMT_FLAGS.get(flag.partition("=")[0])
    return f" (mgmt's {flag.partition('=')[0]}: {hint})" if hint else ""


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors say what is wrong in one line and where the
    synopsis is (`--help`), instead of printing the whole synopsis first; an unknown flag that
    is one of mgmt's says what to do here instead, another one the close flag there is."""

    def error(self, message: str) -> NoReturn:
        prefix = "unrecognized arguments: "
        if message.startswith(prefix):
            flags = [w.partition("=")[0] for w in message[len(prefix) :].split() if w[:1] == "-"]
            hints = [mgmt_flag_hint(flag) for flag in flags]
            if flags and not any(hints):
                from engine.params import close_match

                hints = [close_match(flags[0], list(self._option_string_actions))]
            message += next((hint for hint in hints if hint), "")
        line = f"{self.prog}: {message} (see {self.prog} --help)"
        print(line, file=sys.stderr)
        if os.environ.get("NOTIFY_SOCKET"):  # a unit's bad flag: `systemctl status` says it
            from mgmt.sdnotify import last_words

            last_words(line)
        sys.exit(2)
