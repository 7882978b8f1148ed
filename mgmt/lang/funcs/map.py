"""import "map": a map's keys and values, in key order."""

from __future__ import annotations

from typing import Any

from mgmt.lang.funcs.registry import define, fail
from mgmt.lang.values import FrozenDict, mcl_str, sort_key


def _sorted_keys(m: FrozenDict) -> tuple[Any, ...]:
    return tuple(sorted(m, key=sort_key))


define("map.keys", "func(map{?1: ?2}) []?1", impl=_sorted_keys, doc="sorted")
define(
    "map.values",
    "func(map{?1: ?2}) []?2",
    impl=lambda m: tuple(m[k] for k in _sorted_keys(m)),
    doc="in key order",
)
define("map.contains", "func(map{?1: ?2}, ?1) bool", impl=lambda m, k: k in m)
define("map.len", "func(map{?1: ?2}) int", impl=len)


def _lookup(m: FrozenDict, key: Any, *default: Any) -> Any:
    """mgmt's map.lookup: the key's value; else the default (a third argument), else an error."""
    if key in m:
        return m[key]
    if default:
        return default[0]
    raise fail(f"map key not present, got: {mcl_str(key)}")


define(
    "map.lookup",
    "func(map{?1: ?2}, ?1) ?2",
    "func(map{?1: ?2}, ?1, ?2) ?2",
    impl=_lookup,
    doc="the third argument, when given, if the key is missing (else an error)",
)
define(
    "map.lookup_default",
    "func(map{?1: ?2}, ?1, ?2) ?2",
    impl=lambda m, k, default: m.get(k, default),
)
