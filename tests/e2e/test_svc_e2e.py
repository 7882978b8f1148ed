"""svc end to end: the real `mgmt run` daemon against the fake systemd on a private D-Bus.

The fake runs in the test's event loop (so the test sees every state change at once); the
daemon is a child process that finds it through DBUS_SYSTEM_BUS_ADDRESS and
MGMT_SYSTEMD_UNIT_DIR.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.e2e.helpers import Daemon, has_content, wait_path
from tests.fakes.systemd import Unit, running_fake

WEB = """[Unit]
Description=a web server
[Service]
ExecStart=/usr/sbin/web
ExecReload=/bin/kill -HUP $MAINPID
[Install]
WantedBy=multi-user.target
"""
REPAIR_BUDGET = 1.0  # seconds; measured repairs take a few milliseconds


def graph(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "graph.yaml"
    path.write_text(text)
    return path


async def test_daemon_repairs_a_unit_stopped_from_outside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_fake(tmp_path, monkeypatch.setenv) as fake:
        fake.write_unit("web.service", WEB)
        unit = fake.unit("web.service")
        path = graph(
            tmp_path,
            "graph: svc\nresources:\n  svc:\n"
            "    - name: web\n      state: running\n      startup: enabled\n",
        )
        async with Daemon(["run", "--tmp-prefix", "yaml", str(path)]) as daemon:
            await daemon.wait_log("converged")
            assert unit.active_state == "active" and fake.file_state("web.service") == "enabled"
            took = []
            for starts in (2, 3, 4):
                began = time.perf_counter()
                fake.stop_from_outside("web.service")  # `systemctl stop web`
                await fake.wait_for(lambda n=starts: unit.starts == n and active(unit))
                took.append(time.perf_counter() - began)
            fake.crash("web.service")
            await fake.wait_for(lambda: unit.starts == 5 and active(unit))
            fake.manager.disable_unit_files(["web.service"], False)  # `systemctl disable web`
            await fake.wait_for(lambda: fake.file_state("web.service") == "enabled")
            await daemon.wait_log("svc[web]: started web.service", count=5)
            await daemon.wait_log("svc[web]: enabled web.service at boot", count=2)
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0, daemon.log
        await fake.wait_for(lambda: not fake.subscribers)  # the daemon's subscription ended
    print("repairs:", ", ".join(f"{t * 1000:.1f} ms" for t in took))
    assert max(took) < REPAIR_BUDGET, took


async def test_daemon_reloads_on_refresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A config file changed (and repaired) upstream notifies the svc: ReloadOrRestartUnit."""
    config = tmp_path / "web.conf"
    async with running_fake(tmp_path, monkeypatch.setenv) as fake:
        fake.write_unit("web.service", WEB)
        unit = fake.unit("web.service")
        path = graph(
            tmp_path,
            f"""graph: refresh
resources:
  file:
    - name: conf
      path: {config}
      content: "workers = 4\\n"
  svc:
    - name: web
      state: running
edges:
  - name: conf-web
    from: {{kind: file, name: conf}}
    to: {{kind: svc, name: web}}
    notify: true
""",
        )
        async with Daemon(["run", "--tmp-prefix", "yaml", str(path)]) as daemon:
            await daemon.wait_log("converged")
            assert active(unit) and unit.reloads == 0  # the start needed no reload
            config.write_text("workers = 1\n")  # drift: repaired, and that is a change
            await wait_path(config, has_content("workers = 4\n"))
            await fake.wait_for(lambda: unit.reloads == 1)
            await daemon.wait_log("svc[web]: reloaded or restarted web.service (refresh)")
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0, daemon.log


async def test_unit_file_written_first_by_autoedge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No edge in the graph: the svc waits for the file resource that writes its unit file."""
    async with running_fake(tmp_path, monkeypatch.setenv) as fake:
        path = graph(
            tmp_path,
            f"""graph: autoedge
resources:
  svc:
    - name: app
      state: running
      startup: enabled
  file:
    - name: unit
      path: {fake.unit_dir}/app.service
      content: |
        [Service]
        ExecStart=/usr/sbin/app
        [Install]
        WantedBy=multi-user.target
""",
        )
        async with Daemon(
            ["run", "--converged-timeout=0", "--tmp-prefix", "yaml", str(path)]
        ) as daemon:
            assert await daemon.wait() == 0, daemon.log
        assert active(fake.unit("app.service"))
        assert fake.file_state("app.service") == "enabled"
        assert "failed" not in daemon.log, daemon.log


def active(unit: Unit) -> bool:
    return unit.active_state == "active"
