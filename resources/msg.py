"""msg: logs a message once (and again on every refresh), with a priority and fields; with
`journal`, also to the systemd journal through its native socket (mgmt's go-systemd journal.Send).
"""

from __future__ import annotations

import logging
import re
import socket
from dataclasses import dataclass, field
from typing import Literal

from engine.errors import ResourceError, ValidationError
from engine.handle import Handle
from engine.resource import Refreshable, Resource, register
from resources._lib import journal
from resources._lib.plan import Step, apply_steps, nothing_to_do

Priority = Literal["Emerg", "Alert", "Crit", "Err", "Warning", "Notice", "Info", "Debug"]

LEVELS: dict[str, int] = {
    "Emerg": logging.CRITICAL,
    "Alert": logging.CRITICAL,
    "Crit": logging.CRITICAL,
    "Err": logging.ERROR,
    "Warning": logging.WARNING,
    "Notice": logging.INFO,
    "Info": logging.INFO,
    "Debug": logging.DEBUG,
}
# syslog's numbers, the journal's PRIORITY field.
SYSLOG: dict[str, int] = {name: number for number, name in enumerate(LEVELS)}
_JOURNAL_FIELD = re.compile(r"[A-Z0-9][A-Z0-9_]*")


@register("msg")
@dataclass(kw_only=True, eq=False)
class MsgRes(Refreshable, Resource):
    # The message body. Default: the resource name.
    body: str | None = None
    # mgmt's (syslog) priority name. Default "Info".
    priority: Priority = "Info"
    # Extra structured fields appended as key=value. Default none.
    fields: dict[str, str] = field(default_factory=dict)
    # Also send the message (priority, fields) to the systemd journal. Default false.
    journal: bool = False

    def validate(self) -> None:
        super().validate()
        if not self.journal:
            return
        for key in self.fields:
            if not _JOURNAL_FIELD.fullmatch(key):
                raise ValidationError(
                    "a journal field name is upper-case letters, digits and '_', not starting "
                    f"with '_', got {key!r}",
                    f"fields.{key}",
                )

    async def init(self, handle: Handle) -> None:
        await super().init(handle)
        self._logged = False

    async def check_apply(self, apply: bool) -> bool:
        if self._logged and not self.handle.refresh():
            return nothing_to_do(self.handle, "message already logged")
        steps = [Step("log the message", "", self._log)]
        if self.journal:
            steps.insert(0, Step("send the message to the journal", "", self._journal, slow=True))
        await apply_steps(self.handle, steps, apply)
        return False

    def _journal(self) -> None:
        """One datagram in journald's native format (each field KEY, a length, its bytes)."""
        path = journal.socket_path()
        record = {"MESSAGE": self._body(), "PRIORITY": str(SYSLOG[self.priority])}
        record.update(self.fields)
        data = journal.encode(record)
        if len(data) > journal.MAX_DATAGRAM:
            raise ResourceError(
                f"journal: the message is {len(data):,} bytes, more than journald takes in one "
                f"datagram ({journal.MAX_DATAGRAM:,})"
            )
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(data, path)
        except OSError as err:
            raise ResourceError(
                f"journal: cannot reach the systemd journal at {path}: {err.strerror or err} "
                "(is systemd-journald running?)"
            ) from err

    def _body(self) -> str:
        return self.name if self.body is None else self.body

    def _log(self) -> None:
        extra = "".join(f" {k}={v}" for k, v in sorted(self.fields.items()))
        self.handle.logger.log(LEVELS[self.priority], "%s%s", self._body(), extra)
        self._logged = True
