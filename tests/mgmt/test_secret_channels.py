"""A secret the process knows (a received password, the cluster's password) is "***" in every
channel: the log (text and JSON, whichever logger logs it), /api/status (what `mgmt status`
and the page read), the metrics. Before 2026-12-05 two paths logged it as is: a resource task's
unexpected failure (engine.tasks, the engine's logger) and a reversal's error (the engine's
logger, and the status page's `reversals`), as neither knew the resource's secrets."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine.engine import Engine
from engine.errors import ResourceError
from engine.graph import Graph
from engine.meta import Meta
from engine.params import hide_secret, redact_known
from engine.resource import Reversible, register
from engine.tasks import TaskSet
from mgmt import log as mgmt_log
from mgmt.cluster.options import _credentials
from mgmt.config import Config
from mgmt.metrics import Metrics
from mgmt.status.model import StatusModel
from mgmt.status.server import StatusServer
from tests.engine.conftest import settle
from tests.engine.probe import ProbeRes, received_password


@pytest.fixture(autouse=True)
def _secrets_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process's secret registry as it was, after each test (its secrets are these
    tests' own: the lines of later tests in this process are theirs alone)."""
    import engine.params

    monkeypatch.setattr(engine.params, "_known", dict(engine.params._known))
    monkeypatch.setattr(engine.params, "_known_pattern", engine.params._known_pattern)


@register("revprobe")
@dataclass(kw_only=True, eq=False)
class RevProbe(Reversible, ProbeRes):
    """A probe that keeps a reversal, whose undo fails naming its tag (the secret it got)."""

    def reversal(self) -> Any:
        return {"was": "nothing"}

    async def reverse(self, data: Any) -> None:
        raise ResourceError(f"cannot undo {self.tag}")


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """The root logger writing through mgmt.log's own handlers to two real files: text, JSON."""
    text, jsonl = tmp_path / "log.txt", tmp_path / "log.jsonl"
    root = logging.getLogger()
    handlers: list[logging.Handler] = []
    with text.open("w") as text_file, jsonl.open("w") as json_file:
        for stream, formatter in (
            (text_file, mgmt_log.TextFormatter()),
            (json_file, mgmt_log.JsonFormatter()),
        ):
            handler = mgmt_log.BatchingStreamHandler(stream)
            handler.setFormatter(formatter)
            handlers.append(handler)
            root.addHandler(handler)
        try:
            yield text, jsonl
        finally:
            for handler in handlers:
                handler.flush()
                root.removeHandler(handler)
                handler.close()


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _get(port: int, path: str) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    async with asyncio.timeout(10):
        answer = await reader.read()
    writer.close()
    return answer.decode()


async def test_a_received_secret_is_hidden_in_every_channel(
    tmp_path: Path, logs: tuple[Path, Path]
) -> None:
    port = _port()
    engine = Engine(hostname="h", prefix=tmp_path / "prefix")
    model = StatusModel(engine, "h")
    metrics = Metrics(engine)
    metrics.start(model)
    server = StatusServer(model, metrics.render)
    await server.listen_tcp("127.0.0.1", port)
    try:
        secret = await received_password(engine, RevProbe(name="rev", meta=Meta(reverse=True)))
        await settle(engine)

        # A task of the engine's failing unexpectedly, its error naming the secret.
        async def broken() -> None:
            raise RuntimeError(f"unexpected: {secret}")

        tasks = TaskSet("revprobe[rev]")
        failed = tasks.spawn(broken(), "work revprobe[rev]")
        await asyncio.wait({failed})
        await tasks.close()

        # The receiver leaves the graph: its reversal fails, naming the secret.
        await engine.apply(Graph("empty"))
        await settle(engine, lambda: bool(engine.reverser.pending))
        # What the agent hands the model besides the engine's events: a refused deploy's
        # error, the program's, another host's row.
        model.set_deploy({"running": 1, "warning": "", "refused": 2, "error": f"no {secret}"})
        model.set_program_error(f"program: {secret}")
        model.set_hosts([{"host": "h2", "error": f"h2: {secret}"}])
        status = await _get(port, "/api/status")
        scraped = await _get(port, "/metrics")
    finally:
        await server.close()
        model.close()
        await engine.stop(graceful=False)
    for handler in logging.getLogger().handlers:
        handler.flush()
    text, jsonl = logs[0].read_text(), logs[1].read_text()
    assert "task work revprobe[rev] failed: unexpected: ***" in text
    assert "RuntimeError: unexpected: ***" in text  # its traceback
    assert "revprobe[rev]: reversal failed" in text and "cannot undo ***" in text
    assert "cannot undo ***" in jsonl and "RuntimeError: unexpected: ***" in jsonl
    assert "cannot undo ***" in status and "200 OK" in status
    assert "no ***" in status and "program: ***" in status and "h2: ***" in status
    assert "mgmt_" in scraped
    for channel in (text, jsonl, status, scraped):
        assert secret not in channel


def test_the_cluster_password_is_hidden_once_read(tmp_path: Path) -> None:
    """--cluster-password-file's password: "***" in any line logged or status text after."""
    secret = "etcd-Pa55word-of-the-cluster"
    path = tmp_path / "pw"
    path.write_text(secret + "\n")
    path.chmod(0o600)  # ssh's rule, as a key's (options.read_password)
    config = Config(cluster_user="root", cluster_password_file=path)
    assert _credentials(config) == ("root", secret)
    assert redact_known(f"auth failed for root:{secret}") == "auth failed for root:***"
    hide_secret("")  # nothing to hide: no-op
    assert redact_known("nothing") == "nothing"
