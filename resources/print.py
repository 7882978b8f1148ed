"""print: logs a message each time it is checked (or only when refreshed)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.resource import Refreshable, Resource, register
from resources._lib.plan import nothing_to_do


@register("print")
@dataclass(kw_only=True, eq=False)
class PrintRes(Refreshable, Resource):
    # The message to log. Default: the resource name.
    msg: str | None = None
    # Log only when a notify arrives. Default false.
    refresh_only: bool = False

    async def check_apply(self, apply: bool) -> bool:
        if self.refresh_only and not self.handle.refresh():
            return nothing_to_do(self.handle, "refresh_only and no refresh")
        self.handle.logger.info("msg: %s", self.name if self.msg is None else self.msg)
        return True
