"""host: one entry of /etc/hosts, `IP NAME ALIASES... # comment` (Puppet's `host` type).

mgmt has no such kind; it is here for the Puppet front-end (docs/puppet.md) and for graphs
that want it. The entry for the name (the second field of a line) is added, replaced in place
when it differs, or removed; every other line, comments included, is kept. The file is read
through its directory's descriptor and rewritten atomically (resources/_lib/tablefile.py), and
watched with inotify: an edit by hand is repaired at once. $MGMT_HOSTS_FILE overrides the
default target (tests, chroots).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from dataclasses import dataclass, field
from typing import Literal

from engine.errors import ValidationError
from engine.params import EMPTY_IS_UNSET
from engine.resource import Resource, register
from engine.watcher import PathWatcher
from resources._lib import tablefile
from resources._lib.events import pump_events
from resources._lib.plan import apply_steps, nothing_to_do
from resources._lib.proc import file_lock
from resources._lib.rewrites import wrote

HOSTS = "/etc/hosts"
_BAD = set(" \t\n\r#\0")


def hosts_path() -> str:
    return os.environ.get("MGMT_HOSTS_FILE") or HOSTS


@register("host")
@dataclass(kw_only=True, eq=False)
class HostRes(Resource):
    DRIFTS = True  # its repairs are watched for churn (engine.churn)
    # "exists": the entry is in the file, as given; "absent": no entry for the name.
    state: Literal["exists", "absent"] = "exists"
    # The address (IPv4 or IPv6). Required with state exists.
    ip: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # Other names of the host, in order. Default none.
    aliases: list[str] = field(default_factory=list)
    # A comment at the end of the line. Default none.
    comment: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # The hosts file. Default /etc/hosts ($MGMT_HOSTS_FILE).
    target: str | None = field(default=None, metadata=EMPTY_IS_UNSET)

    def validate(self) -> None:
        super().validate()
        for key, name in [("name", self.name)] + [("aliases", a) for a in self.aliases]:
            if not name or _BAD & set(name):
                raise ValidationError(
                    f"expected a host name without spaces or '#', got {name!r}", key
                )
        if self.target is not None and not os.path.isabs(self.target):
            raise ValidationError(f"expected an absolute path, got {self.target!r}", "target")
        if self.comment is not None and set("\n\r\0") & set(self.comment):
            raise ValidationError("must be one line", "comment")
        if self.state == "absent":
            return
        if self.ip is None:
            raise ValidationError("is required with state: exists", "ip")
        try:
            ipaddress.ip_address(self.ip)
        except ValueError:
            raise ValidationError(
                f"expected an IPv4 or IPv6 address, got {self.ip!r}", "ip"
            ) from None

    @property
    def _file(self) -> str:
        return self.target or hosts_path()

    async def watch(self) -> None:
        async with PathWatcher([self._file]) as changes:
            await self.handle.event()
            await pump_events(self.handle, [changes])

    async def check_apply(self, apply: bool) -> bool:
        async with file_lock(self.handle.shared, self._file):  # other entries of the file wait
            return await self._check_apply(apply)

    async def _check_apply(self, apply: bool) -> bool:
        path = self._file
        lines = await asyncio.to_thread(tablefile.read_lines, path)
        ours = [line for line in lines if self._selects(line)]
        wanted = None if self.state == "absent" else self._line()
        if (wanted is None and not ours) or (
            wanted is not None and [_normal(line) for line in ours] == [_normal(wanted)]
        ):
            return nothing_to_do(self.handle, f"{path}: the entry for {self.name} is as wanted")
        new = tablefile.replace(lines, self._selects, wanted)
        what = f"the entry for {self.name} in {path}"
        verb = (
            ("remove", "removed")
            if wanted is None
            else (("replace", "replaced") if ours else ("add", "added"))
        )
        step = tablefile.write_step(path, new, f"{verb[0]} {what}", f"{verb[1]} {what}")
        await apply_steps(self.handle, [step], apply, errors=(OSError,))
        if apply:
            wrote(self.handle, path)
        return False

    def _line(self) -> str:
        assert self.ip is not None
        fields = [self.ip, self.name, *self.aliases]
        line = "\t".join([fields[0], fields[1], " ".join(fields[2:])]).rstrip("\t")
        return line + (f"\t# {self.comment}" if self.comment else "")

    def _selects(self, line: str) -> bool:
        fields = line.split("#", 1)[0].split()
        return len(fields) >= 2 and fields[1] == self.name


def _normal(line: str) -> str:
    entry, _, comment = line.partition("#")
    return " ".join(entry.split()) + ("#" + comment.strip() if comment.strip() else "")
