"""A resource's INFO lines (engine.handle.ResourceLogger.log): straight to our handlers when
they are the only ones (no LogRecord), else logging's path. Both give the same stderr text and
the same status model content; any other handler (caplog's, an embedder's) gets the records."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.engine import Engine
from engine.handle import Handle
from mgmt.log import (
    BatchingStreamHandler,
    JournalHandler,
    JsonFormatter,
    TextFormatter,
    WriterHandler,
)
from mgmt.status.model import StatusModel

ROOT = Path(__file__).resolve().parents[2]

# (kind, name, msg, args): what resources log at INFO
LINES: list[tuple[str, str, str, tuple[Any, ...]]] = [
    ("file", "/srv/a", "%s", ("created /srv/a",)),
    ("file", "/srv/100%", "%s", ("created /srv/100%",)),  # a '%' in the name, and in the line
    ("file", "/srv/%s%d", "%s", ("content updated",)),
    ("file", "/srv/b", "created /srv/b 100%", ()),  # no args: not %-formatted
    ("file", "/srv/c\nforged: line", "%s", ("created /srv/c\n\x1b[31m\x9b2J",)),  # C0, C1
    ("exec", "x", "ran %s: exit %d", ("true", 0)),
    ("kv", "k", "%(key)s set", ({"key": "k1"},)),  # one mapping: logging's own case
    ("kv", "bad", "%d", ("not a number",)),  # a bad format: its handler says so
]


class Records(logging.Handler):
    """Another handler (as an embedder's): keeps what it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def ours_only(tmp_path: Path, sink: str) -> Iterator[tuple[Callable[[], list[Any]], StatusModel]]:
    """The root logger with one handler of ours (pytest's set aside: it adds them for each
    phase of a test), a status model on the "engine" logger, as `mgmt run` has them; and what
    reads the sink: stderr's lines (without their time), or the journal's datagrams."""
    root = logging.getLogger()
    kept, level = root.handlers[:], root.level
    with contextlib.ExitStack() as stack:
        handler: WriterHandler[Any]
        read: Callable[[], list[Any]]
        if sink in {"text", "json"}:
            stream = io.StringIO()
            handler = BatchingStreamHandler(stream)
            handler.setFormatter(TextFormatter() if sink == "text" else JsonFormatter())

            def read() -> list[Any]:
                handler.flush()
                lines = [_timeless(line) for line in stream.getvalue().splitlines()]
                stream.seek(0)
                stream.truncate()
                return lines

        else:
            journald = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
            journald.bind(str(tmp_path / "journal"))
            journald.setblocking(False)
            handler = JournalHandler(str(tmp_path / "journal"))

            def read() -> list[Any]:
                handler.flush()
                datagrams = []
                with contextlib.suppress(BlockingIOError):
                    while True:
                        datagrams.append(journald.recv(65536))
                return datagrams

        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
        model = StatusModel(Engine(hostname="h", prefix=tmp_path / "prefix"), "h")
        try:
            yield read, model
        finally:
            model.close()
            handler.close()
            root.handlers[:] = kept
            root.setLevel(level)


def _timeless(line: str) -> str:
    """A line of stderr without its time (text or JSON)."""
    if not line.startswith("{"):
        return line[9:]
    data = json.loads(line)
    del data["time"]
    return json.dumps(data)


def _log_all(made: list[int]) -> None:
    """Log LINES, counting the LogRecords made into `made`."""
    factory = logging.getLogRecordFactory()

    def counting(*args: Any, **kwargs: Any) -> logging.LogRecord:
        made[0] += 1
        return factory(*args, **kwargs)

    logging.setLogRecordFactory(counting)
    try:
        for kind, name, msg, args in LINES:
            Handle(kind=kind, name=name, hostname="h").logger.info(msg, *args)
    finally:
        logging.setLogRecordFactory(factory)


def _changes(model: StatusModel) -> dict[Any, str]:
    """Each resource's last change in the model (then forgotten)."""
    changes = {key: info.last_change for key, info in model.info.items()}
    model.info.clear()
    return changes


@pytest.mark.parametrize("sink", ["text", "json", "journal"])
def test_our_handlers_only_get_the_lines_logging_would_give_them(tmp_path: Path, sink: str) -> None:
    other = Records()
    direct, through_logging = [0], [0]
    with ours_only(tmp_path, sink) as (read, model):
        _log_all(direct)
        fast = read(), _changes(model)
        logging.getLogger().addHandler(other)
        _log_all(through_logging)
        slow = read(), _changes(model)

    # the lines logging takes itself: one mapping as args, a bad format
    assert direct[0] == 2
    assert through_logging[0] == len(LINES)
    assert fast == slow
    lines, changes = fast
    if sink == "text":
        assert lines == [
            "engine: file[/srv/a]: created /srv/a",
            "engine: file[/srv/100%]: created /srv/100%",
            "engine: file[/srv/%s%d]: content updated",
            "engine: file[/srv/b]: created /srv/b 100%",
            "engine: file[/srv/c\\nforged: line]: created /srv/c\\n\\x1b[31m\\x9b2J",
            "engine: exec[x]: ran true: exit 0",
            "engine: kv[k]: k1 set",
            "log: cannot log a line of engine ('kv[bad]: %d'): TypeError: %d format: a real"
            " number is required, not str",
        ]
    elif sink == "json":
        assert len(lines) == len(LINES)
        assert json.loads(lines[1]) == {
            "level": "info",
            "logger": "engine",
            "kind": "file",
            "name": "/srv/100%",
            "message": "created /srv/100%",
        }
    else:
        assert len(lines) == len(LINES)
        assert lines[1] == (
            b"MESSAGE=file[/srv/100%]: created /srv/100%\nPRIORITY=6\nSYSLOG_IDENTIFIER=mgmt\n"
            b"MGMT_LOGGER=engine\nMGMT_KIND=file\nMGMT_NAME=/srv/100%\n"
        )
    assert changes[("file", "/srv/100%")] == "created /srv/100%"
    assert changes[("file", "/srv/c\nforged: line")] == "created /srv/c\n\x1b[31m\x9b2J"
    assert ("kv", "bad") not in changes
    assert [r.getMessage() for r in other.records[:2]] == [
        "file[/srv/a]: created /srv/a",
        "file[/srv/100%]: created /srv/100%",
    ]


def test_caplog_gets_every_line_with_its_caller(caplog: pytest.LogCaptureFixture) -> None:
    """pytest's handler is another handler: logging's path, the records as before (the
    resource's fields, its caller when logging looks for it)."""
    caplog.set_level(logging.INFO)
    handle = Handle(kind="file", name="/srv/100%", hostname="h")
    srcfile = logging._srcfile
    logging._srcfile = os.path.normcase(logging.addLevelName.__code__.co_filename)
    try:
        handle.logger.info("%s", "created /srv/100%")
        handle.logger.warning("no args: 100%")
    finally:
        logging._srcfile = srcfile
    first, second = caplog.records[-2:]
    assert first.getMessage() == "file[/srv/100%]: created /srv/100%"
    assert second.getMessage() == "file[/srv/100%]: no args: 100%"
    assert (first.res_kind, first.res_name) == ("file", "/srv/100%")  # type: ignore[attr-defined]
    assert first.funcName == second.funcName == "test_caplog_gets_every_line_with_its_caller"
    assert first.levelno == logging.INFO and second.levelno == logging.WARNING


# `mgmt run` as the `mgmt` command runs it; with OTHER set, another handler on the "engine"
# logger (logging's path for every line). Prints the LogRecords made, at exit.
RUN = """
import atexit, logging, os, sys
made = [0]
factory = logging.getLogRecordFactory()
def counting(*args, **kwargs):
    made[0] += 1
    return factory(*args, **kwargs)
logging.setLogRecordFactory(counting)
if os.environ.get("OTHER"):
    logging.getLogger("engine").addHandler(logging.NullHandler())
atexit.register(lambda: print(made[0], flush=True))
from mgmt.__main__ import main
sys.argv = ["mgmt", *sys.argv[1:]]
sys.exit(main())
"""

GRAPH = """graph: files
resources:
  file:
    - {{name: a, path: "{out}/a", content: "a\\n"}}
    - {{name: "100%", path: "{out}/100%", content: "b\\n"}}
    - {{name: "c\\nforged", path: "{out}/c\\nforged", content: "c\\n"}}
"""


def _run(tmp_path: Path, tag: str, other: bool, *flags: str) -> tuple[list[str], int]:
    """A first run of GRAPH in a directory of its own: its stderr lines (their time, the
    directory and durations masked), sorted (files are made in parallel), and the records
    made."""
    out = tmp_path / tag
    graph = tmp_path / f"{tag}.yaml"
    graph.write_text(GRAPH.format(out=out))
    env = {**os.environ, "OTHER": "1" if other else ""}
    argv = ["run", "--converged-timeout=0", "--tmp-prefix", "--no-watch", *flags]
    run = subprocess.run(
        [sys.executable, "-c", RUN, *argv, "yaml", str(graph)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=True,
    )

    def masked(line: str) -> str:
        return re.sub(r"\(\d+\.\d+s\)", "(Ns)", _timeless(line).replace(str(out), "OUT"))

    assert all(re.match(r'\d\d:\d\d:\d\d |\{"time": "', line) for line in run.stderr.splitlines())
    return sorted(map(masked, run.stderr.splitlines())), int(run.stdout.split()[-1])


@pytest.mark.parametrize("flags", [(), ("--noop",), ("--log-format", "json")])
def test_a_run_writes_the_same_stderr_either_way(tmp_path: Path, flags: tuple[str, ...]) -> None:
    direct, direct_records = _run(tmp_path, "direct", False, *flags)
    through_logging, records = _run(tmp_path, "logging", True, *flags)
    assert direct == through_logging
    verb = "would create" if "--noop" in flags else "created"
    if "json" in flags:
        changes = [line for line in direct if '"kind": "file"' in line]
        messages = {json.loads(line)["name"]: json.loads(line)["message"] for line in changes}
        assert messages["100%"] == f"{verb} OUT/100%"
        assert messages["c\nforged"] == f"{verb} OUT/c\nforged"
    else:
        changes = [line for line in direct if line.startswith("engine: file[")]
        assert f"engine: file[100%]: {verb} OUT/100%" in changes
        assert f"engine: file[c\\nforged]: {verb} OUT/c\\nforged" in changes
    assert len(changes) >= 3
    assert records - direct_records == len(changes)  # the direct path made no record of them
