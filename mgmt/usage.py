"""The command line's parsers: a usage error is one line (exit 2), not the whole synopsis."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

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
    "--depth": "not offered: an mcl program here cannot recurse (a recursive function is a "
    "dependency cycle, refused by `mgmt check`), so there is no depth to limit",
    "--converged-timeout-no-exit": "not needed: without --converged-timeout the agent never "
    "exits on convergence (mgmt's newer `--converger-timeout N` without `--converged-exit` is "
    "the same, and taken)",
    "--wait": "not offered: `mgmt run empty` runs the cluster's newest deploy, and waits for "
    "one if there is none (docs/deploys.md)",
    "--puppet-conf": "not offered: the manifest is compiled by `puppet` with its own settings; "
    "--modulepath, --hiera-config and --puppet-environment give what a puppet.conf would "
    "(docs/puppet.md)",
    "--yaml": "mgmt's old spelling: give `yaml FILE` after the flags (`mgmt run [flags] yaml "
    "FILE`)",
    "--lang": "mgmt's langpuppet front-end is not offered: run the program (`lang FILE`) and "
    "the manifest (`puppet FILE`) as two agents, each with its own --prefix",
    "--puppet": "mgmt's langpuppet front-end is not offered: run the program (`lang FILE`) and "
    "the manifest (`puppet FILE`) as two agents, each with its own --prefix",
    "--allow-tmp-prefix": "not offered: give --tmp-prefix, or a --prefix this agent can create",
    "--license": "not offered: the project's license is in its repository",
    "--enable": "`mgmt setup --install-service` writes and enables the unit (mgmt's `setup svc "
    "--install --enable`), --start also starts it",
    "--binary-path": "not needed: `mgmt setup --install-service` runs the agent it is run with",
    "--no-network": "not needed: a run whose graph needs no cluster starts no etcd and opens "
    "no port (docs/clustering.md, When the cluster starts); one whose graph does (exports, "
    "collect, kv) cannot run without it",
    "--pgp-key-path": _NO_PGP,
    "--pgp-identity": _NO_PGP,
}


# Flags of mgmt's deploy that `mgmt deploy` here does not take (they are `mgmt run`'s here).
DEPLOY_FLAGS = dict.fromkeys(
    ("--noop", "--sema", "--no-autoedges"),
    "a deploy here carries the program only: give it to the hosts' `mgmt run` (docs/deploys.md)",
)

# mgmt's commands that this project does not have, with what to use instead.
MGMT_COMMANDS = {
    "get": "not offered: remote modules are not downloaded here: put them in the `path:` of "
    "the program's metadata.yaml (docs/language.md, Modules)",
    "etcd": "not needed: `mgmt run` runs etcd itself when a graph needs the cluster "
    "(docs/clustering.md)",
    "firstboot": "not offered: install the agent as a service with `mgmt setup --install-service`",
    "tools": "not offered",
    "docs": "not offered: the documentation is docs/ in the repository",
    "provisioner": "not offered",
}


def mgmt_flag_hint(flag: str, table: dict[str, str] | None = None) -> str:
    """' (mgmt's --x: what to do here)' for one of mgmt's flags this project does not take,
    else ''."""
    name = flag.partition("=")[0]
    hint = (table or MGMT_FLAGS).get(name)
    return f" (mgmt's {name}: {hint})" if hint else ""


# The command whose usage errors a parser says, when it is not the parser's own: `mgmt setup`
# hands the rest of its command line to `mgmt run`'s parser, and its errors are setup's.
_speaking_for: list[str] = []


@contextlib.contextmanager
def errors_of(prog: str) -> Iterator[None]:
    """Within it, every Parser's usage error names `prog` (its --help too) instead of its own."""
    _speaking_for.append(prog)
    try:
        yield
    finally:
        _speaking_for.pop()


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors say what is wrong in one line and where the
    synopsis is (`--help`), instead of printing the whole synopsis first; an unknown flag that
    is one of mgmt's says what to do here instead, another one the close flag there is.

    A flag is taken by its whole name only (allow_abbrev=False), as mgmt's (go-arg's
    findOption matches names exactly): argparse's prefix matching took `mgmt setup --install`
    for --install-service, and a flag added later could change what an abbreviation meant."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # (its sub-commands' parsers get it too)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        if _speaking_for:
            self.prog = _speaking_for[-1]
        prefix = "unrecognized arguments: "
        table = {**MGMT_FLAGS, **DEPLOY_FLAGS} if self.prog == "mgmt deploy" else MGMT_FLAGS
        if message.startswith(prefix) and " (mgmt's " not in message:
            flags = [w.partition("=")[0] for w in message[len(prefix) :].split() if w[:1] == "-"]
            hints = [mgmt_flag_hint(flag, table) for flag in flags]
            if flags and not any(hints):
                from engine.params import close_match

                hints = [close_match(flags[0], list(self._option_string_actions))]
            message += next((hint for hint in hints if hint), "")
        elif "ignored explicit argument" in message:  # go-arg takes --flag=true
            message += (
                ": a flag takes no value here: give it alone for true, leave it out for false"
            )
        elif message.startswith("argument command: invalid choice: "):
            word = message.split("'")[1] if "'" in message else ""
            hint = MGMT_COMMANDS.get(word)
            message += f" (mgmt's `{word}`: {hint})" if hint else ""
        line = f"{self.prog}: {message} (see {self.prog} --help)"
        print(line, file=sys.stderr)
        if os.environ.get("NOTIFY_SOCKET"):  # a unit's bad flag: `systemctl status` says it
            from mgmt.sdnotify import last_words

            last_words(line)
        sys.exit(2)
