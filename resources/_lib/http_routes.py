"""How members join this agent's http servers: the files, proxies and UIs that answer at their
URL paths, and the flags that take POSTs (one `Routes` per engine, in its shared objects).

Each member offers itself for its lifetime, as resources._lib.serving's `Offers` say: `server`
names the http:server (its name) that serves it; None: every http:server of the agent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from engine.handle import Handle
from resources._lib.httpd import Request, Response
from resources._lib.serving import Offers


class Answerer(Protocol):
    """What answers requests at its URL path (below it, for a directory): http:server:file,
    http:server:proxy, http:server:ui."""

    server: str | None

    @property
    def url(self) -> str: ...

    def accepts(self, path: str) -> bool: ...

    async def respond(self, request: Request) -> Response: ...


class Flag(Protocol):
    """What takes the form values POSTed to its URL path: http:server:flag."""

    server: str | None

    @property
    def url(self) -> str: ...

    def receive(self, form: dict[str, str]) -> None: ...


class Routes:
    """What is offered to this agent's http servers."""

    def __init__(self) -> None:
        self.answerers: Offers[Answerer] = Offers()
        self.flags: Offers[Flag] = Offers()

    def answer_at(self, member: Answerer) -> Callable[[], None]:
        """Offer `member`; returns the callable that withdraws it."""
        return self.answerers.add(member)

    def take_posts(self, flag: Flag) -> Callable[[], None]:
        """Offer `flag`; returns the callable that withdraws it."""
        return self.flags.add(flag)

    def answerer_for(self, server: str, path: str) -> Answerer | None:
        """What answers `path` on `server`: an exact one, else the longest directory."""
        found = [a for a in self.answerers.to(server) if a.accepts(path)]
        found.sort(key=lambda a: (a.url != path, -len(a.url)))
        return found[0] if found else None

    def flags_for(self, server: str, path: str) -> list[Flag]:
        return [f for f in self.flags.to(server) if f.url == path]


def routes(handle: Handle) -> Routes:
    """The engine's Routes (made on first use)."""
    return handle.shared.get(__name__, Routes)
