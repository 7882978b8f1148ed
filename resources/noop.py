"""noop: does nothing; a placeholder vertex for ordering (and a notify sink that logs it)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.resource import Refreshable, Resource, register
from resources._lib.plan import nothing_to_do


@register("noop")
@dataclass(kw_only=True, eq=False)
class NoopRes(Refreshable, Resource):
    # Free text, ignored. Default "".
    comment: str = ""

    async def check_apply(self, apply: bool) -> bool:
        if self.handle.refresh():
            self.handle.logger.info("received a refresh")
        return nothing_to_do(self.handle, "noop")
