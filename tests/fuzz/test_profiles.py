"""The hypothesis profiles (tests/conftest.py): a run without `--fuzz-long` (CI's) draws the
same cases every time, so it fails only on what changed; `--fuzz-long` draws new ones."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests import fuzz
from tests.e2e.helpers import ROOT
from tests.fuzz import fuzz_settings

LONG_RUN = "MGMT_TEST_FUZZ_LONG_RUN"  # set in the `--fuzz-long` run this file starts


def draws(decorate: Callable[[Any], Any]) -> list[bytes]:
    """The cases a hypothesis test decorated by `decorate` draws in one run of it."""
    seen: list[bytes] = []

    @decorate
    @given(st.binary(min_size=8))
    def probe(data: bytes) -> None:
        seen.append(data)

    probe()
    return seen


def test_a_run_draws_the_same_cases_each_time() -> None:
    """A fuzz target and a hypothesis test with settings of its own (tests/engine/test_graph.py)
    alike: two runs of one test draw the same cases (before: new random ones each run)."""
    if fuzz.LONG:
        return  # (the random search: the next test)
    for decorate in (fuzz_settings(), settings(max_examples=30, deadline=None)):
        first = draws(decorate)
        assert len(first) > 1
        assert draws(decorate) == first


def test_fuzz_long_is_the_random_search() -> None:
    """`pytest --fuzz-long` draws new cases each run: the fuzz targets' and the others'."""
    if os.environ.get(LONG_RUN):
        assert fuzz.LONG
        long = fuzz_settings()
        assert long.max_examples == 10_000 and not long.derandomize
        # The search's own settings, 50 cases a run: two runs of 10,000 took 20 s of CI's 15
        # minutes to tell the same thing (the draws differ from the first case on).
        for decorate in (settings(long, max_examples=50), settings(max_examples=30, deadline=None)):
            assert draws(decorate) != draws(decorate)
        return
    test = f"{__file__}::test_fuzz_long_is_the_random_search"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--fuzz-long", test],
        cwd=ROOT,
        env={**os.environ, LONG_RUN: "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "1 passed" in run.stdout
