"""import "local": this host's own allocations (engine/local.py): local.pool(namespace, uid)
numbers uids (the same number for a uid every time, 1, 2, ...), local.vardir("dir/") is a
directory of the agent's, made on use."""

from __future__ import annotations

from typing import Any

from engine.errors import ValidationError
from engine.local import LocalValues
from mgmt.lang.funcs.registry import Context, define, fail


def _local(ctx: Context) -> LocalValues:
    if ctx.local is None:
        raise fail("no local store here (the agent gives it)")
    return ctx.local


def _pool(ctx: Context, namespace: str, uid: str) -> int:
    try:
        return _local(ctx).pool(namespace, uid)
    except ValidationError as err:
        raise fail(err.message) from None


def _vardir(ctx: Context, relative: str) -> Any:
    try:
        return str(_local(ctx).vardir(relative)) + "/"
    except ValidationError as err:
        raise fail(err.message) from None


define("local.pool", "func(str, str) int", impl=_pool, ctx=True, doc="a number per uid, kept")
define("local.vardir", "func(str) str", impl=_vardir, ctx=True, doc="a directory of the agent's")
