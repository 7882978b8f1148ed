"""value.get_* and local.*: what the agent's local values (engine/local.py) hold."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from engine.local import LocalValues
from mgmt.lang.errors import FuncError
from mgmt.lang.funcs import Context
from mgmt.lang.runtime import Runtime
from mgmt.lang.values import Struct
from tests.mgmt.lang.helpers import binding, compile_ok


def runtime(src: str, local: LocalValues | None, **kwargs: Any) -> Runtime:
    return Runtime(compile_ok(src), ctx=Context("testhost", local=local), **kwargs)


async def test_value_get_follows_what_the_value_resource_stores(tmp_path: Path) -> None:
    local = LocalValues(tmp_path)
    woke = asyncio.Event()
    rt = runtime(
        'import "value"\n$r = value.get_str("hello1")\nnoop "n" { comment => $r->value }\n',
        local,
        notify=woke.set,
    )

    async def settled() -> None:
        async with asyncio.timeout(5):
            while not rt.pending:
                woke.clear()
                await woke.wait()

    try:
        rt.evaluate()
        assert binding(rt, "r") == Struct(value="", ready=False)
        await asyncio.to_thread(local.set, "hello1", "wow")  # what the `value` kind does
        await settled()
        rt.evaluate()
        assert binding(rt, "r") == Struct(value="wow", ready=True)
        local.set("hello1", 3)
        await settled()
        _changed, _items, error = rt.evaluate()
        assert isinstance(error, FuncError)
        assert "type mismatch, check the type in Value[hello1]" in str(error)
        local.set("hello1", None)
        await settled()
        _changed, _items, error = rt.evaluate()
        assert error is None and binding(rt, "r") == Struct(value="", ready=False)
    finally:
        await rt.close()


async def test_value_get_reads_the_value_a_previous_run_stored(tmp_path: Path) -> None:
    LocalValues(tmp_path).set("flag", True)
    src = 'import "value"\n$r = value.get_bool("flag")\nnoop "n" { comment => "x" }\n'
    rt = runtime(src, LocalValues(tmp_path))
    try:
        assert binding(rt, "r") == Struct(value=True, ready=True)
    finally:
        await rt.close()


async def test_value_get_takes_the_type_the_program_gives_it(tmp_path: Path) -> None:
    """value.get (mgmt's polymorphic one): the value's type comes from its use."""
    local = LocalValues(tmp_path)
    local.set("n", 41)
    local.set("names", ["a", "b"])
    src = (
        'import "value"\n$n = value.get("n")\n$next = $n->value + 1\n'
        '$l struct{value []str; ready bool} = value.get("names")\n'
        '$z = value.get("unset")\n$f = $z->value * 2.0\n'
        'noop "n" {}\n'
    )
    rt = runtime(src, local)
    try:
        assert binding(rt, "next") == 42
        assert binding(rt, "l") == Struct(value=("a", "b"), ready=True)
        assert binding(rt, "z") == Struct(value=0.0, ready=False)  # float's zero
    finally:
        await rt.close()
    local.set("n", "forty-one")
    rt = runtime(src, local)
    try:
        rt.evaluate()
        with pytest.raises(
            FuncError, match=r"type mismatch, check the type in Value\[n\]: expected int"
        ):
            binding(rt, "n")
    finally:
        await rt.close()


def test_local_pool_and_vardir(tmp_path: Path) -> None:
    src = (
        'import "local"\n$i = local.pool("my_namespace", "james")\n'
        '$j = local.pool("my_namespace", "purple")\n$d = local.vardir("some/dir/")\n'
        'noop "n" { comment => "x" }\n'
    )
    rt = runtime(src, LocalValues(tmp_path))
    assert (binding(rt, "i"), binding(rt, "j")) == (1, 2)
    assert binding(rt, "d") == f"{tmp_path}/local/vardir/some/dir/"
    rt = runtime(src.replace('"james"', '"../x"'), LocalValues(tmp_path))
    with pytest.raises(FuncError, match=r"uid '\.\./x' must not contain '/'"):
        binding(rt, "i")
    with pytest.raises(FuncError, match="no local store here"):
        binding(runtime(src, None), "i")
