"""--prometheus scraped over HTTP from a live agent; --log-format json."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.helpers import Daemon, free_port, has_content, run_mgmt, signal, wait_path
from tests.sigstop import stopped


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
        "--verbose",  # the debug line after each check_apply, once the metrics have it
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
        await daemon.wait_log("file[f]: check_apply(apply=True) -> False", count=2)
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
        assert await daemon.wait() == 0  # a stop asked for is a clean one, failures or not


async def test_a_server_that_cannot_bind_is_a_failure_everywhere(tmp_path: Path) -> None:
    """A watch that failed for good (an http:server whose port is taken) showed `failed` with
    an empty `error`, no event, and no mgmt_failures_total: the operator's alert on hard
    failures never fired. Now it counts as a check_apply's failure does."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        graph = tmp_path / "graph.yaml"
        graph.write_text(
            f"graph: h\nresources:\n  http:server:\n    - {{name: '127.0.0.1:{busy}'}}\n"
        )
        port = free_port()
        args = ["run", "--tmp-prefix", "--status", "--prometheus", "--prometheus-listen"]
        async with Daemon([*args, f"127.0.0.1:{port}", str(graph)]) as daemon:
            await daemon.wait_log("watch failed: cannot listen on")
            text = await scrape(f"http://127.0.0.1:{port}/metrics")
            assert metric(text, "mgmt_failures_total", kind="http:server", failure="hard") == 1
            status = json.loads(await scrape(f"http://127.0.0.1:{port}/api/status"))
            (vertex,) = status["vertices"]
            why = f"watch failed: cannot listen on 127.0.0.1:{busy}: Address already in use"
            assert (vertex["state"], vertex["error"]) == ("failed", why)
            assert [e["what"] for e in status["events"]] == ["error"]
            assert status["events"][0]["message"] == why
            daemon.signal(signal.SIGTERM)
            await daemon.wait()


def test_json_logs(tmp_path: Path) -> None:
    graph = tmp_path / "graph.yaml"
    graph.write_text(
        f'graph: j\nresources:\n  file:\n    - name: f\n      path: {tmp_path}/f\n      content: "x"\n'
    )
    code, out = run_mgmt(
        ["run", "--converged-timeout=0", "--tmp-prefix", "--log-format", "json", str(graph)],
        env={"TZ": "Asia/Kolkata"},
    )
    assert code == 0, out
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    created = [r for r in records if r.get("kind") == "file"]
    assert created and created[0]["name"] == "f" and created[0]["message"].startswith("created")
    assert {"time", "level", "message"} <= set(created[0])
    # RFC 3339: local time, milliseconds, the offset (a resource's line and any other's).
    for record in (created[0], records[-1]):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+05:30", record["time"])
    assert len(records) == len(out.strip().splitlines())  # every line is JSON


def listening_addresses(port: int) -> set[str]:
    """The local addresses of TCP sockets listening on `port` (from /proc/net/tcp, tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, _, hexport = local.partition(":")
            if state == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


async def test_prometheus_listen_port_alone_means_loopback(tmp_path: Path) -> None:
    port = free_port()
    args = ["run", "--tmp-prefix", "--prometheus", "--prometheus-listen", f":{port}", "empty"]
    async with Daemon(args) as daemon:
        await daemon.wait_log(f"prometheus metrics on http://127.0.0.1:{port}/metrics")
        assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1, not 0.0.0.0
        assert "mgmt_converged" in await scrape(f"http://127.0.0.1:{port}/metrics")
        assert "WARNING" not in daemon.log
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


async def test_prometheus_on_all_addresses_in_plain_http_only_for_an_insecure_cluster() -> None:
    """Beyond loopback the listener speaks the cluster's TLS (tests/e2e/test_status_page.py);
    an insecure cluster's is plain HTTP, with a warning."""
    port = free_port()
    args = [
        "run",
        "--tmp-prefix",
        "--insecure-cluster",
        "--prometheus",
        "--prometheus-listen",
        f"0.0.0.0:{port}",
        "empty",
    ]
    async with Daemon(args) as daemon:
        await daemon.wait_log("metrics served over plain HTTP beyond this host (0.0.0.0)")
        await daemon.wait_log(f"prometheus metrics on http://0.0.0.0:{port}/metrics")
        assert listening_addresses(port) == {"00000000"}
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:70000", "expected a port from 1 to 65535, got '127.0.0.1:70000'"),
        ("127.0.0.1:http", "expected a port from 1 to 65535"),
        ("127.0.0.1:²", "expected a port from 1 to 65535"),
        ("9233", "expected HOST:PORT or :PORT, got '9233'"),
        ("::1:9233", "an IPv6 address goes in brackets"),
        ("no-such-host.invalid:PORT", "cannot serve metrics on 'no-such-host.invalid:"),
        ("a..b:9999", "'a..b' is neither an IP address nor a host name"),
        (f"{'x' * 64}.example:9999", "is neither an IP address nor a host name"),
    ],
)
def test_bad_prometheus_listen_is_one_line_and_exit_2(
    tmp_path: Path, listen: str, expected: str
) -> None:
    target = tmp_path / "f"
    graph = tmp_path / "graph.yaml"
    graph.write_text(
        f'graph: g\nresources:\n  file:\n    - {{name: f, path: {target}, content: "x"}}\n'
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        listen = listen.replace("INUSE", str(busy.getsockname()[1]))
        listen = listen.replace("PORT", str(free_port()))
        args = ["run", "--converged-timeout=0", "--tmp-prefix", "--prometheus"]
        code, out = run_mgmt([*args, "--prometheus-listen", listen, str(graph)], timeout=30)
    assert code == 2, out
    assert "Traceback" not in out
    (line,) = out.splitlines()
    assert "--prometheus-listen: " in line and expected in line, line
    assert not target.exists()  # nothing applied


async def test_mgmt_status_reads_the_prefix_from_the_environment_as_run_does(
    tmp_path: Path,
) -> None:
    """`MGMT_PREFIX=/srv/mgmt mgmt run ...` then `MGMT_PREFIX=/srv/mgmt mgmt status`: it asked
    /var/lib/mgmt's socket (`no agent answers`), as did `mgmt deploy` for the certificate."""
    prefix = tmp_path / "prefix"
    graph = tmp_path / "g.yaml"
    graph.write_text(f"graph: g\nresources:\n  file:\n    - name: f\n      path: {tmp_path}/f\n")
    async with Daemon(["run", "--prefix", str(prefix), "yaml", str(graph)]) as daemon:
        await daemon.wait_log("converged:")
        env = {"MGMT_PREFIX": str(prefix)}
        code, out = await asyncio.to_thread(run_mgmt, ["status"], 30, env)
        assert code == 0 and "file[f]" in out, out
        code, out = await asyncio.to_thread(run_mgmt, ["deploy", "--list"], 30, env)
        assert code == 2 and f"{prefix}/cluster-tls/ca.pem" in out, out
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


async def test_a_tmp_prefix_agent_says_its_prefix_for_mgmt_status(tmp_path: Path) -> None:
    """`mgmt run --tmp-prefix` never said which directory it took: `mgmt status` (the default
    /var/lib/mgmt) found no agent (operator tester, 2026-12-05). It says it once, at INFO, with
    the command that reads it; a run that exits says it with --verbose only."""
    graph = tmp_path / "g.yaml"
    graph.write_text(f"graph: g\nresources:\n  file:\n    - name: f\n      path: {tmp_path}/f\n")
    async with Daemon(["run", "--tmp-prefix", "yaml", str(graph)]) as daemon:
        await daemon.wait_log("converged:")
        (line,) = [line for line in daemon.lines if "temporary prefix" in line]
        command = line.split(": ", 2)[2].split()
        assert command[:3] == ["mgmt", "status", "--prefix"], line
        code, out = await asyncio.to_thread(run_mgmt, command[1:], 30)
        assert code == 0 and "file[f]" in out, out
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    args = ["run", "--tmp-prefix", "--converged-timeout=0", "yaml", str(graph)]
    code, out = run_mgmt(args)
    assert code == 0 and "temporary prefix" not in out, out
    code, out = run_mgmt([*args[:1], "--verbose", *args[1:]])
    assert code == 0 and "temporary prefix /" in out, out


async def test_a_failure_after_convergence_logs_a_new_summary(tmp_path: Path) -> None:
    """tester6's finding 10: a watch that failed for good after convergence logged no new
    summary: the log's last `converged:` line still said all was well. A failure keeps the
    graph settled (converged), so a new converged line names it."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    graph = tmp_path / "wd.yaml"
    watch = f'sh -c \\"read x < {fifo}; exit 4\\"'
    graph.write_text(
        "graph: w\nresources:\n  exec:\n"
        f'    - {{name: wd, cmd: "echo w", watchcmd: "{watch}"}}\n'
        "  noop:\n    - {name: n}\n"
    )
    async with Daemon(["run", "--tmp-prefix", str(graph)]) as daemon:
        await daemon.wait_log("converged: all 2 resources in the desired state")
        await asyncio.to_thread(fifo.write_text, "x\n")  # the watchcmd ends: its watch fails
        await daemon.wait_log("exec[wd]: watch failed: watchcmd exited with code 4")
        await daemon.wait_log("converged: 1 of 2 resources in the desired state; failed: exec[wd]")
        daemon.signal(signal.SIGTERM)
        await daemon.wait()


async def test_mgmt_status_fails_while_a_resource_retries_since_its_first_failure(
    tmp_path: Path,
) -> None:
    """tester11's finding 2: 30 execs failing for 6 minutes with `retry: -1` read `retrying`,
    SINCE the last retry (a fresh blip), and `mgmt status` exited 0: `mgmt status || alert`
    never fired. A retrying resource is failing: exit 1, SINCE when its failures began.
    Finding 6: a watch that failed for good showed `failed` with an empty error (the check
    that ended after it cleared it)."""
    graph = tmp_path / "g.yaml"
    text = "graph: g\nresources:\n  exec:\n"
    text += "    - {name: fail, cmd: 'exit 1', shell: /bin/sh, meta: {retry: -1, delay: 100}}\n"
    graph.write_text(text)
    prefix = tmp_path / "prefix"
    status = ["status", "--json", "--prefix", str(prefix)]
    async with Daemon(["run", "--prefix", str(prefix), "yaml", str(graph)]) as daemon:
        await daemon.wait_log("exec[fail]: failed, retrying")  # then said at DEBUG
        async with asyncio.timeout(30):  # a snapshot between a retry's run and its failure,
            while True:  # a few retries in (`applying`, or fewer: asked again)
                code, out = await asyncio.to_thread(run_mgmt, status, 30)
                snapshot = json.loads(out)
                rows = {v["id"]: v for v in snapshot["vertices"]}
                errors = [e for e in snapshot["events"] if e["id"] == "exec[fail]"]
                if rows["exec[fail]"]["state"] == "retrying" and len(errors) >= 3:
                    break
        assert code == 1, out
        assert rows["exec[fail]"]["since"] <= errors[0]["time"], (rows["exec[fail]"], errors)
        text += "    - {name: watchfail, cmd: /bin/true, watchcmd: 'exit 7', watchshell: /bin/sh,"
        graph.write_text(text + " meta: {retry: 2, delay: 100}}\n")
        await daemon.wait_log("exec[watchfail]: watch failed: watchcmd exited with code 7")
        code, out = await asyncio.to_thread(run_mgmt, status, 30)
        rows = {v["id"]: v for v in json.loads(out)["vertices"]}
        dead = rows["exec[watchfail]"]
        why = "watch failed: watchcmd exited with code 7; no stderr"
        assert (dead["state"], dead["error"]) == ("failed", why)
        daemon.signal(signal.SIGTERM)
        await daemon.wait()


async def test_mgmt_status_says_when_a_retrying_resource_tries_again(tmp_path: Path) -> None:
    """A resource retrying (meta retry 3, delay 10 min): `mgmt status` said `retrying` and
    its error, and only the log said when the next attempt comes and how many are left
    (user3). Its row says both now (`next_try`, `tries_left` in the JSON), `retry: -1` as
    `retrying for ever`, while the rest of the graph converged beside it."""
    graph = tmp_path / "g.yaml"
    text = "graph: g\nresources:\n  file:\n    - {name: ok, path: " + str(tmp_path / "ok") + "}\n"
    text += "  exec:\n"
    text += "    - {name: few, cmd: 'exit 1', shell: /bin/sh, meta: {retry: 3, delay: 600000}}\n"
    text += "    - {name: ever, cmd: 'exit 1', shell: /bin/sh, meta: {retry: -1, delay: 600000}}\n"
    graph.write_text(text)
    prefix = tmp_path / "prefix"
    async with Daemon(["run", "--prefix", str(prefix), "yaml", str(graph)]) as daemon:
        await daemon.wait_log("exec[few]: failed, retrying in 600s (3 left)")
        await daemon.wait_log("exec[ever]: failed, retrying in 600s (forever)")
        status = ["status", "--json", "--prefix", str(prefix)]
        code, out = await asyncio.to_thread(run_mgmt, status, 30)
        rows = {v["id"]: v for v in json.loads(out)["vertices"]}
        assert code == 1, out
        assert rows["file[ok]"]["state"] == "converged"
        few, ever = rows["exec[few]"], rows["exec[ever]"]
        assert (few["state"], few["tries_left"], ever["tries_left"]) == ("retrying", 3, -1)
        for row in (few, ever):  # 10 minutes after the failure (the event's time)
            failed = max(e["time"] for e in json.loads(out)["events"] if e["id"] == row["id"])
            assert abs(row["next_try"] - (failed + 600)) < 1, (row, failed)
        code, out = await asyncio.to_thread(run_mgmt, ["status", "--prefix", str(prefix)], 30)
        lines = {line.split()[0]: line for line in out.splitlines()[2:]}
        clock = time.strftime("%H:%M:%S", time.localtime(few["next_try"]))
        assert f"{clock} (3 left); error: cmd exited with code 1" in lines["exec[few]"], out
        assert "next try " in lines["exec[few]"], out
        assert "(retrying for ever); error:" in lines["exec[ever]"], out
        daemon.signal(signal.SIGTERM)
        await daemon.wait()


async def test_mgmt_status_names_a_stopped_agent_that_does_not_answer(tmp_path: Path) -> None:
    """opsuser, 2026-12-06: an agent stopped by SIGSTOP (or ^Z) takes `mgmt status`'s
    connection and says nothing; after its 10 s `mgmt status` said `no agent answers on ...:
    TimeoutError`, of an agent `systemctl status` showed running. It now names the agent's
    pid (its prefix lock's) and its state, and how to resume it."""
    graph = tmp_path / "graph.yaml"
    graph.write_text(f"graph: stopped\nresources:\n  file:\n    - {{name: {tmp_path}/f}}\n")
    prefix = tmp_path / "prefix"
    async with Daemon(["run", "--prefix", str(prefix), "yaml", str(graph)]) as daemon:
        await daemon.wait_log("converged")
        assert daemon.proc is not None
        pid = daemon.proc.pid
        async with stopped(pid):
            code, out = await asyncio.to_thread(run_mgmt, ["status", "--prefix", str(prefix)])
        assert code == 2, out
        assert f"mgmt status: the agent (pid {pid}) did not answer on {prefix}/status.sock" in out
        assert f"it is stopped (SIGSTOP, ^Z: `kill -CONT {pid}` resumes it)" in out, out
        code, out = await asyncio.to_thread(run_mgmt, ["status", "--prefix", str(prefix)])
        assert code == 0, out
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


async def test_mgmt_status_reaches_an_agent_whose_prefix_is_deep(tmp_path: Path) -> None:
    """A prefix so deep that `<prefix>/status.sock` is longer than a Unix socket's address can
    be (107 bytes): the agent said `no status socket in ...: AF_UNIX path too long` and `mgmt
    status` failed (exit 2); `mgmt deploy`'s socket likewise. Bind and connect now go through a
    descriptor of the prefix (mgmt.sockaddr)."""
    prefix = tmp_path / ("deep" * 15) / ("er" * 30) / "prefix"
    assert len(os.fsencode(prefix / "status.sock")) > 107
    prefix.parent.mkdir(parents=True)
    graph = tmp_path / "graph.yaml"
    graph.write_text(f"graph: deep\nresources:\n  file:\n    - {{name: {tmp_path}/f}}\n")
    async with Daemon(["run", "--prefix", str(prefix), "yaml", str(graph)]) as daemon:
        await daemon.wait_log("converged")
        code, out = await asyncio.to_thread(run_mgmt, ["status", "--prefix", str(prefix)])
        assert code == 0 and "1 converged" in out, out
        assert not [line for line in daemon.lines if "no status socket" in line], daemon.lines
        assert (prefix / "status.sock").is_socket()
