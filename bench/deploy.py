"""Deploy latency: `mgmt deploy` -> the program running on all three hosts.

Three agents on this machine (`mgmt run empty`, mutual TLS, their own etcd members, trusting
one SSH key). Each round writes a new version of a `lang DIR/` program (one file per host,
holding a fresh token) and pushes it, signed; the clock stops when every host's file holds
the token (inotify). Four figures:

- the whole command as an operator runs it, `mgmt deploy --timings`, on h1 (its prefix): the
  thin path (a small Python process: start-up, read the files, hand them to h1's agent over
  its deploy socket, which checks them and asks for the signature, sign in-process, the
  agent's transaction), then every host's watch (its events carry the deploy), verification
  (in-process for Ed25519), extraction, compile, graph swap, atomic write;
- the same with `site` (`python -m mgmt`): the `mgmt` launcher `scripts/install.sh` writes
  starts Python without it (-S), which the thin path does not need;
- the same with `--direct`: the command checks, connects and pushes itself (start-up and
  imports, check, connection, signing, the transaction);
- the push alone, from the library (`store.push` with the same signing) in this process: the
  cluster's part, without the command's start-up and check.

The four alternate, round by round, so that the machine's load weighs on all alike; `uptime`
is printed before and after. The tree is byte-compiled first (see `scripts/install.sh`). Also
printed: when the command's steps ended (p50, from its `--timings`, ms since its process
started; `exited`: its wall time as this script saw it), the library push's steps, and each
host's own time from seeing a deploy to running it (its log).

Target: p50 <= 100 ms.

With `--against TREE` (another checkout, e.g. `git worktree add /tmp/base main`; this venv's
packages), it measures instead two clusters at once, one of this tree and one of TREE (its
`python -m mgmt` with PYTHONPATH=TREE, or the `mgmt` launcher of TREE/.venv if it has one),
the thin command to each in turn: a change's figure side by side with the same load.

    .venv/bin/python bench/deploy.py [--count 20] [--short-timings] [--against TREE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from cluster_latency import free_ports, wait_all
from common import (
    MGMT,
    ROOT,
    checkout,
    cluster_agent_argv,
    fmt_ms,
    percentiles,
    run_script,
    terminate,
)

sys.path.insert(0, str(ROOT))
from engine.watcher import PathWatcher
from mgmt.cluster.client import EtcdClient
from mgmt.cluster.pki import TLSFiles, create_ca
from mgmt.deploy.bundle import read_program
from mgmt.deploy.store import push, record_maker

HOSTS = ("h1", "h2", "h3")


def program(src: Path, out: Path, token: str) -> None:
    (src / "main.mcl").write_text(
        f'import "sys"\nfile "{out}/${{sys.hostname()}}" {{\n\tcontent => "{token}\\n",\n}}\n'
    )


def make_key(work: Path) -> Path:
    """The operator's key, and the hosts' trusted keys file holding it."""
    key = work / "operator"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30
    )
    (work / "trusted").write_text(f"operator {key.with_suffix('.pub').read_text()}")
    return key


@dataclass
class Tree:
    """A checkout whose `mgmt` runs the agents and the command."""

    root: Path
    mgmt: list[str]
    env: dict[str, str] | None = None  # None: this process's


THIS = Tree(ROOT, MGMT)


def other_tree(root: Path) -> Tree:
    launcher = root / ".venv" / "bin" / "mgmt"
    mgmt = [str(launcher)] if launcher.exists() else [sys.executable, "-m", "mgmt"]
    return Tree(root, mgmt, {**os.environ, "PYTHONPATH": str(root)})


async def start_hosts(
    work: Path, ports: list[int], short: bool, tree: Tree = THIS
) -> list[asyncio.subprocess.Process]:
    timings = ["--etcd-heartbeat-interval", "10", "--etcd-election-timeout", "100"]
    procs = []
    for i, host in enumerate(HOSTS):
        extra = ["--trusted-keys", str(work / "trusted"), *(timings if short else [])]
        argv = cluster_agent_argv(tree.mgmt, host, i, work, ports, *extra)
        log = (work / f"{host}.log").open("w")
        procs.append(
            await asyncio.create_subprocess_exec(
                *argv, "empty", stdout=log, stderr=log, cwd=tree.root, env=tree.env
            )
        )
    return procs


def exists(path: Path) -> bool:
    return path.exists()


async def wait_exists(path: Path) -> None:
    """Wait (inotify) until `path` exists."""
    async with asyncio.timeout(30), PathWatcher([path]) as watcher:
        if exists(path):
            return
        async for _ in watcher:
            if exists(path):
                return


@dataclass
class Series:
    """One way of pushing: the time to running on all three, and when its steps ended."""

    total: list[float] = field(default_factory=list)
    steps: dict[str, list[float]] = field(default_factory=dict)

    def add(self, total: float, steps: dict[str, float]) -> None:
        self.total.append(total)
        for step, at in steps.items():
            self.steps.setdefault(step, []).append(at)

    def steps_text(self) -> str:
        return ", ".join(
            f"{step} {statistics.median(ats) * 1000:.0f}" for step, ats in self.steps.items()
        )


TIMINGS = re.compile(rb"timings \(ms since the process started\): (.*)")


def commands(
    work: Path, seeds: str, key: Path, mgmt: list[str] = MGMT
) -> tuple[list[str], list[str], list[str]]:
    """`mgmt deploy` on h1 (through its agent); the same with `site` (`python -m mgmt`: the
    launcher skips it); --direct."""
    deploy = [*mgmt, "deploy", "--timings", "--seeds", seeds, "--prefix", str(work / "h1")]
    deploy += ["--sign-key", str(key), "lang", f"{work / 'src'}/"]
    sited = [sys.executable, "-m", "mgmt", *deploy[len(mgmt) :]]
    at = len(mgmt) + 1  # after `deploy`
    return deploy, sited, [*deploy[:at], "--direct", *deploy[at:]]


async def measure(
    work: Path, seeds: str, key: Path, count: int
) -> tuple[Series, Series, Series, Series]:
    """(the command through the local agent, the same with `site`, the command pushing
    itself, the library push)
    -> running on all three, `count` times each, alternating (the machine's load changes
    alike for all)."""
    src, out = work / "src", work / "out"
    targets = [out / h for h in HOSTS]
    deploy, sited, direct = commands(work, seeds, key)
    tls_dir = work / "h1" / "cluster-tls"
    await wait_exists(tls_dir / "host.key")
    await wait_exists(work / "h1" / "deploy.sock")  # h1's agent is in the cluster
    thin, site, whole, library = Series(), Series(), Series(), Series()
    tls = TLSFiles(tls_dir / "ca.pem", tls_dir / "host.pem", tls_dir / "host.key")
    client = EtcdClient([seeds], tls=tls)
    async with PathWatcher(targets) as events:
        watcher = aiter(events)

        async def command(token: str, argv: list[str]) -> tuple[float, dict[str, float]]:
            program(src, out, token)
            start = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await proc.communicate()
            exited = time.perf_counter() - start
            said = TIMINGS.search(err)
            if proc.returncode != 0 or said is None:
                raise SystemExit(f"mgmt deploy failed: {err.decode()}")
            if (argv is not direct) != (b"through the local agent" in err):
                raise SystemExit(f"mgmt deploy took the wrong path: {err.decode()}")
            steps = {}  # in the process's own clock: from its start (a few ms before `start`)
            for step in said.group(1).decode().split(", "):
                name, ms = step.split()
                steps[name] = float(ms) / 1000
            done = await wait_all(watcher, targets, token)
            return max(done.values()) - start, {**steps, "exited": exited}

        async def pushed(token: str) -> tuple[float, dict[str, float]]:
            program(src, out, token)
            start = time.perf_counter()
            bundle = read_program("lang", src)
            make = await asyncio.to_thread(record_maker, bundle, key)
            made = time.perf_counter() - start
            await push(client, bundle, make)
            stored = time.perf_counter() - start
            done = await wait_all(watcher, targets, token)
            return max(done.values()) - start, {"read+key": made, "signed+stored": stored}

        try:
            for _ in range(5):  # warm up (and let h2, h3 join)
                await command(secrets.token_hex(8), deploy)
                await command(secrets.token_hex(8), sited)
                await command(secrets.token_hex(8), direct)
                await pushed(secrets.token_hex(8))
            for _ in range(count):
                thin.add(*await command(secrets.token_hex(8), deploy))
                site.add(*await command(secrets.token_hex(8), sited))
                whole.add(*await command(secrets.token_hex(8), direct))
                library.add(*await pushed(secrets.token_hex(8)))
        finally:
            await client.close()
    return thin, site, whole, library


async def compare(against: Path, count: int, short: bool) -> None:
    """This tree's cluster and TREE's, at once; the thin command to each in turn."""
    trees = {"this tree": THIS, str(against): other_tree(against)}
    await asyncio.to_thread(byte_compile, against)
    works: dict[str, Path] = {}
    procs: list[asyncio.subprocess.Process] = []
    try:
        argvs, targets = {}, {}
        for name, tree in trees.items():
            work = works[name] = Path(tempfile.mkdtemp(prefix="mgmt-bench-deploy-"))
            ports = free_ports(2 * len(HOSTS))
            key = await asyncio.to_thread(make_key, work)
            create_ca(work / "cluster-ca")
            (work / "src").mkdir()
            (work / "out").mkdir()
            procs += await start_hosts(work, ports, short, tree)
            seeds = f"https://127.0.0.1:{ports[0]}"
            argvs[name] = commands(work, seeds, key, tree.mgmt)[0]
            targets[name] = [work / "out" / h for h in HOSTS]
        for work in works.values():
            await wait_exists(work / "h1" / "deploy.sock")
        series = {name: Series() for name in trees}
        before = uptime()
        async with PathWatcher([p for paths in targets.values() for p in paths]) as events:
            watcher = aiter(events)
            for round_ in range(5 + count):  # 5 to warm up (and let h2, h3 join)
                for name, tree in trees.items():
                    token = secrets.token_hex(8)
                    program(works[name] / "src", works[name] / "out", token)
                    start = time.perf_counter()
                    proc = await asyncio.create_subprocess_exec(
                        *argvs[name],
                        stdout=asyncio.subprocess.DEVNULL,
                        stderr=asyncio.subprocess.PIPE,
                        env=tree.env,
                    )
                    _, err = await proc.communicate()
                    said = TIMINGS.search(err)
                    if proc.returncode != 0 or said is None:
                        raise SystemExit(f"{name}: mgmt deploy failed: {err.decode()}")
                    done = await wait_all(watcher, targets[name], token)
                    steps = {}
                    for step in said.group(1).decode().split(", "):
                        step_name, ms = step.split()
                        steps[step_name] = float(ms) / 1000
                    if round_ >= 5:
                        series[name].add(max(done.values()) - start, steps)
        print(f"deploy latency side by side, {count} deploys each (in turn), 3 agents each")
        print(f"  uptime before: {before}\n  uptime after:  {uptime()}")
        for name, got in series.items():
            print(f"  {name}: `mgmt deploy` -> running on all 3: {fmt_ms(percentiles(got.total))}")
            print(f"    its steps, p50 ms since its start: {got.steps_text()}")
    finally:
        await terminate(procs)
        for work in works.values():
            shutil.rmtree(work, ignore_errors=True)


def uptime() -> str:
    return subprocess.run(
        ["uptime"], check=False, capture_output=True, text=True, timeout=10
    ).stdout.strip()


def host_steps(work: Path) -> list[float]:
    """Each host's own time from seeing a deploy to running it, from its log (seconds)."""
    said = re.compile(r"running deploy \d+ .*, (\d+) ms after this host saw it\)")
    out = []
    for host in HOSTS:
        for line in (work / f"{host}.log").read_text().splitlines():
            match = said.search(line)
            if match:
                out.append(int(match.group(1)) / 1000)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument(
        "--short-timings", action="store_true", help="etcd heartbeat 10 ms, election 100 ms"
    )
    parser.add_argument("--against", type=Path, help="another checkout, measured side by side")
    args = parser.parse_args()
    if args.against is not None:
        await compare(checkout(args.against, "--against"), args.count, args.short_timings)
        return
    work = Path(tempfile.mkdtemp(prefix="mgmt-bench-deploy-"))
    ports = free_ports(2 * len(HOSTS))
    key = await asyncio.to_thread(make_key, work)
    create_ca(work / "cluster-ca")
    (work / "src").mkdir()
    (work / "out").mkdir()
    procs: list[asyncio.subprocess.Process] = []
    try:
        procs = await start_hosts(work, ports, args.short_timings)
        seeds = f"https://127.0.0.1:{ports[0]}"
        before = uptime()
        thin, site, whole, library = await measure(work, seeds, key, args.count)
        print(
            f"deploy latency, {args.count} deploys each (alternating), 3 agents, "
            f"{'short' if args.short_timings else 'default'} etcd timings\n"
            f"  uptime before: {before}\n  uptime after:  {uptime()}"
        )
        print(f"  `mgmt deploy` (agent)  -> running on all 3: {fmt_ms(percentiles(thin.total))}")
        print(f"    its steps, p50 ms since its start: {thin.steps_text()}")
        print(f"  the same, with `site`  -> running on all 3: {fmt_ms(percentiles(site.total))}")
        print(f"    its steps, p50 ms since its start: {site.steps_text()}")
        print(f"  `mgmt deploy --direct` -> running on all 3: {fmt_ms(percentiles(whole.total))}")
        print(f"    its steps, p50 ms since its start: {whole.steps_text()}")
        print(f"  library push           -> running on all 3: {fmt_ms(percentiles(library.total))}")
        print(f"    its steps, p50 ms since its start: {library.steps_text()}")
        seen = host_steps(work)
        if seen:
            print(
                f"  a host, seen -> running (fetch, verify, compile): {fmt_ms(percentiles(seen))}"
            )
    finally:
        await terminate(procs)
        shutil.rmtree(work, ignore_errors=True)


def byte_compile(root: Path) -> None:
    """Stale bytecode (an edited tree, PYTHONDONTWRITEBYTECODE set) would be compiled again by
    every process: ~50 ms of each command, which the figures are not about."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "engine", "resources", "mgmt"],
        check=True,
        cwd=root,
        stdout=subprocess.DEVNULL,
        timeout=300,
    )


if __name__ == "__main__":
    byte_compile(ROOT)
    run_script(main)
