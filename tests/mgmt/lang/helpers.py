"""Helpers for the language tests: compile snippets, run them with a driven clock."""

from __future__ import annotations

import asyncio
import textwrap
from typing import Any

import pytest

from mgmt.lang import compile_text
from mgmt.lang.checker import Checked
from mgmt.lang.clock import ManualClock
from mgmt.lang.errors import CompileError
from mgmt.lang.funcs import Context
from mgmt.lang.runtime import ResSpec, Runtime


def compile_ok(src: str) -> Checked:
    return compile_text(textwrap.dedent(src), "t.mcl")


def problems(src: str) -> list[str]:
    with pytest.raises(CompileError) as info:
        compile_text(textwrap.dedent(src), "t.mcl")
    return info.value.problems


def run(src: str, clock: ManualClock | None = None, **kwargs: Any) -> Runtime:
    return Runtime(compile_ok(src), ctx=Context("testhost"), clock=clock or ManualClock(), **kwargs)


async def settled(rt: Runtime) -> Runtime:
    """`rt`, evaluated until every stream it started has its first value (os.readfile's comes
    from a thread: streams.Readers), woken by its notify; a generous bound on hangs."""
    woke = asyncio.Event()
    notify = rt.notify

    def wake() -> None:
        woke.set()
        notify()

    rt.notify = wake
    try:
        async with asyncio.timeout(30):
            while True:
                woke.clear()
                rt.evaluate()
                if not rt.waiting:
                    return rt
                await woke.wait()
    finally:
        rt.notify = notify


def contents(rt: Runtime) -> dict[str, Any]:
    """Evaluate; {resource name: its content param} (or raise the program's error)."""
    _changed, items, error = rt.evaluate()
    if error is not None:
        raise error
    return {
        item.name: dict(item.params).get("content", dict(item.params).get("msg"))
        for item in items
        if isinstance(item, ResSpec)
    }


def value_of(expr: str, prelude: str = "") -> Any:
    """The run-time value of one expression, bound to $v."""
    rt = run(f'{prelude}\n$v = {expr}\nnoop "x" {{}}\n')
    return binding(rt, "v")


def binding(rt: Runtime, name: str) -> Any:
    """The current value of a top-level binding."""
    bind = next(b for b in rt.checked.bindings if b.name == name)
    return rt.get(rt._bind_cells[id(bind)])
