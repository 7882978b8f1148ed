"""net.* and os.modinfo_loaded follow the kernel's netlink notifications: real interfaces
(a veth pair) and a real uevent, in namespaces of their own.

`test_in_namespaces` runs this file again under `unshare --mount --net` (private mount
propagation) with a fresh sysfs mounted on /sys: the interfaces it makes, and the uevent it
triggers on its own loopback, are that namespace's only, so the host is never changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mgmt.lang.funcs import os as los
from tests.mgmt.lang.funcs.test_os import ERROR, running

INSIDE = os.environ.get("MGMT_TEST_NS") == "1"
inside = pytest.mark.skipif(not INSIDE, reason="runs inside test_in_namespaces' namespaces")


@pytest.mark.slow  # a pytest of its own in the namespaces: ~5 s, mostly start-up
@pytest.mark.skipif(INSIDE, reason="this is the outer test")
def test_in_namespaces() -> None:
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is needed"
    argv = [unshare, "--mount", "--net", "--propagation", "private", "--", "/bin/sh", "-c"]
    inner = f"mount -t sysfs sysfs /sys && exec {sys.executable} -m pytest -p no:cacheprovider"
    argv += [f"{inner} -q -x {__file__}"]
    env = {**os.environ, "MGMT_TEST_NS": "1"}
    done = subprocess.run(argv, check=False, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout.replace("1 skipped", "")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, timeout=30)


@inside
async def test_interfaces_follow_netlink() -> None:
    src = 'import "net"\n$w = net.wired_interface()\n$c = net.interface_cidr("v0")\nnoop "n" {}\n'
    async with running(src) as (_rt, until):
        await until("w", ERROR)  # only lo: an error for now
        _ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
        await until("w", "v0")  # none is up: the first one
        _ip("addr", "add", "10.9.8.7/24", "dev", "v0")
        await until("c", "10.9.8.7/24")
        _ip("link", "set", "v1", "up")  # one that is up is preferred
        await until("w", "v1")
        _ip("addr", "flush", "dev", "v0")
        await until("c", ERROR)
        _ip("link", "del", "v0")  # the pair goes
        await until("w", ERROR)


def _uevent(interface: str) -> None:
    """Make the kernel send a `change` uevent about one of this namespace's interfaces."""
    with open(f"/sys/class/net/{interface}/uevent", "w") as handle:
        handle.write("change")


@inside
async def test_modinfo_loaded_follows_uevents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    modules = tmp_path / "modules"
    modules.write_text("loop 32768 0 - Live 0x0\n")
    monkeypatch.setattr(los.ModinfoLoaded, "MODULES", str(modules))
    async with running('import "os"\n$m = os.modinfo_loaded("veth")\nnoop "n" {}\n') as (
        _rt,
        until,
    ):
        await until("m", False)
        # A module's load is a uevent; any uevent makes it re-read (this one: our loopback's).
        modules.write_text("veth 40960 0 - Live 0x0\nloop 32768 0 - Live 0x0\n")
        _uevent("lo")
        await until("m", True)
