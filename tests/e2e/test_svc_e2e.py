"""svc end to end: the real `mgmt` command against a real systemd (tests/systemd_fixture.py).

The daemon finds the manager through DBUS_SYSTEM_BUS_ADDRESS and MGMT_SYSTEMD_UNIT_DIR (the
`session: false` code path) or, with `session: true`, DBUS_SESSION_BUS_ADDRESS and
XDG_CONFIG_HOME. The test watches the units over its own subscribed D-Bus connection.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.helpers import Daemon, run_mgmt
from tests.systemd_fixture import Client, RealSystemd

SERVICE = """[Unit]
Description=a test service
[Service]
ExecStart=/bin/sleep {seconds}
{extra}
[Install]
WantedBy=default.target
"""


def unit(
    manager: RealSystemd, stem: str = "web", seconds: str = "infinity", extra: str = ""
) -> str:
    name = manager.name(stem) + ".service"
    manager.write_unit(name, SERVICE.format(seconds=seconds, extra=extra))
    return name


async def mgmt(args: list[str]) -> tuple[int, str]:
    """`mgmt ARGS` run to completion in a thread (the event loop keeps serving our bus)."""
    return await asyncio.to_thread(run_mgmt, args)


def graph(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "graph.yaml"
    path.write_text(text)
    return path


def svc_graph(tmp_path: Path, name: str, session: bool = False, meta: str = "") -> Path:
    return graph(
        tmp_path,
        f"graph: svc\nresources:\n  svc:\n    - name: {name.removesuffix('.service')}\n"
        f"      state: running\n      startup: enabled\n      session: {str(session).lower()}\n"
        + (f"      meta: {meta}\n" if meta else ""),
    )


async def up(sd: Client, name: str) -> bool:
    return await sd.active(name) == "active" and await sd.file_state(name) == "enabled"


async def test_daemon_repairs_every_drift(manager: RealSystemd, sd: Client, tmp_path: Path) -> None:
    name = unit(manager)
    link = manager.link("default.target", name)

    async def enabled() -> bool:
        return await sd.file_state(name) == "enabled"

    async with Daemon(["run", "--tmp-prefix", "yaml", str(svc_graph(tmp_path, name))]) as daemon:
        await daemon.wait_log("converged")
        assert await up(sd, name)
        took = []
        for _ in range(3):
            pid = await sd.main_pid(name)
            began = time.perf_counter()
            # --no-block: a blocking stop's job may be canceled by the repair's start (an error)
            await manager.systemctl("stop", "--no-block", name)
            await sd.running_with_new_pid(name, pid)
            took.append(time.perf_counter() - began)
        pid = await sd.main_pid(name)
        os.kill(pid, signal.SIGKILL)  # a crash
        await sd.running_with_new_pid(name, pid)
        await manager.systemctl("disable", name)  # systemctl removes the link: no signal
        await sd.wait_until(enabled)
        await sd.manager("DisableUnitFiles", "asb", [name], False)  # UnitFilesChanged
        await sd.wait_until(enabled)
        link.unlink()
        await sd.reload()  # Reloading
        await sd.wait_until(enabled)
        link.unlink()  # nothing but inotify sees this
        await sd.wait_until(enabled)
        assert await up(sd, name) and link.is_symlink()
        res = name.removesuffix(".service")
        await daemon.wait_log(f"svc[{res}]: started {name}", count=5)
        await daemon.wait_log(f"svc[{res}]: enabled {name} at boot", count=5)
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0, daemon.log
    print("repairs after a stop:", ", ".join(f"{t * 1000:.1f} ms" for t in took))


async def test_daemon_survives_dbus_restarts(
    manager: RealSystemd, sd: Client, tmp_path: Path
) -> None:
    """The bus restarted (a dbus upgrade), then stopped and started (a stop by hand of the
    unit meanwhile): the agent reconnects each time, without meta rewatch, and repairs the
    unit; one line when the bus is lost, one when it is back."""
    name = unit(manager)
    res = name.removesuffix(".service")
    async with Daemon(["run", "--tmp-prefix", "yaml", str(svc_graph(tmp_path, name))]) as daemon:
        await daemon.wait_log("converged")
        await manager.systemctl("restart", "dbus.service")  # `sd` is disconnected too
        await daemon.wait_log(f"svc[{res}]: reconnected to D-Bus")
        async with manager.client() as client:
            pid = await client.main_pid(name)
            await manager.systemctl("stop", "--no-block", name)
            pid = await client.running_with_new_pid(name, pid)
        await manager.systemctl("stop", "dbus.socket", "dbus.service")
        await daemon.wait_log(f"svc[{res}]: lost the D-Bus connection", count=2)
        await manager.systemctl("stop", name)  # systemctl needs no bus
        await manager.systemctl("start", "dbus.socket")
        async with manager.client() as client:
            await client.running_with_new_pid(name, pid)
            assert await up(client, name)
        await daemon.wait_log(f"svc[{res}]: reconnected to D-Bus", count=2)
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0, daemon.log
    assert daemon.log.count("lost the D-Bus connection") == 2, daemon.log
    assert daemon.log.count("reconnected to D-Bus") == 2, daemon.log
    assert f"svc[{res}]: started {name}" in daemon.log
    assert "watch failed" not in daemon.log, daemon.log


async def test_unit_file_from_a_file_resource_with_notify(
    manager: RealSystemd, sd: Client, tmp_path: Path
) -> None:
    """The graph changes the unit file: daemon-reload, then the notified svc restarts."""
    name = manager.name("app") + ".service"

    def write_graph(seconds: int) -> Path:
        content = SERVICE.format(seconds=seconds, extra="").replace("\n", "\\n")
        return graph(
            tmp_path,
            f"""graph: notify
resources:
  file:
    - name: unit
      path: {manager.unit_dir / name}
      content: "{content}"
  svc:
    - name: {name.removesuffix(".service")}
      state: running
      startup: enabled
edges:
  - name: unit-svc
    from: {{kind: file, name: unit}}
    to: {{kind: svc, name: {name.removesuffix(".service")}}}
    notify: true
""",
        )

    async def runs(seconds: int) -> bool:
        (exec_start,) = (await sd.props(name, "Service"))["ExecStart"]
        return exec_start[1] == ["/bin/sleep", str(seconds)] and await up(sd, name)

    path = write_graph(1001)
    async with Daemon(["run", "--tmp-prefix", "yaml", str(path)]) as daemon:
        await daemon.wait_log("converged")
        assert await runs(1001)
        pid = await sd.main_pid(name)
        write_graph(1002)  # the daemon swaps the new graph in
        # The daemon-reload shows the new ExecStart before the restart that follows it: wait
        # for the restart (a new main PID), then for the new definition.
        await sd.running_with_new_pid(name, pid)
        await sd.wait_until(lambda: runs(1002))
        assert (await sd.props(name))["NeedDaemonReload"] is False
        res = name.removesuffix(".service")
        await daemon.wait_log(f"svc[{res}]: restarted {name} (refresh: its unit file changed)")
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0, daemon.log


async def test_unit_file_written_first_by_autoedge(
    manager: RealSystemd, sd: Client, tmp_path: Path
) -> None:
    """No edge in the graph: the svc waits for the file resource that writes its unit file."""
    name = manager.name("auto") + ".service"
    content = SERVICE.format(seconds="infinity", extra="").replace("\n", "\\n")
    path = graph(
        tmp_path,
        f"""graph: autoedge
resources:
  svc:
    - name: {name.removesuffix(".service")}
      state: running
      startup: enabled
  file:
    - name: unit
      path: {manager.unit_dir / name}
      content: "{content}"
""",
    )
    code, out = await mgmt(["run", "--converged-timeout=0", "--tmp-prefix", "yaml", str(path)])
    assert code == 0, out
    assert "failed" not in out, out
    assert await up(sd, name)


@pytest.mark.parametrize("session", [False, True], ids=["system-path", "session"])
async def test_cron_mode_then_nothing_to_do(
    manager: RealSystemd, sd: Client, tmp_path: Path, session: bool
) -> None:
    """One-shot runs (`--converged-timeout=0`) of a templated unit: changes, then none."""
    stem = manager.name("tmpl")
    manager.write_unit(f"{stem}@.service", SERVICE.format(seconds="infinity", extra=""))
    name = f"{stem}@one.service"
    run = ["run", "--converged-timeout=0", "--tmp-prefix", "yaml"]
    path = str(svc_graph(tmp_path, name, session))
    code, out = await mgmt([*run, path])
    assert code == 0, out
    assert f"svc[{stem}@one]: started {name}" in out, out
    assert await up(sd, name)
    code, out = await mgmt([*run, path])
    assert code == 0, out
    assert "svc[" not in out, out  # nothing changed, nothing to say at INFO


async def test_noop_reports_and_changes_nothing(
    manager: RealSystemd, sd: Client, tmp_path: Path
) -> None:
    name = unit(manager)
    path = str(svc_graph(tmp_path, name))
    code, out = await mgmt(["run", "--noop", "--converged-timeout=0", "--tmp-prefix", "yaml", path])
    assert code == 0, out
    res = name.removesuffix(".service")
    assert f"svc[{res}]: would enable {name} at boot" in out, out
    assert f"svc[{res}]: would start {name}" in out, out
    assert await sd.active(name) == "inactive" and await sd.file_state(name) == "disabled"


async def test_failing_unit_is_retried_per_meta(
    manager: RealSystemd, sd: Client, tmp_path: Path
) -> None:
    name = manager.name("bad") + ".service"
    text = SERVICE.format(seconds="1", extra="Type=exec").replace("/bin/sleep", "/nonexistent")
    manager.write_unit(name, text)
    path = str(svc_graph(tmp_path, name, meta="{retry: 2, delay: 10}"))
    args = ["run", "--converged-timeout=1", "--max-runtime=60", "--tmp-prefix", "yaml", path]
    code, out = await mgmt(args)
    assert code == 1, out
    error = f"could not start {name}: its job ended with result 'failed'"
    # Each failure says a retry follows and how many are left, the last one that it is out of
    # retries; the exit names the resource without repeating the error.
    assert f"failed, retrying in 0.01s (2 left): {error}" in out, out
    assert f"failed, retrying in 0.01s (1 left): {error}" in out, out
    assert f"svc[{name.removesuffix('.service')}]: failed: {error}" in out, out
    assert out.count(error) == 3, out
    assert await sd.active(name) == "failed"


@pytest.mark.parametrize(
    ("setup", "error"),
    [
        ("missing", "no such unit (no unit file in {unit_dir})"),
        ("masked", "it is masked: unmask it first"),
    ],
)
async def test_unit_that_cannot_run_is_a_clear_failure(
    manager: RealSystemd, sd: Client, tmp_path: Path, setup: str, error: str
) -> None:
    name = manager.name(setup) + ".service"
    if setup == "masked":
        await manager.systemctl("mask", name)
        await sd.reload()
    path = str(svc_graph(tmp_path, name))
    code, out = await mgmt(["run", "--converged-timeout=1", "--tmp-prefix", "yaml", path])
    assert code == 1, out
    message = error.format(unit_dir=manager.unit_dir)
    assert f"cannot enable {name}: {message}" in out, out
    assert "Traceback" not in out, out
