"""A resource's request that the agent end, with an exit code (mgmt's `exit` kind).

One `ExitRequest` per engine, in its `Shared` (`exit_request(shared)`): a resource calls
`request(code)`; the agent waits for `requested` and then stops gracefully, as on a first
SIGINT, and exits with the code. The first request wins.
"""

from __future__ import annotations

import asyncio

from engine.handle import Shared

KEY = "engine.exit"


class ExitRequest:
    def __init__(self) -> None:
        self.code: int | None = None
        self.requested = asyncio.Event()

    def request(self, code: int) -> None:
        if self.code is None:
            self.code = code
            self.requested.set()


def exit_request(shared: Shared) -> ExitRequest:
    return shared.get(KEY, ExitRequest)
