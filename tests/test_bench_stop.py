"""A benchmark script given SIGTERM (a `kill`, a CI job's timeout) stops as on Ctrl-C: its
`finally` blocks stop what it started and remove its files, one line, exit 143 (before
2026-12-06: killed at once, its /tmp/mgmt-bench-* left; tester16). Real processes, through
bench/common.py's `run_script`, sync and async."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SYNC = """
import sys, tempfile, shutil, signal
sys.path.insert(0, {bench!r})
from common import run_script
def main():
    work = tempfile.mkdtemp(prefix="mgmt-bench-test-")
    try:
        print(work, flush=True)
        while True:
            signal.pause()
    finally:
        shutil.rmtree(work)
run_script(main)
"""

ASYNC = """
import asyncio, sys, tempfile, shutil
sys.path.insert(0, {bench!r})
from common import run_script
async def main():
    work = tempfile.mkdtemp(prefix="mgmt-bench-test-")
    try:
        print(work, flush=True)
        await asyncio.Event().wait()
    finally:
        await asyncio.to_thread(shutil.rmtree, work)
run_script(main)
"""


@pytest.mark.parametrize(
    ("source", "sig", "code", "says"),
    [
        (SYNC, signal.SIGTERM, 143, "terminated"),
        (ASYNC, signal.SIGTERM, 143, "terminated"),
        (SYNC, signal.SIGINT, 130, "interrupted"),
        (ASYNC, signal.SIGINT, 130, "interrupted"),
    ],
    ids=["sync-term", "async-term", "sync-int", "async-int"],
)
def test_a_stopped_script_removes_what_it_made(
    tmp_path: Path, source: str, sig: signal.Signals, code: int, says: str
) -> None:
    script = tmp_path / "script.py"
    script.write_text(source.format(bench=str(ROOT / "bench")))
    with subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
    ) as proc:
        assert proc.stdout is not None
        work = Path(proc.stdout.readline().strip())  # made, its finally entered
        assert work.is_dir()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert err == f"script.py: {says}\n"
    assert not work.exists()
