"""The benchmark scripts refuse a bad number in one line, exit 2, before they start anything
(before 2026-12-05, night: a traceback after the agents had started, or a run that never
ended; tester16). Real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("script", "args", "says"),
    [
        ("scale.py", ["--sizes", "0"], "argument --sizes: must be at least 1, not 0"),
        ("scale.py", ["--idle", "-1"], "argument --idle: must be 0 or more, not -1"),
        ("swap.py", ["--sizes", "1000", "0"], "argument --sizes: must be at least 2, not 0"),
        ("swap.py", ["--count", "-1"], "argument --count: must be at least 1, not -1"),
        ("drift_latency.py", ["--count", "0"], "argument --count: must be at least 1, not 0"),
        ("drift_latency.py", ["--pause", "nan"], "argument --pause: must be 0 or more, not nan"),
        ("busy_drift.py", ["--count", "x"], "argument --count: not a whole number: 'x'"),
        ("peers.py", ["--rounds", "0"], "argument --rounds: must be at least 1, not 0"),
        ("cluster_latency.py", ["--count", "0"], "argument --count: must be at least 1, not 0"),
    ],
)
def test_a_bad_number_is_refused_in_one_line(
    tmp_path: Path, script: str, args: list[str], says: str
) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert (done.returncode, done.stdout) == (2, ""), done
    assert done.stderr == f"{script}: {says}\n"
