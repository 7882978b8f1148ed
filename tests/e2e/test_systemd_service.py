"""The agent as a systemd service, against a real manager (tests/systemd_fixture.py):
`mgmt setup --install-service` writes and starts the unit, READY=1 and STATUS= reach systemd,
the watchdog restarts a wedged agent, and a stop is clean. Also the terminal progress lines.
"""

from __future__ import annotations

import asyncio
import os
import pty
import signal
import socket
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from mgmt.sdnotify import Notifier
from tests.e2e.helpers import MGMT, ROOT, has_content, nice_levels, run_mgmt, wait_path
from tests.systemd_fixture import Client, RealSystemd


def graph(tmp_path: Path) -> Path:
    path = tmp_path / "graph.yaml"
    path.write_text(
        f"graph: g\nresources:\n  file:\n    - name: hello\n      path: {tmp_path}/out\n"
        '      content: "hello\\n"\n'
    )
    return path


@pytest.mark.slow
async def test_installed_service_is_ready_reports_status_and_the_watchdog_restarts_it(
    manager: RealSystemd, sd: Client, tmp_path: Path
) -> None:
    unit = manager.name("agent")
    service = f"{unit}.service"
    args = ["setup", "--install-service", "--start", "--unit", unit, "--watchdog-sec", "2"]
    args += ["--prefix", str(tmp_path / "prefix"), "yaml", str(graph(tmp_path))]
    code, out = await asyncio.to_thread(run_mgmt, args)
    assert code == 0, out
    text = (manager.unit_dir / service).read_text()
    assert "Type=notify" in text and "WatchdogSec=2" in text
    assert (tmp_path / "out").read_text() == "hello\n"  # the service's agent applied the graph
    # Type=notify: active only once READY=1 came; then STATUS= says how the graph is doing.
    assert await sd.active(service) == "active"
    assert await sd.file_state(service) == "enabled"

    async def converged() -> bool:
        status = str((await sd.props(service, "Service"))["StatusText"])
        return status.startswith("converged: the 1 resource")

    await sd.wait_until(converged)
    # A wedged event loop stops the watchdog pings: systemd aborts and restarts the agent.
    pid = await sd.main_pid(service)
    os.kill(pid, signal.SIGSTOP)
    await sd.running_with_new_pid(service, pid)
    # Installing again with the same flags changes nothing; a stop is clean (STOPPING=1).
    code, out = await asyncio.to_thread(run_mgmt, args)
    assert code == 0 and "changed" not in out and "created" not in out, out
    await sd.manager("StopUnit", "ss", service, "replace")

    async def stopped() -> bool:
        return await sd.active(service) == "inactive"

    await sd.wait_until(stopped)
    assert (await sd.props(service, "Service"))["Result"] == "success"


def test_setup_refuses_a_bad_graph_or_flags_before_writing_anything(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("graph: g\nresources:\n  file:\n    - name: x\n      mode: 9999\n")
    for args in (
        ["yaml", str(bad)],
        ["--converged-timeout", "0", "empty"],
        ["--unit", "a b", "empty"],
        ["--unit", "mgmt@", "empty"],  # a template: cannot be started
        ["--unit", "ünit", "empty"],  # systemd's names are ASCII
        ["--no-such-flag", "empty"],
    ):
        code, out = run_mgmt(["setup", "--install-service", "--dry-run", *args])
        assert code == 2, (args, out)
        assert "Traceback" not in out
    code, out = run_mgmt(["setup", "--install-service", "--dry-run", "yaml", "examples/hello.yaml"])
    assert code == 0 and f"run --prefix /var/lib/mgmt yaml {ROOT}/examples/hello.yaml" in out, out


def test_setup_refuses_what_the_agent_would_refuse_at_its_start(tmp_path: Path) -> None:
    """Each of these was installed, and the agent then exited 2 at every start, restarted
    every 2 s for ever (Restart=on-failure): the unit is refused instead, one line, exit 2."""
    operator = tmp_path / "alice"
    mint = ["cluster", "mint-cert", "--operator", "alice", "--ca-dir", str(tmp_path / "ca")]
    assert run_mgmt([*mint, "--out", str(operator)])[0] == 0
    graph_file = str(graph(tmp_path))
    prefix = ["--prefix", str(tmp_path / "prefix")]
    for args, message in (
        (["--seeds", "https://127.0.0.1:2379", "empty"], "--seeds: joining a cluster needs"),
        (["--prefix", "/tmp", "empty"], "--prefix: /tmp can be written by others"),
        ([*prefix, "--trusted-keys", str(tmp_path / "nokeys"), "empty"], "--trusted-keys"),
        ([*prefix, "--deploy", "--sign-key", "/nonexistent", "yaml", graph_file], "--sign-key"),
        ([*prefix, "--status", "--prometheus-listen", ":70000", "yaml", graph_file], "a port"),
        (
            [*prefix, "--hostname", "alice", "--cluster-cert-dir", str(operator), "empty"],
            "an operator's certificate",
        ),
    ):
        code, out = run_mgmt(["setup", "--install-service", "--dry-run", *args])
        assert code == 2 and out.count("\n") == 1 and message in out, (args, out)


def test_setup_makes_every_path_option_absolute(tmp_path: Path) -> None:
    """The service runs in `/`: a relative --trusted-keys (or --cluster-ca-dir, --tls-*...) was
    kept as given, so the agent read `/keys` (exit 2 at every start), or made a new cluster CA
    in `/ca`. One given in the environment is written out (the unit has no environment)."""
    (tmp_path / "keys").write_text("alice ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFxu\n")
    (tmp_path / "ca").mkdir(mode=0o700)
    relative = os.path.relpath(tmp_path, ROOT)
    args = ["setup", "--install-service", "--dry-run", "--prefix", str(tmp_path / "prefix")]
    args += ["--trusted-keys", f"{relative}/keys", f"--cluster-ca-dir={relative}/ca", "empty"]
    code, out = run_mgmt(args)
    assert code == 0, out
    where = ROOT / relative  # absolute, as the kernel resolves it from mgmt's directory
    assert f"--trusted-keys {where}/keys --cluster-ca-dir={where}/ca empty" in out, out
    code, out = run_mgmt([*args[:-4], "empty"], env={"MGMT_TRUSTED_KEYS": f"{relative}/keys"})
    assert code == 0 and f"run --trusted-keys {where}/keys --prefix" in out, out
    # Abbreviated: refused, as mgmt does (mgmt.usage.Parser); nothing is written.
    code, out = run_mgmt([*args[:-4], "--trusted", f"{relative}/keys", "empty"])
    assert code == 2 and out.startswith("mgmt setup: unrecognized arguments: --trusted"), out


def test_setup_writes_out_every_flag_the_environment_set(tmp_path: Path) -> None:
    """tester14's finding 1: only path options set as MGMT_<FLAG> reached ExecStart, so
    MGMT_NICE, MGMT_MAX_RESOURCES, MGMT_QUIET... applied to setup's check and not to the
    service. Each is written out as its flag; one also given on the command line is the
    command line's; one equal to its default is left out."""
    env = {
        "MGMT_NICE": "5",
        "MGMT_QUIET": "1",
        "MGMT_HOSTNAME": "h9",
        "MGMT_MAX_RESOURCES": "100",
        "MGMT_LOG_FORMAT": "json",
        "MGMT_NO_AUTOEDGES": "yes",
        "MGMT_SEMA": "3",
        "MGMT_MODULEPATH": "-odd",  # starts with '-': written --flag=VALUE
        "MGMT_IDEAL_CLUSTER_SIZE": "5",  # the default
    }
    args = ["setup", "--install-service", "--dry-run", "--prefix", str(tmp_path / "p")]
    code, out = run_mgmt([*args, "--sema", "2", "empty"], env=env)
    assert code == 0, out
    exec_start = next(line for line in out.splitlines() if line.startswith("ExecStart="))
    words = exec_start.split(" ")
    words = words[words.index("run") + 1 :]
    assert words == [
        *["--hostname", "h9", "--nice", "5", "--no-autoedges", "--modulepath=-odd"],
        *["--max-resources", "100", "--log-format", "json", "--quiet"],
        *["--prefix", str(tmp_path / "p"), "--sema", "2", "empty"],
    ], exec_start


def test_the_unit_names_its_documentation_and_systemd_takes_it(tmp_path: Path) -> None:
    """`Documentation=` (`systemctl help`): this checkout's docs/operations.md, a URL that
    systemd's own check takes (an invalid one is only a warning, on stderr)."""
    args = ["setup", "--install-service", "--dry-run", "--prefix", str(tmp_path / "p"), "empty"]
    code, out = run_mgmt(args)
    assert code == 0, out
    assert f"\nDocumentation={(ROOT / 'docs/operations.md').as_uri()}\n" in out, out
    unit = tmp_path / "mgmt-doc-test.service"
    unit.write_text(out)
    verify = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr


def test_the_example_unit_is_what_dry_run_prints(tmp_path: Path) -> None:
    """tester14's finding 4: docs/examples/mgmt.service, "what `--dry-run` prints" to install
    by hand, lacked `MemoryHigh=50%` (the memory guard). It is the dry run's output for its
    command, with this checkout's paths in the example's (/opt/mgmt, /etc/mgmt/graph.yaml)."""
    example = (ROOT / "docs/examples/mgmt.service").read_text()
    command = (
        "mgmt setup --install-service --dry-run --prefix /var/lib/mgmt\n# yaml /etc/mgmt/graph.yaml"
    )
    assert command in example, example
    path = graph(tmp_path)
    args = ["setup", "--install-service", "--dry-run", "--prefix", "/var/lib/mgmt", "yaml"]
    code, out = run_mgmt([*args, str(path)])
    assert code == 0, out
    for here, there in (
        (str(path), "/etc/mgmt/graph.yaml"),
        ((ROOT / "docs").as_uri(), "file:///opt/mgmt/docs"),
        (MGMT[0], "/opt/mgmt/.venv/bin/python"),
    ):
        assert here in out, (here, out)
        out = out.replace(here, there)
    assert example[example.index("# Written by") :] == out


@pytest.mark.slow
def test_setup_makes_relative_paths_absolute_however_they_are_spelled() -> None:
    """The service runs in `/`: `./examples/hello.yaml` and `--prefix state` must not stay
    relative (the first was a traceback, the second a prefix in `/state`)."""
    for args, want in (
        (
            ["yaml", "./examples/hello.yaml"],
            f"--prefix /var/lib/mgmt yaml {ROOT}/examples/hello.yaml",
        ),
        (["--prefix", "state", "examples//hello.yaml"], f"--prefix {ROOT}/state {ROOT}/examples"),
        (["--prefix=state/", "yaml", "examples/hello.yaml"], f"--prefix={ROOT}/state yaml"),
    ):
        code, out = run_mgmt(["setup", "--install-service", "--dry-run", *args])
        assert code == 0 and want in out, (args, out)


def test_notifier_speaks_systemds_protocol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The datagrams themselves (the test above shows systemd accepting them)."""
    address = str(tmp_path / "notify")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(address)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = Notifier.from_environment()
    assert notifier is not None and notifier.watchdog == 4.0
    assert "NOTIFY_SOCKET" not in os.environ  # commands we run cannot speak for us
    notifier.ready("converging:\n0 of 3")
    notifier.status("converging:\n0 of 3")  # unchanged: not sent again
    notifier.status("converged")
    notifier.stopping()
    notifier.close()
    receiver.settimeout(5)
    got = [receiver.recv(4096).decode() for _ in range(3)]
    receiver.close()
    assert got[0].split("\n")[:2] == ["READY=1", "STATUS=converging: 0 of 3"]
    assert got[1:] == ["STATUS=converged", "STOPPING=1\nSTATUS=stopping"]
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process: no watchdog for us
    other = Notifier.from_environment()
    assert other is not None and other.watchdog == 0
    other.close()


async def test_progress_lines_are_coalesced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst of changes (a thousand resources settling) is one STATUS= line, saying the last
    count; the next burst's line comes once the interval is over, and nothing after it."""
    address = str(tmp_path / "notify")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(address)
    receiver.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    notifier = Notifier.from_environment()
    assert notifier is not None
    loop = asyncio.get_running_loop()
    count = 0

    def progress() -> str:
        return f"converging: {count} settled"

    for burst in (1000, 2000):
        for _ in range(burst - count):
            count += 1
            notifier.status_soon(progress)
        async with asyncio.timeout(10):
            got = await loop.sock_recv(receiver, 4096)
        assert got.decode() == f"STATUS=converging: {burst} settled"
    notifier.status_soon(progress)  # pending when the stop comes: cancelled
    notifier.stopping()
    notifier.status_soon(progress)  # after STOPPING=1: nothing
    count += 1
    notifier.close()
    async with asyncio.timeout(10):
        assert await loop.sock_recv(receiver, 4096) == b"STOPPING=1\nSTATUS=stopping"
    with pytest.raises(BlockingIOError):
        receiver.recv(4096)
    receiver.close()


@pytest.mark.slow
def test_progress_lines_on_a_terminal_only(tmp_path: Path) -> None:
    path = tmp_path / "slow.yaml"
    path.write_text(
        "graph: g\nresources:\n  exec:\n    - name: slow\n      cmd: /bin/sleep\n"
        "      args: ['3']\n"
    )
    argv = [*MGMT, "run", "--tmp-prefix", "--converged-timeout", "0", "yaml", str(path)]
    parent, child = pty.openpty()
    proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=child, stderr=child)
    os.close(child)
    output = b""
    while True:
        try:
            chunk = os.read(parent, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(parent)
    assert proc.wait(timeout=60) == 0
    assert b"converging: 0 of 1 resource settled, 0 failed" in output, output
    code, out = run_mgmt(argv[len(MGMT) :])
    assert code == 0 and "converging:" not in out, out


def test_logs_go_to_the_journal_with_structured_fields(tmp_path: Path) -> None:
    """Under systemd with stderr connected to the journal (JOURNAL_STREAM), each record is
    sent in the journal's native protocol (to a socket of ours standing in for journald's)."""
    address = str(tmp_path / "journal")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(address)
    receiver.settimeout(10)
    stderr = (tmp_path / "stderr").open("wb")
    st = os.fstat(stderr.fileno())
    env = {
        **os.environ,
        "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
        "MGMT_JOURNAL_SOCKET": address,
    }
    argv = [*MGMT, "run", "--tmp-prefix", "--converged-timeout", "0", "yaml", str(graph(tmp_path))]
    proc = subprocess.run(
        argv, check=False, cwd=ROOT, env=env, stderr=stderr, stdout=subprocess.DEVNULL, timeout=60
    )
    stderr.close()
    assert proc.returncode == 0
    assert (tmp_path / "stderr").read_bytes() == b""  # everything went to the journal
    records = []
    receiver.setblocking(False)
    while True:
        try:
            records.append(receiver.recv(65536).decode())
        except BlockingIOError:
            break
    receiver.close()
    created = [r for r in records if "MGMT_KIND=file" in r]
    assert created, records
    fields = dict(line.split("=", 1) for line in created[0].splitlines())
    assert fields["MGMT_NAME"] == "hello" and fields["PRIORITY"] == "6"
    assert fields["SYSLOG_IDENTIFIER"] == "mgmt" and fields["MGMT_LOGGER"] == "engine"
    assert fields["MESSAGE"].startswith("file[hello]: created")


async def stopped_unit(
    manager: RealSystemd, sd: Client, tmp_path: Path, name: str
) -> tuple[str, Path]:
    """A unit `mgmt setup --install-service --start` installed for graph(tmp_path), started
    (active), then stopped: the service's name and the graph file."""
    service = f"{manager.name(name)}.service"
    path = graph(tmp_path)
    args = ["setup", "--install-service", "--start", "--unit", service.removesuffix(".service")]
    args += ["--watchdog-sec", "0", "--prefix", str(tmp_path / "prefix"), "yaml", str(path)]
    code, out = await asyncio.to_thread(run_mgmt, args)
    assert code == 0, out
    assert await sd.active(service) == "active"
    await sd.manager("StopUnit", "ss", service, "replace")

    async def stopped() -> bool:
        return await sd.active(service) == "inactive"

    await sd.wait_until(stopped)
    return service, path


@pytest.mark.slow
async def test_the_installed_service_runs_with_the_flags_the_environment_set(
    manager: RealSystemd, sd: Client, tmp_path: Path
) -> None:
    """tester14's finding 1, through the manager: MGMT_NICE=5 when installing is the running
    service's nice level (it was the setup's check's only)."""
    service = f"{manager.name('envflags')}.service"
    args = ["setup", "--install-service", "--start", "--unit", service.removesuffix(".service")]
    args += ["--watchdog-sec", "0", "--prefix", str(tmp_path / "prefix"), "yaml"]
    code, out = await asyncio.to_thread(
        run_mgmt, [*args, str(graph(tmp_path))], 60, {"MGMT_NICE": "5"}
    )
    assert code == 0, out
    assert " --nice 5 " in (manager.unit_dir / service).read_text()
    assert await sd.active(service) == "active"
    assert nice_levels(await sd.main_pid(service)) == {5}
    await sd.manager("StopUnit", "ss", service, "replace")

    async def stopped() -> bool:
        return await sd.active(service) == "inactive"

    await sd.wait_until(stopped)


@pytest.mark.slow
async def test_a_bad_graph_at_start_fails_the_unit_instead_of_restarting_it(
    manager: RealSystemd, sd: Client, tmp_path: Path
) -> None:
    """The graph edited into an error while the agent was stopped: it exits 2 at its start, and
    Restart=on-failure restarted it every 2 s for ever (NRestarts=8 after 13 s, `activating`;
    operator tester, 2026-12-05). RestartPreventExitStatus=2: the unit fails at once."""
    service, path = await stopped_unit(manager, sd, tmp_path, "badgraph")
    assert "RestartPreventExitStatus=2\n" in (manager.unit_dir / service).read_text()

    async def settled(state: str) -> bool:
        return await sd.active(service) == state

    path.write_text(path.read_text() + '      mode: "banana"\n')
    await sd.manager("StartUnit", "ss", service, "replace")
    await sd.wait_until(lambda: settled("failed"))
    props = await sd.props(service, "Service")
    assert (props["ExecMainStatus"], props["NRestarts"], props["Result"]) == (2, 0, "exit-code")
    # Why, in `systemctl status` (StatusText): the refusal's first line (it was empty).
    status = str(props["StatusText"])
    assert status.startswith(f"{path}:7: file[hello]: mode: expected octal"), status
    assert status.endswith("got 'banana'") and "\n" not in status, status


@pytest.mark.slow
async def test_a_graph_file_missing_at_start_is_restarted_until_it_is_back(
    manager: RealSystemd, sd: Client, tmp_path: Path
) -> None:
    """tester11's finding 5: a host problem at the start (the graph file missing, the prefix's
    disk full) exited 2, bad input, which RestartPreventExitStatus=2 never restarts: after a
    boot with a full /var the agent stayed down. It exits 75 (EX_TEMPFAIL): the unit restarts
    it, says why meanwhile, and once the file is back the host is managed again."""
    service, path = await stopped_unit(manager, sd, tmp_path, "missing")

    async def settled(state: str) -> bool:
        return await sd.active(service) == state

    text = path.read_text()
    path.unlink()
    (tmp_path / "out").unlink()
    await sd.manager("StartUnit", "ss", service, "replace")

    status = ""

    async def restarted_saying_why() -> bool:
        # NRestarts counts a restart as it starts, and the start clears StatusText until the new
        # process says why it exits: one snapshot of all three, the status once it is said.
        nonlocal status
        props = await sd.props(service, "Service")
        status = str(props["StatusText"])
        return int(props["NRestarts"]) >= 1 and props["ExecMainStatus"] == 75 and status != ""

    await sd.wait_until(restarted_saying_why)
    assert status == f"{path}: cannot read: No such file or directory", status
    path.write_text(text)
    await sd.wait_until(lambda: settled("active"))
    await wait_path(tmp_path / "out", has_content("hello\n"))  # applied (READY=1: started)
    await sd.manager("StopUnit", "ss", service, "replace")
    await sd.wait_until(lambda: settled("inactive"))


@pytest.mark.slow
async def test_a_bad_flag_at_start_is_the_units_last_status(
    manager: RealSystemd, sd: Client, tmp_path: Path
) -> None:
    """A unit whose ExecStart has a flag `mgmt run` refuses (edited by hand, or a newer
    version's flag): exit 2, and `systemctl status` says why (StatusText was empty)."""
    unit = manager.name("badflag")
    service = f"{unit}.service"
    argv = [*MGMT, "run", "--prefix", str(tmp_path / "prefix"), "--no-such-flag", "empty"]
    manager.write_unit(
        service,
        f"[Service]\nType=notify\nNotifyAccess=main\nWorkingDirectory={ROOT}\n"
        f"ExecStart={' '.join(argv)}\n",
    )
    await sd.reload()
    await sd.manager("StartUnit", "ss", service, "replace")

    async def failed() -> bool:
        return await sd.active(service) == "failed"

    await sd.wait_until(failed)
    props = await sd.props(service, "Service")
    assert props["ExecMainStatus"] == 2
    status = str(props["StatusText"])
    assert status.startswith("mgmt run: unrecognized arguments: --no-such-flag"), status


async def install_and_start(
    manager: RealSystemd, sd: Client, name: str, tmp_path: Path, graph_path: Path
) -> str:
    """`mgmt setup --install-service` of the graph file (no watchdog), the unit started
    (not waited for: it may stay `activating`); the service's name."""
    unit = manager.name(name)
    args = ["setup", "--install-service", "--unit", unit, "--watchdog-sec", "0"]
    code, out = await asyncio.to_thread(
        run_mgmt, [*args, "--prefix", str(tmp_path / "prefix"), "yaml", str(graph_path)]
    )
    assert code == 0, out
    await sd.manager("StartUnit", "ss", f"{unit}.service", "replace")
    return f"{unit}.service"


async def status_text_is(sd: Client, service: str, text: str) -> bool:
    return str((await sd.props(service, "Service"))["StatusText"]) == text


@pytest.mark.slow
async def test_status_follows_the_first_run_as_resources_settle_and_fail(
    manager: RealSystemd, sd: Client, tmp_path: Path
) -> None:
    """STATUS= was sent at the converged/diverged transitions only: `systemctl status` read
    `converging: 0 of 3 resources settled, 0 failed` until the whole first run ended, a failed
    resource included (operator tester, 2026-12-05). It now follows the counts as they change
    (a few lines a second at most). One exec waits on a FIFO until the test opens it."""
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    path = tmp_path / "graph.yaml"
    path.write_text(
        f"graph: g\nresources:\n  file:\n    - name: one\n      path: {tmp_path}/one\n"
        '      content: "1\\n"\n  exec:\n    - name: wait\n      cmd: /bin/cat\n'
        f"      args: ['{fifo}']\n    - name: bad\n      cmd: /bin/false\n"
    )
    service = await install_and_start(manager, sd, "progress", tmp_path, path)

    def status_is(text: str) -> Callable[[], Awaitable[bool]]:
        return lambda: status_text_is(sd, service, text)

    # file[one] converged and exec[bad] failed while exec[wait] still runs: said. The first
    # run has not settled: not started yet (READY=1 was sent as the first graph began, so
    # `systemctl start` returned and units ordered after it started before it was applied).
    await sd.wait_until(status_is("converging: 2 of 3 resources settled, 1 failed"))
    assert await sd.active(service) == "activating"
    with fifo.open("w"):  # exec[wait]'s cat reads its end and exits 0
        pass
    await sd.wait_until(
        status_is("converged: 2 of 3 resources in the desired state; failed: exec[bad]")
    )
    assert await sd.active(service) == "active"  # a failure does not hold the start
    await sd.manager("StopUnit", "ss", service, "replace")

    async def stopped() -> bool:
        return await sd.active(service) in ("inactive", "failed")

    await sd.wait_until(stopped)


@pytest.mark.slow
async def test_status_names_a_resource_retrying_while_the_first_run_waits_for_it(
    manager: RealSystemd, sd: Client, tmp_path: Path
) -> None:
    """A resource retrying (`retry: -1`, its next attempt far off) holds the first run, and
    the unit `activating` (up to a minute): STATUS= read `converging: 1 of 2 resources
    settled, 0 failed`, nothing naming it, while `mgmt status` counted it failing (user3).
    It names the resources retrying now."""
    path = tmp_path / "graph.yaml"
    path.write_text(
        f"graph: g\nresources:\n  file:\n    - name: one\n      path: {tmp_path}/one\n"
        '      content: "1\\n"\n  exec:\n    - name: bad\n      cmd: /bin/false\n'
        "      meta: {retry: -1, delay: 600000}\n"
    )
    service = await install_and_start(manager, sd, "retrying", tmp_path, path)
    said = "converging: 1 of 2 resources settled, 0 failed, 1 retrying (exec[bad])"
    await sd.wait_until(lambda: status_text_is(sd, service, said))
    assert await sd.active(service) == "activating"
    await sd.manager("StopUnit", "ss", service, "replace")

    async def stopped() -> bool:
        return await sd.active(service) in ("inactive", "failed")

    await sd.wait_until(stopped)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown)")
def test_setup_refuses_code_another_user_could_change(tmp_path: Path) -> None:
    """The unit has root run the interpreter, the virtualenv's packages and the code at every
    boot: a virtualenv of uid 65534's (a real other user) would have root run what they put
    in it. Before (2026-12-06, ninth session) the unit was written; now exit 2, one line,
    naming the path and its owner. The same virtualenv root's: the unit is printed."""
    import site
    import sys

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    paths = [str(Path(__file__).parents[2]), *site.getsitepackages()]  # the checkout's deps
    site_dir = next(venv.glob("lib/python*/site-packages"))
    (site_dir / "checkout.pth").write_text("\n".join(paths) + "\n")
    graph = tmp_path / "g.yaml"
    graph.write_text("graph: g\n")
    argv = [str(venv / "bin" / "python"), "-m", "mgmt", "setup", "--install-service"]
    argv += ["--dry-run", "--prefix", str(tmp_path / "p"), "yaml", str(graph)]
    subprocess.run(["chown", "-R", "65534:65534", str(venv)], check=True)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"the interpreter: {venv} is owned by uid 65534: refusing" in done.stderr
    assert not done.stdout
    subprocess.run(["chown", "-R", "0:0", str(venv)], check=True)
    os.chown(site_dir / "checkout.pth", 65534, 65534)  # their file among its packages
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert f"the virtualenv: {site_dir}/checkout.pth is owned by uid 65534" in done.stderr
    os.chown(site_dir / "checkout.pth", 0, 0)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and "ExecStart=" in done.stdout, done.stderr
