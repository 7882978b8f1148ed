"""svc repair latency against a real systemd (a contained `systemd --user`, scripts/user-systemd).

- crash: kill -9 of the unit's main process -> the unit active again with a new main PID, for
  a unit the `mgmt run` daemon keeps running (Restart=no: the agent repairs it), beside
  systemd's own floor: a unit with Restart=always and RestartSec=0, no agent.
- disable: the unit disabled (DisableUnitFiles over D-Bus, which systemd signals; and its
  .wants/ link removed by hand, which only inotify sees) -> enabled again by the daemon.

Times run from just before the kill/disable to the moment a separate subscribed D-Bus client
sees the repaired state (the same observer for the agent and for the floor). The daemon takes
the system code path (`session: false`) pointed at the manager's bus. Figures are printed.

    .venv/bin/python bench/svc.py [--runs 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from common import MGMT, ROOT, fmt_ms, percentiles, run_script
from dbus_fast import Message, MessageType

sys.path.insert(0, str(ROOT))
from tests.systemd_fixture import Client, RealSystemd, start, stop

UNIT = """[Unit]
StartLimitIntervalSec=0
[Service]
ExecStart=/bin/sleep infinity
{restart}
[Install]
WantedBy=default.target
"""


class Observer:
    """The units' properties as systemd's signals say, each signal timed as it arrives (the
    handler runs at receipt, before any other task), so the observer adds no round trip."""

    def __init__(self, sd: Client) -> None:
        self.sd = sd
        self.props: dict[str, dict[str, Any]] = {}  # object path -> property -> value
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[float]]] = []
        self.reloads = 0  # daemon-reloads finished
        sd.conn.add_message_handler(self._on_message)

    async def track(self, unit: str) -> dict[str, Any]:
        """Start with the unit's Unit and Service properties; its live property dict."""
        (path,) = await self.sd.manager("LoadUnit", "s", unit)
        props = self.props.setdefault(path, {})
        props.update(await self.sd.props(unit))
        props.update(await self.sd.props(unit, "Service"))
        return props

    def _on_message(self, msg: Message) -> None:
        if msg.message_type is not MessageType.SIGNAL:
            return
        now = time.perf_counter()
        if msg.member == "PropertiesChanged" and msg.path in self.props:
            _interface, changed, _invalidated = msg.body
            self.props[msg.path].update({k: v.value for k, v in changed.items()})
        elif msg.member == "Reloading" and not msg.body[0]:
            self.reloads += 1
        for predicate, future in list(self._waiters):
            if not future.done() and predicate():
                future.set_result(now)

    async def until(self, predicate: Callable[[], bool]) -> float:
        """perf_counter() of the first signal after which `predicate()` holds (now if it
        holds already: the signal came in the same read as the one the caller waited for,
        e.g. the agent's Reloading just after its UnitFilesChanged; waiting for another
        signal then hung the run for 30 s, a TimeoutError)."""
        if predicate():
            return time.perf_counter()
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        waiter = (predicate, future)
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(30):
                return await future
        finally:
            self._waiters.remove(waiter)


async def crash_repairs(observer: Observer, unit: str, runs: int) -> list[float]:
    """kill -9 of the main process -> active with a new main PID, `runs` times."""
    props = await observer.track(unit)
    samples = []
    for _ in range(runs):
        pid = props["MainPID"]
        began = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        done = await observer.until(
            lambda pid=pid: props["ActiveState"] == "active" and props["MainPID"] not in (0, pid)
        )
        samples.append(done - began)
    return samples


async def enable_repairs(
    observer: Observer, link: Path, runs: int, disable: Callable[[], Awaitable[object]]
) -> list[float]:
    """disable -> enabled again (its link back: the agent's EnableUnitFiles, which systemd
    signals), `runs` times; each after the agent's daemon-reload that follows the last."""
    samples = []
    for _ in range(runs):
        reloads = observer.reloads
        began = time.perf_counter()
        await disable()
        samples.append(await observer.until(link.is_symlink) - began)
        await observer.until(lambda n=reloads: observer.reloads > n)  # the agent's, after
    return samples


async def daemon(manager: RealSystemd, graph: Path) -> asyncio.subprocess.Process:
    """`mgmt run` on the graph, once it has converged."""
    env = {**os.environ, **manager.env(session=False)}
    proc = await asyncio.create_subprocess_exec(
        *MGMT, "run", "--tmp-prefix", "yaml", str(graph), env=env, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    async with asyncio.timeout(30):
        async for line in proc.stderr:
            if b"converged" in line:
                return proc
    raise RuntimeError(f"mgmt exited with {await proc.wait()} before converging")


async def drain(proc: asyncio.subprocess.Process) -> None:
    """Read the daemon's log (so its pipe never fills)."""
    assert proc.stderr is not None
    async for _ in proc.stderr:
        pass


async def bench(manager: RealSystemd, work: Path, runs: int) -> None:
    floor, agent = "floor.service", "agent.service"
    manager.write_unit(floor, UNIT.format(restart="Restart=always\nRestartSec=0"))
    manager.write_unit(agent, UNIT.format(restart=""))
    graph = work / "graph.yaml"
    graph.write_text(
        "graph: bench\nresources:\n  svc:\n"
        "    - name: agent\n      state: running\n      startup: enabled\n"
    )
    async with manager.client() as sd:
        observer = Observer(sd)
        await manager.systemctl("daemon-reload")
        await manager.systemctl("start", floor)
        alone = await crash_repairs(observer, floor, runs)
        await manager.systemctl("stop", floor)
        proc = await daemon(manager, graph)
        reader = asyncio.create_task(drain(proc))
        try:
            repaired = await crash_repairs(observer, agent, runs)
            link = manager.link("default.target", agent)
            over_dbus = await enable_repairs(
                observer, link, runs, lambda: sd.manager("DisableUnitFiles", "asb", [agent], False)
            )
            by_hand = await enable_repairs(
                observer, link, runs, lambda: asyncio.to_thread(link.unlink)
            )
        finally:
            if proc.returncode is None:  # not already stopped by a Ctrl-C
                proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                await proc.wait()
            await reader
    print(f"svc repairs against a real systemd --user, {runs} runs each:")
    print(f"  kill -9 -> active, new PID: systemd alone (Restart=always, RestartSec=0): "
          f"{fmt_ms(percentiles(alone))}")  # fmt: skip
    print(f"  kill -9 -> active, new PID: mgmt (Restart=no):                        "
          f"{fmt_ms(percentiles(repaired))}")  # fmt: skip
    gap = percentiles(repaired)["p50"] - percentiles(alone)["p50"]
    print(f"  mgmt minus systemd's floor at p50: {gap * 1000:.2f}ms (goal: within 10ms)")
    print(f"  disable (DisableUnitFiles over D-Bus) -> enabled: {fmt_ms(percentiles(over_dbus))}")
    print(f"  disable (.wants/ link removed by hand) -> enabled: {fmt_ms(percentiles(by_hand))}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mgmt-bench-svc-") as tmp:
        work = Path(tmp)
        manager = start(work / "systemd")
        try:
            asyncio.run(bench(manager, work, args.runs))
        finally:
            stop(work / "systemd")


if __name__ == "__main__":
    run_script(main)
