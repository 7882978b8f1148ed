"""Every example graph runs in cron mode with the real `mgmt` command, twice.

The first run converges (exit 0); the second run of an idempotent example logs no change.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.e2e.helpers import ROOT, run_mgmt

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
# Examples that run commands or print on every run: their second run is not silent.
RERUNS = {
    "exec.yaml",
    "exec-watch.yaml",
    "retry.yaml",
    "diamond.yaml",
    "msg.yaml",
    "noop.yaml",
    "print.yaml",
    "timer.yaml",
    "exec-chain.yaml",
    "sema.yaml",
    "sendrecv.yaml",
    "noop-meta.yaml",
}
# What the first run must leave behind: path -> content (None: must not exist).
STATE: dict[str, dict[str, str | None]] = {
    "hello.yaml": {"/tmp/mgmt/hello": "hello world\n"},
    "print.yaml": {"/tmp/mgmt/print/config": "setting = 1\n"},
    "file-chain.yaml": {"/tmp/mgmt/chain/1": "one\n", "/tmp/mgmt/chain/2": "two\n"},
    "exec-chain.yaml": {"/tmp/mgmt/exec-chain/log": "a\nb\nc\n"},
    "fan-out.yaml": {f"/tmp/mgmt/fan-out/{i}": f"{i}\n" for i in range(1, 5)},
    "fan-in.yaml": {"/tmp/mgmt/fan-in/all": "a\nb\nc\n"},
    "poll.yaml": {"/tmp/mgmt/poll/file": "polled\n"},
    "limit.yaml": {"/tmp/mgmt/limit/file": "limited\n"},
    "retry.yaml": {"/tmp/mgmt/retry/done": "ok\n"},
    "noop-meta.yaml": {
        "/tmp/mgmt/noop-meta/applied": "yes\n",
        "/tmp/mgmt/noop-meta/reported": None,
    },
    "autoedges.yaml": {
        "/tmp/mgmt/autoedges/a/b/leaf": "leaf\n",
        "/tmp/mgmt/autoedges/a/ran": "ran\n",
    },
    "sendrecv.yaml": {"/tmp/mgmt/sendrecv/kernel": "Linux\n"},
    "hidden.yaml": {"/tmp/mgmt/hidden/never": None, "/tmp/mgmt/hidden/after": "after\n"},
    "file-absent.yaml": {"/tmp/mgmt/absent/stale": None, "/tmp/mgmt/absent/keep": "kept\n"},
    "swap1.yaml": {"/tmp/mgmt/swap/kept": "kept\n", "/tmp/mgmt/swap/old": "old\n"},
    "swap2.yaml": {"/tmp/mgmt/swap/kept": "kept\n", "/tmp/mgmt/swap/new": "new\n"},
}
# Log lines the first run must show.
LOGS = {
    "notify.yaml": "print[reload]: msg: app.conf changed: reloading the app",
    "noop-meta.yaml": "file[reported]: would create /tmp/mgmt/noop-meta/reported",
    "sema.yaml": "exec[n1]",
}


def test_there_is_an_example_per_kind() -> None:
    import resources
    from engine.resource import lookup

    text = "\n".join(path.read_text() for path in EXAMPLES)
    for module in resources.MODULES:
        kind = module
        assert lookup(kind) is not None, f"module {module} registers no kind {kind!r}"
        assert f"\n  {kind}:\n" in text, f"no example uses kind {kind!r}"


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_converges(example: Path) -> None:
    shutil.rmtree("/tmp/mgmt", ignore_errors=True)
    args = [
        "run",
        "--converged-timeout=0",
        "--max-runtime=60",
        "--tmp-prefix",
        "yaml",
        str(example),
    ]
    code, out = run_mgmt(args)
    assert code == 0, out
    for path, content in STATE.get(example.name, {}).items():
        if content is None:
            assert not Path(path).exists(), path
        else:
            assert Path(path).read_text() == content, path
    if example.name in LOGS:
        assert LOGS[example.name] in out
    code, out = run_mgmt(args)
    assert code == 0, out
    if example.name not in RERUNS:
        changes = [line for line in out.splitlines() if " engine: " in line]
        assert changes == [], out


async def test_swap_pair_in_a_running_daemon(tmp_path: Path) -> None:
    """examples/swap1.yaml then swap2.yaml in one daemon: kept, stopped, started."""
    from tests.e2e.helpers import Daemon, has_content, signal, wait_path

    shutil.rmtree("/tmp/mgmt/swap", ignore_errors=True)
    graph = tmp_path / "graph.yaml"
    shutil.copy(ROOT / "examples/swap1.yaml", graph)
    async with Daemon(["run", "--tmp-prefix", "yaml", str(graph)]) as daemon:
        await wait_path(Path("/tmp/mgmt/swap/old"), has_content("old\n"))
        await daemon.wait_log("converged")
        shutil.copy(ROOT / "examples/swap2.yaml", graph)
        await wait_path(Path("/tmp/mgmt/swap/new"), has_content("new\n"))
        await daemon.wait_log("graph swap: 1 kept, 1 stopped, 1 started")
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
