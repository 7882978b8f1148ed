"""msg: logs a message once (and again on every refresh), with a priority and fields."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from engine.handle import Handle
from engine.resource import Refreshable, Resource, register
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


@register("msg")
@dataclass(kw_only=True, eq=False)
class MsgRes(Refreshable, Resource):
    # The message body. Default: the resource name.
    body: str | None = None
    # mgmt's (syslog) priority name. Default "Info".
    priority: Priority = "Info"
    # Extra structured fields appended as key=value. Default none.
    fields: dict[str, str] = field(default_factory=dict)

    async def init(self, handle: Handle) -> None:
        await super().init(handle)
        self._logged = False

    async def check_apply(self, apply: bool) -> bool:
        if self._logged and not self.handle.refresh():
            return nothing_to_do(self.handle, "message already logged")
        await apply_steps(self.handle, [Step("log the message", "", self._log)], apply)
        return False

    def _log(self) -> None:
        extra = "".join(f" {k}={v}" for k, v in sorted(self.fields.items()))
        body = self.name if self.body is None else self.body
        self.handle.logger.log(LEVELS[self.priority], "%s%s", body, extra)
        self._logged = True
