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
    "diamond.yaml",
    "msg.yaml",
    "noop.yaml",
    "print.yaml",
    "timer.yaml",
}
# What the first run must leave behind.
STATE = {
    "hello.yaml": {"/tmp/mgmt/hello": "hello world\n"},
    "print.yaml": {"/tmp/mgmt/print/config": "setting = 1\n"},
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
        assert Path(path).read_text() == content
    code, out = run_mgmt(args)
    assert code == 0, out
    if example.name not in RERUNS:
        changes = [line for line in out.splitlines() if " engine: " in line]
        assert changes == [], out
