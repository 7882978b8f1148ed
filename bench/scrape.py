"""The cost of a /metrics scrape of an agent running N file resources (converged, idle): the
agent's CPU per scrape (its utime+stime over the scrapes, /proc/PID/stat), each scrape's wall
time and the body's size. `--base DIR` runs another checkout the same way, after this one.

    .venv/bin/python bench/scrape.py [--count 10000] [--scrapes 200] [--base DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from common import (
    MGMT,
    ROOT,
    base_launcher,
    checkout,
    files_graph,
    fmt_ms,
    percentiles,
    run_script,
    terminate,
)


def get(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=600) as conn:
        conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data = b"".join(iter(lambda: conn.recv(65536), b""))
    return data.partition(b"\r\n\r\n")[2]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def measure(label: str, mgmt: list[str], cwd: Path, count: int, scrapes: int) -> None:
    with tempfile.TemporaryDirectory(prefix="mgmt-scrape-") as tmp:
        work = Path(tmp)
        graph = work / "g.yaml"
        graph.write_text(files_graph(work / "out", count))
        (work / "out").mkdir()
        port = free_port()
        argv = [*mgmt, "run", "--prefix", str(work / "p"), "--prometheus"]
        argv += ["--prometheus-listen", f"127.0.0.1:{port}", "yaml", str(graph)]
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            bound = time.monotonic() + 600
            while True:  # converged: nothing but the scrapes runs in it from here
                try:
                    if b"\nmgmt_converged 1.0" in await asyncio.to_thread(get, port):
                        break
                except OSError:
                    pass
                if time.monotonic() > bound:
                    raise TimeoutError("not converged after 600 s")
                await asyncio.sleep(0.2)
            walls = []
            before = cpu_seconds(proc.pid)
            for _ in range(scrapes):
                start = time.perf_counter()
                body = await asyncio.to_thread(get, port)
                walls.append(time.perf_counter() - start)
            cpu = (cpu_seconds(proc.pid) - before) / scrapes
            print(
                f"{label}: {count} files: agent CPU {cpu * 1000:.2f} ms/scrape, "
                f"{len(body):,} bytes, wall {fmt_ms(percentiles(walls))}, load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
        finally:
            await terminate([proc])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--base", type=Path)
    args = parser.parse_args()
    await measure("this tree", MGMT, ROOT, args.count, args.scrapes)
    if args.base is not None:
        base = checkout(args.base, "--base")
        with tempfile.TemporaryDirectory() as tmp:
            launcher = base_launcher(base, Path(tmp) / "mgmt")
            await measure("base", launcher, base, args.count, args.scrapes)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    run_script(main)
