"""A package transaction outlives the stop of the agent's systemd unit: the real `mgmt` as a
unit of a real systemd manager (tests/systemd_fixture.py), the unit `mgmt setup` writes with a
short TimeoutStopSec, and a real apt-get/dpkg transaction held half-way by the test.

The transaction removes a tiny local package whose prerm waits on a FIFO the test controls: it
is known to be in dpkg's hands (the prerm opened `ready`) when the unit is stopped, and it ends
only when let go (`go`). Until 2026-12-07 the unit's stop SIGKILLed it (`KillMode=mixed`, the
`TimeoutStopSec` that bounds even a graceful stop): dpkg was left "interrupted", every later
apt-get refused until `dpkg --configure -a`. Now it runs in a scope of its own
(`mgmt-pkg-<hex>.scope`, resources._lib.unitscope), ends well after the unit has stopped, and
the next start of the unit waits for dpkg's lock, saying who holds it. Nothing is signalled by
the test; whatever happens, dpkg is left consistent (`dpkg --audit` empty) and the package gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
from pathlib import Path

import pytest

from mgmt.setup import unit_text
from resources._lib.proc import lock_holder, pid_exited
from resources.pkg.apt import FRONTEND_LOCK
from tests.conftest import HOST_LOCK
from tests.e2e.helpers import wait_path
from tests.resources.test_pkg import (
    PRERM,
    WAIT,
    audit,
    host_lock,
    let_go,
    local_package,
    needs_apt,
    release,
    run,
    status,
)
from tests.systemd_fixture import Client, RealSystemd

pytestmark = [pytest.mark.apt, pytest.mark.slow, pytest.mark.timeout(400), needs_apt]

HELD = "mgmt-test-held"
STOP_SEC = 3  # the unit's TimeoutStopSec (the shipped unit's is 90)


def agent_unit(manager: RealSystemd, tmp_path: Path, log: Path) -> str:
    """The unit `mgmt setup --install-service` writes for a graph removing HELD, its
    TimeoutStopSec short, its output in `log`."""
    graph = tmp_path / "graph.yaml"
    graph.write_text(
        f"graph: held\nresources:\n  pkg:\n    - name: {HELD}\n      state: uninstalled\n"
    )
    text = unit_text(["--prefix", str(tmp_path / "prefix"), "yaml", str(graph)], 30)
    assert "KillMode=mixed\n" in text and "TimeoutStopSec=90\n" in text, text
    text = text.replace("TimeoutStopSec=90\n", f"TimeoutStopSec={STOP_SEC}\n")
    output = f"StandardOutput=append:{log}\nStandardError=append:{log}\n"
    return text.replace("[Service]\n", f"[Service]\n{output}")


def has_reader(fifo: Path) -> bool:
    """Whether a process has `fifo` open for reading (the held prerm), found without blocking
    (ENXIO: none); says nothing to it."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return False
    os.close(fd)
    return True


def said(log: Path, pattern: str) -> re.Match[str] | None:
    try:
        return re.search(pattern, log.read_text())
    except OSError:
        return None


async def settled(sd: Client, unit: str, states: tuple[str, ...]) -> None:
    async def there() -> bool:
        return await sd.active(unit) in states

    await sd.wait_until(there, timeout=WAIT)


async def test_a_transaction_outlives_the_stop_of_the_agents_unit(
    manager: RealSystemd, sd: Client, tmp_path: Path
) -> None:
    ready, go, log = tmp_path / "ready", tmp_path / "go", tmp_path / "agent.log"
    prerm = PRERM.format(ready=shlex.quote(str(ready)), go=shlex.quote(str(go)))
    deb = await local_package(tmp_path, HELD, scripts={"prerm": prerm})
    unit = manager.name("mgmt-agent") + ".service"
    async with host_lock(HOST_LOCK):
        await run("dpkg", "--install", str(deb))
        os.mkfifo(ready)
        os.mkfifo(go)
        try:
            manager.write_unit(unit, agent_unit(manager, tmp_path, log))
            await sd.reload()
            # --no-block: a Type=notify unit is started once its first graph has settled
            await manager.systemctl("start", "--no-block", unit)
            async with asyncio.timeout(WAIT):  # the prerm runs: dpkg is half-way
                await asyncio.to_thread(lambda: ready.open().close())

            # The stop: the agent waits for its transaction, systemd kills it STOP_SEC later.
            await manager.systemctl("stop", "--no-block", unit)
            await settled(sd, unit, ("inactive", "failed"))
            assert has_reader(go), f"the unit's stop killed the transaction: {log.read_text()}"
            started = said(
                log, r"apt-get install: started \(pid (\d+), (mgmt-pkg-[0-9a-f]{12}\.scope)\)"
            )
            assert started is not None, log.read_text()
            pid, scope = int(started[1]), started[2]
            assert await sd.active(scope) == "active"  # its scope, outside the agent's unit

            # The next start finds dpkg's lock held by it, and waits.
            await manager.systemctl("start", "--no-block", unit)
            waits = rf"dpkg.s lock is held by pid {pid} \(apt-get\) in {scope}, a transaction"
            await wait_path(log, lambda path: said(path, waits) is not None, timeout=WAIT)
            let_go(go)
            async with asyncio.timeout(WAIT):
                await pid_exited(pid)
            await settled(sd, unit, ("active",))  # converged: READY=1
            await manager.systemctl("stop", unit)
            assert await sd.active(unit) == "inactive", log.read_text()
        finally:
            await leave_dpkg_consistent(manager, unit, ready, go)
    assert not await audit()
    assert await status(HELD) in ("", "un", "pn"), "removed"
    assert "exited with code" not in log.read_text(), log.read_text()


async def leave_dpkg_consistent(manager: RealSystemd, unit: str, ready: Path, go: Path) -> None:
    """Whatever happened: the held prerm (and a thread of ours waiting on `ready`) let go,
    the FIFOs removed (a later prerm does not wait), the unit stopped, every transaction
    ended, dpkg mended if it was interrupted and the package purged."""
    release(ready, go)
    with contextlib.suppress(AssertionError):
        await manager.systemctl("stop", unit)
    async with asyncio.timeout(WAIT):
        while (holder := lock_holder(FRONTEND_LOCK)) is not None:
            await pid_exited(holder[0])
    if await audit():
        await run("dpkg", "--configure", "-a")
    if await status(HELD) not in ("", "un", "pn"):
        await run("dpkg", "--purge", HELD)
