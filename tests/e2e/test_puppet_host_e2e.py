"""The Puppet front-end end to end on this machine: a manifest of every type.

Services and cron jobs go to a real systemd (tests/systemd_fixture.py, the system code path
pointed at a contained `systemd --user`); users and groups are real (unique names, removed:
the host lock); packages are read from the real dpkg database (puppet-agent itself: installed,
no change). The other Puppet tests, which change nothing of this machine's, are in
tests/e2e/test_puppet_e2e.py.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import pwd
import signal
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import Daemon, has_content, run_mgmt, wait_path
from tests.systemd_fixture import Client, RealSystemd

pytestmark = [pytest.mark.slow, pytest.mark.host, pytest.mark.timeout(180)]

SERVICE = "[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=default.target\n"
_names = itertools.count()


@pytest.fixture
def account() -> Iterator[str]:
    """A user and group name of its own, removed afterwards."""
    name = f"mgmtpp{os.getpid() % 10000}x{next(_names)}"
    yield name
    subprocess.run(["userdel", name], capture_output=True, check=False)
    subprocess.run(["groupdel", name], capture_output=True, check=False)


def manifest(tmp_path: Path, unit: str, account: str) -> str:
    t = tmp_path
    return textwrap.dedent(
        f"""\
        class web {{
          file {{ '{t}/www': ensure => directory, mode => '0750' }}
          file {{ '{t}/www/index.html':
            content => "hello\\n",
            mode    => '0644',
            notify  => [Exec['reload-count'], Service['{unit}']],
          }}
          service {{ '{unit}': ensure => running, enable => true }}
        }}
        include web
        exec {{ 'reload-count':
          command     => 'echo reload >> {t}/reloads',
          path        => ['/bin', '/usr/bin'],
          refreshonly => true,
        }}
        exec {{ 'once': command => '/bin/touch {t}/once', creates => '{t}/once' }}
        exec {{ 'guarded':
          command => 'echo ran >> {t}/guarded',
          path    => '/bin:/usr/bin',
          unless  => 'test -e {t}/guarded',
        }}
        group {{ '{account}': ensure => present }}
        user {{ '{account}': ensure => present, gid => '{account}', shell => '/bin/sh',
          require => Group['{account}'] }}
        package {{ 'puppet-agent': ensure => installed }}
        cron {{ 'nightly': command => '/bin/true', hour => 3, minute => '*/30', weekday => '1-5' }}
        notify {{ 'hello from puppet': }}
        host {{ 'db.example.net': ip => '10.0.0.9', host_aliases => 'db', target => '{t}/hosts' }}
        Class['web'] -> Exec['once']
        """
    )


async def test_a_manifest_of_every_type_runs_repairs_drift_and_is_idempotent(
    manager: RealSystemd, sd: Client, tmp_path: Path, account: str
) -> None:
    unit = manager.name("pweb")
    manager.write_unit(f"{unit}.service", SERVICE)
    pp = tmp_path / "site.pp"
    pp.write_text(manifest(tmp_path, unit, account))
    index = tmp_path / "www/index.html"
    async with Daemon(["run", "--tmp-prefix", "puppet", str(pp)]) as daemon:
        await daemon.wait_log("converged: all", timeout=60)
        assert index.read_text() == "hello\n"
        assert (tmp_path / "www").stat().st_mode & 0o777 == 0o750
        assert (tmp_path / "once").exists() and (tmp_path / "guarded").read_text() == "ran\n"
        # Creating the file was a change: it refreshed the refreshonly exec, as in Puppet.
        assert (tmp_path / "reloads").read_text() == "reload\n"
        assert pwd.getpwnam(account).pw_shell == "/bin/sh"
        assert await sd.active(f"{unit}.service") == "active"
        timer = (manager.unit_dir / "puppet-nightly.timer").read_text()
        assert "OnCalendar=Mon..Fri *-*-* 03:00/30:00" in timer
        assert "msg[hello from puppet]: hello from puppet" in daemon.log
        assert (tmp_path / "hosts").read_text() == "10.0.0.9\tdb.example.net\tdb\n"
        pid = await sd.main_pid(f"{unit}.service")
        # Drift: the file is repaired by its own event, and the repair refreshes (as a change in
        # Puppet would): the refreshonly exec runs, the service restarts.
        index.write_text("tampered\n")
        await wait_path(index, has_content("hello\n"))
        await wait_path(tmp_path / "reloads", has_content("reload\nreload\n"))
        await sd.running_with_new_pid(f"{unit}.service", pid)
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    # A second run, in cron mode: nothing to change, nothing run.
    code, out = await asyncio.to_thread(
        run_mgmt, ["run", "--tmp-prefix", "--converged-timeout", "0", "puppet", str(pp)], 120
    )
    assert code == 0, out
    assert "ran:" not in out and "created" not in out and "changed" not in out, out
    assert (tmp_path / "reloads").read_text() == "reload\nreload\n"
    assert (tmp_path / "guarded").read_text() == "ran\n"
    code, out = await asyncio.to_thread(
        run_mgmt, ["run", "--tmp-prefix", "--converged-timeout", "0", "--noop", "puppet", str(pp)]
    )
    assert code == 0 and "ran:" not in out, out
