"""Shared fixtures: a real handle for driving one resource directly, without an engine."""

from __future__ import annotations

import ast
import asyncio
import fcntl
import functools
import gc
import json
import signal
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

import resources
from engine import safefs
from engine.handle import Handle, Shared
from engine.resource import Resource
from tests import fuzz

resources.load_all()

# The real systemd manager's fixtures, `manager` and `sd` (tests/systemd_fixture.py).
pytest_plugins = ["tests.systemd_fixture"]

# Hypothesis profiles. Every run but --fuzz-long's (CI's, scripts/test.sh's) is derandomized:
# each test draws the same cases every run (seeded by a hash of the test), so a run fails on
# what changed, not on a new random finding; each `@example` runs first, as always. The fuzz
# targets (tests/fuzz, `fuzz_settings()`) take a few hundred cases, derandomized too.
# `--fuzz-long` is the random search: 10,000 fresh cases per fuzz target, and the other
# hypothesis tests' own counts drawn at random (pytest_configure); add a finding as an
# `@example` of its test.
settings.register_profile("derandomized", derandomize=True)
settings.register_profile("random", derandomize=False)
settings.register_profile(
    "fuzz",
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz-long",
    max_examples=10_000,
    deadline=None,
    derandomize=False,
    suppress_health_check=list(HealthCheck),
)
settings.load_profile("derandomized")  # (the default of every `@settings` read after this)


# Tests on this host's users, groups and packages take turns, across the workers of a parallel
# run (scripts/test.sh) and other runs on the host: tests/e2e/test_examples.py and
# tests/resources/test_pkg.py hold this lock around theirs too.
HOST_LOCK = Path("/tmp/mgmt-test-host.lock")


# The files whose tests take HOST_LOCK are one unit of a parallel run's work (below).
HOST_FILES = "the files whose tests take the host lock (tests/conftest.py)"


@functools.cache
def takes_host_lock(path: Path) -> bool:
    """Whether the tests of a test file take HOST_LOCK: it marks some `host`, or names it."""
    try:
        text = path.read_text()
    except OSError:
        return False
    return "mark.host" in text or "HOST_LOCK" in text


# What the scheduler (below) takes a test of a file not in DURATIONS to last, in seconds: one
# marked `slow` ("more than a few seconds": 5 to 35 s in CI), any other (most take a few
# milliseconds, an agent's run a second).
SLOW_COST = 10.0
FAST_COST = 0.3

# Each test file's seconds in a whole run (its tests' setup, call and teardown), as
# `--store-durations` writes them: the order the scheduler hands the files out in.
DURATIONS = Path(__file__).with_name("durations.json")


@functools.cache
def slow_tests(path: Path) -> frozenset[str] | None:
    """The names of a test file's functions and classes marked `slow`; None: all its tests
    are (its `pytestmark` says so)."""
    try:
        text = path.read_text()
        tree = ast.parse(text)
    except (OSError, SyntaxError, ValueError):
        return frozenset()

    def says_slow(node: ast.AST) -> bool:
        return "mark.slow" in (ast.get_source_segment(text, node) or "")

    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            marks_module = any(
                isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
            )
            if marks_module and says_slow(node.value):
                return None
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and any(
            says_slow(decorator) for decorator in node.decorator_list
        ):
            names.add(node.name)
    return frozenset(names)


def guessed_cost(rootpath: Path, nodeid: str) -> float:
    """What a test of a file not in DURATIONS is taken to last: SLOW_COST if it (its function,
    class or file) is marked `slow`, else FAST_COST."""
    file, *names = nodeid.split("::")
    slow = slow_tests(rootpath / file)
    names = [name.split("[", 1)[0] for name in names]
    return SLOW_COST if slow is None or not slow.isdisjoint(names) else FAST_COST


def unit_cost(rootpath: Path, durations: dict[str, float], nodeids: Iterable[str]) -> float:
    """The seconds a unit of work (a file, or the host files) is taken to last: each file's
    in `durations`, else its tests' guessed_cost."""
    files = {nodeid.split("::", 1)[0] for nodeid in nodeids}
    known = sum(durations[file] for file in files if file in durations)
    return known + sum(
        guessed_cost(rootpath, nodeid)
        for nodeid in nodeids
        if nodeid.split("::", 1)[0] not in durations
    )


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """`--dist loadfile` (scripts/test.sh), with the files whose tests take HOST_LOCK in one
    unit of work: one worker runs them one after the other while the other runs the rest.
    Each worker in such a file, they took turns test by test, and flock is not fair: the
    setup of one worker's test waited while the other's tests, one after another, took the
    lock again first (30 s seen on a quiet machine, 100 s under load; counted in the waiting
    test's timeout).

    The unit taken to last longest goes first (DURATIONS, else SLOW_COST, FAST_COST): the last ones are
    short, and neither worker waits long at the end for the other. xdist's own order (the
    units with the most tests first) left a file of a few slow tests to the end: CI's run
    ended with one worker idle while the other ran tests/fuzz/test_profiles.py (20 s)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling  # type: ignore[import-untyped]

    durations: dict[str, float] = json.loads(DURATIONS.read_text())

    class HostFilesTogether(LoadFileScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            file = super()._split_scope(nodeid)
            return HOST_FILES if takes_host_lock(config.rootpath / file) else file

        def _assign_work_unit(self, node: object) -> None:
            costliest = max(
                self.workqueue,
                key=lambda scope: unit_cost(config.rootpath, durations, self.workqueue[scope]),
            )
            self.workqueue.move_to_end(costliest, last=False)
            super()._assign_work_unit(node)

    return HostFilesTogether(config, log)


@pytest.fixture(autouse=True)
def _host_turn(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test marked `host` runs holding HOST_LOCK (its wait bounded by pytest-timeout)."""
    if request.node.get_closest_marker("host") is None:
        yield
        return
    with HOST_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(autouse=True)
def _thawed() -> Iterator[None]:
    """A stopped engine leaves what it froze frozen (the process is ending, engine.py
    _gc_resume); the test process goes on, so its garbage is collectable again after."""
    yield
    if gc.get_freeze_count():
        gc.unfreeze()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fuzz-long",
        action="store_true",
        help=(
            "the random search: the fuzz suite (tests/fuzz) with 10,000 new random cases per"
            " target instead of a few hundred derandomized ones, every hypothesis test at random"
        ),
    )
    parser.addoption(
        "--store-durations",
        action="store_true",
        help=f"write each test file's seconds in this run to {DURATIONS.name} (run the whole suite)",
    )


_file_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # (in a parallel run, the controller gets every worker's reports)
    file = report.nodeid.split("::", 1)[0]
    _file_seconds[file] = _file_seconds.get(file, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    if session.config.getoption("--store-durations", False) and not hasattr(
        session.config, "workerinput"
    ):
        text = json.dumps({f: round(s, 1) for f, s in sorted(_file_seconds.items())}, indent=0)
        safefs.write_file(str(DURATIONS), (text + "\n").encode(), 0o644)


def pytest_configure(config: pytest.Config) -> None:
    # A run started in the background of a script (`cmd &`: SIGINT ignored, inherited by every
    # child) would hand that to the commands the tests run, and a command's `trap ... INT`
    # (tests/resources/test_exec.py: exec's `sig`) is then silently void. The agent itself
    # catches SIGINT (mgmt.hold_signals), so its commands start with the default action: the
    # tests' process does the same.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if config.getoption("--fuzz-long", False):
        fuzz.LONG = True
        settings.load_profile("random")  # (before the test modules' `@settings` are read)


class RecordingHandle(Handle):
    """A Handle whose events are counted and awaitable, and whose refresh flag is settable."""

    def __init__(self, res: Resource, var_dir: Path, shared: Shared | None = None) -> None:
        self.sent: dict[str, object] = {}  # the last value of each name sent (send/recv)
        self.graph: list[Resource] = [res]  # what handle.peers() returns: set it to add peers
        super().__init__(
            kind=res.kind,
            name=res.name,
            hostname="testhost",
            var_dir=var_dir,
            on_event=self._record,
            get_refresh=lambda: self.refresh_flag,
            on_send=self.sent.update,
            shared=shared,
            peers=lambda: self.graph,
        )
        self.events = 0
        self.refresh_flag = False
        self._evented = asyncio.Event()

    def _record(self) -> None:
        self.events += 1
        self._evented.set()

    async def next_event(self, timeout: float = 5.0) -> None:
        """Wait (bounded) for the next event, then re-arm."""
        async with asyncio.timeout(timeout):
            await self._evented.wait()
        self._evented.clear()

    def rearm(self) -> None:
        """Forget the events so far: `next_event` waits for one after this."""
        self._evented.clear()

    async def no_event(self, within: float = 0.2) -> bool:
        """True if no event arrives within `within` seconds (for "no spurious event" checks)."""
        self._evented.clear()
        try:
            async with asyncio.timeout(within):
                await self._evented.wait()
        except TimeoutError:
            return True
        return False


class Running:
    """A resource after init() with its watch() running in a task; stopped by the fixture."""

    def __init__(self, res: Resource, handle: RecordingHandle) -> None:
        self.res = res
        self.handle = handle
        self.task: asyncio.Task[None] | None = None


@pytest.fixture
async def engine_shared() -> AsyncIterator[Shared]:
    """What the resources of one test share (as those of an engine do), closed at its end."""
    state = Shared()
    yield state
    await state.aclose()


@pytest.fixture
async def run_resource(tmp_path: Path, engine_shared: Shared) -> AsyncIterator[object]:
    """`running = await run_resource(res, watch=True)`: init, validate, optionally watch.

    With watch=True it waits for the startup event. Everything is cleaned up afterwards. The
    resources of one test share the `engine_shared` fixture, as those of an engine share its Shared.
    """
    started: list[Running] = []

    async def start(res: Resource, watch: bool = True) -> Running:
        res.validate()
        var_dir = tmp_path / "var" / res.kind / res.name.replace("/", "_")
        handle = RecordingHandle(res, var_dir, engine_shared)
        await res.init(handle)
        running = Running(res, handle)
        started.append(running)
        if watch:
            running.task = asyncio.create_task(res.watch())
            await handle.next_event()
        return running

    yield start
    for running in started:
        if running.task:
            running.task.cancel()
            await asyncio.gather(running.task, return_exceptions=True)
        await running.res.cleanup()
        await running.handle.run_cleanups()
