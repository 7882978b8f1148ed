"""Deploy latency: `mgmt deploy` -> the program running on all three hosts.

Three agents on this machine (`mgmt run empty`, mutual TLS, their own etcd members, trusting
one SSH key). Each round writes a new version of a `lang DIR/` program (one file per host,
holding a fresh token) and pushes it, signed; the clock stops when every host's file holds
the token (inotify). Two figures:

- the whole command: `mgmt deploy` as an operator runs it (a Python process: start-up, check,
  `ssh-keygen -Y sign`, the transaction), then every host's watch, `ssh-keygen -Y verify`
  (two runs), extraction, compile, graph swap, atomic write;
- the push alone, from the library (`store.push` with the same signing) in this process: the
  cluster's part, without the command's start-up.

Target: p50 <= 100 ms.

    .venv/bin/python bench/deploy.py [--count 20] [--short-timings]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cluster_latency import free_ports, wait_all
from common import MGMT, ROOT, fmt_ms, percentiles

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


async def start_hosts(
    work: Path, ports: list[int], short: bool
) -> list[asyncio.subprocess.Process]:
    timings = ["--etcd-heartbeat-interval", "10", "--etcd-election-timeout", "100"]
    procs = []
    for i, host in enumerate(HOSTS):
        argv = [
            *MGMT, "run", "--hostname", host, "--prefix", str(work / host),
            "--client-urls", f"https://127.0.0.1:{ports[2 * i]}",
            "--server-urls", f"https://127.0.0.1:{ports[2 * i + 1]}",
            "--cluster-ca-dir", str(work / "cluster-ca"),
            "--trusted-keys", str(work / "trusted"),
            *(timings if short else []),
        ]  # fmt: skip
        if i:
            argv += ["--seeds", f"https://127.0.0.1:{ports[0]}"]
        log = (work / f"{host}.log").open("w")
        procs.append(
            await asyncio.create_subprocess_exec(*argv, "empty", stdout=log, stderr=log, cwd=ROOT)
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


async def measure(work: Path, seeds: str, key: Path, count: int) -> tuple[list[float], list[float]]:
    """(the whole command, the library push) -> running on all three, `count` times each."""
    src, out = work / "src", work / "out"
    targets = [out / h for h in HOSTS]
    deploy = [*MGMT, "deploy", "--seeds", seeds, "--prefix", str(work / "h1")]
    deploy += ["--sign-key", str(key), "lang", f"{src}/"]
    tls_dir = work / "h1" / "cluster-tls"
    await wait_exists(tls_dir / "host.key")
    async with PathWatcher(targets) as events:
        watcher = aiter(events)

        async def command(token: str) -> float:
            program(src, out, token)
            start = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                *deploy, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
            )
            _, err = await proc.communicate()
            if proc.returncode != 0:
                raise SystemExit(f"mgmt deploy failed: {err.decode()}")
            done = await wait_all(watcher, targets, token)
            return max(done.values()) - start

        for _ in range(5):  # warm up (and let h2, h3 join)
            await command(secrets.token_hex(8))
        whole = [await command(secrets.token_hex(8)) for _ in range(count)]
        tls = TLSFiles(tls_dir / "ca.pem", tls_dir / "host.pem", tls_dir / "host.key")
        client = EtcdClient([seeds], tls=tls)
        library: list[float] = []
        try:
            for _ in range(count):
                token = secrets.token_hex(8)
                program(src, out, token)
                start = time.perf_counter()
                bundle = read_program("lang", src)
                await push(client, bundle, await asyncio.to_thread(record_maker, bundle, key))
                done = await wait_all(watcher, targets, token)
                library.append(max(done.values()) - start)
        finally:
            await client.close()
    return whole, library


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument(
        "--short-timings", action="store_true", help="etcd heartbeat 10 ms, election 100 ms"
    )
    args = parser.parse_args()
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
        whole, library = await measure(work, seeds, key, args.count)
        print(
            f"deploy latency, {args.count} deploys each, 3 agents, "
            f"{'short' if args.short_timings else 'default'} etcd timings"
        )
        print(f"  `mgmt deploy` command -> running on all 3: {fmt_ms(percentiles(whole))}")
        print(f"  library push          -> running on all 3: {fmt_ms(percentiles(library))}")
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            await proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
