"""The order a parallel run hands the test files out in (tests/conftest.py,
pytest_xdist_make_scheduler): the longest first, by tests/durations.json or by `slow` marks."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import (
    DURATIONS,
    FAST_COST,
    SLOW_COST,
    guessed_cost,
    pytest_xdist_make_scheduler,
    unit_cost,
)
from tests.e2e.helpers import ROOT

# Few tests that take seconds, and more tests that take none (xdist's own order, the most
# tests first, ran the second first).
LONG, SHORT = "tests/fuzz/test_profiles.py", "tests/resources/test_named.py"


def test_a_file_not_in_the_durations_is_guessed_from_its_slow_marks(tmp_path: Path) -> None:
    (tmp_path / "test_marked.py").write_text(
        "import pytest\n\n@pytest.mark.slow\ndef test_a(): pass\n\ndef test_b(): pass\n\n"
        "@pytest.mark.slow\nclass TestC:\n    def test_d(self): pass\n"
    )
    (tmp_path / "test_all.py").write_text(
        "import pytest\n\npytestmark = [pytest.mark.host, pytest.mark.slow]\n\ndef test_e(): pass\n"
    )
    assert guessed_cost(tmp_path, "test_marked.py::test_a[1-x]") == SLOW_COST
    assert guessed_cost(tmp_path, "test_marked.py::test_b") == FAST_COST
    assert guessed_cost(tmp_path, "test_marked.py::TestC::test_d") == SLOW_COST
    assert guessed_cost(tmp_path, "test_all.py::test_e") == SLOW_COST
    # A known file counts its recorded seconds once, whatever its tests.
    ids = ["test_marked.py::test_a", "test_marked.py::test_b", "test_all.py::test_e"]
    assert unit_cost(tmp_path, {"test_marked.py": 1.5}, ids) == 1.5 + SLOW_COST


class Config:
    """What the scheduler reads of pytest's config: a run of `-n 1 --dist loadfile` here."""

    rootpath = ROOT

    class option:  # (pytest's name)
        loadscopereorder = True

    @staticmethod
    def getvalue(name: str) -> object:
        return {"dist": "loadfile", "tx": ["1*popen"]}[name]


class Worker:
    """A worker as the scheduler sees it: the tests it is sent (indexes into its collection)."""

    shutting_down = False

    def __init__(self) -> None:
        self.sent: list[int] = []

    def send_runtest_some(self, indexes: list[int]) -> None:
        self.sent += indexes

    def shutdown(self) -> None:
        self.shutting_down = True


def test_a_parallel_run_starts_the_longest_file_first() -> None:
    durations = json.loads(DURATIONS.read_text())
    assert durations[LONG] > durations[SHORT]  # (what this test is about; else pick others)
    collection = [f"{SHORT}::test_{i}" for i in range(5)] + [f"{LONG}::test_a", f"{LONG}::test_b"]
    scheduler = pytest_xdist_make_scheduler(Config, None)  # type: ignore[arg-type]
    worker = Worker()
    scheduler.add_node(worker)
    scheduler.add_node_collection(worker, collection)
    scheduler.schedule()
    assert [collection[i].split("::")[0] for i in worker.sent][:2] == [LONG, LONG]
