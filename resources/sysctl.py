"""sysctl: a kernel parameter, set now (/proc/sys) and persisted for boot (mgmt's sysctl).

The name is the dotted key (`net.ipv4.ip_forward`). As in mgmt two sub-checks are ANDed:
runtime (the value in /proc/sys/<key with '/'>) and persist (the line `<key> = <value>` in
/etc/sysctl.d/99-<key>.conf, or `path`: only the key's line is edited, the file's other lines
kept, so that several keys may share one file). Values are compared with runs of whitespace
collapsed (the kernel prints `40000\t50000` for "40000 50000"). The persisted file is watched
with inotify. The
kernel signals a runtime change (POLLPRI) only for the few keys with poll support
(kernel.hostname, kernel.domainname): those are watched; drift of any other key is seen at the
next event or `meta: poll` tick. See docs/resources/sysctl.md.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from dataclasses import dataclass, field

from engine.errors import ResourceError, ValidationError
from engine.params import EMPTY_IS_UNSET
from engine.resource import Resource, register
from engine.watcher import PathWatcher
from resources._lib import tablefile
from resources._lib.events import pump_events
from resources._lib.lines import rejoin, split_lines, write_step
from resources._lib.plan import Step, apply_steps, nothing_to_do, value_change
from resources._lib.pollpri import PriWatch
from resources._lib.proc import file_lock
from resources._lib.rewrites import wrote

CONF_DIR = "/etc/sysctl.d/"
CONF_PREFIX = "99-"
PROC_SYS = "/proc/sys"
READ_LIMIT = 1 << 16


def proc_sys() -> str:
    """Where the kernel's parameters are: /proc/sys ($MGMT_PROC_SYS for tests)."""
    return os.environ.get("MGMT_PROC_SYS") or PROC_SYS


@register("sysctl")
@dataclass(kw_only=True, eq=False)
class SysctlRes(Resource):
    DRIFTS = True  # its repairs are watched for churn (engine.churn)
    # The value, as the kernel prints it back (no trailing newline). Required.
    value: str
    # Set the value in the running kernel now. Default true.
    runtime: bool = True
    # Write it to a file read at boot (`path`). Default true.
    persist: bool = True
    # The persistent file (absolute, ends in .conf). Default /etc/sysctl.d/99-<name>.conf.
    path: str | None = field(default=None, metadata=EMPTY_IS_UNSET)

    @property
    def _proc(self) -> str:
        return os.path.join(proc_sys(), *self.name.split("."))

    @property
    def _file(self) -> str:
        return self.path if self.path is not None else f"{CONF_DIR}{CONF_PREFIX}{self.name}.conf"

    EDITS_FILES = True

    def edited_files(self) -> list[str]:
        """The persisted file, whose line of the key it edits."""
        return [os.path.normpath(self._file)] if self.persist else []

    def holds_edit(self, text: str) -> bool:
        return self._persisted(split_lines(text))

    def _persisted(self, lines: list[str]) -> bool:
        """The key's one line holds the value (runs of whitespace as one, as sysctl reads)."""
        mine = [old for old in lines if _key_of(old) == self.name]
        return len(mine) == 1 and _value_of(mine[0]).split() == self.value.split()

    def validate(self) -> None:
        super().validate()
        name = self.name
        if "/" in name:
            raise ValidationError(
                f"use the dotted form (net.ipv4.ip_forward), got {name!r}", "name"
            )
        if "=" in name or name != name.strip() or "" in name.split("."):
            raise ValidationError(
                f"expected a dotted key without '=', spaces, or an empty part ('..', a leading "
                f"or trailing '.'), got {name!r}",
                "name",
            )
        if not self.value or self.value != self.value.strip() or "\n" in self.value:
            raise ValidationError(
                "expected a non-empty value without surrounding whitespace", "value"
            )
        if not self.runtime and not self.persist:
            raise ValidationError("set runtime or persist (or both)", "persist")
        if self.persist and (not self._file.startswith("/") or not self._file.endswith(".conf")):
            raise ValidationError(
                f"expected an absolute path ending in .conf, got {self._file!r}", "path"
            )
        try:
            st = os.stat(self._proc)
        except FileNotFoundError:
            raise ValidationError(
                f"no such kernel parameter ({self._proc} does not exist)", "name"
            ) from None
        except OSError as err:
            raise ValidationError(f"cannot read {self._proc}: {err.strerror}", "name") from None
        if stat.S_ISDIR(st.st_mode):
            raise ValidationError(f"{name} is a group of parameters, not one", "name")
        if self.runtime and not st.st_mode & 0o222:
            raise ValidationError(
                f"{name} is read-only in this kernel (mode {stat.S_IMODE(st.st_mode):04o}); "
                "with runtime: false it is only persisted",
                "name",
            )

    async def watch(self) -> None:
        files = [self._file] if self.persist else []
        async with PathWatcher(files) as persisted:
            if not self.runtime:
                await self.handle.event()
                await pump_events(self.handle, [persisted])
                return
            async with PriWatch(self._proc) as kernel:
                await self.handle.event()
                await pump_events(self.handle, [persisted, kernel])

    async def check_apply(self, apply: bool) -> bool:
        if not self.persist:
            return await self._check_apply(apply)
        async with file_lock(self.handle.shared, self._file):  # other keys of the file wait
            return await self._check_apply(apply)

    async def _check_apply(self, apply: bool) -> bool:
        steps: list[Step] = []
        if self.runtime:
            have = await asyncio.to_thread(self._read_runtime)
            if have.split() != self.value.split():
                would, done = value_change(self.name, True)
                steps.append(Step(would, done, self._write_runtime))
        persist = await asyncio.to_thread(self._persist_step) if self.persist else None
        steps += [persist] if persist is not None else []
        if not steps:
            return nothing_to_do(self.handle, f"{self.name} has the value")
        await apply_steps(self.handle, steps, apply, errors=(OSError,))
        if apply and persist is not None:
            wrote(self.handle, self._file)
        return False

    def _persist_step(self) -> Step | None:
        """The rewrite of the persisted file, if its line of the key is not the wanted one."""
        text = tablefile.read_text(self._file, READ_LIMIT, errors="surrogateescape")
        lines = split_lines(text or "")
        line = f"{self.name} = {self.value}"
        if self._persisted(lines):
            return None
        new = tablefile.replace(lines, lambda old: _key_of(old) == self.name, line)
        what = f"{self.name} in {self._file}"  # not the value (docs/security.md, "Secrets")
        return write_step(
            self._file, rejoin(new, text), text is None, f"persist {what}", f"persisted {what}",
            new_mode=0o644,
        )  # fmt: skip

    def _read_runtime(self) -> str:
        try:
            with open(self._proc, "rb") as handle:
                return handle.read(READ_LIMIT).decode(errors="replace")
        except OSError as err:
            raise ResourceError(f"cannot read {self._proc}: {err.strerror}") from err

    def _write_runtime(self) -> None:
        try:
            with open(self._proc, "wb") as handle:
                handle.write((self.value + "\n").encode())
        except OSError as err:
            if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise ResourceError(
                    f"cannot set {self.name}: it is read-only here ({err.strerror}; a container "
                    "or a /proc/sys mounted read-only); with runtime: false it is only persisted"
                ) from err
            raise ResourceError(
                f"the kernel refused the value of {self.name}: {err.strerror}"
            ) from err


def _key_of(line: str) -> str | None:
    """The key a sysctl.conf line sets, dotted (None: a comment, a blank or another line):
    `net.ipv4.ip_forward = 1`, `-net/ipv4/ip_forward=1` (a leading '-': errors ignored)."""
    text = line.strip()
    if not text or text[0] in "#;" or "=" not in text:
        return None
    key = text.split("=", 1)[0].strip().removeprefix("-").strip()
    if "/" in key and ("." not in key or key.index("/") < key.index(".")):
        return key.translate(_SLASH_FORM)  # net/ipv4/conf/eth0.100/x: '.' and '/' swap
    return key


_SLASH_FORM = str.maketrans("/.", "./")


def _value_of(line: str) -> str:
    return line.split("=", 1)[1].strip()
