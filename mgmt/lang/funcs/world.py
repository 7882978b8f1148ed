"""import "world": the cluster's shared data. A program that imports "world" makes the agent
start (or join) the cluster; these functions wait for it."""

from __future__ import annotations

from mgmt.lang import ast, streams
from mgmt.lang.funcs.registry import Typer, define
from mgmt.lang.types import BOOL, INT, STR, TList, TStruct, TVar, Type, prune, show

define(
    "world.getval",
    "func(str) struct{value str; exists bool}",
    stream=streams.GetVal,
    doc="a string of the cluster, re-emits on change",
)
define(
    "world.kvlookup",
    "func(str) map{str: str}",
    stream=streams.KVLookup,
    doc="a per-host map of the cluster (host -> value), re-emits on change",
)

define(
    "world.exchange",
    "func(str, str) map{str: str}",
    stream=streams.Exchange,
    doc="every host's value in a namespace (host -> value), this host's included",
)
SCHEDULE_OPTS = {"strategy": STR, "max": INT, "reuse": BOOL, "ttl": INT}
_SCHEDULE_OPTS_TYPE = TStruct(tuple(SCHEDULE_OPTS.items()))


def _type_schedule(typer: Typer, e: ast.Call, args: list[Type]) -> Type:
    """world.schedule(namespace[, opts]): opts is a struct with any of SCHEDULE_OPTS's
    fields, in any order (as in mgmt), known when the call is checked."""
    if len(args) not in (1, 2):
        raise typer.abort(e.pos, f"world.schedule: expected 1 or 2 arguments, got {len(args)}")
    typer.expect(args[0], STR, e.args[0].pos, "argument 1 of world.schedule")
    if len(args) == 2:
        opts = prune(args[1])
        if isinstance(opts, TVar):  # not known here (a parameter): all the fields, then
            typer.expect(opts, _SCHEDULE_OPTS_TYPE, e.args[1].pos, "world.schedule options")
            return TList(STR)
        if not isinstance(opts, TStruct):
            raise typer.abort(
                e.args[1].pos,
                f"type error: world.schedule options: expected a struct with any of the "
                f"fields of {show(_SCHEDULE_OPTS_TYPE)}, got {show(opts)}",
            )
        for name, t in opts.fields:
            want = SCHEDULE_OPTS.get(name)
            if want is None:
                typer.problem(
                    e.args[1].pos,
                    f"world.schedule options: unknown field {name!r}; fields: "
                    + ", ".join(SCHEDULE_OPTS),
                )
            else:
                typer.expect(t, want, e.args[1].pos, f"world.schedule option {name}")
    return TList(STR)


define(
    "world.schedule",
    "func(str) []str",
    f"func(str, {show(_SCHEDULE_OPTS_TYPE)}) []str",
    stream=streams.Schedule,
    typing=_type_schedule,
    doc="the hosts chosen among those scheduling in a namespace (opts: any of those fields)",
)
define(
    "world/collect.res",
    "func(str) []struct{name str; host str}",
    stream=streams.CollectRes,
    doc="the exported resources of a kind this host may collect, re-emits on change",
)
