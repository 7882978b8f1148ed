"""The gauges of what is wrong now (tester15 #1, #2, #3): a scraper sees a resource failing
for ever (`retry: -1`), a graph file the agent refused, drift under --noop, and the process."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from tests.e2e.helpers import Daemon, free_port, run_mgmt, signal
from tests.e2e.test_observability import metric, scrape

T = TypeVar("T")

FOREVER = """graph: g
resources:
  file:
    - name: a
      path: {dir}/a
      content: "a\\n"
  exec:
    - name: forever
      cmd: {cmd}
      meta: {{retry: -1, delay: 200}}
"""


async def at_each_change(
    url: str, probe: Callable[[], Awaitable[T | None]], timeout: float = 30
) -> T:
    """`probe()` until it returns a value, again at each event of the agent's status page
    (`/api/events` at `url`'s host, opened first: every change of the status model, which the
    gauges and `mgmt status` read, is told there), bounded against a hang, not a threshold. The
    agent runs with `--status`."""
    host, port = url.removeprefix("http://").split("/")[0].rsplit(":", 1)
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(f"GET /api/events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
            while True:
                found = await probe()
                if found is not None:
                    return found
                if not await reader.readline():  # the next change of the model
                    raise AssertionError("the agent's event stream ended")
        finally:
            writer.close()


async def scraped(url: str, ok: Callable[[str], bool], timeout: float = 30) -> str:
    """Scrape `url` until `ok(text)`, again at each change of the agent's status model."""

    async def probe() -> str | None:
        text = await scrape(url)
        return text if ok(text) else None

    return await at_each_change(url, probe, timeout)


async def test_failing_now_and_a_refused_graph_file_are_gauges(tmp_path: Path) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text(FOREVER.format(dir=tmp_path, cmd="/bin/false"))
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    args = [
        "run",
        "--tmp-prefix",
        "--status",
        "--prometheus",
        "--prometheus-listen",
        f"127.0.0.1:{port}",
    ]
    async with Daemon([*args, "yaml", str(graph)]) as daemon:
        await daemon.wait_log("prometheus metrics on")
        # a failure that retries for ever is failing now (soft), as `mgmt status` says
        text = await scraped(
            url, lambda t: metric(t, "mgmt_failures_current", kind="exec", failure="soft") == 1
        )
        assert metric(text, "mgmt_failures_current", kind="exec", failure="hard") == 0
        assert metric(text, "mgmt_failures_current", kind="file", failure="soft") == 0
        assert metric(text, "mgmt_program_error") == 0
        assert (metric(text, "process_resident_memory_bytes") or 0) > 0
        assert (metric(text, "process_open_fds") or 0) > 0
        assert (metric(text, "mgmt_process_start_time_seconds") or 0) > 1e9
        assert 'mgmt_build_info{python="' in text
        assert "_created" not in text
        started = metric(text, "mgmt_graph_start_time_seconds")

        # a bad edit: the old graph runs on, and the scrape says so
        graph.write_text(graph.read_text() + "  bogus-kind:\n    - name: x\n")
        text = await scraped(url, lambda t: metric(t, "mgmt_program_error") == 1)
        assert metric(text, "mgmt_graph_start_time_seconds") == started

        # repaired: the new graph runs, nothing fails
        graph.write_text(FOREVER.format(dir=tmp_path, cmd="/bin/true"))
        text = await scraped(
            url, lambda t: metric(t, "mgmt_failures_current", kind="exec", failure="soft") == 0
        )
        assert metric(text, "mgmt_program_error") == 0
        assert (metric(text, "mgmt_graph_start_time_seconds") or 0) > (started or 0)
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


async def test_drift_under_noop_is_a_gauge(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("old\n")
    graph = tmp_path / "g.yaml"
    graph.write_text(
        f'graph: g\nresources:\n  file:\n    - {{name: a, path: {tmp_path}/a, content: "a\\n"}}\n'
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    args = ["run", "--tmp-prefix", "--noop", "--status", "--prometheus", "--prometheus-listen"]
    async with Daemon([*args, f"127.0.0.1:{port}", "yaml", str(graph)]) as daemon:
        await daemon.wait_log("prometheus metrics on")
        await scraped(url, lambda t: metric(t, "mgmt_differs_current", kind="file") == 1)
        (tmp_path / "a").write_text("a\n")  # made right by hand: no drift left
        await scraped(url, lambda t: metric(t, "mgmt_differs_current", kind="file") == 0)
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


async def test_a_wildcard_listener_is_reached_at_the_hosts_addresses(tmp_path: Path) -> None:
    """tester15 #6: `0.0.0.0:PORT` minted a certificate for loopback and the host name only:
    a scraper naming the host by an address (static targets, most discovery) failed TLS. The
    minted certificate carries the host's addresses; curl checks the name as Prometheus does."""
    from mgmt.address import host_addresses
    from tests.e2e.test_status_page import _pki, curl, graph

    remote = [a for a in host_addresses() if ":" not in a and not a.startswith("127.")]
    if not remote:
        pytest.skip("this host has no IPv4 address beyond loopback")
    files = _pki(tmp_path)
    port = free_port()
    args = ["run", "--tmp-prefix", "--prometheus", "--prometheus-listen", f"0.0.0.0:{port}"]
    args += ["--cluster-ca-dir", str(tmp_path / "ca"), "yaml", str(graph(tmp_path, 1))]
    async with Daemon(args) as daemon:
        await daemon.wait_log("converged:")
        client = ["--cert", str(files["client_cert"]), "--key", str(files["client_key"])]
        code, out = await curl(
            "--cacert", str(files["ca"]), *client, f"https://{remote[0]}:{port}/metrics"
        )
        assert code == 0 and "mgmt_checkapply_total" in out, out
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


async def test_a_swap_that_adds_a_resource_restarts_converged_since(tmp_path: Path) -> None:
    """tester15 #8: a swap that added a resource already in its desired state kept the old
    graph's `converged since` (the log said `converged:` for the new one). As mgmt's
    converger (a new resource registers unconverged), it converges again, since then."""
    graph = tmp_path / "g.yaml"
    text = (
        f'graph: g\nresources:\n  file:\n    - {{name: a, path: {tmp_path}/a, content: "a\\n"}}\n'
    )
    graph.write_text(text)
    prefix = tmp_path / "prefix"
    status = ["status", "--json", "--prefix", str(prefix)]
    page = f"127.0.0.1:{free_port()}"
    args = ["run", "--prefix", str(prefix), "--status", "--prometheus-listen", page]
    async with Daemon([*args, "yaml", str(graph)]) as daemon:
        await daemon.wait_log("converged:")
        code, out = await asyncio.to_thread(run_mgmt, status, 30)
        first = json.loads(out)["converged_since"]
        assert code == 0 and first is not None, out

        async def later() -> float | None:  # the status model hears it after the log line
            code, out = await asyncio.to_thread(run_mgmt, status, 30)
            since = json.loads(out)["converged_since"]
            return since if code == 0 and since is not None and since > first else None

        graph.write_text(text + "  noop:\n    - name: n\n")
        await daemon.wait_log("converged:", count=2)
        await at_each_change(f"http://{page}/", later)
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


def test_status_json_with_no_agent_prints_an_error_object(tmp_path: Path) -> None:
    """tester15 #9: `mgmt status --json | jq` got nothing when no agent answered."""
    import subprocess

    from tests.e2e.helpers import MGMT, ROOT

    proc = subprocess.run(
        [*MGMT, "status", "--json", "--prefix", str(tmp_path / "none")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 2, proc
    error = json.loads(proc.stdout)["error"]
    assert error.startswith(f"no agent answers on {tmp_path / 'none'}/"), error
    assert f"mgmt status: {error}" in proc.stderr


def test_since_has_its_date_on_another_day() -> None:
    from mgmt.status.command import _clock

    now = time.time()
    assert len(_clock(now)) == len("11:14:26")
    assert _clock(now - 3 * 86400).startswith(time.strftime("%Y-", time.localtime(now - 3 * 86400)))
