"""mgmt.log with a stderr nobody reads: the loop goes on, lines beyond the buffer are dropped
and counted, and SIGTERM stops the agent. Real subprocesses, real pipes."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mgmt.log import WRITE_WAIT

ROOT = Path(__file__).resolve().parents[2]
BOUND = 60  # seconds: hang-preventing bounds only

CHILD = """
import asyncio, logging, sys
from mgmt.log import BatchingStreamHandler
from tests.aio import pass_ended
handler = BatchingStreamHandler(sys.stderr, limit=20_000)
handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
logging.getLogger().handlers[:] = [handler]
logging.getLogger().setLevel(logging.INFO)
log = logging.getLogger("t")
async def main() -> None:
    logged = 0
    while not handler.dropped:  # the loop runs on while nobody reads stderr
        for _ in range(100):
            log.info("line %d %s", logged, "x" * 60)
            logged += 1
        await pass_ended()  # the pass's lines handed over: an event, not a time
    print(logged, flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # stderr is read from then on
    log.info("after")
asyncio.run(main())
"""


class Lines:
    """The lines of a child's pipe, each within BOUND seconds (select(2) on the descriptor:
    a buffered reader's readline would hide the lines it read ahead)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.data = b""

    def next(self) -> str:
        while b"\n" not in self.data:
            ready, _, _ = select.select([self.fd], [], [], BOUND)
            assert ready, f"no line within {BOUND} s"
            chunk = os.read(self.fd, 65536)
            assert chunk, self.data
            self.data += chunk
        line, _, self.data = self.data.partition(b"\n")
        return line.decode()


def test_lines_beyond_the_buffer_are_dropped_counted_and_said_once_stderr_drains() -> None:
    """Stderr is a pipe nobody reads: its 64 KiB fill, the writer thread blocks, the loop
    logs on until 20,000 characters wait, then lines are dropped. Once stderr is read, the
    lines before the drop come whole and in order, then one "N log lines dropped" line
    (N: all the others), then what was logged since."""
    with subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        try:
            logged = int(Lines(proc.stdout.fileno()).next())
            stderr = Lines(proc.stderr.fileno())
            lines = [stderr.next()]
            while "dropped" not in lines[-1]:
                lines.append(stderr.next())
            _, err = proc.communicate(b"go on\n", timeout=BOUND)
        finally:
            proc.kill()
    err = stderr.data + err
    assert proc.returncode == 0, err[-500:]
    *written, gap = lines
    assert written == [f"t: line {i} {'x' * 60}" for i in range(len(written))]
    found = re.fullmatch(r"log: (\d+) log lines dropped: .*", gap)
    assert found is not None, gap
    assert len(written) + int(found.group(1)) == logged
    assert err.decode() == "t: after\n"


def _small_pipe() -> tuple[int, int]:
    """A pipe that holds one page: a few lines fill it."""
    read, write = os.pipe()
    fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, 4096)
    return read, write


def _graph(tmp_path: Path, count: int) -> Path:
    """`count` files: a first run logs a line each, ~100 bytes, far beyond a page."""
    out = tmp_path / "out"
    out.mkdir()
    items = "".join(
        f"    - name: f{i}\n      path: {out}/f{i}\n      content: x\n" for i in range(count)
    )
    graph = tmp_path / "graph.yaml"
    graph.write_text(f"graph: g\nresources:\n  file:\n{items}")
    return graph


@contextlib.contextmanager
def _converged_agent(tmp_path: Path, *flags: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """An agent (`mgmt run FLAGS`) on 200 files whose stderr is a one-page pipe nobody reads,
    once it converged (systemd's STATUS=converged tells): it and the pipe's read end."""
    graph = _graph(tmp_path, 200)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(BOUND)
    read, write = _small_pipe()
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")}
    argv = [sys.executable, "-m", "mgmt", "run", "--tmp-prefix", *flags, "yaml", str(graph)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=write, cwd=ROOT, env=env)
    os.close(write)
    try:
        status = ""
        while not status.startswith("converged"):
            message = notify.recv(4096).decode()  # socket.timeout after BOUND: a failure
            status = dict(line.partition("=")[::2] for line in message.split("\n"))["STATUS"]
        yield proc, read
    finally:
        proc.kill()
        proc.wait()
        notify.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda sig: sig.name)
def test_a_signal_stops_the_agent_whose_stderr_nobody_reads(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """The agent's stderr is a pipe nobody reads: the agent converges anyway, and SIGTERM
    (SIGINT) stops it, the last lines given up on after a bounded wait. (Its loop blocked in
    write(2): deaf to signals until SIGKILL.) Then the pipe, read, holds the first lines, whole
    and in order."""
    with _converged_agent(tmp_path) as (proc, read):
        proc.send_signal(sig)
        assert proc.wait(timeout=BOUND) == 0
    with os.fdopen(read, "rb") as pipe:
        lines = pipe.read().decode().split("\n")[:-1]  # the last one may be cut short
    created = [line for line in lines if " created " in line]
    assert len(created) >= 10 and len(lines) < 200, lines[-3:]
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d [\w.:-]+: .+", line) for line in lines), lines


def test_a_run_that_ends_on_its_own_waits_for_its_slow_reader(tmp_path: Path) -> None:
    """A cron run (--converged-timeout) whose stderr is read late (`| less`, a busy shipper)
    waits for it as long as it takes, as any command does: every line is there, the last one
    too. (The 2 s bound is for a stop signal's exit.)"""
    with _converged_agent(tmp_path, "--converged-timeout=0") as (proc, read):
        with pytest.raises(subprocess.TimeoutExpired):  # beyond the stop signal's bound
            proc.wait(timeout=WRITE_WAIT + 2)
        with os.fdopen(read, "rb") as pipe:
            lines = pipe.read().decode().split("\n")
        assert proc.wait(timeout=BOUND) == 0
    assert lines[-1] == ""  # the last line whole
    assert sum(" created " in line for line in lines) == 200
    assert "converged" in lines[-2] and "dropped" not in "".join(lines), lines[-3:]
