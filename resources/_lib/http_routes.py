"""How members join this agent's http servers: the files, proxies and UIs that answer at their
URL paths, and the flags that take POSTs (one `Routes` per engine, in its shared objects).

Each member offers itself until the engine drops it, as resources._lib.serving's `Offers` say: `server`
names the http:server (its name) that serves it; None: every http:server of the agent.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import ClassVar, Protocol, TypeVar

from engine.handle import Handle
from resources._lib.httpd import Request, Response
from resources._lib.serving import Offers

R = TypeVar("R")


def clashes(
    resources: Sequence[R], key: Callable[[R], Hashable], scope: Callable[[R], str | None]
) -> list[tuple[R, R]]:
    """Each resource whose `key` another before it has in an overlapping `scope` (the same,
    or either None: every server, every UI), with that other: a graph that cannot be served
    as written (two files at one URL path: one would be served, the other never)."""
    found: list[tuple[R, R]] = []
    seen: dict[Hashable, list[R]] = {}
    for res in resources:
        same = seen.setdefault(key(res), [])
        where = scope(res)
        other = next((o for o in same if None in (scope(o), where) or scope(o) == where), None)
        if other is not None:
            found.append((res, other))
        same.append(res)
    return found


class Answerer(Protocol):
    """What answers requests at its URL path (below it, for a directory): http:server:file,
    http:server:proxy, http:server:ui."""

    kind: ClassVar[str]
    name: str
    server: str | None

    @property
    def url(self) -> str: ...

    def accepts(self, path: str) -> bool: ...

    async def respond(self, request: Request) -> Response: ...


class Flag(Protocol):
    """What takes the form values POSTed to its URL path: http:server:flag."""

    kind: ClassVar[str]
    name: str
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

    def answer_from(self, handle: Handle, member: Answerer) -> None:
        """Offer `member` until the engine drops it, across the swap that replaces it
        (Offers.offer): its URL path is never 404 in between."""
        self.answerers.offer(handle, member)

    def take_posts(self, flag: Flag) -> Callable[[], None]:
        """Offer `flag`; returns the callable that withdraws it."""
        return self.flags.add(flag)

    def answerer_for(self, server: str, path: str) -> Answerer | None:
        """What answers `path` on `server`: an exact one, else the longest directory; the
        newest of two at one URL path (one replacing the other in a swap: Offers)."""
        found = [a for a in reversed(self.answerers.to(server)) if a.accepts(path)]
        found.sort(key=lambda a: (a.url != path, -len(a.url)))
        return found[0] if found else None

    def flags_for(self, server: str, path: str) -> list[Flag]:
        return [f for f in self.flags.to(server) if f.url == path]


def routes(handle: Handle) -> Routes:
    """The engine's Routes (made on first use)."""
    return handle.shared.get(__name__, Routes)
