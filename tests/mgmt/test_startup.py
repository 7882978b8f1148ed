"""The `mgmt` command's start-up: what a cron run of a graph file imports (and what it defers)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _python(script: str, *args: str) -> str:
    """Run `script` in a new interpreter started as the `mgmt` launcher starts it (-S)."""
    out = subprocess.run(
        [sys.executable, "-S", "-c", script, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 0, out
    return out.stdout.strip()


def test_a_cron_run_of_a_graph_file_loads_no_tls(tmp_path: Path) -> None:
    """asyncio's ssl (OpenSSL) is imported, not run: nothing in a file graph's run reads it."""
    graph = tmp_path / "g.yaml"
    graph.write_text(
        f"graph: g\nresources:\n  file:\n    - name: a\n      path: {tmp_path}/a\n"
        '      content: "a\\n"\n'
    )
    script = (
        "import sys\n"
        "from mgmt.__main__ import main\n"
        "sys.argv[1:] = ['run', '--converged-timeout=0', '--tmp-prefix', 'yaml', sys.argv[1]]\n"
        "assert main() == 0\n"
        "print(sorted(m for m in ('_ssl', 'ssl', 'asyncio.sslproto') if m in sys.modules and "
        "type(sys.modules[m]).__name__ == 'module'))\n"
    )
    assert _python(script, str(graph)) == "[]"
    assert (tmp_path / "a").read_text() == "a\n"


def test_a_deferred_ssl_runs_at_first_use_in_every_thread(tmp_path: Path) -> None:
    """The first read of an attribute runs the module's code once; readers in other threads
    wait for it and see the whole module; asyncio's TLS then works: a real handshake."""
    script = """
import sys, threading
from pathlib import Path
from mgmt import lazyimport
lazyimport.install()
import asyncio
import ssl
from asyncio import sslproto
assert "_ssl" not in sys.modules and type(ssl).__name__ == "_Lazy", type(ssl)
got = []
start = threading.Barrier(8)
def read():
    start.wait()
    got.append(ssl.PROTOCOL_TLS_CLIENT)
threads = [threading.Thread(target=read) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert got == [ssl.PROTOCOL_TLS_CLIENT] * 8, got
assert type(ssl) is type(sys) and ssl.__loader__.__class__.__name__ != "_Loader"
assert type(sslproto).__name__ == "_Lazy"  # read by asyncio's TLS transport only

import mgmt; mgmt.full_site()
from mgmt.cluster import pki
work = Path(sys.argv[1])
pki.create_ca(work / "ca")
files = pki.mint(work / "ca", work / "host", "h1", ["127.0.0.1"])

async def handshake() -> bytes:
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(files.cert, files.key)
    client = ssl.create_default_context(cafile=files.ca)
    async def answer(reader, writer):
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=served)
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client, server_hostname="127.0.0.1"
        )
        writer.write(b"over tls\\n")
        line = await asyncio.wait_for(reader.readline(), 30)
        writer.close()
        return line

print(asyncio.run(handshake()).decode().strip(), type(sslproto).__name__)
"""
    assert _python(script, str(tmp_path)) == "over tls module"
