"""A small real resource for engine tests: records every call, can fail, change or block."""

from __future__ import annotations

import asyncio
import errno
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.errors import Interfered, ResourceError
from engine.handle import Handle
from engine.resource import Groupable, Refreshable, Resource, register

if TYPE_CHECKING:
    from engine.engine import Engine


@dataclass
class ProbeState:
    calls: list[tuple[bool, bool]] = field(default_factory=list)  # (apply, refresh) per call
    watch_starts: int = 0
    cleanups: int = 0
    active: int = 0  # check_applies running right now
    max_active: int = 0
    failures_left: int = 0
    interfered_left: int = 0  # failures caused by another's change meanwhile (errors.Interfered)
    gate: asyncio.Event | None = None  # check_apply waits for it when set
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    handle: Handle | None = None
    result: Any = None  # override the return value (e.g. a non-bool)
    cleanup_fails: bool = False  # cleanup() raises, naming the probe's tag


STATE: dict[str, ProbeState] = {}


def state(name: str) -> ProbeState:
    return STATE.setdefault(name, ProbeState())


@register("probe")
@dataclass(kw_only=True, eq=False)
class ProbeRes(Refreshable, Resource):
    # Return False (a change) on the first successful call. Default false.
    change: bool = False
    # Free value: changing it makes a different resource for graph swaps. Default "".
    tag: str = ""

    async def init(self, handle: Handle) -> None:
        await super().init(handle)
        state(self.name).handle = handle
        self._changed = False

    async def cleanup(self) -> None:
        state(self.name).cleanups += 1
        if state(self.name).cleanup_fails:
            raise RuntimeError(f"cannot close {self.tag}")

    async def watch(self) -> None:
        state(self.name).watch_starts += 1
        await super().watch()

    async def check_apply(self, apply: bool) -> bool:
        st = state(self.name)
        st.calls.append((apply, self.handle.refresh()))
        st.active += 1
        st.max_active = max(st.max_active, st.active)
        st.entered.set()
        try:
            if st.gate is not None:
                await st.gate.wait()
            if st.failures_left:
                st.failures_left -= 1
                raise RuntimeError(f"{self.name} failed on purpose")
            if st.interfered_left:
                st.interfered_left -= 1
                cause = Interfered(errno.ENOENT, os.strerror(errno.ENOENT))
                raise ResourceError(f"{self.name} interfered with") from cause
            if st.result is not None:
                return st.result  # type: ignore[no-any-return]
            if self.change and not self._changed:
                self._changed = apply
                return False
            return True
        finally:
            st.active -= 1


@register("gprobe")
@dataclass(kw_only=True, eq=False)
class GroupProbe(Groupable, ProbeRes):
    """A Groupable probe: groups with others of the same `tag` (Groupable sets `grouped`)."""

    def group_cmp(self, other: Resource) -> bool:
        return isinstance(other, GroupProbe) and other.tag == self.tag

    async def check_apply(self, apply: bool) -> bool:
        state(self.name).calls.append((apply, False))
        for other in self.grouped:
            state(other.name).calls.append((apply, False))
        return True


async def received_password(engine: Engine, probe: ProbeRes, length: int = 12) -> str:
    """Run `password[pw] -> probe` on `engine`, the probe's `tag` receiving the password (a
    secret: engine.params.SECRET); the password, once the probe has it."""
    from engine.graph import Edge, Graph
    from resources.password import PasswordRes
    from tests.engine.conftest import settle

    graph = Graph("t")
    graph.add(PasswordRes(name="pw", length=length))
    graph.add(probe)
    to = (probe.kind, probe.name)
    graph.connect(("password", "pw"), to, Edge(sendrecv=(("password", "tag"),)))
    await engine.apply(graph)
    sent = engine.vertices[("password", "pw")].sent
    await settle(engine, lambda: "password" in sent)
    secret: str = sent["password"]
    running = engine.vertices[to].res
    await settle(engine, lambda: isinstance(running, ProbeRes) and running.tag == secret)
    return secret
