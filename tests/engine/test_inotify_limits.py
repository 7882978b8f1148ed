"""The kernel's inotify limits (issue 16): hitting one says which sysctl, its value and what to
set, instead of failing obscurely (a watch that silently was not there)."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from engine import inotify
from engine.watcher import PathWatcher


async def stopped(proc: asyncio.subprocess.Process, reader: asyncio.Task[None]) -> None:
    """The agent `proc` stopped (SIGTERM, if it still runs) and its log's `reader` done."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(60):
        await proc.wait()
        await reader


def test_the_hint_names_the_sysctl_its_value_and_a_higher_one() -> None:
    now = int(Path("/proc/sys/fs/inotify/max_user_watches").read_text())
    hint = inotify.limit_hint("inotify_add_watch", errno.ENOSPC)
    assert f"fs.inotify.max_user_watches is {now:,}" in hint
    assert f"sysctl -w fs.inotify.max_user_watches={max(524288, 2 * now)}" in hint
    assert "fs.inotify.max_user_instances" in inotify.limit_hint("inotify_init1", errno.EMFILE)
    assert inotify.limit_hint("inotify_add_watch", errno.ENOENT) == ""


async def test_running_out_of_watches_is_reported_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The kernel's answer when the limit is reached (it cannot be lowered on a shared machine).
    def full(self: inotify.Inotify, path: object, mask: int) -> int:
        hint = inotify.limit_hint("inotify_add_watch", errno.ENOSPC)
        raise OSError(errno.ENOSPC, f"inotify_add_watch: No space left on device{hint}", path)

    monkeypatch.setattr(inotify.Inotify, "add_watch", full)
    (tmp_path / "a").write_text("")
    (tmp_path / "b").write_text("")
    with caplog.at_level(logging.ERROR, "engine"):
        async with PathWatcher([tmp_path / "a"]), PathWatcher([tmp_path / "b"]):
            pass
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "fs.inotify.max_user_watches" in errors[0] and "changes there go unseen" in errors[0]


def _in_user_namespace(limit: str, value: int, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """`argv` in a new user namespace whose inotify `limit` (user.max_inotify_*: that
    namespace's own, the host's sysctls untouched) is `value`: the kernel's real limit, hit."""
    script = f'echo {value} > /proc/sys/user/{limit} && exec "$@"'
    return subprocess.run(
        ["unshare", "-Ur", "sh", "-c", script, "sh", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("limit", "value", "says"),
    [
        # No instance at all: each resource applied once, not watched (it was a traceback,
        # and nothing applied).
        ("max_inotify_instances", 0, "no change is seen until the agent restarts"),
        # Fewer watches than files: all applied, the rest unwatched, said once.
        ("max_inotify_watches", 5, "changes there go unseen"),
    ],
)
def test_a_real_kernel_limit_is_said_once_and_the_graph_still_applied(
    tmp_path: Path, limit: str, value: int, says: str
) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    if subprocess.run(["unshare", "-Ur", "true"], capture_output=True, check=False).returncode:
        pytest.skip("no new user namespace here (unshare -Ur true failed)")
    files = tmp_path / "files"
    graph = tmp_path / "g.yaml"
    graph.write_text(
        "graph: g\nresources:\n  file:\n"
        + "".join(
            f"    - name: f{i}\n      path: {files}/d{i % 10}/f{i}\n" for i in range(30)
        ).replace("      path", '      content: "x\\n"\n      path')
    )
    from tests.e2e.helpers import MGMT

    run = ["run", "--converged-timeout=0", "--tmp-prefix", "yaml", str(graph)]
    done = _in_user_namespace(limit, value, [*MGMT, *run])
    out = done.stderr + done.stdout
    assert done.returncode == 0, out
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if says in line]
    assert len(errors) == 1, out
    assert f"this user namespace's limit user.{limit} is {value}" in errors[0]
    host = int(Path(f"/proc/sys/fs/inotify/{limit.replace('inotify_', 'user_')}").read_text())
    assert f"sysctl -w user.{limit}={host})" in errors[0]  # a value to set, the host's
    assert sorted(p.name for p in files.rglob("f*") if p.is_file()) == sorted(
        f"f{i}" for i in range(30)
    )


def _user_namespaces() -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    if subprocess.run(["unshare", "-Ur", "true"], capture_output=True, check=False).returncode:
        pytest.skip("no new user namespace here (unshare -Ur true failed)")


def _files_graph(tmp_path: Path, shared: bool) -> list[Path]:
    """40 files, each in its own directory (`shared`: all in one), in tmp_path/g.yaml."""
    files = tmp_path / "files"
    paths = [files / ("d" if shared else f"d{i}") / f"f{i}" for i in range(40)]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "g.yaml").write_text(
        "graph: g\nresources:\n  file:\n"
        + "".join(
            f'    - name: f{i}\n      path: {p}\n      content: "x\\n"\n'
            for i, p in enumerate(paths)
        )
    )
    return paths


def _status(prefix: Path, port: int) -> tuple[int, str, dict[str, Any], str]:
    """`mgmt status`'s exit code and table, its --json, and /metrics."""
    from tests.e2e.helpers import run_mgmt

    code, table = run_mgmt(["status", "--prefix", str(prefix)])
    _, text = run_mgmt(["status", "--prefix", str(prefix), "--json"])
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=30) as answer:
        metrics = answer.read().decode()
    return code, table, json.loads(text), metrics


@pytest.mark.parametrize("shared", [False, True])
async def test_unwatched_resources_are_counted_and_named(tmp_path: Path, shared: bool) -> None:
    """Out of watches, the resources left unwatched read `converged` in `mgmt status` (exit 0),
    the page and /metrics, and the log named only the first path (operator tester,
    2026-12-05, F1). Now `mgmt status` says how many and marks each (exit 1), /metrics has
    mgmt_unwatched_current, and the log sums them up. A file whose own watch was refused in
    a watched directory (`shared`: 40 files in one) is not counted: the directory's watch sees
    its drift, which is repaired."""
    from tests.e2e.helpers import MGMT, free_port, wait_path

    _user_namespaces()
    paths = _files_graph(tmp_path, shared)
    port = free_port()
    prefix = tmp_path / "prefix"
    script = 'echo 20 > /proc/sys/user/max_inotify_watches && exec "$@"'
    argv = ["unshare", "-Ur", "sh", "-c", script, "sh", *MGMT, "run", "--prefix", str(prefix)]
    argv += ["--prometheus", "--prometheus-listen", f"127.0.0.1:{port}", "yaml"]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        str(tmp_path / "g.yaml"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    log: list[str] = []
    summary = asyncio.Event()  # the summary of the refused watches

    async def read() -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            log.append(raw.decode().rstrip("\n"))
            if "not watched" in log[-1] or "each resource still watched" in log[-1]:
                summary.set()

    reader = asyncio.create_task(read())
    try:
        async with asyncio.timeout(60):
            await summary.wait()
        assert sum("changes there go unseen" in line for line in log) == 1, log
        code, table, snapshot, metrics = await asyncio.to_thread(_status, prefix, port)
        marked = [v["id"] for v in snapshot["vertices"] if v.get("unwatched")]
        if shared:
            assert code == 0 and "unwatched:" not in table and ",unwatched" not in table, table
            assert snapshot["unwatched"] == 0 and not marked
            assert "\nmgmt_unwatched_current 0.0\n" in metrics
            paths[-1].unlink()  # its own watch refused: its directory's sees it
            await wait_path(paths[-1], lambda p: p.exists())
        else:
            count = snapshot["unwatched"]
            assert code == 1 and 20 <= count < 40 and len(marked) == count, table
            assert f"unwatched: {count} resources (out of inotify watches" in table
            assert table.count(",unwatched ") == count
            assert f"\nmgmt_unwatched_current {count}.0\n" in metrics
            said = next(line for line in log if "not watched" in line)
            assert f"out of inotify watches: {count} resources not watched" in said
            assert marked[0] in said
    finally:
        await stopped(proc, reader)
    assert proc.returncode == 0, "\n".join(log)


_COUNT_WATCHES = """
import asyncio, os, sys
sys.path.insert(0, sys.argv[1])
from engine import inotify
from engine.watcher import PathWatcher

calls = []


def counting(real):
    def counted(self, path, mask):
        calls.append(os.fspath(path))
        return real(self, path, mask)

    return counted


inotify.Inotify.add_watch = counting(inotify.Inotify.add_watch)
inotify.Blind.add_watch = counting(inotify.Blind.add_watch)  # no instance at all


async def main():
    async with PathWatcher([sys.argv[2]]):
        pass


asyncio.run(main())
print(len(calls))
"""


@pytest.mark.parametrize("limit", ["max_inotify_watches", "max_inotify_instances"])
def test_a_refused_directory_watch_is_not_asked_for_again_and_again(
    tmp_path: Path, limit: str
) -> None:
    """Out of watches (or of instances), a watcher whose directory's watch is refused does
    not look again for what that watch would have missed (nothing was put in place): each
    re-sync was refused again, 64 times, and a first run of 10,000 files took 84 s out of
    watches, 225 s without an instance, not 4.5. With none left, the file's watch and its
    directory's: one request each."""
    _user_namespaces()
    path = tmp_path / "d" / "f"
    path.parent.mkdir()
    path.write_text("x")
    argv = [sys.executable, "-c", _COUNT_WATCHES, str(Path(__file__).parents[2]), str(path)]
    done = _in_user_namespace(limit, 0, argv)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == 2, done.stdout


def test_the_hint_reads_the_limits_once_a_second_at_most(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every refused watch carries the hint: out of watches, a first run's thousands of
    refusals read /proc twice each (8 of a 15 s run); now once a second."""
    reads: list[str] = []
    real = inotify._sysctl

    def counted(name: str) -> int | None:
        reads.append(name)
        return real(name)

    monkeypatch.setattr(inotify, "_sysctl", counted)
    monkeypatch.setattr(inotify, "_HINTS", {})
    first = inotify.limit_hint("inotify_add_watch", errno.ENOSPC)
    seen = len(reads)
    assert 1 <= seen <= 2
    for _ in range(100):
        assert inotify.limit_hint("inotify_add_watch", errno.ENOSPC) == first
    assert len(reads) == seen
    monkeypatch.setattr(inotify, "HINT_FOR", 0.0)  # a second later: read again
    inotify.limit_hint("inotify_add_watch", errno.ENOSPC)
    assert len(reads) > seen


def _host_instances() -> int:
    return int(Path("/proc/sys/fs/inotify/max_user_instances").read_text())


async def test_no_instance_left_is_said_as_such_once_per_change(tmp_path: Path) -> None:
    """A daemon given no inotify instance (the kernel's real limit, in a user namespace): it
    runs (before 2026-12-06 its prefix's watch, refused, stopped it at once: exit 1, nothing
    said), its summary names the cause, the sysctl and a value to set (it said "out of inotify
    watches"), once for the graph and once again for an edit that changes which resources,
    and `mgmt status` says so too."""
    from tests.e2e.helpers import MGMT, run_mgmt

    _user_namespaces()
    _files_graph(tmp_path, shared=False)
    graph, prefix = tmp_path / "g.yaml", tmp_path / "prefix"
    script = 'echo 0 > /proc/sys/user/max_inotify_instances && exec "$@"'
    argv = ["unshare", "-Ur", "sh", "-c", script, "sh", *MGMT, "run", "--prefix", str(prefix)]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        "yaml",
        str(graph),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    log: list[str] = []
    said = asyncio.Condition()

    async def read() -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            log.append(raw.decode().rstrip("\n"))
            async with said:
                said.notify_all()

    def summaries() -> list[str]:
        return [line for line in log if "resources not watched" in line]

    reader = asyncio.create_task(read())
    try:
        async with asyncio.timeout(60), said:
            await said.wait_for(lambda: len(summaries()) == 1)
        line = summaries()[0]
        assert "no inotify instance left: 40 resources not watched until the agent restarts" in line
        host = await asyncio.to_thread(_host_instances)
        assert "user.max_inotify_instances is 0 (the host's fs.inotify.max_user_instances" in line
        assert line.endswith(f"(sysctl -w user.max_inotify_instances={host})"), line
        code, table = await asyncio.to_thread(run_mgmt, ["status", "--prefix", str(prefix)])
        assert code == 1 and "unwatched: 40 resources (no inotify instance left" in table, table
        graph.write_text(graph.read_text().replace("name: f0\n", "name: a0\n"))
        proc.send_signal(signal.SIGHUP)  # (no watch of the graph file either)
        async with asyncio.timeout(60), said:
            await said.wait_for(lambda: len(summaries()) == 2)
        assert "file[a0]" in summaries()[1]
    finally:
        await stopped(proc, reader)
    assert proc.returncode == 0, "\n".join(log)
    assert not any("out of inotify watches" in line for line in log), log
    assert len(summaries()) == 2, log
