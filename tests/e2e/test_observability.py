"""--prometheus scraped over HTTP from a live agent; --log-format json."""

from __future__ import annotations

import asyncio
import json
import socket
import textwrap
import urllib.request
from pathlib import Path

from tests.e2e.helpers import Daemon, has_content, run_mgmt, signal, wait_path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text format, or None."""
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()) and head.split("{")[0] == name:
            return float(value)
    return None


async def scrape(url: str) -> str:
    def get() -> str:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    return await asyncio.to_thread(get)


async def test_prometheus_metrics_from_a_live_agent(tmp_path: Path) -> None:
    target = tmp_path / "out" / "f"
    graph = tmp_path / "graph.yaml"
    graph.write_text(
        textwrap.dedent(
            f"""
            graph: metrics
            resources:
              file:
                - name: f
                  path: {target}
                  content: "x\\n"
              exec:
                - name: broken
                  cmd: "false"
                  meta: {{retry: 1}}
            """
        )
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    args = [
        "run",
        "--tmp-prefix",
        "--prometheus",
        "--prometheus-listen",
        f"127.0.0.1:{port}",
        str(graph),
    ]
    async with Daemon(args) as daemon:
        await daemon.wait_log("prometheus metrics on")
        await wait_path(target, has_content("x\n"))
        await daemon.wait_log("exec[broken]: failed:")
        target.unlink()  # drift: one repair observed by the latency histogram
        await wait_path(target, has_content("x\n"))
        await daemon.wait_log("converged")
        text = await scrape(url)
        assert metric(text, "mgmt_resources", kind="file") == 1
        assert metric(text, "mgmt_resources", kind="exec") == 1
        changed = metric(
            text,
            "mgmt_checkapply_total",
            kind="file",
            apply="true",
            eventful="true",
            errorful="false",
        )
        assert changed is not None and changed >= 2  # created, then repaired
        assert metric(text, "mgmt_failures_total", kind="exec", failure="soft") == 1
        assert metric(text, "mgmt_failures_total", kind="exec", failure="hard") == 1
        assert (metric(text, "mgmt_graph_start_time_seconds") or 0) > 1e9
        assert metric(text, "mgmt_event_to_converged_seconds_count", kind="file") is not None
        assert metric(text, "mgmt_converged") in (0.0, 1.0)
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 1  # the failed resource makes the exit code 1


def test_json_logs(tmp_path: Path) -> None:
    graph = tmp_path / "graph.yaml"
    graph.write_text(
        f'graph: j\nresources:\n  file:\n    - name: f\n      path: {tmp_path}/f\n      content: "x"\n'
    )
    code, out = run_mgmt(
        ["run", "--converged-timeout=0", "--tmp-prefix", "--log-format", "json", str(graph)]
    )
    assert code == 0, out
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    created = [r for r in records if r.get("kind") == "file"]
    assert created and created[0]["name"] == "f" and created[0]["message"].startswith("created")
    assert {"time", "level", "message"} <= set(created[0])
    assert len(records) == len(out.strip().splitlines())  # every line is JSON
