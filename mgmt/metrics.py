"""Prometheus metrics (`--prometheus`), with mgmt's metric names.

    mgmt_checkapply_total{kind,apply,eventful,errorful}   every check_apply
    mgmt_failures_total{kind,failure}                    failures: soft (will retry) or hard
    mgmt_resources{kind}                                 vertices in the running graph
    mgmt_graph_start_time_seconds                        when the running graph was swapped in
    mgmt_converged                                       1 while the graph is converged
                                                         (failed resources are settled)
    mgmt_failures_current{kind,failure}                  resources failing now: soft
                                                         (retrying) or hard (failed)
    mgmt_differs_current{kind}                           resources found not as desired and
                                                         left so (--noop, meta noop)
    mgmt_program_error                                   1 while the running graph is not the
                                                         last one given (a program error, a
                                                         refused graph or deploy)
    mgmt_unwatched_current                               resources the kernel's inotify
                                                         limit leaves unwatched (their drift
                                                         goes unseen)
    mgmt_process_start_time_seconds                      when the agent started
    mgmt_build_info{version,python}                      1 (the installed package's version)
    process_*, python_info                               prometheus-client's collectors
    mgmt_event_to_converged_seconds{kind}                watch event (for a refresh: the
                                                         upstream one) -> end of the repairing
                                                         check_apply (histogram)

The `_current` gauges and mgmt_program_error are read from the status model at each scrape
(what `mgmt status` says, O(resources)). prometheus-client is imported only when metrics are
asked for (it costs ~90 ms to import).
"""

from __future__ import annotations

import logging
import platform
import socket
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from engine.engine import Engine
from engine.errors import ValidationError
from engine.events import CheckApplied, GraphSwapped, VertexFailed
from engine.params import parse_int, show
from engine.resource import members
from mgmt.address import check_host
from mgmt.status.latency import RepairClock

if TYPE_CHECKING:
    from mgmt.status.model import StatusModel

log = logging.getLogger("main")

# Up to 5 min: a package install or a build is a repair too (they all fell in +Inf at 10 s).
BUCKETS = (
    *(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)


FLAG = "--prometheus-listen"


def parse_listen(listen: str) -> tuple[str, int]:
    """ "HOST:PORT", "[IPv6]:PORT" or ":PORT" (127.0.0.1) -> (host, port); ValidationError."""
    host, sep, port = listen.rpartition(":")
    if not sep:
        raise ValidationError(f"expected HOST:PORT or :PORT, got {show(listen)}", FLAG)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValidationError(
            f"an IPv6 address goes in brackets ([::1]:9233), got {show(listen)}", FLAG
        )
    try:
        number = parse_int(port, low=1, high=65535)
    except ValidationError:
        raise ValidationError(
            f"expected a port from 1 to 65535, got {show(listen)}", FLAG
        ) from None
    if host:
        check_host(host, FLAG, listen)
    return host or "127.0.0.1", number


def resolve(host: str, port: int) -> str:
    """The address a server for HOST binds (the first getaddrinfo gives)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    return str(infos[0][4][0])


class Metrics:
    """Observes the engine; `render()` is what /metrics serves."""

    def __init__(self, engine: Engine) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            PlatformCollector,
            ProcessCollector,
            disable_created_metrics,
        )

        disable_created_metrics()  # type: ignore[no-untyped-call]  # mgmt has no `_created`
        self.engine = engine
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # memory, CPU, fds, start time (the default registry's)
        PlatformCollector(registry=r)
        self.checkapply = Counter(
            "mgmt_checkapply",
            "check_apply calls",
            ["kind", "apply", "eventful", "errorful"],
            registry=r,
        )
        self.failures = Counter(
            "mgmt_failures", "resource failures", ["kind", "failure"], registry=r
        )
        self.resources = Gauge(
            "mgmt_resources", "resources in the running graph", ["kind"], registry=r
        )
        self.graph_start = Gauge(
            "mgmt_graph_start_time_seconds", "when the running graph started", registry=r
        )
        self.converged = Gauge(
            "mgmt_converged",
            "1 while every resource is settled, failed ones included (see mgmt_failures_current)",
            registry=r,
        )
        info = Gauge("mgmt_build_info", "the agent's version", ["version", "python"], registry=r)
        info.labels(_version(), platform.python_version()).set(1)
        self.latency = Histogram(
            "mgmt_event_to_converged_seconds",
            "from a watch event to the end of the check_apply that repaired it",
            ["kind"],
            buckets=BUCKETS,
            registry=r,
        )
        self._unsubscribes: list[Callable[[], None]] = []
        self.clock = RepairClock()
        self._now: Now | None = None
        self._counting = False  # mgmt_resources counted once, then followed (graph_swapped)

    def render(self) -> bytes:
        """The metrics in Prometheus's text format."""
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))

    def start(self, status: StatusModel | None = None) -> None:
        """Observe the engine (and `status`, for the gauges of what fails now). /metrics is
        served by the agent's HTTP server (mgmt.status.server: one listener, bounded
        connections, TLS beyond loopback)."""
        if status is not None and self._now is None:
            self._now = Now(status)
            self.registry.register(self._now)
        self._unsubscribes = [
            self.engine.listeners.subscribe(CheckApplied, self.check_applied),
            self.engine.listeners.subscribe(VertexFailed, self.vertex_failed),
            self.engine.listeners.subscribe(GraphSwapped, self.graph_swapped),
        ]

    def stop(self) -> None:
        for unsubscribe in self._unsubscribes:
            unsubscribe()
        self._unsubscribes = []

    def check_applied(self, event: CheckApplied) -> None:
        vertex, apply, error = event.vertex, event.apply, event.error
        kind = vertex.res.kind
        eventful = bool(event.changed)
        latency = self.clock.latency(event)
        self.checkapply.labels(kind, _b(apply), _b(eventful), _b(error is not None)).inc()
        if error is not None:
            retry = vertex.res.meta.retry
            tries = self.engine.retries.get(vertex.key, 0) + 1
            soft = retry == -1 or tries <= retry
            self.failures.labels(kind, "soft" if soft else "hard").inc()
        elif latency is not None:
            self.latency.labels(kind).observe(latency)

    def vertex_failed(self, event: VertexFailed) -> None:
        """A watch or init() failure is a failure too: hard when the vertex is dead for it (a
        server that cannot bind its port), soft when its watch restarts."""
        self.failures.labels(event.vertex.res.kind, "hard" if event.hard else "soft").inc()

    def graph_swapped(self, event: GraphSwapped) -> None:
        """`mgmt_resources` follows the swap: what it added and removed (a small swap's
        keys, grouped ones included; a full swap's count by kind, `counted`), not a walk of
        the graph's vertices (until 2026-12-06 each full swap made one)."""
        if event.replaced is None:
            self.clock.forget(event.gone)
        if not self._counting:  # the first swap seen (started after a graph ran?): counted
            counts = Tally(v.res.kind for v in self.engine.vertices.values())
            for vertex in self.engine.vertices.values():
                counts.update(g.kind for g in members(vertex.res))
            self.resources.clear()
            for kind, count in counts.items():
                self.resources.labels(kind).set(count)
            self._counting = True
        elif event.replaced is None:
            for kind, count in event.counted:
                self.resources.labels(kind).inc(count)
        else:  # a small swap: what came and left, grouped or not
            for kind, count in Tally(key[0] for key in event.added | event.joined).items():
                self.resources.labels(kind).inc(count)
            for kind, count in Tally(key[0] for key in event.removed | event.left).items():
                self.resources.labels(kind).dec(count)
        self.graph_start.set(time.time())

    def set_converged(self, converged: bool) -> None:
        self.converged.set(1 if converged else 0)


COUNTED = frozenset({"retrying", "failed", "differs"})  # the states Now counts


class Now:
    """The gauges of the agent's state now, read from the status model at each scrape: they
    agree with `mgmt status` (its counts, its program error) by construction."""

    def __init__(self, status: StatusModel) -> None:
        self.status = status
        self._counted: tuple[tuple[int, int], dict[str, Tally[str]]] = ((-1, 0), {})

    def _states(self) -> dict[str, Tally[str]]:
        """Per kind of the running graph, its resources per failing or differing state:
        counted again only after the model changed (an idle agent's scrape costs nothing of
        the graph; counting 10,000 took ~5 ms of the loop)."""
        status = self.status
        vertices = status.engine.vertices
        key = (status.changes, id(vertices))
        if self._counted[0] != key:
            counts: dict[str, Tally[str]] = {
                kind: Tally() for kind in sorted({k[0] for k in vertices})
            }
            for k, info in status.info.items():
                if info.state in COUNTED and k[0] in counts:
                    counts[k[0]][info.state] += 1
            self._counted = (key, counts)
        return self._counted[1]

    def describe(self) -> list[Any]:
        return []  # not collected at registration: a status model may not be ready yet

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        status = self.status
        failing = GaugeMetricFamily(
            "mgmt_failures_current",
            "resources failing now: soft (retrying) or hard (failed, out of retries)",
            labels=["kind", "failure"],
        )
        differs = GaugeMetricFamily(
            "mgmt_differs_current",
            "resources found not in their desired state and left so (noop)",
            labels=["kind"],
        )
        for kind, states in self._states().items():
            failing.add_metric([kind, "soft"], states["retrying"])
            failing.add_metric([kind, "hard"], states["failed"])
            differs.add_metric([kind], states["differs"])
        yield failing
        yield differs
        deploy = status.deploy or {}
        yield GaugeMetricFamily(
            "mgmt_program_error",
            "1 while the running graph is not the last one given: a program error, a refused "
            "graph or deploy (mgmt_graph_start_time_seconds: when the running one came)",
            value=1 if status.program_error or deploy.get("refused") else 0,
        )
        yield GaugeMetricFamily(
            "mgmt_unwatched_current",
            "resources the kernel's inotify watch limit leaves unwatched: their drift is unseen "
            "until they are checked again (the agent's log names the limit to raise)",
            value=len(status.unwatched),
        )
        yield GaugeMetricFamily(
            "mgmt_process_start_time_seconds", "when the agent started", value=status.started
        )


def _version() -> str:
    """The installed package's version (pyproject's, as `mgmt --version` says it; not
    mgmt.cli's constant: mgmt.cli imports the agent, which imports this), "unknown" for a
    checkout run uninstalled."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mgmt")
    except PackageNotFoundError:
        return "unknown"


def _b(value: bool) -> str:
    return "true" if value else "false"
