"""Compiling a Puppet manifest into its catalog with the real Puppet (`puppet catalog compile`).

Puppet runs as a subprocess (argv, bounded by a timeout) with every directory it writes to
(vardir, confdir, codedir, ...) in a fresh private temporary directory that is removed after
the run: the host's /etc/puppet and /var/cache/puppet are neither read nor changed, and nothing
another user wrote is used. Modules come from `--modulepath` (default: Debian's
/usr/share/puppet/modules, where the cron, host and mount types live since Puppet 6).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ResourceError
from mgmt.yamlgraph import GraphFileError
from resources._lib.proc import run_command

PUPPET = "puppet"
MODULEPATH = "/usr/share/puppet/modules"
TIMEOUT = 300.0  # seconds a compile may take (facter alone takes one or two)
# "(file: /x.pp, line: 3, column: 7)" at the end of Puppet's error messages; "(line: 1,
# column: 26)" for inline code, "(file: /x.pp)" at the end of the input.
_WHERE = re.compile(
    r"\s*\((?:file: (?P<file>[^,)]+))?(?:, )?(?:line: (?P<line>\d+)(?:, column: (?P<col>\d+))?)?\)"
)


@dataclass(frozen=True)
class Manifest:
    """What to compile: a manifest file, or inline code (`-e`)."""

    file: Path | None = None
    code: str | None = None
    modulepath: str = MODULEPATH

    @property
    def label(self) -> str:
        """How errors name the input."""
        return str(self.file) if self.file is not None else "<puppet -e>"


def isolated(work: Path) -> list[str]:
    """Puppet's options that keep it to `work` (every directory it reads its settings from
    or writes to, made by Puppet there) and its output plain text (no colour codes)."""
    argv = ["--color=false"]
    for setting in ("vardir", "confdir", "codedir", "rundir", "logdir", "publicdir"):
        argv += [f"--{setting}", str(work / setting)]
    return argv


async def compile_catalog(manifest: Manifest, hostname: str, timeout: float = TIMEOUT) -> Any:
    """The catalog of `manifest` for node `hostname`, as Puppet's JSON; GraphFileError with
    Puppet's own message (one line, `FILE:LINE:COL: puppet: ...`) if it does not compile."""
    if shutil.which(PUPPET) is None:
        raise GraphFileError(
            [f"{manifest.label}: puppet is not installed (Debian: apt-get install puppet-agent)"]
        )
    if manifest.file is not None:
        try:  # Puppet compiles a missing manifest as an empty one: every resource would go
            manifest.file.stat()
        except OSError as missing:
            problem = f"{manifest.label}: cannot read: {missing.strerror}"
            raise GraphFileError([problem]) from None
    work = Path(tempfile.mkdtemp(prefix="mgmt-puppet-"))  # 0700, new: ours alone
    try:
        argv = [PUPPET, "catalog", "compile", "--render-as", "json", *isolated(work)]
        argv += ["--log_level=warning", "--certname", hostname]
        argv += ["--basemodulepath", manifest.modulepath]
        if manifest.file is not None:
            argv += ["--manifest", str(manifest.file.absolute())]
        else:
            argv += ["--code", manifest.code or ""]
        try:
            code, out, err = await run_command(
                argv, timeout=timeout, ok=None, label="puppet catalog compile"
            )
        except ResourceError as error:
            raise GraphFileError([f"{manifest.label}: {error}"]) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if code != 0:
        raise GraphFileError([_failure(manifest, err or out, code)])
    start = out.find("{")
    try:
        catalog = json.loads(out[start:]) if start >= 0 else None
    except ValueError:
        catalog = None
    if not isinstance(catalog, dict) or not isinstance(catalog.get("resources"), list):
        raise GraphFileError([f"{manifest.label}: puppet printed no catalog: {out[:200]!r}"])
    return catalog


def _failure(manifest: Manifest, output: str, code: int) -> str:
    """Puppet's first error, as one line naming the file, line and column it gives."""
    errors = [
        line.removeprefix("Error: ").strip()
        for line in output.splitlines()
        if line.startswith("Error: ") and not line.startswith("Error: Facter:")
    ]
    if not errors:
        return f"{manifest.label}: puppet exited with code {code}: {output.strip()[-300:]}"
    message = errors[0]
    message = re.sub(r" on node \S+$", "", message)
    wheres = [m for m in _WHERE.finditer(message) if m["file"] or m["line"]]
    place, line, col = manifest.label, None, None
    if wheres:
        where = wheres[-1]
        message = (message[: where.start()] + message[where.end() :]).strip()
        place, line, col = where["file"] or place, where["line"], where["col"]
    if line is None and "end of input" in message:
        line = _last_line(manifest)
    place += (":" + line if line else "") + (":" + col if col else "")
    return f"{place}: puppet: {message}"


def _last_line(manifest: Manifest) -> str | None:
    """The line "end of input" is on: the last one."""
    try:
        text = manifest.code if manifest.file is None else manifest.file.read_text()
    except (OSError, UnicodeDecodeError):
        return None
    return str(max(1, len((text or "").rstrip("\n").split("\n"))))
