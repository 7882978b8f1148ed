"""import "example" and import "test": mgmt's sample functions and its functions for trying
the language (real sox, a real clock)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mgmt.lang.clock import ManualClock
from mgmt.lang.errors import FuncError, NotReady
from mgmt.lang.funcs import example as lexample
from tests.mgmt.lang.funcs.test_os import ERROR, running
from tests.mgmt.lang.helpers import binding, run


async def test_vumeter_draws_what_rec_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """example.vumeter with real sox; the "microphone" (rec) is sox making a tone."""
    rec = tmp_path / "rec"
    rec.write_text('#!/bin/sh\nexec sox -n "$1" synth 0.2 sine 440 vol 0.5\n')
    rec.chmod(0o755)
    monkeypatch.setattr(lexample.VUMeter, "PROGRAMS", (str(rec), "sox"))
    src = 'import "example"\n$v = example.vumeter("=", 10, 0.9)\nnoop "n" { comment => $v }\n'
    async with running(src) as (rt, until):
        await until("v", "(0.500000):\n=====\n=====")
    monkeypatch.setattr(lexample.VUMeter, "PROGRAMS", (str(tmp_path / "nope"), "sox"))
    async with running(src) as (rt, until):
        await until("v", ERROR)
        with pytest.raises(FuncError, match=r"cannot run .*nope \(is sox installed\?\)"):
            binding(rt, "v")


async def test_fastcount_counts_and_the_loop_stays_responsive() -> None:
    src = 'import "fmt"\nimport "test"\n$c = test.fastcount()\nnoop "n" { comment => fmt.printf("%d", $c) }\n'
    async with running(src) as (_rt, until):
        seen: set[int] = set()

        def counted(c: int) -> bool:  # evaluated at each wake: the loop ran in between
            seen.add(c)
            return len(seen) >= 3 and max(seen) >= 50

        await until("c", counted)
        assert min(seen) >= 0


def test_slow_string_and_the_except_operator_is_lazy() -> None:
    clock = ManualClock()
    src = (
        'import "list"\nimport "test"\n$l = ["a", "b"]\n'
        "$ok = list.lookup($l, 1) <|> test.slow_string()\n"
        '$slow = list.lookup($l, 42) <|> test.slow_string() <|> "default!"\n'
        'noop "n" { comment => $ok + $slow }\n'
    )
    rt = run(src, clock)
    rt.evaluate()
    assert binding(rt, "ok") == "b"
    with pytest.raises(NotReady):  # the fallback runs, and has no value for five seconds
        binding(rt, "slow")
    assert [s.name for s, _cell in rt.streams.values()] == ["test.slow_string"]
    clock.advance(4.9)
    rt.evaluate()
    with pytest.raises(NotReady):
        binding(rt, "slow")
    clock.advance(0.2)
    rt.evaluate()
    assert binding(rt, "slow") == "five seconds has elapsed"
