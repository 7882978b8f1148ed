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
from mgmt.log import BatchingStreamHandler, JournalHandler
from tests.aio import pass_ended
if sys.argv[1] == "stderr":
    handler = BatchingStreamHandler(sys.stderr, limit=20_000)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
else:  # journald's socket (the test's, which reads nothing until told)
    handler = JournalHandler(sys.argv[1], limit=20_000)
logging.getLogger().handlers[:] = [handler]
logging.getLogger().setLevel(logging.INFO)
log = logging.getLogger("t")
async def main() -> None:
    logged = 0
    while not handler.dropped:  # the loop runs on while nobody reads stderr (the journal)
        for _ in range(100):
            log.info("line %d %s", logged, "x" * 60)
            logged += 1
        await pass_ended()  # the pass's lines handed over: an event, not a time
    print(logged, flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # the sink is read from then on
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


class Journal:
    """The records a child sends to journald's socket (ours, which reads nothing until asked),
    as `logger: message` lines, each within BOUND seconds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(BOUND)

    def next(self) -> str:
        fields = journal_fields(self.sock.recv(300_000))
        return f"{fields['MGMT_LOGGER']}: {fields['MESSAGE']}"


def journal_fields(data: bytes) -> dict[str, str]:
    """A datagram's fields (the values without newlines, as these are)."""
    return dict(line.split("=", 1) for line in data.decode().splitlines())


@pytest.mark.parametrize("sink", ["stderr", "journal"])
def test_lines_beyond_the_buffer_are_dropped_counted_and_said_once_the_sink_drains(
    tmp_path: Path, sink: str
) -> None:
    """Stderr is a pipe nobody reads (the journal's socket a queue nobody reads): it fills,
    the writer thread blocks, the loop logs on until 20,000 characters wait, then lines are
    dropped. Once the sink is read, the lines before the drop come whole and in order, then
    one "N log lines dropped" line (N: all the others), then what was logged since. (The
    journal's records were sent by the loop itself, each waiting up to 2 s for room.)"""
    journal = Journal(tmp_path / "journal") if sink == "journal" else None
    argv = [sys.executable, "-c", CHILD, str(journal.path) if journal else "stderr"]
    with subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        try:
            logged = int(Lines(proc.stdout.fileno()).next())
            reader = journal or Lines(proc.stderr.fileno())
            lines = [reader.next()]
            while "dropped" not in lines[-1]:
                lines.append(reader.next())
            assert proc.stdin is not None
            proc.stdin.write(b"go on\n")
            proc.stdin.flush()
            last = reader.next()
            _, err = proc.communicate(timeout=BOUND)
        finally:
            proc.kill()
            if journal is not None:
                journal.sock.close()
    assert proc.returncode == 0, err[-500:]
    assert err == b"" and (isinstance(reader, Journal) or reader.data == b""), err
    *written, gap = lines
    assert written == [f"t: line {i} {'x' * 60}" for i in range(len(written))]
    found = re.fullmatch(r"log: (\d+) log lines dropped: .*", gap)
    assert found is not None, gap
    assert len(written) + int(found.group(1)) == logged
    assert last == "t: after"


PAGE = 4096  # the small pipe's size


def _small_pipe() -> tuple[int, int]:
    """A pipe that holds one page: a few lines fill it."""
    read, write = os.pipe()
    fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, PAGE)
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
def _converged_agent(
    tmp_path: Path, *flags: str, journal: Journal | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """An agent (`mgmt run FLAGS`) on 200 files whose stderr is a one-page pipe nobody reads
    (or, with `journal`, is the journal stream, the records going to `journal`), once it
    converged (systemd's STATUS=converged tells): it and the pipe's read end."""
    graph = _graph(tmp_path, 200)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(BOUND)
    read, write = _small_pipe()
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")}
    if journal is not None:  # as systemd starts a service: stderr is the journal stream
        st = os.fstat(write)
        env |= {
            "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
            "MGMT_JOURNAL_SOCKET": str(journal.path),
        }
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
    # Whole batches of lines went in while they fitted: how many lines that is depends on the
    # batches' sizes at that moment (9 to ~30 seen), never more than a page.
    size = sum(len(line) + 1 for line in lines)
    assert created and size <= PAGE, (size, lines[-3:])
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


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    """journald's socket, the test's: it reads nothing until the test does."""
    sink = Journal(tmp_path / "journal")
    try:
        yield sink
    finally:
        sink.sock.close()


def test_a_signal_stops_the_agent_whose_journal_reads_nothing(
    tmp_path: Path, journal: Journal
) -> None:
    """Under systemd, journald reads nothing (its queue of 10 datagrams full): the agent
    converges anyway, SIGTERM stops it, and the journal, read, holds the first lines, whole;
    nothing went to stderr."""
    with _converged_agent(tmp_path, journal=journal) as (proc, read):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=BOUND) == 0
    with os.fdopen(read, "rb") as pipe:
        assert pipe.read() == b""
    journal.sock.setblocking(False)
    lines = []
    with contextlib.suppress(BlockingIOError):
        while True:
            lines.append(journal.next())
    created = [line for line in lines if re.fullmatch(r"engine: file\[f\d+\]: created \S+", line)]
    assert created and len(lines) < 200, lines[-3:]


def test_a_run_that_ends_on_its_own_waits_for_its_slow_journal(
    tmp_path: Path, journal: Journal
) -> None:
    """A cron run (--converged-timeout) logging to a journal that reads nothing until the run
    has converged (a first run's burst beyond journald's queue, 10 datagrams here): every line
    is there once journald reads, as with stderr. (The loop sent each record itself, waiting up
    to 2 s for room, then dropping lines: the burst lost most of them.)"""
    with _converged_agent(tmp_path, "--converged-timeout=0", journal=journal) as (proc, read):
        lines = [journal.next()]
        while "exiting" not in lines[-1]:
            lines.append(journal.next())
        assert proc.wait(timeout=BOUND) == 0
    os.close(read)
    assert sum(" created " in line for line in lines) == 200, lines[-3:]
    assert not any("dropped" in line for line in lines), lines


# A child's start: its stderr, a pipe nobody reads, filled up (a write of a page at most is all
# or nothing), then our log set up on it (needs `os` and mgmt.log's `setup` imported).
WEDGE_STDERR = """
os.set_blocking(2, False)
try:  # stderr, a pipe nobody reads, filled up (a write of a page at most is all or nothing)
    while True:
        os.write(2, b"f" * 4095 + b"\\n")
except BlockingIOError:
    os.set_blocking(2, True)
setup(own_process=True)
"""

PYTHON_SAYS = (
    """
import asyncio, gc, logging, os, sys, threading, warnings
from mgmt.log import setup
"""
    + WEDGE_STDERR
    + """class Broken:
    def __del__(self) -> None:
        raise ValueError("in __del__")
def crash() -> None:
    raise RuntimeError("in a thread")
async def main() -> None:
    warnings.warn("a warning", UserWarning)
    Broken()  # collected at once: sys.unraisablehook
    future = asyncio.get_running_loop().create_future()
    future.set_exception(KeyError("never retrieved"))
    del future
    gc.collect()  # asyncio's exception handler
    logging.getLogger("t").info("%d", "not a number")  # logging's handleError
    thread = threading.Thread(target=crash, name="worker")
    thread.start()
    thread.join(30)
    print("thread ended" if not thread.is_alive() else "thread blocked", flush=True)
asyncio.run(main())
"""
)


def test_what_python_writes_to_stderr_itself_goes_through_the_writer() -> None:
    """Stderr is a full pipe nobody reads. A warning, an exception ignored in a __del__, an
    asyncio future's exception never retrieved, a record that cannot be formatted, an exception
    in a thread: Python wrote each to sys.stderr itself, blocking the loop (the thread) for as
    long as nobody read. Now they are log lines, through the writer thread: the loop goes on,
    and once stderr is read, there they are, after what was there before."""
    with subprocess.Popen(
        [sys.executable, "-c", PYTHON_SAYS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    ) as proc:
        assert proc.stdout is not None
        try:
            said = Lines(proc.stdout.fileno()).next()
            _, err = proc.communicate(timeout=BOUND)
        finally:
            proc.kill()
    assert said == "thread ended"
    assert proc.returncode == 0
    lines = [line for line in err.decode().splitlines() if not line.startswith("fff")]
    said_lines = [line.partition(" ")[2] for line in lines if re.match(r"\d\d:\d\d:\d\d ", line)]
    assert said_lines[0].startswith("python: <string>:") and said_lines[0].endswith(
        ": UserWarning: a warning"
    ), lines
    assert said_lines[1].startswith("python: Exception ignored in: <function Broken.__del__"), lines
    assert said_lines[2].startswith("asyncio: Future exception was never retrieved"), lines
    assert said_lines[3].startswith("log: cannot log a line of t ('%d'): TypeError"), lines
    assert said_lines[4] == "python: unhandled exception in thread worker", lines
    assert lines[-1] == "RuntimeError: in a thread", lines
